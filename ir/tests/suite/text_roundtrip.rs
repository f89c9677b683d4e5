//! .kiln round trips: every op and attribute form parses, prints canonically, parses back to
//! the same graph and prints byte-identically; specific attribute spellings map to the
//! expected `Op` values; floats survive bit-exactly.
//!
//! `UPDATE_GOLDEN=1 cargo test -p kiln-ir --test suite -- text_roundtrip::` rewrites
//! `tests/data/all_ops.expected.kiln`.

use kiln_ir::text::{parse, parse_file, print};
use kiln_ir::{
    ConvAttrs, DataFormat, Float, Graph, Initializer, Op, Padding, PoolAttrs, ReduceOp, Shape,
    Source, Tensor, TensorType, UnaryOp,
};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Asserts that two graphs have the same nodes (by name: op, type, operand names) and outputs.
fn assert_same_graph(a: &Graph, b: &Graph) {
    assert_eq!(a.len(), b.len(), "node counts differ");
    for id in a.node_ids() {
        let na = a.node(id);
        let idb = b
            .find(&na.name)
            .unwrap_or_else(|| panic!("%{} missing", na.name));
        let nb = b.node(idb);
        assert_eq!(na.op, nb.op, "op of %{}", na.name);
        assert_eq!(na.ty, nb.ty, "type of %{}", na.name);
        let ins = |g: &Graph, i| -> Vec<String> {
            g.inputs(i)
                .iter()
                .map(|&o| g.node(o).name.clone())
                .collect()
        };
        assert_eq!(ins(a, id), ins(b, idb), "operands of %{}", na.name);
    }
    let outs = |g: &Graph| -> Vec<String> {
        g.outputs()
            .iter()
            .map(|&o| g.node(o).name.clone())
            .collect()
    };
    assert_eq!(outs(a), outs(b));
}

fn op_of<'g>(g: &'g Graph, name: &str) -> &'g Op {
    &g.node(g.find(name).unwrap_or_else(|| panic!("no %{name}")))
        .op
}

#[test]
fn all_ops_round_trip_is_byte_identical_and_matches_golden() {
    let g1 = parse_file(&data_dir().join("all_ops.kiln")).expect("all_ops.kiln parses");
    let p1 = print(&g1);
    let g2 = parse(&p1, Some(&data_dir())).expect("printed text parses");
    let p2 = print(&g2);
    assert_eq!(p1, p2, "print -> parse -> print must be byte-identical");
    assert_same_graph(&g1, &g2);

    let golden = data_dir().join("all_ops.expected.kiln");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &p1).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file exists");
    assert_eq!(
        p1, expected,
        "printer output changed; rerun with UPDATE_GOLDEN=1 if intended"
    );
}

#[test]
fn attribute_spellings_map_to_ops() {
    let g = parse_file(&data_dir().join("all_ops.kiln")).expect("parses");
    let conv = |s: [usize; 2], p: Padding, d: [usize; 2], f: DataFormat| ConvAttrs {
        strides: s,
        padding: p,
        dilations: d,
        data_format: f,
    };
    use DataFormat::{Nchw, Nhwc};
    assert_eq!(
        *op_of(&g, "conv"),
        Op::Conv2d(conv([1, 1], Padding::Same, [1, 1], Nhwc))
    );
    assert_eq!(
        *op_of(&g, "conv_s"),
        Op::Conv2d(conv([2, 2], Padding::Valid, [1, 1], Nhwc))
    );
    let explicit = Padding::Explicit([[1, 1], [2, 0]]);
    assert_eq!(
        *op_of(&g, "conv_d"),
        Op::Conv2d(conv([1, 1], explicit, [2, 2], Nhwc))
    );
    // TF 4-element strides and 4-pair explicit padding.
    let tf = Padding::Explicit([[1, 1], [1, 1]]);
    assert_eq!(
        *op_of(&g, "conv_tf"),
        Op::Conv2d(conv([2, 2], tf, [1, 1], Nhwc))
    );
    assert_eq!(
        *op_of(&g, "conv_int"),
        Op::Conv2d(conv([2, 2], Padding::Same, [1, 1], Nhwc))
    );
    // NCHW 4-element strides [1,1,h,w].
    assert_eq!(
        *op_of(&g, "conv_c"),
        Op::Conv2d(conv([2, 1], Padding::Same, [1, 1], Nchw))
    );
    let dpad = Padding::Explicit([[1, 0], [0, 1]]);
    assert_eq!(
        *op_of(&g, "dconv_c"),
        Op::DepthwiseConv2d(conv([2, 1], dpad, [1, 1], Nchw))
    );
    let pool = |k: [usize; 2], s: [usize; 2], p: Padding, f: DataFormat| PoolAttrs {
        ksize: k,
        strides: s,
        padding: p,
        data_format: f,
    };
    assert_eq!(
        *op_of(&g, "ap"),
        Op::AvgPool(pool([3, 3], [1, 1], Padding::Same, Nhwc))
    );
    let mp = pool([3, 3], [1, 1], Padding::Explicit([[1, 1], [1, 1]]), Nchw);
    assert_eq!(*op_of(&g, "mp_c"), Op::MaxPool(mp));
    assert_eq!(
        *op_of(&g, "ap_c"),
        Op::AvgPool(pool([2, 2], [2, 2], Padding::Valid, Nchw))
    );
    let reduce = |op, axes: Option<Vec<i64>>, keepdims| Op::Reduce { op, axes, keepdims };
    assert_eq!(*op_of(&g, "rsum"), reduce(ReduceOp::Sum, None, false));
    assert_eq!(
        *op_of(&g, "rmean"),
        reduce(ReduceOp::Mean, Some(vec![1, 2]), true)
    );
    assert_eq!(
        *op_of(&g, "rmax"),
        reduce(ReduceOp::Max, Some(vec![-1]), false)
    );
    assert_eq!(
        *op_of(&g, "rsum_int"),
        reduce(ReduceOp::Sum, Some(vec![1]), false)
    );
    assert_eq!(
        *op_of(&g, "rnone"),
        reduce(ReduceOp::Sum, Some(vec![]), false)
    );
    assert_eq!(
        *op_of(&g, "leaky"),
        Op::Unary(UnaryOp::LeakyRelu { alpha: Float(0.2) })
    );
    assert_eq!(
        *op_of(&g, "leaky2"),
        Op::Unary(UnaryOp::LeakyRelu { alpha: Float(0.1) })
    );
    assert_eq!(*op_of(&g, "sm"), Op::Softmax { axis: -1 });
    assert_eq!(
        *op_of(&g, "mm_ta"),
        Op::MatMul {
            transpose_a: true,
            transpose_b: false
        }
    );
    assert_eq!(
        *op_of(&g, "sl"),
        Op::Slice {
            begin: vec![1, 0],
            size: vec![2, -1]
        }
    );
    let pdv = Op::Pad {
        paddings: vec![[0, 0], [1, 1]],
        constant_value: Float(-1.5),
    };
    assert_eq!(*op_of(&g, "pdv"), pdv);
    let bn = Op::BatchNorm {
        epsilon: Float(0.01),
        data_format: Nchw,
    };
    assert_eq!(*op_of(&g, "bn_c"), bn);
    assert_eq!(
        *op_of(&g, "bn"),
        Op::BatchNorm {
            epsilon: Float(0.001),
            data_format: Nhwc
        }
    );

    // Outputs over several lines keep their order; duplicates are kept once.
    let outs: Vec<&str> = g
        .outputs()
        .iter()
        .map(|&o| g.node(o).name.as_str())
        .collect();
    assert_eq!(outs, ["biased", "conv_s", "mm", "cat", "bn_c"]);
}

#[test]
fn initialisers_and_literals_hold_the_written_values() {
    let g = parse_file(&data_dir().join("all_ops.kiln")).expect("parses");
    let source = |name| match op_of(&g, name) {
        Op::Var(s) | Op::Const(s) => s.clone(),
        other => panic!("%{name} is {other:?}"),
    };
    let w = source("w");
    assert_eq!(
        w.init,
        Initializer::Normal {
            mean: Float(0.0),
            std: Float(0.1),
            seed: 7
        }
    );
    assert_eq!(w.ty, TensorType::f32(Shape::known(&[3, 3, 3, 4])));
    let lit = |name| match source(name).init {
        Initializer::Literal(t) => t,
        other => panic!("%{name} has {other:?}"),
    };
    // A nested literal is stored row-major.
    let nested = lit("nested");
    assert_eq!(nested.dims(), [2, 3]);
    assert_eq!(nested.as_f32(), Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..]));
    assert_eq!(*lit("one"), Tensor::scalar(1.5));
    assert_eq!(*lit("two"), Tensor::scalar(2.0));
    assert!(matches!(lit("ints").data(), kiln_ir::Data::I32(v) if v == &[1, -2, 3]));
    assert!(matches!(lit("longs").data(), kiln_ir::Data::I64(v) if v == &[-9_000_000_000, 7]));
    assert_eq!(lit("mask").to_f64_vec(), vec![1.0, 0.0]);
    let odd = lit("odd");
    let odd = odd.as_f32().expect("f32");
    assert!(odd[0].is_nan());
    assert_eq!(odd[1], f32::NEG_INFINITY);
    assert_eq!(odd[2], f32::INFINITY);
    assert_eq!(odd[3].to_bits(), (-0.0f32).to_bits());
    assert_eq!(odd[4].to_bits(), 1); // the smallest subnormal
    for name in ["weights", "weights64"] {
        match source(name).init {
            Initializer::Npy { path, value } => {
                assert!(path.starts_with("w22"), "{path}");
                assert_eq!(value.as_f32(), Some(&[1.5, -2.0, 3.25, 4e-3][..]));
            }
            other => panic!("%{name} has {other:?}"),
        }
    }
}

const DESIGN_EXAMPLE: &str = r#"kiln 1
input %image : f32[?,100,100,1]
var   %kernel : f32[5,5,1,1] = normal(0, 1, 42)
const %bias : f32[1] = [0.5]
%conv = conv2d(%image, %kernel, strides=[1,1], padding="SAME")
%biased = bias_add(%conv, %bias)
%y = relu(%biased)
output %y
"#;

#[test]
fn design_example_parses_and_prints() {
    let g = parse(DESIGN_EXAMPLE, None).expect("DESIGN.md example parses");
    assert_eq!(g.len(), 6);
    let y = g.find("y").expect("%y");
    assert_eq!(g.outputs(), [y]);
    assert_eq!(g.node(y).ty.to_string(), "f32[?,100,100,1]");
    assert_eq!(*op_of(&g, "conv"), Op::Conv2d(ConvAttrs::same()));
    let expected = "kiln 1
input %image : f32[?,100,100,1]  # f32[?,100,100,1]
var %kernel : f32[5,5,1,1] = normal(0.0, 1.0, 42)  # f32[5,5,1,1]
const %bias : f32[1] = [0.5]  # f32[1]
%conv = conv2d(%image, %kernel, padding=\"SAME\")  # f32[?,100,100,1]
%biased = bias_add(%conv, %bias)  # f32[?,100,100,1]
%y = relu(%biased)  # f32[?,100,100,1]
output %y
";
    assert_eq!(print(&g), expected);
}

#[test]
fn printer_orders_sources_first_then_topologically() {
    // Built out of textual order: an op added before a later source.
    let mut g = Graph::new();
    let x = g
        .add("x", Op::Input(TensorType::f32(Shape::known(&[2]))), &[])
        .expect("x");
    let r = g.add("r", Op::Unary(UnaryOp::Relu), &[x]).expect("r");
    let c_src = Source {
        ty: TensorType::f32(Shape::known(&[2])),
        init: Initializer::Literal(Arc::new(Tensor::from_vec(&[2], vec![1.0, 2.0]).expect("t"))),
    };
    let c = g.add("c", Op::Const(c_src), &[]).expect("c");
    let s = g
        .add("s", Op::Binary(kiln_ir::BinaryOp::Add), &[r, c])
        .expect("s");
    g.add_output(s);
    let text = print(&g);
    let expected = "kiln 1
input %x : f32[2]  # f32[2]
const %c : f32[2] = [1.0, 2.0]  # f32[2]
%r = relu(%x)  # f32[2]
%s = add(%r, %c)  # f32[2]
output %s
";
    assert_eq!(text, expected);
    assert_same_graph(&g, &parse(&text, None).expect("reparses"));
}

/// A one-const graph whose literal holds `values`.
fn literal_graph(values: Vec<f32>) -> Graph {
    let n = values.len();
    let mut g = Graph::new();
    let t = Tensor::from_vec(&[n], values).expect("tensor");
    let src = Source {
        ty: TensorType::f32(Shape::known(&[n])),
        init: Initializer::Literal(Arc::new(t)),
    };
    let c = g.add("c", Op::Const(src), &[]).expect("const");
    let y = g
        .add(
            "y",
            Op::Unary(UnaryOp::LeakyRelu {
                alpha: Float(1.0 / 3.0),
            }),
            &[c],
        )
        .expect("y");
    g.add_output(y);
    g
}

#[test]
fn tricky_floats_survive_exactly() {
    let values = vec![
        0.1,
        1.0 / 3.0,
        -0.0,
        f32::MIN_POSITIVE,
        f32::MIN_POSITIVE / 7.0,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
        16_777_217.0,
        1e-7,
        1e20,
        f32::INFINITY,
    ];
    let g = literal_graph(values.clone());
    let text = print(&g);
    assert!(text.contains("leaky_relu(%c, alpha=0.33333334)"), "{text}");
    let back = parse(&text, None).expect("reparses");
    assert_same_graph(&g, &back);
    assert_eq!(print(&back), text);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any f32 bit pattern prints and parses back to the same bits (NaNs stay NaN).
    #[test]
    fn any_f32_round_trips(bits in proptest::collection::vec(any::<u32>(), 1..8)) {
        let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let text = print(&literal_graph(values.clone()));
        let back = parse(&text, None).expect("printed text parses");
        let Op::Const(s) = op_of(&back, "c") else { panic!("not a const") };
        let Initializer::Literal(t) = &s.init else { panic!("not a literal") };
        let got = t.as_f32().expect("f32");
        for (a, b) in values.iter().zip(got) {
            if a.is_nan() {
                prop_assert!(b.is_nan() && a.is_sign_negative() == b.is_sign_negative());
            } else {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
        prop_assert_eq!(print(&back), text);
    }
}

#[test]
fn npy_paths_resolve_against_the_base_dir() {
    let text = "kiln 1\nconst %w : f32[2,2] = npy(\"w22.npy\")\noutput %w\n";
    let g = parse(text, Some(&data_dir())).expect("resolves against base_dir");
    assert_eq!(
        print(&g),
        "kiln 1\nconst %w : f32[2,2] = npy(\"w22.npy\")  # f32[2,2]\noutput %w\n"
    );
    // parse_file uses the file's own folder.
    let dir = std::env::temp_dir().join(format!("kiln-text-npy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::copy(data_dir().join("w22.npy"), dir.join("sub/w.npy")).expect("copy");
    let file = dir.join("g.kiln");
    std::fs::write(&file, "kiln 1\nconst %w : f32[2,2] = npy(\"sub/w.npy\")\n").expect("write");
    let g = parse_file(&file).expect("parse_file resolves relative to the file");
    let _ = std::fs::remove_dir_all(&dir);
    match &op_of(&g, "w") {
        Op::Const(Source {
            init: Initializer::Npy { path, value },
            ..
        }) => {
            assert_eq!(path, "sub/w.npy");
            assert_eq!(value.as_f32(), Some(&[1.5, -2.0, 3.25, 4e-3][..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn comments_blank_lines_crlf_and_bom_are_accepted() {
    let text = "\u{feff}# leading comment\r\n\r\n   kiln 1   # version\r\n\
                input %a.b-c/d_1 : f32[]\r\n%y=neg(%a.b-c/d_1)#c\r\noutput %y\r\n";
    let g = parse(text, None).expect("parses");
    assert_eq!(g.len(), 2);
    assert!(g.find("a.b-c/d_1").is_some());
}

#[test]
fn printed_strings_escape_quotes_and_backslashes() {
    let mut g = Graph::new();
    let t = Tensor::from_vec(&[1], vec![1.0]).expect("t");
    let src = Source {
        ty: TensorType::f32(Shape::known(&[1])),
        init: Initializer::Npy {
            path: "we\"ird\\name.npy".into(),
            value: Arc::new(t),
        },
    };
    g.add("w", Op::Const(src), &[]).expect("w");
    let text = print(&g);
    assert!(text.contains(r#"npy("we\"ird\\name.npy")"#), "{text}");
}
