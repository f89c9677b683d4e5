//! Host kernels end to end: graphs lowered and planned by the real pipeline, run on the CPU
//! executable, compared with the reference evaluator bit for bit (integer results, copies) or
//! to rounding (lrn, conv); the planner's routing of grouped convolutions; and that the files
//! of host/ are named after op families.

use crate::plan::{Stage, Weights, plan};
use crate::runtime::CpuExecutable;
use kiln_ir::backend::{CompileRequest, Executable};
use kiln_ir::eval::eval_op;
use kiln_ir::lower::lower;
use kiln_ir::op::{Float, Initializer, Source};
use kiln_ir::{
    ConvAttrs, DType, Data, DataFormat, Graph, NodeId, Op, Padding, Shape, Tensor, TensorType,
};
use std::sync::Arc;

/// Graph `y = op(inputs...)` over placeholders holding `values`; returns the CPU result, the
/// reference result and the plan's stages (as short names).
fn run(
    op: Op,
    values: &[Tensor],
) -> (
    Result<Tensor, String>,
    Result<Tensor, String>,
    Vec<&'static str>,
) {
    let mut g = Graph::new();
    let ids: Vec<NodeId> = values
        .iter()
        .enumerate()
        .map(|(i, v)| g.add(format!("in{i}"), Op::Input(v.ty()), &[]).unwrap())
        .collect();
    let y = g.add("y", op.clone(), &ids).unwrap();
    let request = CompileRequest {
        graph: &g,
        feeds: ids,
        variables: vec![],
        fetches: vec![y],
        targets: vec![],
    };
    let program = lower(&request).unwrap();
    let plan = plan(&program).unwrap();
    let kinds = plan.stages.iter().map(|(_, s)| stage_kind(s)).collect();
    let exe = CpuExecutable::new(program, plan);
    let feeds: Vec<&Tensor> = values.iter().collect();
    let got = exe
        .run(&feeds, &mut [])
        .map(|mut v| v.remove(0))
        .map_err(|e| e.to_string());
    let refs: Vec<&Tensor> = values.iter().collect();
    (got, eval_op(&op, &refs), kinds)
}

fn stage_kind(s: &Stage) -> &'static str {
    match s {
        Stage::Jit { .. } => "jit",
        Stage::MatMul { .. } => "matmul",
        Stage::Conv {
            filter: Weights::PackedGroups(_),
            ..
        } => "conv-groups",
        Stage::Conv { groups, .. } if *groups > 1 => "conv-groups-runtime",
        Stage::Conv { .. } => "conv",
        Stage::Winograd { .. } => "winograd",
        Stage::Host(_) => "host",
        Stage::Window { .. } => "window",
        Stage::DepthwisePointwise { .. } => "depthwise-pointwise",
    }
}

fn ints(dims: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::new(dims, Data::I64(v)).unwrap()
}

/// `a` against `b` within `tol + tol * |b|` (kiln_ir::compare: dims, dtype, NaN/inf too).
#[track_caller]
fn close(a: &Tensor, b: &Tensor, tol: f32) {
    let tol = kiln_ir::compare::Tolerance::abs_rel(f64::from(tol));
    kiln_ir::compare::assert_close(a, b, tol, "host op against eval_op");
}

#[test]
fn argmax_both_index_types_every_axis_with_ties_and_nan() {
    let mut x = Tensor::uniform(&[3, 4, 5], -1.0, 1.0, 1)
        .into_f32()
        .unwrap();
    x[7] = f32::NAN;
    x[20..25].fill(0.5); // a tie along the last axis
    x[0] = x[5]; // a tie along axis 1
    let x = Tensor::from_vec(&[3, 4, 5], x).unwrap();
    let xi = Tensor::new(&[2, 3], Data::I32(vec![4, -1, 4, 9, 9, -9])).unwrap();
    for axis in [0i64, 1, 2, -1] {
        for ty in [DType::I32, DType::I64] {
            let op = Op::ArgMax {
                axis,
                output_type: ty,
            };
            let (got, want, kinds) = run(op.clone(), std::slice::from_ref(&x));
            assert_eq!(got.unwrap(), want.unwrap(), "axis {axis} {ty}");
            assert_eq!(kinds, ["host"]);
            if axis < 2 {
                let (got, want, _) = run(op, std::slice::from_ref(&xi));
                assert_eq!(got.unwrap(), want.unwrap());
            }
        }
    }
}

#[test]
fn gather_dtypes_axes_and_errors() {
    let p = Tensor::uniform(&[3, 4, 3], -1.0, 1.0, 2);
    let pb = Tensor::new(
        &[3, 3],
        Data::Bool(vec![
            true, false, false, true, true, true, false, true, false,
        ]),
    )
    .unwrap();
    let idx32 = Tensor::new(&[2, 2], Data::I32(vec![0, -1, 2, 1])).unwrap();
    let idx64 = ints(&[3], vec![1, -3, 0]);
    for (params, idx, axis) in [
        (&p, &idx32, 0),
        (&p, &idx64, 1),
        (&p, &idx32, -1),
        (&pb, &idx64, 1),
        (&pb, &idx32, 0),
    ] {
        let (got, want, kinds) = run(Op::Gather { axis }, &[params.clone(), idx.clone()]);
        assert_eq!(got.unwrap(), want.unwrap(), "axis {axis}");
        assert_eq!(kinds, ["host"]);
    }
    // Out of range: an error naming the index and the axis size, from the run.
    let bad = ints(&[3], vec![0, 1, -5]);
    let (got, want, _) = run(Op::Gather { axis: 1 }, &[p.clone(), bad]);
    let e = got.unwrap_err();
    assert!(
        e.contains("index -5") && e.contains("size 4") && e.contains("%y"),
        "{e}"
    );
    assert!(want.is_err());
}

#[test]
fn cast_every_dtype_pair() {
    let f = Tensor::from_vec(&[6], vec![1.7, -1.7, 3e9, -3e9, f32::NAN, 0.0]).unwrap();
    let sources = [
        f,
        Tensor::new(&[3], Data::I32(vec![i32::MIN, 0, 16_777_217])).unwrap(),
        ints(&[3], vec![(1 << 32) + 3, -1, 0]),
        Tensor::new(&[2], Data::Bool(vec![true, false])).unwrap(),
    ];
    for x in &sources {
        for to in DType::ALL {
            let (got, want, kinds) = run(Op::Cast { to }, std::slice::from_ref(x));
            assert_eq!(got.unwrap(), want.unwrap(), "{} -> {to}", x.dtype());
            assert_eq!(kinds, ["host"]);
        }
    }
}

/// The comparisons, logical ops and select on every dtype they take, with broadcasting of
/// every operand (ranks 0 to 3), NaN and signed zeros: host kernels, same bits as the reference.
#[test]
fn comparisons_logic_and_select_broadcast_like_the_reference() {
    use kiln_ir::op::{CompareOp, LogicalOp};
    let nan = f32::NAN;
    let f = |dims: &[usize], v: Vec<f32>| Tensor::from_vec(dims, v).unwrap();
    let b = |dims: &[usize], v: Vec<bool>| Tensor::new(dims, Data::Bool(v)).unwrap();
    let i32s = |dims: &[usize], v: Vec<i32>| Tensor::new(dims, Data::I32(v)).unwrap();
    let pairs = [
        (
            f(&[2, 1, 3], vec![nan, -0.0, 1.0, 2.0, 0.0, -1.0]),
            f(&[4, 1], vec![0.0, nan, 1.0, -1.0]),
        ),
        (i32s(&[3], vec![1, -2, 3]), i32s(&[2, 1], vec![1, 3])),
        (ints(&[], vec![5]), ints(&[2, 2], vec![5, 6, 4, 5])),
        (
            b(&[2, 1], vec![true, false]),
            b(&[3], vec![true, false, true]),
        ),
    ];
    for (x, y) in &pairs {
        for c in CompareOp::ALL {
            if x.dtype() == DType::Bool && c.is_ordering() {
                continue;
            }
            let (got, want, kinds) = run(Op::Compare(c), &[x.clone(), y.clone()]);
            assert_eq!(got.unwrap(), want.unwrap(), "{c:?} on {}", x.dtype());
            assert_eq!(kinds, ["host"]);
        }
    }
    let (p, q) = (&pairs[3].0, &pairs[3].1);
    for l in LogicalOp::ALL {
        let (got, want, _) = run(Op::Logical(l), &[p.clone(), q.clone()]);
        assert_eq!(got.unwrap(), want.unwrap(), "{l:?}");
    }
    let (got, want, _) = run(Op::LogicalNot, std::slice::from_ref(q));
    assert_eq!(got.unwrap(), want.unwrap());
    let cond = b(&[2, 1, 1], vec![false, true]);
    for (x, y) in &pairs {
        let (got, want, kinds) = run(Op::Select, &[cond.clone(), x.clone(), y.clone()]);
        let (got, want) = (got.unwrap(), want.unwrap());
        assert_eq!(got.dims(), want.dims(), "select on {}", x.dtype());
        // Bit-exact, NaN included (Tensor's equality compares f32 by value).
        assert_eq!(format!("{:?}", got.data()), format!("{:?}", want.data()));
        assert_eq!(kinds, ["host"]);
    }
}

#[test]
fn lrn_matches_the_reference() {
    let x = Tensor::uniform(&[2, 3, 3, 11], -2.0, 2.0, 3);
    for (r, bias, alpha, beta) in [(0, 1.0, 1.0, 0.5), (2, 2.0, 1e-4, 0.75), (5, 0.5, 0.3, 1.0)] {
        let op = Op::Lrn {
            depth_radius: r,
            bias: Float(bias),
            alpha: Float(alpha),
            beta: Float(beta),
        };
        let (got, want, kinds) = run(op, std::slice::from_ref(&x));
        close(&got.unwrap(), &want.unwrap(), 1e-6);
        assert_eq!(kinds, ["host"]);
    }
}

/// The fast LRN (f32 shifted-add window sums, specialised powers, blocked sums for wide
/// windows, rows split across threads) against the f64 reference: odd channel counts (vector
/// tails), every radius class including wider than the row, every specialised beta and two
/// general ones, parameters that force the exact path, and rows with NaN, infinities, huge,
/// tiny and all-zero values (recomputed exactly, NaN where the reference has NaN).
#[test]
fn fast_lrn_matches_the_reference_on_awkward_shapes_and_values() {
    for (i, channels) in [1usize, 3, 7, 13, 33].into_iter().enumerate() {
        // 300 pixels: enough elements (> 16k at 33 channels) to split across threads.
        let dims = [2, 15, 10, channels];
        let mut x = Tensor::uniform(&dims, -3.0, 3.0, 40 + i as u64)
            .into_f32()
            .unwrap();
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e-30,
            3e19,
        ];
        for (k, v) in specials.into_iter().enumerate() {
            x[(k * 7 + 1) * channels + k % channels] = v;
        }
        x[20 * channels..21 * channels].fill(0.0);
        let x = Tensor::from_vec(&dims, x).unwrap();
        for radius in [0usize, 1, 2, 5, 20, 1 << 40] {
            for (bias, alpha, beta) in [
                (1.0, 1e-4, 0.75),
                (2.0, 0.3, 0.5),
                (0.5, 0.3, 1.0),
                (1.0, 0.5, 0.6),
                (0.0, 1.0, 1.5),
                (-0.5, 1.0, 0.75),
                (1.0, -0.01, 0.75),
            ] {
                let op = Op::Lrn {
                    depth_radius: radius,
                    bias: Float(bias),
                    alpha: Float(alpha),
                    beta: Float(beta),
                };
                let (got, want, kinds) = run(op, std::slice::from_ref(&x));
                let tol = kiln_ir::compare::Tolerance::abs_rel(1e-5);
                let what = format!("lrn c={channels} r={radius} {bias} {alpha} {beta}");
                kiln_ir::compare::assert_close(&got.unwrap(), &want.unwrap(), tol, &what);
                assert_eq!(kinds, ["host"]);
            }
        }
    }
}

#[test]
fn grouped_convolutions_are_routed_and_correct() {
    // NHWC with constant weights: one packed GEMM per group, even when thin (4 taps x 1).
    // NHWC with fed weights: packed per run. NCHW: the host kernel.
    let cases = [
        (
            DataFormat::Nhwc,
            [1, 7, 7, 4],
            [2, 2, 1, 4],
            true,
            "conv-groups",
        ),
        (
            DataFormat::Nhwc,
            [2, 6, 5, 8],
            [3, 3, 4, 6],
            false,
            "conv-groups-runtime",
        ),
        (DataFormat::Nchw, [1, 6, 5, 5], [3, 3, 2, 6], true, "host"),
    ];
    for (i, (format, xd, wd, constant, kind)) in cases.into_iter().enumerate() {
        let x = Tensor::uniform(&xd, -1.0, 1.0, 10 + i as u64);
        let w = Tensor::normal(&wd, 0.0, 0.5, 20 + i as u64);
        let attrs = ConvAttrs::with_padding(Padding::Same)
            .strides(2, 2)
            .format(format);
        let op = Op::Conv2d(attrs);
        let mut g = Graph::new();
        let xi = g.add("x", Op::Input(x.ty()), &[]).unwrap();
        let wi = if constant {
            let src = Source {
                ty: w.ty(),
                init: Initializer::Literal(Arc::new(w.clone())),
            };
            g.add("w", Op::Const(src), &[]).unwrap()
        } else {
            g.add("w", Op::Input(TensorType::f32(Shape::known(&wd))), &[])
                .unwrap()
        };
        let y = g.add("y", op.clone(), &[xi, wi]).unwrap();
        let feeds = if constant { vec![xi] } else { vec![xi, wi] };
        let request = CompileRequest {
            graph: &g,
            feeds,
            variables: vec![],
            fetches: vec![y],
            targets: vec![],
        };
        let program = lower(&request).unwrap();
        let plan = plan(&program).unwrap();
        let kinds: Vec<_> = plan.stages.iter().map(|(_, s)| stage_kind(s)).collect();
        assert_eq!(kinds, [kind], "case {i}");
        let exe = CpuExecutable::new(program, plan);
        let got = if constant {
            exe.run(&[&x], &mut []).unwrap()
        } else {
            exe.run(&[&x, &w], &mut []).unwrap()
        };
        close(&got[0], &eval_op(&op, &[&x, &w]).unwrap(), 1e-5);
    }
}

#[test]
fn files_are_named_after_op_families() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/host"));
    let stray = kiln_ir::schema::modules_outside_the_taxonomy(dir, &["mod", "tests"]).unwrap();
    assert!(
        stray.is_empty(),
        "host/ modules outside OpFamily: {stray:?}"
    );
}

#[test]
fn cross_entropies_match_the_reference_with_nan_for_bad_labels() {
    let logits = Tensor::uniform(&[5, 7], -30.0, 30.0, 3);
    let labels = Tensor::uniform(&[5, 7], 0.0, 1.0, 4);
    let (got, want, kinds) = run(Op::SoftmaxCrossEntropyWithLogits, &[logits.clone(), labels]);
    close(&got.unwrap(), &want.unwrap(), 1e-6);
    assert_eq!(kinds, ["host"]);
    for labels in [
        ints(&[5], vec![0, 6, 3, 7, -1]),
        Tensor::new(&[5], Data::I32(vec![2, 2, 2, 0, 1])).unwrap(),
    ] {
        let (got, want, _) = run(
            Op::SparseSoftmaxCrossEntropyWithLogits,
            &[logits.clone(), labels],
        );
        // NaN placement is compared too: labels 7 and -1 are out of 0..7.
        close(&got.unwrap(), &want.unwrap(), 1e-6);
    }
}

#[test]
fn one_hot_and_gather_grad_match_the_reference() {
    let idx = ints(&[2, 3], vec![0, 4, -1, 2, 2, 5]);
    for axis in [-1, 0, 1] {
        let op = Op::OneHot {
            depth: 5,
            on_value: Float(2.0),
            off_value: Float(-0.5),
            axis,
        };
        let (got, want, kinds) = run(op, std::slice::from_ref(&idx));
        assert_eq!(got.unwrap(), want.unwrap(), "axis {axis}");
        assert_eq!(kinds, ["host"]);
    }
    let g = Tensor::uniform(&[2, 2, 3, 4], -1.0, 1.0, 5);
    let idx = ints(&[2, 3], vec![0, 4, -1, 2, 2, 5]);
    let (got, want, kinds) = run(Op::GatherGrad { axis: 1, size: 6 }, &[g.clone(), idx]);
    close(&got.unwrap(), &want.unwrap(), 1e-6);
    assert_eq!(kinds, ["host"]);
    let bad = ints(&[2, 3], vec![0, 4, -7, 2, 2, 5]);
    let (got, want, _) = run(Op::GatherGrad { axis: 1, size: 6 }, &[g, bad]);
    let e = got.unwrap_err();
    assert!(
        e.contains("index -7") && e.contains("size 6") && e.contains("%y"),
        "{e}"
    );
    assert!(want.is_err());
}
