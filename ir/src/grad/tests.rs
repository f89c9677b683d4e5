//! Every rule checked against central finite differences of the reference evaluator, in
//! random directions (as JAX's `check_grads` does): for a random direction `v` of each x,
//! `<grad, v>` must match `(f(x + εv) - f(x - εv)) / 2ε` with `f = sum(ys)`, sums in f64.

use super::{GradientOptions, Unconnected};
use crate::eval::{eval_op, source_value};
use crate::graph::{Graph, NodeId};
use crate::op::*;
use crate::shape::{Shape, TensorType};
use crate::tensor::Tensor;
use crate::{DType, Error};
use std::collections::HashMap;

/// Evaluates `fetches` with the reference evaluator, placeholders from `feeds`.
pub(crate) fn eval(g: &Graph, feeds: &HashMap<NodeId, Tensor>, fetches: &[NodeId]) -> Vec<Tensor> {
    let mut values: HashMap<NodeId, Tensor> = HashMap::new();
    for id in g.topo_order_of(fetches.iter().copied()) {
        let node = g.node(id);
        let v = match &node.op {
            Op::Input(_) => feeds[&id].clone(),
            Op::Var(s) | Op::Const(s) => source_value(s).unwrap(),
            op => {
                let ins: Vec<&Tensor> = g.inputs(id).iter().map(|i| &values[i]).collect();
                eval_op(op, &ins).unwrap_or_else(|e| panic!("%{}: {e}", node.name))
            }
        };
        values.insert(id, v);
    }
    fetches.iter().map(|f| values[f].clone()).collect()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

/// Deterministic values in [lo, hi).
fn values(dims: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::uniform(dims, lo, hi, seed)
}

/// Checks d(sum ys)/dx for every placeholder x of `g` against finite differences at `at`.
fn check(g: &mut Graph, ys: &[NodeId], at: &[(NodeId, Tensor)]) {
    check_tol(g, ys, at, 1e-2, 2e-3)
}

fn check_tol(g: &mut Graph, ys: &[NodeId], at: &[(NodeId, Tensor)], eps: f32, tol: f64) {
    let xs: Vec<NodeId> = at.iter().map(|(x, _)| *x).collect();
    let grads = g.gradients(ys, &xs).expect("gradients");
    let feeds: HashMap<NodeId, Tensor> = at.iter().cloned().collect();
    let got = eval(g, &feeds, &grads);
    let f = |feeds: &HashMap<NodeId, Tensor>| -> f64 {
        eval(g, feeds, ys)
            .iter()
            .map(|y| f64s(y).iter().sum::<f64>())
            .sum()
    };
    for (i, (x, x0)) in at.iter().enumerate() {
        assert_eq!(
            got[i].dims(),
            x0.dims(),
            "gradient of %{} has x's dims",
            g.node(*x).name
        );
        assert_eq!(got[i].dtype(), DType::F32);
        for seed in 0..2 {
            let v = values(x0.dims(), -1.0, 1.0, 1000 + seed);
            let shifted = |sign: f32| {
                let data: Vec<f32> = x0
                    .as_f32()
                    .unwrap()
                    .iter()
                    .zip(v.as_f32().unwrap())
                    .map(|(a, b)| a + sign * eps * b)
                    .collect();
                let mut feeds = feeds.clone();
                feeds.insert(*x, Tensor::from_vec(x0.dims(), data).unwrap());
                feeds
            };
            let numeric = (f(&shifted(1.0)) - f(&shifted(-1.0))) / (2.0 * eps as f64);
            let analytic: f64 = f64s(&got[i]).iter().zip(f64s(&v)).map(|(a, b)| a * b).sum();
            let scale = analytic.abs().max(numeric.abs()).max(1.0);
            assert!(
                (numeric - analytic).abs() <= tol * scale,
                "d/d%{} in direction {seed}: finite differences {numeric}, gradient {analytic}",
                g.node(*x).name
            );
        }
    }
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add(name, Op::Input(TensorType::f32(Shape::known(dims))), &[])
        .unwrap()
}

fn node(g: &mut Graph, op: Op, inputs: &[NodeId]) -> NodeId {
    let name = g.unique_name(op.name());
    g.add(name, op, inputs).unwrap()
}

#[test]
fn unary_ops_match_finite_differences() {
    for u in UnaryOp::ALL {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[3, 5]);
        let y = node(&mut g, Op::Unary(u), &[x]);
        // Positive inputs keep log, sqrt and rsqrt defined; kinks are avoided by the offsets.
        let (lo, hi) = match u {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => (0.5, 2.0),
            _ => (-2.0, 2.0),
        };
        let at = values(&[3, 5], lo, hi, 7);
        // Skip exact kinks: no element within eps of 0 or 6 for relu-like ops.
        check(&mut g, &[y], &[(x, at)]);
    }
}

#[test]
fn binary_ops_with_broadcasting_match_finite_differences() {
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[3, 1]),
        (&[4], &[2, 3, 4]),
        (&[2, 1, 4], &[3, 1]),
    ];
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for (sa, sb) in shapes {
            let mut g = Graph::new();
            let a = input(&mut g, "a", sa);
            let b = input(&mut g, "b", sb);
            let y = node(&mut g, Op::Binary(op), &[a, b]);
            let at = [(a, values(sa, 0.5, 2.0, 1)), (b, values(sb, 0.5, 2.0, 2))];
            check(&mut g, &[y], &at);
        }
    }
}

#[test]
fn bias_add_in_both_layouts() {
    for format in [DataFormat::Nhwc, DataFormat::Nchw] {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[2, 3, 4, 5]);
        let c = if format == DataFormat::Nhwc { 5 } else { 3 };
        let b = input(&mut g, "b", &[c]);
        let y = node(
            &mut g,
            Op::BiasAdd {
                data_format: format,
            },
            &[x, b],
        );
        let sq = node(&mut g, Op::Unary(UnaryOp::Square), &[y]);
        let at = [
            (x, values(&[2, 3, 4, 5], -1.0, 1.0, 3)),
            (b, values(&[c], -1.0, 1.0, 4)),
        ];
        check(&mut g, &[sq], &at);
    }
}

#[test]
fn matmul_every_transpose_and_batched() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for batch in [None, Some(2)] {
            let (m, k, n) = (3, 4, 5);
            let mut sa = if ta { vec![k, m] } else { vec![m, k] };
            let mut sb = if tb { vec![n, k] } else { vec![k, n] };
            if let Some(bt) = batch {
                sa.insert(0, bt);
                sb.insert(0, bt);
            }
            let mut g = Graph::new();
            let a = input(&mut g, "a", &sa);
            let b = input(&mut g, "b", &sb);
            let op = Op::MatMul {
                transpose_a: ta,
                transpose_b: tb,
            };
            let y = node(&mut g, op, &[a, b]);
            let sq = node(&mut g, Op::Unary(UnaryOp::Square), &[y]);
            let at = [
                (a, values(&sa, -1.0, 1.0, 5)),
                (b, values(&sb, -1.0, 1.0, 6)),
            ];
            check(&mut g, &[sq], &at);
        }
    }
}

#[test]
fn reductions_softmax_and_log_softmax() {
    let dims = [2, 3, 4];
    let cases: Vec<Op> = vec![
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: None,
            keepdims: false,
        },
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: Some(vec![1]),
            keepdims: false,
        },
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: Some(vec![-1, 0]),
            keepdims: true,
        },
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: Some(vec![0]),
            keepdims: false,
        },
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: Some(vec![2]),
            keepdims: false,
        },
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: None,
            keepdims: true,
        },
        Op::Softmax { axis: -1 },
        Op::Softmax { axis: 1 },
        Op::LogSoftmax { axis: -1 },
        Op::LogSoftmax { axis: 0 },
    ];
    for op in cases {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &dims);
        let y = node(&mut g, op.clone(), &[x]);
        // A non-uniform weighting, so softmax's gradient is not zero.
        let w = g
            .add(
                "w",
                Op::Const(Source {
                    ty: g.node(y).ty.clone(),
                    init: Initializer::Uniform {
                        lo: Float(-1.0),
                        hi: Float(1.0),
                        seed: 9,
                    },
                }),
                &[],
            )
            .unwrap();
        let yw = node(&mut g, Op::Binary(BinaryOp::Mul), &[y, w]);
        check(&mut g, &[yw], &[(x, values(&dims, -1.0, 1.0, 8))]);
    }
}

#[test]
fn movement_ops() {
    let dims = [2, 3, 4];
    let cases: Vec<(Op, usize)> = vec![
        (Op::Reshape { shape: vec![4, -1] }, 1),
        (
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            1,
        ),
        (
            Op::Slice {
                begin: vec![1, 0, 1],
                size: vec![1, -1, 2],
            },
            1,
        ),
        (
            Op::Pad {
                paddings: vec![[1, 0], [0, 2], [1, 1]],
                constant_value: Float(3.0),
            },
            1,
        ),
        (Op::Concat { axis: 1 }, 2),
        (Op::Concat { axis: -1 }, 3),
    ];
    for (op, operands) in cases {
        let mut g = Graph::new();
        let xs: Vec<NodeId> = (0..operands)
            .map(|i| input(&mut g, &format!("x{i}"), &dims))
            .collect();
        let y = node(&mut g, op.clone(), &xs);
        let w = g
            .add(
                "w",
                Op::Const(Source {
                    ty: g.node(y).ty.clone(),
                    init: Initializer::Uniform {
                        lo: Float(-1.0),
                        hi: Float(1.0),
                        seed: 9,
                    },
                }),
                &[],
            )
            .unwrap();
        let yw = node(&mut g, Op::Binary(BinaryOp::Mul), &[y, w]);
        let at: Vec<(NodeId, Tensor)> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| (x, values(&dims, -1.0, 1.0, 20 + i as u64)))
            .collect();
        check(&mut g, &[yw], &at);
    }
}

#[test]
fn batch_norm_every_operand_both_layouts() {
    for format in [DataFormat::Nhwc, DataFormat::Nchw] {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[2, 3, 4, 5]);
        let c = if format == DataFormat::Nhwc { 5 } else { 3 };
        let params: Vec<NodeId> = ["scale", "offset", "mean", "variance"]
            .iter()
            .map(|n| input(&mut g, n, &[c]))
            .collect();
        let op = Op::BatchNorm {
            epsilon: Float(0.001),
            data_format: format,
        };
        let mut operands = vec![x];
        operands.extend(&params);
        let y = node(&mut g, op, &operands);
        let sq = node(&mut g, Op::Unary(UnaryOp::Square), &[y]);
        let mut at = vec![(x, values(&[2, 3, 4, 5], -1.0, 1.0, 30))];
        for (i, &p) in params.iter().enumerate() {
            let (lo, hi) = if i == 3 { (0.5, 1.5) } else { (-1.0, 1.0) };
            at.push((p, values(&[c], lo, hi, 31 + i as u64)));
        }
        check(&mut g, &[sq], &at);
    }
}

#[test]
fn lrn() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, 2, 2, 7]);
    let op = Op::Lrn {
        depth_radius: 2,
        bias: Float(1.0),
        alpha: Float(0.3),
        beta: Float(0.75),
    };
    let y = node(&mut g, op, &[x]);
    let sq = node(&mut g, Op::Unary(UnaryOp::Square), &[y]);
    check(&mut g, &[sq], &[(x, values(&[1, 2, 2, 7], -1.0, 1.0, 40))]);
}

#[test]
fn a_value_used_twice_adds_both_contributions() {
    // y = x * x + exp(x): two users of x, one of them twice.
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[4]);
    let xx = node(&mut g, Op::Binary(BinaryOp::Mul), &[x, x]);
    let e = node(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let y = node(&mut g, Op::Binary(BinaryOp::Add), &[xx, e]);
    let at = Tensor::from_vec(&[4], vec![0.5, -1.0, 2.0, 0.0]).unwrap();
    let grads = g.gradients(&[y], &[x]).unwrap();
    let got = eval(&g, &HashMap::from([(x, at.clone())]), &grads);
    let want: Vec<f32> = at
        .as_f32()
        .unwrap()
        .iter()
        .map(|v| 2.0 * v + v.exp())
        .collect();
    crate::compare::assert_close(
        &got[0],
        &Tensor::from_vec(&[4], want).unwrap(),
        crate::compare::Tolerance::KERNEL,
        "d(x*x + exp x)/dx",
    );
    check(&mut g, &[y], &[(x, at)]);
}

#[test]
fn unknown_batch_gets_shaped_gradients() {
    // loss = mean over a `?` batch of sum(relu-free) squares: needs the run-time count.
    let mut g = Graph::new();
    let x = g
        .add(
            "x",
            Op::Input(TensorType::f32(Shape::of(&[None, Some(3)]))),
            &[],
        )
        .unwrap();
    let w = input(&mut g, "w", &[3, 2]);
    let y = node(
        &mut g,
        Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        &[x, w],
    );
    let sq = node(&mut g, Op::Unary(UnaryOp::Square), &[y]);
    let loss = node(
        &mut g,
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: None,
            keepdims: false,
        },
        &[sq],
    );
    let grads = g.gradients(&[loss], &[w, x]).unwrap();
    assert_eq!(g.node(grads[0]).ty.shape, Shape::known(&[3, 2]));
    assert_eq!(g.node(grads[1]).ty.shape, Shape::of(&[None, Some(3)]));
    let at = [
        (x, values(&[5, 3], -1.0, 1.0, 50)),
        (w, values(&[3, 2], -1.0, 1.0, 51)),
    ];
    let mut fresh = g.clone();
    check(&mut fresh, &[loss], &at);
}

#[test]
fn argmax_on_the_path_is_an_error_naming_it_and_leaves_the_graph_unchanged() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 3]);
    let am = g
        .add(
            "pick",
            Op::ArgMax {
                axis: -1,
                output_type: DType::I64,
            },
            &[x],
        )
        .unwrap();
    let f = g.add("asf", Op::Cast { to: DType::F32 }, &[am]).unwrap();
    let y = node(
        &mut g,
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: None,
            keepdims: false,
        },
        &[f],
    );
    let before = g.len();
    let e = g.gradients(&[y], &[x]).unwrap_err().to_string();
    assert!(
        e.contains("%asf") && e.contains("cast from i64 to f32"),
        "{e}"
    );
    assert!(
        e.contains("from %x to %") && e.contains("stop_gradient"),
        "{e}"
    );
    assert_eq!(g.len(), before, "the graph is restored after an error");
}

#[test]
fn an_x_the_ys_do_not_depend_on() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2]);
    let unused = input(&mut g, "unused", &[3]);
    let y = node(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let e = g.gradients(&[y], &[x, unused]).unwrap_err().to_string();
    assert!(
        e.contains("%unused") && e.contains("does not depend on it"),
        "{e}"
    );
    let options = GradientOptions {
        unconnected: Unconnected::Zero,
    };
    let grads = g.gradients_with(&[y], &[x, unused], None, options).unwrap();
    let at = HashMap::from([
        (x, values(&[2], -1.0, 1.0, 1)),
        (unused, values(&[3], 0.0, 1.0, 2)),
    ]);
    let got = eval(&g, &at, &grads);
    assert_eq!(got[1].as_f32().unwrap(), &[0.0; 3]);
}

#[test]
fn bad_requests_are_errors() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2]);
    let i = g
        .add(
            "idx",
            Op::Input(TensorType::new(DType::I32, Shape::known(&[2]))),
            &[],
        )
        .unwrap();
    let e = g.gradients(&[i], &[x]).unwrap_err();
    assert!(
        matches!(e, Error::Op { ref node, .. } if node == "idx"),
        "{e}"
    );
    assert!(e.to_string().contains("must be f32"), "{e}");
    assert!(g.gradients(&[], &[x]).is_err());
    let y = node(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let gy = input(&mut g, "gy", &[3, 2]);
    let e = g
        .gradients_with(&[y], &[x], Some(&[gy]), GradientOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("grad_y %gy"), "{e}");
}

#[test]
fn grad_ys_weights_the_sum() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[3]);
    let y = node(&mut g, Op::Unary(UnaryOp::Square), &[x]);
    let gy = input(&mut g, "gy", &[3]);
    let grads = g
        .gradients_with(&[y], &[x], Some(&[gy]), GradientOptions::default())
        .unwrap();
    let at = HashMap::from([
        (x, Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]).unwrap()),
        (gy, Tensor::from_vec(&[3], vec![1.0, 0.0, -1.0]).unwrap()),
    ]);
    let got = eval(&g, &at, &grads);
    assert_eq!(got[0].as_f32().unwrap(), &[2.0, 0.0, -6.0]);
}

#[test]
fn convolutions_and_pools_in_every_variant() {
    let variants = [
        ConvAttrs::same(),
        ConvAttrs::valid().strides(2, 2),
        ConvAttrs::same().strides(2, 1),
        ConvAttrs::same().dilations(2, 2),
        ConvAttrs::with_padding(Padding::Explicit([[1, 0], [2, 1]])),
        ConvAttrs::same().format(DataFormat::Nchw),
    ];
    for (i, attrs) in variants.into_iter().enumerate() {
        for depthwise in [false, true] {
            let nchw = attrs.data_format == DataFormat::Nchw;
            let xd: &[usize] = if nchw { &[2, 4, 7, 6] } else { &[2, 7, 6, 4] };
            let wd: &[usize] = if depthwise {
                &[3, 2, 4, 2]
            } else {
                &[3, 2, 2, 6]
            };
            let mut g = Graph::new();
            let x = input(&mut g, "x", xd);
            let w = input(&mut g, "w", wd);
            let op = if depthwise {
                Op::DepthwiseConv2d(attrs)
            } else {
                Op::Conv2d(attrs)
            };
            // Non-depthwise filters have 2 input channels of x's 4: grouped (2 groups).
            let y = node(&mut g, op, &[x, w]);
            let sq = node(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
            let at = [
                (x, values(xd, -1.0, 1.0, 60 + i as u64)),
                (w, values(wd, -1.0, 1.0, 70)),
            ];
            check(&mut g, &[sq], &at);
        }
    }
    for (k, s, padding) in [
        (2, 2, Padding::Valid),
        (3, 2, Padding::Same),
        (3, 1, Padding::Same),
    ] {
        for max in [false, true] {
            let mut g = Graph::new();
            let x = input(&mut g, "x", &[1, 5, 6, 3]);
            let attrs = PoolAttrs::new(k, s, padding);
            let op = if max {
                Op::MaxPool(attrs)
            } else {
                Op::AvgPool(attrs)
            };
            let y = node(&mut g, op, &[x]);
            let sq = node(&mut g, Op::Unary(UnaryOp::Tanh), &[y]);
            // Distinct values keep max pool away from ties.
            let v: Vec<f32> = (0..90)
                .map(|i| ((i * 37) % 90) as f32 / 45.0 - 1.0)
                .collect();
            let at = Tensor::from_vec(&[1, 5, 6, 3], v).unwrap();
            check(&mut g, &[sq], &[(x, at)]);
        }
    }
}

#[test]
fn the_backward_convolutions_and_avg_pool_grad_have_gradients() {
    let attrs = ConvAttrs::same().strides(2, 2);
    let mut g = Graph::new();
    let w = input(&mut g, "w", &[3, 3, 2, 4]);
    let dy = input(&mut g, "dy", &[1, 3, 3, 4]);
    let bi = Op::Conv2dBackpropInput {
        input_shape: [1, 5, 5, 2],
        attrs,
    };
    let dx = node(&mut g, bi, &[w, dy]);
    let x = input(&mut g, "x", &[1, 5, 5, 2]);
    let bf = Op::Conv2dBackpropFilter {
        filter_shape: [3, 3, 2, 4],
        attrs,
    };
    let dw = node(&mut g, bf, &[x, dy]);
    let pool = PoolAttrs::new(3, 2, Padding::Same);
    let ap = Op::AvgPoolGrad {
        orig_input_shape: [1, 5, 5, 2],
        attrs: pool,
    };
    let pg = input(&mut g, "pg", &[1, 3, 3, 2]);
    let dp = node(&mut g, ap, &[pg]);
    let a = node(&mut g, Op::Unary(UnaryOp::Tanh), &[dx]);
    let b = node(&mut g, Op::Unary(UnaryOp::Tanh), &[dw]);
    let c = node(&mut g, Op::Unary(UnaryOp::Tanh), &[dp]);
    let at = [
        (w, values(&[3, 3, 2, 4], -1.0, 1.0, 80)),
        (dy, values(&[1, 3, 3, 4], -1.0, 1.0, 81)),
        (x, values(&[1, 5, 5, 2], -1.0, 1.0, 82)),
        (pg, values(&[1, 3, 3, 2], -1.0, 1.0, 83)),
    ];
    check(&mut g, &[a, b, c], &at);
}

/// A constant integer tensor node.
fn int_const(g: &mut Graph, name: &str, dims: &[usize], v: &[i64]) -> NodeId {
    let t = Tensor::new(dims, crate::tensor::Data::I64(v.to_vec())).unwrap();
    let op = Op::Const(Source {
        ty: t.ty(),
        init: Initializer::Literal(std::sync::Arc::new(t)),
    });
    g.add(name, op, &[]).unwrap()
}

/// `x * x` summed by `check`: makes the incoming gradient differ per element.
fn squared(g: &mut Graph, x: NodeId) -> NodeId {
    node(g, Op::Binary(BinaryOp::Mul), &[x, x])
}

#[test]
fn softmax_cross_entropy_both_operands() {
    let mut g = Graph::new();
    let logits = input(&mut g, "logits", &[3, 5]);
    let labels = input(&mut g, "labels", &[3, 5]);
    let loss = node(&mut g, Op::SoftmaxCrossEntropyWithLogits, &[logits, labels]);
    let y = squared(&mut g, loss);
    // Rows of labels are distributions: TensorFlow's logits gradient (which kiln follows)
    // is the derivative only then.
    let raw = values(&[3, 5], 0.1, 1.0, 61);
    let rows: Vec<f32> = raw
        .as_f32()
        .unwrap()
        .chunks(5)
        .flat_map(|r| {
            let s: f32 = r.iter().sum();
            r.iter().map(move |v| v / s)
        })
        .collect();
    let at = [
        (logits, values(&[3, 5], -3.0, 3.0, 60)),
        (labels, Tensor::from_vec(&[3, 5], rows).unwrap()),
    ];
    check(&mut g, &[y], &at);
}

#[test]
fn sparse_softmax_cross_entropy_logits_and_nan_rows() {
    let mut g = Graph::new();
    let logits = input(&mut g, "logits", &[4, 5]);
    let labels = int_const(&mut g, "labels", &[4], &[3, 0, 3, 4]);
    let loss = node(
        &mut g,
        Op::SparseSoftmaxCrossEntropyWithLogits,
        &[logits, labels],
    );
    let y = squared(&mut g, loss);
    check(&mut g, &[y], &[(logits, values(&[4, 5], -3.0, 3.0, 62))]);

    // A label out of range: that row's loss and gradient are NaN, the others are not.
    let mut g = Graph::new();
    let logits = input(&mut g, "logits", &[2, 3]);
    let labels = int_const(&mut g, "labels", &[2], &[1, 3]);
    let loss = node(
        &mut g,
        Op::SparseSoftmaxCrossEntropyWithLogits,
        &[logits, labels],
    );
    let d = g.gradients(&[loss], &[logits]).unwrap()[0];
    let feeds = HashMap::from([(logits, values(&[2, 3], -1.0, 1.0, 63))]);
    let got = eval(&g, &feeds, &[d]);
    let v = got[0].as_f32().unwrap();
    assert!(
        v[..3].iter().all(|x| x.is_finite()) && v[3..].iter().all(|x| x.is_nan()),
        "{v:?}"
    );
}

#[test]
fn gather_sends_gradients_back_and_repeated_indices_add() {
    for (axis, pdims, idims, idx) in [
        (
            0i64,
            [5usize, 3],
            &[2usize, 3][..],
            &[1i64, 4, 1, -1, 0, 1][..],
        ),
        (1, [2, 4], &[5][..], &[3, 3, 0, -4, 2][..]),
        (-1, [2, 4], &[][..], &[2][..]),
    ] {
        let mut g = Graph::new();
        let params = input(&mut g, "params", &pdims);
        let indices = int_const(&mut g, "indices", idims, idx);
        let gathered = node(&mut g, Op::Gather { axis }, &[params, indices]);
        let y = squared(&mut g, gathered);
        check(&mut g, &[y], &[(params, values(&pdims, -1.0, 1.0, 64))]);
    }
}

#[test]
fn gather_grad_differentiates_to_gather() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[3, 2]);
    let indices = int_const(&mut g, "indices", &[3], &[2, 0, 2]);
    let s = node(&mut g, Op::GatherGrad { axis: 0, size: 4 }, &[x, indices]);
    let y = squared(&mut g, s);
    check(&mut g, &[y], &[(x, values(&[3, 2], -1.0, 1.0, 65))]);
}

#[test]
fn gather_of_params_with_an_unknown_axis_size_is_an_error_naming_it() {
    let mut g = Graph::new();
    let params = g
        .add(
            "table",
            Op::Input(TensorType::f32(Shape::of(&[None, Some(3)]))),
            &[],
        )
        .unwrap();
    let indices = int_const(&mut g, "indices", &[2], &[0, 1]);
    let rows = g
        .add("rows", Op::Gather { axis: 0 }, &[params, indices])
        .unwrap();
    let before = g.len();
    let e = g.gradients(&[rows], &[params]).unwrap_err().to_string();
    assert!(
        e.contains("%rows") && e.contains("params' size along axis 0"),
        "{e}"
    );
    assert!(e.contains("f32[?,3]"), "{e}");
    assert_eq!(g.len(), before);
}

#[test]
fn fused_nodes_are_differentiated_through_their_unfolded_ops() {
    use crate::fused::{FusedExpr, FusedOp};
    // fused_conv2d(x, w, b; expr = relu(add(main, $2))) and elementwise(a, a; tanh(mul($0, $1))).
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, 5, 5, 2]);
    let w = input(&mut g, "w", &[3, 3, 2, 3]);
    let b = input(&mut g, "b", &[3]);
    let expr = FusedExpr::parse("tanh(add(main, $2))").unwrap();
    let f = FusedOp::new(Some(Op::Conv2d(ConvAttrs::same())), expr).unwrap();
    let y = node(&mut g, Op::Fused(f), &[x, w, b]);
    let sq = FusedOp::new(None, FusedExpr::parse("sigmoid(mul($0, $1))").unwrap()).unwrap();
    let z = node(&mut g, Op::Fused(sq), &[y, y]);
    let at = [
        (x, values(&[1, 5, 5, 2], -1.0, 1.0, 90)),
        (w, values(&[3, 3, 2, 3], -1.0, 1.0, 91)),
        (b, values(&[3], -1.0, 1.0, 92)),
    ];
    check(&mut g, &[z], &at);
}
