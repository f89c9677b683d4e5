//! Gradients of reductions, softmax and log_softmax. A sum's gradient is `g` broadcast back
//! over the reduced axes, a mean's that divided by the count; max and min send `g` to the
//! elements equal to the result, shared equally among ties (TensorFlow's `_MinOrMaxGrad`).
//! argmax has none.
//!
//! The softmax cross entropies (`loss = lse - sum(labels * logits)` per row, labels summing to
//! anything): `dlogits = g * (softmax(logits) - labels)` and, as TensorFlow 2 differentiates
//! the labels too, `dlabels = g * -log_softmax(logits)`, `g` broadcast along the class axis.
//! The sparse form uses `one_hot(labels)` for the labels and has no gradient for the integer
//! labels; its rows with a label out of range are NaN, as its loss is.

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::{BinaryOp, CompareOp, Float, Op, ReduceOp, UnaryOp};
use crate::shape::Dim;
use crate::{DType, Error, Result};

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let x = cx.graph.inputs(n)[0];
    let rank = cx.ty(x).rank();
    match op {
        Op::Reduce { op, axes, keepdims } => {
            let axes = normalize_axes(axes.as_deref(), rank);
            let dx = match op {
                ReduceOp::Sum => {
                    let gk = keep_dims(cx, g, x, &axes, *keepdims)?;
                    cx.broadcast_like(gk, x)?
                }
                ReduceOp::Mean => {
                    let gk = keep_dims(cx, g, x, &axes, *keepdims)?;
                    let q = divide_by_count(cx, gk, x, &axes)?;
                    cx.broadcast_like(q, x)?
                }
                // g shared equally among the elements equal to the result.
                ReduceOp::Max | ReduceOp::Min => {
                    let yk = keep_dims(cx, n, x, &axes, *keepdims)?;
                    let gk = keep_dims(cx, g, x, &axes, *keepdims)?;
                    let eq = cx.add("equal", Op::Compare(CompareOp::Equal), &[x, yk])?;
                    let ind = cx.add("cast", Op::Cast { to: DType::F32 }, &[eq])?;
                    let list = axes.iter().map(|&a| a as i64).collect();
                    let count = cx.reduce_sum(ind, list, true)?;
                    let share = cx.binary(BinaryOp::Div, gk, count)?;
                    cx.mul(ind, share)?
                }
            };
            Ok(vec![Some(dx)])
        }
        // (g - sum(g * y)) * y along the axis.
        Op::Softmax { axis } => {
            let gy = cx.mul(g, n)?;
            let s = cx.reduce_sum(gy, vec![*axis], true)?;
            let d = cx.binary(BinaryOp::Sub, g, s)?;
            Ok(vec![Some(cx.mul(d, n)?)])
        }
        // g - exp(y) * sum(g) along the axis.
        Op::LogSoftmax { axis } => {
            let s = cx.reduce_sum(g, vec![*axis], true)?;
            let e = cx.unary(UnaryOp::Exp, n)?;
            let es = cx.mul(e, s)?;
            Ok(vec![Some(cx.binary(BinaryOp::Sub, g, es)?)])
        }
        Op::ArgMax { .. } => Err(no_gradient("argmax's result is an index")),
        Op::SoftmaxCrossEntropyWithLogits => {
            let labels = cx.graph.inputs(n)[1];
            let gk = with_class_axis(cx, g, n)?;
            let mut out = vec![None, None];
            if needs[0] {
                let p = cx.add("softmax", Op::Softmax { axis: -1 }, &[x])?;
                let d = cx.binary(BinaryOp::Sub, p, labels)?;
                out[0] = Some(cx.mul(gk, d)?);
            }
            if needs[1] {
                let l = cx.add("log_softmax", Op::LogSoftmax { axis: -1 }, &[x])?;
                let nl = cx.unary(UnaryOp::Neg, l)?;
                out[1] = Some(cx.mul(gk, nl)?);
            }
            Ok(out)
        }
        Op::SparseSoftmaxCrossEntropyWithLogits => {
            if needs[1] {
                return Err(no_gradient("the labels are integer class indices"));
            }
            let labels = cx.graph.inputs(n)[1];
            let Some(depth) = cx.ty(x).shape.dims().last().copied().flatten() else {
                return Err(unknown_classes(cx, n).into());
            };
            let gk = with_class_axis(cx, g, n)?;
            let one_hot = Op::OneHot {
                depth,
                on_value: Float(1.0),
                off_value: Float(0.0),
                axis: -1,
            };
            let target = cx.add("one_hot", one_hot, &[labels])?;
            let p = cx.add("softmax", Op::Softmax { axis: -1 }, &[x])?;
            let d = cx.binary(BinaryOp::Sub, p, target)?;
            // 0 * loss is 0, or NaN where the label is out of range: those rows become NaN.
            let loss = with_class_axis(cx, n, n)?;
            let guard = cx.scale(loss, 0.0)?;
            let d = cx.binary(BinaryOp::Add, d, guard)?;
            Ok(vec![Some(cx.mul(gk, d)?), None])
        }
        other => Err(no_gradient(format!(
            "{} is not differentiable",
            other.name()
        ))),
    }
}

/// `v` (shaped like cross entropy `n`'s rows) with a trailing axis of 1, to broadcast along
/// the classes.
fn with_class_axis(cx: &mut Ctx<'_>, v: NodeId, n: NodeId) -> Result<NodeId> {
    let mut dims: Vec<Dim> = cx.ty(n).shape.dims().to_vec();
    dims.push(Some(1));
    let shape = cx.reshape_dims(&dims, n)?;
    cx.add("reshape", Op::Reshape { shape }, &[v])
}

/// The error for a sparse cross entropy whose class count is `?`.
fn unknown_classes(cx: &Ctx<'_>, n: NodeId) -> Error {
    let node = cx.graph.node(n);
    let logits = cx.graph.inputs(n)[0];
    Error::Op {
        node: node.name.clone(),
        op: node.op.name(),
        message: format!(
            "gradients: the gradient needs the class count of logits {}, which is `?` (fix              the placeholders' shapes first)",
            cx.ty(logits)
        ),
    }
}

/// The reduced axes in `0..rank`, sorted and distinct (`None`: every axis).
pub(super) fn normalize_axes(axes: Option<&[i64]>, rank: usize) -> Vec<usize> {
    let mut list: Vec<usize> = match axes {
        Some(axes) => axes
            .iter()
            .map(|&a| if a < 0 { a + rank as i64 } else { a } as usize)
            .collect(),
        None => (0..rank).collect(),
    };
    list.sort_unstable();
    list.dedup();
    list
}

/// `g` (the gradient of a reduction of `x` over `axes`) with the reduced axes present as 1,
/// so that it broadcasts against x. Nothing to do when the reduction kept them, or when the
/// reduced axes lead (numpy broadcasting restores leading axes).
pub(super) fn keep_dims(
    cx: &mut Ctx<'_>,
    g: NodeId,
    x: NodeId,
    axes: &[usize],
    keepdims: bool,
) -> Result<NodeId> {
    if keepdims || axes.iter().enumerate().all(|(i, &a)| i == a) {
        return Ok(g);
    }
    let tx = cx.ty(x);
    let dims: Vec<Dim> = (0..tx.rank())
        .map(|i| {
            if axes.contains(&i) {
                Some(1)
            } else {
                tx.shape.dim(i)
            }
        })
        .collect();
    let shape = cx.reshape_dims(&dims, x)?;
    cx.add("reshape", Op::Reshape { shape }, &[g])
}

/// `v / count`, where count is the number of elements of `x` reduced into each result: a
/// constant when those dims are known, else counted at run time.
pub(super) fn divide_by_count(
    cx: &mut Ctx<'_>,
    v: NodeId,
    x: NodeId,
    axes: &[usize],
) -> Result<NodeId> {
    let tx = cx.ty(x);
    let known: Option<usize> = axes.iter().map(|&a| tx.shape.dim(a)).product();
    let count = match known {
        Some(c) => cx.scalar(c as f32)?,
        None => {
            let ones = cx.ones_like(x)?;
            let axes = axes.iter().map(|&a| a as i64).collect();
            cx.reduce_sum(ones, axes, true)?
        }
    };
    cx.binary(BinaryOp::Div, v, count)
}
