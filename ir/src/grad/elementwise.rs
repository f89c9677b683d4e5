//! Gradients of the elementwise ops: unary functions from their value or operand, binary
//! ops with broadcasting undone, bias_add, cast and broadcast_like. Formulas follow
//! TensorFlow's `math_grad.py` / `nn_grad.py` (e.g. sqrt's is `g * 0.5 / y`, written with the
//! forward value so the passes share it).

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::{BinaryOp, DataFormat, Op, UnaryOp};

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let operands = cx.graph.inputs(n);
    match op {
        Op::Unary(u) => Ok(vec![Some(unary(cx, *u, operands[0], n, g)?)]),
        Op::Binary(b) => binary(cx, *b, operands[0], operands[1], n, g, needs),
        Op::BiasAdd { data_format } => {
            let x = needs[0].then_some(g);
            let b = if needs[1] {
                let rank = cx.ty(n).rank();
                let channel = match data_format {
                    DataFormat::Nhwc => rank - 1,
                    DataFormat::Nchw => 1,
                };
                let axes = (0..rank).filter(|&a| a != channel).map(|a| a as i64);
                Some(cx.reduce_sum(g, axes.collect(), false)?)
            } else {
                None
            };
            Ok(vec![x, b])
        }
        Op::Cast { to } => {
            let from = cx.ty(operands[0]).dtype;
            if from.is_float() && to.is_float() {
                Ok(vec![Some(g)])
            } else {
                Err(no_gradient(format!("a cast from {from} to {to} is not differentiable")))
            }
        }
        // Only like's shape is used, so like gets nothing.
        Op::BroadcastLike => Ok(vec![Some(cx.sum_to(g, operands[0])?), None]),
        other => Err(no_gradient(format!(
            "{} is not differentiable",
            other.name()
        ))),
    }
}

/// The gradient of `y = u(x)` given `g`.
fn unary(cx: &mut Ctx<'_>, u: UnaryOp, x: NodeId, y: NodeId, g: NodeId) -> super::Result<NodeId> {
    use UnaryOp as U;
    match u {
        U::Neg => cx.unary(U::Neg, g),
        // g * y * (1 - y)
        U::Sigmoid => {
            let one = cx.scalar(1.0)?;
            let d = cx.binary(BinaryOp::Sub, one, y)?;
            let d = cx.mul(y, d)?;
            cx.mul(g, d)
        }
        // g * (1 - y^2)
        U::Tanh => {
            let one = cx.scalar(1.0)?;
            let y2 = cx.unary(U::Square, y)?;
            let d = cx.binary(BinaryOp::Sub, one, y2)?;
            cx.mul(g, d)
        }
        U::Exp => cx.mul(g, y),
        U::Log => cx.binary(BinaryOp::Div, g, x),
        // g * 0.5 / y
        U::Sqrt => {
            let h = cx.scale(g, 0.5)?;
            cx.binary(BinaryOp::Div, h, y)
        }
        // g * -0.5 * y^3
        U::Rsqrt => {
            let y2 = cx.unary(U::Square, y)?;
            let y3 = cx.mul(y2, y)?;
            let h = cx.scale(g, -0.5)?;
            cx.mul(h, y3)
        }
        // g * 2x
        U::Square => {
            let x2 = cx.scale(x, 2.0)?;
            cx.mul(g, x2)
        }
        U::Abs | U::Relu | U::Relu6 | U::LeakyRelu { .. } => Err(crate::Error::Invalid(format!(
            "gradients: {} needs sign",
            u.name()
        ))),
    }
}

/// The gradients of `y = op(a, b)` (with broadcasting) given `g`.
fn binary(
    cx: &mut Ctx<'_>,
    op: BinaryOp,
    a: NodeId,
    b: NodeId,
    y: NodeId,
    g: NodeId,
    needs: &[bool],
) -> Grads {
    use BinaryOp as B;
    // Each operand's gradient before broadcasting is undone (`None` when not needed).
    let (ga, gb) = match op {
        B::Add => (needs[0].then_some(g), needs[1].then_some(g)),
        B::Sub => {
            let gb = if needs[1] {
                Some(cx.unary(UnaryOp::Neg, g)?)
            } else {
                None
            };
            (needs[0].then_some(g), gb)
        }
        B::Mul => {
            let ga = if needs[0] { Some(cx.mul(g, b)?) } else { None };
            let gb = if needs[1] { Some(cx.mul(g, a)?) } else { None };
            (ga, gb)
        }
        // a / b: g / b and -g * a / b / b (TensorFlow's order of operations).
        B::Div => {
            let ga = if needs[0] {
                Some(cx.binary(B::Div, g, b)?)
            } else {
                None
            };
            let gb = if needs[1] {
                let na = cx.unary(UnaryOp::Neg, a)?;
                let q = cx.binary(B::Div, na, b)?;
                let q = cx.binary(B::Div, q, b)?;
                Some(cx.mul(g, q)?)
            } else {
                None
            };
            (ga, gb)
        }
        B::Maximum | B::Minimum | B::Pow => {
            let _ = y;
            return Err(no_gradient(format!("{} needs select", op.name())));
        }
    };
    let ga = match ga {
        Some(ga) => Some(cx.sum_to(ga, a)?),
        None => None,
    };
    let gb = match gb {
        Some(gb) => Some(cx.sum_to(gb, b)?),
        None => None,
    };
    Ok(vec![ga, gb])
}
