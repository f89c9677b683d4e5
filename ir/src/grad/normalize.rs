//! Gradients of batch_norm (the inference form: mean and variance are operands) and lrn.
//!
//! batch_norm: `y = (x - mean) * scale * r + offset` with `r = rsqrt(variance + epsilon)`,
//! so along the channel axis `dx = g * scale * r`, `doffset = Σg`, `dscale = Σg(x - mean) * r`,
//! `dmean = -Σg * scale * r` and `dvariance = Σg(x - mean) * scale * -r³/2` (Σ over every
//! axis but channels).
//!
//! lrn: `y = x * d^-β` with `d = bias + α W(x²)`, W the window sum over channels (radius r,
//! clipped at the edges; W is its own adjoint), so `dx = g d^-β - 2αβ x W(g x d^(-β-1))`.
//! W is built from a zero pad and 2r + 1 shifted slices.

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::{BinaryOp, DataFormat, Float, Op, UnaryOp};
use crate::{Error, Result};

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let operands = cx.graph.inputs(n);
    match op {
        Op::BatchNorm {
            epsilon,
            data_format,
        } => batch_norm(cx, &operands, epsilon.0, *data_format, g, needs),
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => {
            let dx = lrn(cx, n, operands[0], *depth_radius, bias.0, alpha.0, beta.0, g)?;
            Ok(vec![Some(dx)])
        }
        other => Err(no_gradient(format!("{} is not differentiable", other.name()))),
    }
}

fn batch_norm(
    cx: &mut Ctx<'_>,
    operands: &[NodeId],
    epsilon: f32,
    format: DataFormat,
    g: NodeId,
    needs: &[bool],
) -> Grads {
    let [x, scale, _offset, mean, variance] = operands[..] else {
        return Err(no_gradient("batch_norm takes five operands"));
    };
    let rank = cx.ty(x).rank();
    let channel = match format {
        DataFormat::Nhwc => rank - 1,
        DataFormat::Nchw => 1,
    };
    let others: Vec<i64> = (0..rank).filter(|&a| a != channel).map(|a| a as i64).collect();
    let eps = cx.scalar(epsilon)?;
    let ve = cx.binary(BinaryOp::Add, variance, eps)?;
    let r = cx.unary(UnaryOp::Rsqrt, ve)?;
    let scale_r = cx.mul(scale, r)?;
    let mut out = vec![None; 5];
    if needs[0] {
        let s = per_channel(cx, scale_r, format, rank)?;
        out[0] = Some(cx.mul(g, s)?);
    }
    let sum_g = if needs[2] || needs[3] {
        Some(cx.reduce_sum(g, others.clone(), false)?)
    } else {
        None
    };
    if needs[2] {
        out[2] = sum_g;
    }
    if needs[3]
        && let Some(s) = sum_g
    {
        let t = cx.mul(s, scale_r)?;
        out[3] = Some(cx.unary(UnaryOp::Neg, t)?);
    }
    if needs[1] || needs[4] {
        let m = per_channel(cx, mean, format, rank)?;
        let centred = cx.binary(BinaryOp::Sub, x, m)?;
        let gc = cx.mul(g, centred)?;
        let sum_gc = cx.reduce_sum(gc, others, false)?;
        if needs[1] {
            out[1] = Some(cx.mul(sum_gc, r)?);
        }
        if needs[4] {
            let r2 = cx.unary(UnaryOp::Square, r)?;
            let r3 = cx.mul(r2, r)?;
            let k = cx.mul(scale, r3)?;
            let k = cx.scale(k, -0.5)?;
            out[4] = Some(cx.mul(sum_gc, k)?);
        }
    }
    Ok(out)
}

/// A per-channel vector `[C]` shaped to broadcast along the channel axis of a rank-`rank` x.
fn per_channel(cx: &mut Ctx<'_>, v: NodeId, format: DataFormat, rank: usize) -> Result<NodeId> {
    match format {
        DataFormat::Nhwc => Ok(v),
        DataFormat::Nchw => {
            let c = cx.ty(v).shape.dim(0);
            let mut dims = vec![c];
            dims.extend(std::iter::repeat_n(Some(1), rank - 2));
            let shape = cx.reshape_dims(&dims, v)?;
            cx.add("reshape", Op::Reshape { shape }, &[v])
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn lrn(
    cx: &mut Ctx<'_>,
    n: NodeId,
    x: NodeId,
    radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
    g: NodeId,
) -> Result<NodeId> {
    let x2 = cx.unary(UnaryOp::Square, x)?;
    let w = window_sum(cx, n, x2, radius)?;
    let aw = cx.scale(w, alpha)?;
    let b = cx.scalar(bias)?;
    let d = cx.binary(BinaryOp::Add, b, aw)?;
    let nb = cx.scalar(-beta)?;
    let d_nb = cx.binary(BinaryOp::Pow, d, nb)?;
    let direct = cx.mul(g, d_nb)?;
    let d_nb1 = cx.binary(BinaryOp::Div, d_nb, d)?;
    let gx = cx.mul(g, x)?;
    let t = cx.mul(gx, d_nb1)?;
    let wt = window_sum(cx, n, t, radius)?;
    let xw = cx.mul(x, wt)?;
    let back = cx.scale(xw, -2.0 * alpha * beta)?;
    cx.binary(BinaryOp::Add, direct, back)
}

/// `W(t)`: for every channel c, the sum of `t` over channels `c - r ..= c + r` (clipped).
fn window_sum(cx: &mut Ctx<'_>, n: NodeId, t: NodeId, radius: usize) -> Result<NodeId> {
    let tt = cx.ty(t);
    let rank = tt.rank();
    let Some(c) = tt.shape.dim(rank - 1) else {
        let node = cx.graph.node(n);
        return Err(Error::Op {
            node: node.name.clone(),
            op: node.op.name(),
            message: format!(
                "gradients: lrn's gradient needs the channel count, which is `?` in {tt}"
            ),
        });
    };
    let mut paddings = vec![[0, 0]; rank];
    paddings[rank - 1] = [radius, radius];
    let padded = cx.add(
        "pad",
        Op::Pad {
            paddings,
            constant_value: Float(0.0),
        },
        &[t],
    )?;
    let mut acc: Option<NodeId> = None;
    for k in 0..=2 * radius {
        let mut begin = vec![0; rank];
        begin[rank - 1] = k;
        let mut size = vec![-1; rank];
        size[rank - 1] = c as i64;
        let s = cx.add("slice", Op::Slice { begin, size }, &[padded])?;
        acc = Some(match acc {
            Some(a) => cx.binary(BinaryOp::Add, a, s)?,
            None => s,
        });
    }
    // The loop runs 2r + 1 >= 1 times.
    acc.ok_or_else(|| Error::Invalid("lrn window of no channels".into()))
}
