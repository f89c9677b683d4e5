//! Gradients of the elementwise ops: unary functions from their value or operand, binary
//! ops with broadcasting undone, bias_add, cast and broadcast_like. Formulas follow
//! TensorFlow's `math_grad.py` / `nn_grad.py` (e.g. sqrt's is `g * 0.5 / y`, written with the
//! forward value so the passes share it).

use super::{Ctx, Grads, no_gradient};
use crate::Result;
use crate::graph::NodeId;
use crate::op::{BinaryOp, CompareOp, DataFormat, Op, UnaryOp};

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
                Err(no_gradient(format!(
                    "a cast from {from} to {to} is not differentiable"
                )))
            }
        }
        // Only like's shape is used, so like gets nothing.
        Op::BroadcastLike => Ok(vec![Some(cx.sum_to(g, operands[0])?), None]),
        // select(cond, a, b): g goes to a where cond holds, to b elsewhere; cond is a bool.
        Op::Select => {
            let (cond, a, b) = (operands[0], operands[1], operands[2]);
            let zero = cx.scalar(0.0)?;
            let ga = if needs[1] {
                let s = cx.add("select", Op::Select, &[cond, g, zero])?;
                Some(cx.sum_to(s, a)?)
            } else {
                None
            };
            let gb = if needs[2] {
                let s = cx.add("select", Op::Select, &[cond, zero, g])?;
                Some(cx.sum_to(s, b)?)
            } else {
                None
            };
            Ok(vec![None, ga, gb])
        }
        // Bool values and stop_gradient cut every path (see `cuts`), so no rule runs for them.
        Op::Compare(_) | Op::Logical(_) | Op::LogicalNot | Op::StopGradient => {
            Ok(vec![None; operands.len()])
        }
        other => Err(no_gradient(format!(
            "{} is not differentiable",
            other.name()
        ))),
    }
}

/// The gradient of `y = u(x)` given `g`.
fn unary(cx: &mut Ctx<'_>, u: UnaryOp, x: NodeId, y: NodeId, g: NodeId) -> Result<NodeId> {
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
        // g * sign(x)
        U::Abs => {
            let s = cx.unary(U::Sign, x)?;
            cx.mul(g, s)
        }
        // g where y > 0: sign(y) is 1 there and 0 elsewhere (y >= 0), and it fuses.
        U::Relu => {
            let s = cx.unary(U::Sign, y)?;
            cx.mul(g, s)
        }
        // g where 0 < y < 6: sign(y) * sign(6 - y).
        U::Relu6 => {
            let six = cx.scalar(6.0)?;
            let below = cx.binary(BinaryOp::Sub, six, y)?;
            let s1 = cx.unary(U::Sign, y)?;
            let s2 = cx.unary(U::Sign, below)?;
            let s = cx.mul(s1, s2)?;
            cx.mul(g, s)
        }
        // select(x > 0, g, alpha * g), as TensorFlow's LeakyReluGrad.
        U::LeakyRelu { alpha } => {
            let zero = cx.scalar(0.0)?;
            let positive = cx.add("greater", Op::Compare(CompareOp::Greater), &[x, zero])?;
            let scaled = cx.scale(g, alpha.0)?;
            cx.add("select", Op::Select, &[positive, g, scaled])
        }
        // sign is piecewise constant: zeros, as TensorFlow gives.
        U::Sign => cx.zeros_like(x),
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
        // g goes to a where a >= b (a <= b for minimum), to b elsewhere: ties go to a, as in
        // TensorFlow's _MaximumMinimumGrad.
        B::Maximum | B::Minimum => {
            let cmp = if op == B::Maximum {
                CompareOp::GreaterEqual
            } else {
                CompareOp::LessEqual
            };
            let mask = cx.add(cmp.name(), Op::Compare(cmp), &[a, b])?;
            let zero = cx.scalar(0.0)?;
            let ga = if needs[0] {
                Some(cx.add("select", Op::Select, &[mask, g, zero])?)
            } else {
                None
            };
            let gb = if needs[1] {
                Some(cx.add("select", Op::Select, &[mask, zero, g])?)
            } else {
                None
            };
            (ga, gb)
        }
        // a^b: g b a^(b-1), and g y log(a) where a > 0 (0 elsewhere), as TensorFlow's _PowGrad.
        B::Pow => {
            let ga = if needs[0] {
                let one = cx.scalar(1.0)?;
                let bm1 = cx.binary(B::Sub, b, one)?;
                let p = cx.binary(B::Pow, a, bm1)?;
                let d = cx.mul(b, p)?;
                Some(cx.mul(g, d)?)
            } else {
                None
            };
            let gb = if needs[1] {
                let zero = cx.scalar(0.0)?;
                let positive = cx.add("greater", Op::Compare(CompareOp::Greater), &[a, zero])?;
                let log = cx.unary(UnaryOp::Log, a)?;
                let safe = cx.add("select", Op::Select, &[positive, log, zero])?;
                let d = cx.mul(y, safe)?;
                Some(cx.mul(g, d)?)
            } else {
                None
            };
            (ga, gb)
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
