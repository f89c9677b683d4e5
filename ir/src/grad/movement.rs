//! Gradients of the movement ops: each moves `g` back to where its elements came from.
//! reshape reshapes back, transpose applies the inverse permutation, concat slices `g` into
//! its operands' parts, slice pads `g` with zeros to the input's shape and pad slices the
//! padding off. gather's params gradient is a scatter-add of `g` (`gather_grad`, repeated
//! indices add), which needs params' size along the axis statically; gather_grad's gradient
//! is gather again. Indices (of both, and of one_hot) have none.

use super::{Ctx, Grads, no_gradient};
use crate::Error;
use crate::graph::NodeId;
use crate::op::{Float, Op};

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let operands = cx.graph.inputs(n);
    let x = operands[0];
    let tx = cx.ty(x);
    let unknown = |what: &str| {
        let node = cx.graph.node(n);
        Error::Op {
            node: node.name.clone(),
            op: node.op.name(),
            message: format!(
                "gradients: the gradient needs {what} of {}, which is `?` (fix the \
                 placeholders' shapes first)",
                tx
            ),
        }
    };
    match op {
        Op::Reshape { .. } => Ok(vec![Some(cx.reshape_like(g, x)?)]),
        Op::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            let t = cx.add("transpose", Op::Transpose { perm: inverse }, &[g])?;
            Ok(vec![Some(t)])
        }
        Op::Concat { axis } => {
            let rank = cx.ty(n).rank();
            let axis = if *axis < 0 {
                *axis + rank as i64
            } else {
                *axis
            } as usize;
            let mut offset = 0;
            let mut out = Vec::with_capacity(operands.len());
            for (&o, &need) in operands.iter().zip(needs) {
                let Some(d) = cx.ty(o).shape.dim(axis) else {
                    let node = cx.graph.node(o);
                    return Err(Error::Op {
                        node: node.name.clone(),
                        op: node.op.name(),
                        message: format!(
                            "gradients: concat %{} needs this operand's size along axis \
                             {axis}, which is `?` in {}",
                            cx.graph.node(n).name,
                            node.ty
                        ),
                    }
                    .into());
                };
                if need {
                    let mut begin = vec![0; rank];
                    begin[axis] = offset;
                    let mut size = vec![-1; rank];
                    size[axis] = d as i64;
                    out.push(Some(cx.add("slice", Op::Slice { begin, size }, &[g])?));
                } else {
                    out.push(None);
                }
                offset += d;
            }
            Ok(out)
        }
        Op::Slice { begin, .. } => {
            let out = cx.ty(n);
            let mut paddings = Vec::with_capacity(begin.len());
            for (i, &b) in begin.iter().enumerate() {
                let after = match (tx.shape.dim(i), out.shape.dim(i)) {
                    (Some(d), Some(o)) => d - b - o,
                    // Unknown sizes: only a whole axis (begin 0, to the end) needs no padding.
                    _ if b == 0 && tx.shape.dim(i) == out.shape.dim(i) => 0,
                    _ => return Err(unknown(&format!("the size along axis {i}")).into()),
                };
                paddings.push([b, after]);
            }
            let op = Op::Pad {
                paddings,
                constant_value: Float(0.0),
            };
            Ok(vec![Some(cx.add("pad", op, &[g])?)])
        }
        Op::Pad { paddings, .. } => {
            let begin: Vec<usize> = paddings.iter().map(|p| p[0]).collect();
            let mut size = Vec::with_capacity(paddings.len());
            for (i, p) in paddings.iter().enumerate() {
                size.push(match tx.shape.dim(i) {
                    Some(d) => d as i64,
                    None if p[1] == 0 => -1,
                    None => return Err(unknown(&format!("the size along axis {i}")).into()),
                });
            }
            Ok(vec![Some(cx.add(
                "slice",
                Op::Slice { begin, size },
                &[g],
            )?)])
        }
        Op::Gather { axis } => {
            if needs[1] {
                return Err(no_gradient("gather's indices are integers"));
            }
            let a = if *axis < 0 {
                *axis + tx.rank() as i64
            } else {
                *axis
            };
            let Some(size) = tx.shape.dim(a as usize) else {
                return Err(unknown(&format!("params' size along axis {a}")).into());
            };
            let op = Op::GatherGrad { axis: a, size };
            Ok(vec![
                Some(cx.add("gather_grad", op, &[g, operands[1]])?),
                None,
            ])
        }
        Op::GatherGrad { axis, .. } => {
            if needs[1] {
                return Err(no_gradient("gather_grad's indices are integers"));
            }
            let op = Op::Gather { axis: *axis };
            Ok(vec![Some(cx.add("gather", op, &[g, operands[1]])?), None])
        }
        Op::OneHot { .. } => Err(no_gradient("one_hot's indices are integers")),
        other => Err(no_gradient(format!(
            "{} is not differentiable",
            other.name()
        ))),
    }
}
