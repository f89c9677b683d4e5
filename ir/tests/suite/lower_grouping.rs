//! The fusion passes and the kernels `lower` builds from their result: which nodes share a
//! kernel (one fused node each), what each epilogue computes and how it broadcasts, where
//! values are materialised, how fetches and variable updates are wired; every program is also
//! run against the reference backend on the unfused graph's semantics.

use crate::lower_common;

use kiln_ir::lower::lower;
use kiln_ir::program::{BufferKind, Expr, Load, Operand, Step};
use kiln_ir::{BinaryOp, Error, Op, UnaryOp};
use lower_common::*;

const CONV: &str = "kiln 1
input %x : f32[1,5,5,2]
const %w : f32[3,3,2,3] = normal(0, 1, 1)
const %b : f32[3] = [0.5, -1, 2]
%conv = conv2d(%x, %w, padding=\"SAME\")
%biased = bias_add(%conv, %b)
%y = relu(%biased)
output %y
";

#[test]
fn conv_bias_relu_is_one_kernel() {
    let mut g = parse(CONV);
    fuse(&mut g, &["y"]);
    let req = request(&g, &["y"], &[]);
    let p = check_against_reference(&req, 1);
    assert_eq!(kernel_nodes(&p), vec![vec!["y"]]);
    let k = &p.kernels[0];
    assert!(matches!(k.main, Some(Op::Conv2d(_))));
    assert_eq!(k.name, "y");
    let bias = p.buffers.iter().position(|b| b.name == "b").unwrap();
    assert_eq!(
        k.epilogue,
        Expr {
            loads: vec![Load {
                buffer: kiln_ir::program::BufferId(bias as u32),
                strides: vec![0, 0, 0, 1]
            }],
            steps: vec![
                Step::Binary(BinaryOp::Add, Operand::Main, Operand::Load(0)),
                Step::Unary(UnaryOp::Relu, Operand::Step(0)),
            ],
            result: Operand::Step(1),
        }
    );
    assert_eq!(p.buffer(k.output).kind, BufferKind::Output(0));
    assert_eq!(p.buffer(k.output).dims.as_slice(), &[1, 5, 5, 3]);
    // Nothing is temporary: the conv result never leaves the kernel.
    assert_eq!((p.arena_bytes, p.sum_temporary_bytes), (0, 0));
    let text = p.describe();
    for needle in [
        "conv2d",
        "[%y]",
        "strides [0,0,0,1]",
        "relu(s0)",
        "output 0",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
}

#[test]
fn fetching_an_intermediate_materialises_it() {
    let mut g = parse(CONV);
    fuse(&mut g, &["conv", "y"]);
    let req = request(&g, &["conv", "y"], &[]);
    let p = check_against_reference(&req, 2);
    assert_eq!(kernel_nodes(&p), vec![vec!["conv"], vec!["y"]]);
    assert!(p.kernels[0].epilogue.is_identity());
    assert_eq!(p.kernels[1].main, None);
    // The conv result goes straight to output 0 and the second kernel reads it from there.
    assert_eq!(p.buffer(p.kernels[0].output).kind, BufferKind::Output(0));
    assert_eq!(p.kernels[1].epilogue.loads[0].buffer, p.kernels[0].output);
}

#[test]
fn nchw_bias_reads_along_axis_1() {
    let mut g = parse(
        "kiln 1
input %x : f32[2,3,4,4]
const %w : f32[1,1,3,3] = normal(0, 1, 2)
const %b : f32[3] = [1, 2, 3]
%c = conv2d(%x, %w, padding=\"VALID\", data_format=\"NCHW\")
%y = bias_add(%c, %b, data_format=\"NCHW\")
output %y
",
    );
    fuse(&mut g, &["y"]);
    let p = check_against_reference(&request(&g, &["y"], &[]), 3);
    // The NCHW bias is fused through a reshape to [3,1,1] (a view of the constant here, no
    // kernel; constant folding removes it in the full pipeline), read along axis 1.
    let names: Vec<&str> = p.kernels.iter().map(|k| k.op_name()).collect();
    assert_eq!(names, ["conv2d"]);
    let load = &p.kernels[0].epilogue.loads[0];
    assert_eq!(load.strides, vec![0, 1, 0, 0]);
    assert!(matches!(
        p.buffer(load.buffer).kind,
        BufferKind::Alias { .. }
    ));
}

#[test]
fn diamond_is_one_kernel_computing_the_shared_value_once() {
    // %e and %n each feed only %d and fuse into it; then %a's only user is the fused node,
    // which absorbs it too (on the second round), as one shared expression node.
    let mut g = parse(
        "kiln 1
input %x : f32[4,3]
%a = relu(%x)
%e = exp(%a)
%n = neg(%a)
%d = add(%e, %n)
output %d
",
    );
    fuse(&mut g, &["d"]);
    let p = check_against_reference(&request(&g, &["d"], &[]), 4);
    assert_eq!(kernel_nodes(&p), vec![vec!["d"]]);
    assert_eq!(p.arena_bytes, 0, "nothing is stored between kernels");
    let e = &p.kernels[0].epilogue;
    assert_eq!(e.loads.len(), 1, "x is loaded once: {e:?}");
    assert_eq!(p.buffer(e.loads[0].buffer).name, "x");
    assert_eq!(e.steps.len(), 4, "relu once, exp, neg, add: {e:?}");
}

#[test]
fn matmul_diamond_becomes_one_kernel() {
    let mut g = parse(
        "kiln 1
input %x : f32[3,4]
const %w : f32[4,5] = normal(0, 1, 3)
%m = matmul(%x, %w)
%r = relu(%m)
%s = sigmoid(%m)
%o = add(%r, %s)
output %o
",
    );
    fuse(&mut g, &["o"]);
    let p = check_against_reference(&request(&g, &["o"], &[]), 5);
    // %r and %s fuse into %o; then %m's only user is %o, which takes it as its main op and
    // reads `main` twice in the epilogue.
    assert_eq!(kernel_nodes(&p), vec![vec!["o"]]);
    assert!(matches!(p.kernels[0].main, Some(Op::MatMul { .. })));
    assert_eq!(p.kernels[0].epilogue.steps.len(), 3);
}

#[test]
fn elementwise_chain_is_one_kernel_with_broadcast_loads() {
    let mut g = parse(
        "kiln 1
input %x : f32[2,3]
input %row : f32[3]
input %col : f32[2,1]
input %s : f32[]
%a = add(%x, %row)
%b = mul(%col, %a)
%c = tanh(%b)
%d = sub(%c, %s)
%e = maximum(%d, %x)
output %e
",
    );
    fuse(&mut g, &["e"]);
    let p = check_against_reference(&request(&g, &["e"], &[]), 6);
    assert_eq!(kernel_nodes(&p), vec![vec!["e"]]);
    let e = &p.kernels[0].epilogue;
    let mut strides: Vec<(String, Vec<usize>)> = e
        .loads
        .iter()
        .map(|l| (p.buffer(l.buffer).name.clone(), l.strides.clone()))
        .collect();
    let want = [
        ("col", vec![1, 0]),
        ("row", vec![0, 1]),
        ("s", vec![0, 0]),
        ("x", vec![3, 1]),
    ];
    let want: Vec<(String, Vec<usize>)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
    strides.sort();
    assert_eq!(strides, want);
    assert_eq!(e.steps.len(), 5);
    assert_eq!(e.result, Operand::Step(4));
}

#[test]
fn broadcast_producer_is_not_fused_into_a_larger_consumer() {
    // %r has dims [3] but its consumer [2,3]: fusing would recompute %r per row, so it is stored.
    let mut g = parse(
        "kiln 1
input %x : f32[2,3]
input %row : f32[3]
%r = exp(%row)
%y = add(%x, %r)
output %y
",
    );
    fuse(&mut g, &["y"]);
    let p = check_against_reference(&request(&g, &["y"], &[]), 7);
    assert_eq!(kernel_nodes(&p), vec![vec!["r"], vec!["y"]]);
}

#[test]
fn one_main_op_per_kernel() {
    // Both matmuls could absorb %s; the first operand's group wins, the other is stored.
    let mut g = parse(
        "kiln 1
input %x : f32[2,4]
const %w1 : f32[4,3] = normal(0, 1, 4)
const %w2 : f32[4,3] = normal(0, 1, 5)
%m1 = matmul(%x, %w1)
%m2 = matmul(%x, %w2)
%r1 = relu(%m1)
%r2 = relu(%m2)
%s = add(%r1, %r2)
output %s
",
    );
    fuse(&mut g, &["s"]);
    let p = check_against_reference(&request(&g, &["s"], &[]), 8);
    assert_eq!(kernel_nodes(&p), vec![vec!["r2"], vec!["s"]]);
    assert!(matches!(p.kernels[1].main, Some(Op::MatMul { .. })));
}

#[test]
fn reduce_and_softmax_take_epilogues() {
    let mut g = parse(
        "kiln 1
input %x : f32[3,5]
%r = reduce_sum(%x, axes=[1], keepdims=true)
%q = sqrt(%r)
%sm = softmax(%x, axis=-1)
%l = log(%sm)
%t = transpose(%x, perm=[1,0])
%tn = neg(%t)
output %q, %l, %tn
",
    );
    fuse(&mut g, &["q", "l", "tn"]);
    let req = request(&g, &["q", "l", "tn"], &[]);
    let p = check_against_reference(&req, 9);
    let kernel = |name: &str| p.kernels.iter().find(|k| k.name == name).unwrap();
    assert_eq!(p.kernels.len(), 3);
    assert_eq!(kernel("l").main, Some(Op::Softmax { axis: 1 }));
    assert!(
        matches!(&kernel("q").main, Some(Op::Reduce { axes: Some(axes), keepdims: true, .. }) if axes == &[1])
    );
    assert_eq!(kernel("tn").main, Some(Op::Transpose { perm: vec![1, 0] }));
    assert!(p.kernels.iter().all(|k| k.epilogue.steps.len() == 1));
}

#[test]
fn assigns_commit_at_the_end_and_reads_see_start_values() {
    let g = parse(
        "kiln 1
input %x : f32[2,2]
var %v : f32[2,2] = zeros
%inc = assign_add(%v, %x)
%twice = add(%v, %v)
%set = assign(%v, %twice)
%after = mul(%inc, %x)
output %after
",
    );
    // Two assigns to %v: %set comes later in topological order and wins, so only its update
    // is committed (the earlier one would be overwritten anyway).
    let req = request(&g, &["after", "v", "twice"], &["inc", "set"]);
    let p = check_against_reference(&req, 10);
    let updates: Vec<(usize, String)> = p
        .updates
        .iter()
        .map(|u| (u.variable, u.node.clone()))
        .collect();
    assert_eq!(updates, vec![(0, "set".to_string())]);
    assert_eq!(p.buffer(p.fetches[1]).kind, BufferKind::Variable(0));
    // The assign kernel never takes an epilogue: %after is a separate kernel.
    let inc = p.kernels.iter().find(|k| k.name == "inc").unwrap();
    assert!(matches!(inc.main, Some(Op::Assign(_))) && inc.epilogue.is_identity());
    assert!(p.describe().contains("update variable 0"));
}

#[test]
fn duplicate_and_source_fetches() {
    let g = parse(
        "kiln 1
input %x : f32[3]
const %c : f32[3] = [1, 2, 3]
%y = add(%x, %c)
output %y
",
    );
    let req = request(&g, &["y", "x", "y", "c"], &[]);
    let p = check_against_reference(&req, 11);
    let kinds: Vec<BufferKind> = p
        .fetches
        .iter()
        .map(|&b| p.buffer(b).kind.clone())
        .collect();
    assert_eq!(kinds[0], BufferKind::Output(0));
    assert_eq!(kinds[1], BufferKind::Feed(0));
    assert_eq!(
        kinds[2],
        BufferKind::Output(0),
        "a repeated fetch is copied from its first"
    );
    assert!(matches!(kinds[3], BufferKind::Constant(_)));
}

#[test]
fn every_op_of_the_catalogue_lowers_and_matches_the_reference() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/all_ops.kiln");
    let full = kiln_ir::text::parse_file(&path).expect("all_ops.kiln");
    // Fix the one unknown dim (the batch of %x) the way a session does before compiling.
    let x = id(&full, "x");
    let shapes = [(x, kiln_ir::Shape::known(&[2, 8, 8, 3]))]
        .into_iter()
        .collect();
    let roots: Vec<_> = full.node_ids().collect();
    let (g, _) = full.extract(&roots, &shapes).expect("extract");
    let ops: Vec<String> = g
        .node_ids()
        .map(|i| g.node(i).name.clone())
        .filter(|n| is_op(&g, n) && !["set", "inc", "dec"].contains(&n.as_str()))
        .collect();
    // Once with only the graph outputs fetched (fusion happens), once fetching everything.
    let outs: Vec<String> = g
        .outputs()
        .iter()
        .map(|&o| g.node(o).name.clone())
        .collect();
    for (fetches, fused) in [(outs, true), (ops, false)] {
        let names: Vec<&str> = fetches.iter().map(String::as_str).collect();
        let mut g = g.clone();
        if fused {
            let roots: Vec<&str> = names.iter().copied().chain(["set", "inc", "dec"]).collect();
            fuse(&mut g, &roots);
        }
        let req = request(&g, &names, &["set", "inc", "dec"]);
        let p = check_against_reference(&req, 12);
        // Three assigns to %state: only the last (%dec) is committed.
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].node, "dec");
    }
}

#[test]
fn bad_requests_are_errors_naming_the_node() {
    let g = parse("kiln 1\ninput %x : f32[?,3]\n%y = relu(%x)\noutput %y\n");
    let err = lower(&request(&g, &["y"], &[])).unwrap_err();
    assert!(
        matches!(&err, Error::Op { node, .. } if node == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("unknown dims"), "{err}");

    let g = parse(CONV);
    let mut req = request(&g, &["y"], &[]);
    req.feeds.clear();
    let err = lower(&req).unwrap_err();
    assert!(
        matches!(&err, Error::Feed { name, .. } if name == "x"),
        "{err}"
    );

    let mut req = request(&g, &["y"], &[]);
    req.feeds.push(req.feeds[0]);
    assert!(lower(&req).unwrap_err().to_string().contains("twice"));

    let mut req = request(&g, &["y"], &[]);
    req.feeds = vec![id(&g, "b")];
    assert!(
        lower(&req)
            .unwrap_err()
            .to_string()
            .contains("as a placeholder")
    );

    let mut req = request(&g, &["y"], &[]);
    req.variables = vec![id(&g, "x")];
    assert!(
        lower(&req)
            .unwrap_err()
            .to_string()
            .contains("as a variable")
    );

    let g =
        parse("kiln 1\ninput %x : f32[2]\nvar %v : f32[2] = zeros\n%y = add(%x, %v)\noutput %y\n");
    let mut req = request(&g, &["y"], &[]);
    req.variables.clear();
    let err = lower(&req).unwrap_err();
    assert!(err.to_string().contains("variable %v"), "{err}");
}
