//! Epilogue [`Expr`]s: a fused node's expression, or the one step of a lone elementwise node.
//!
//! Expression nodes come in evaluation order, so every step refers to `Main`, a load or an
//! earlier step, and building them needs no recursion (a chain of thousands of ops costs no
//! stack). Every operand read is a buffer broadcast to the kernel's output dims, resolved here
//! into per-axis strides over the output index space: numpy rules for binary ops (stride 0 on
//! size-1 and missing axes), the channel axis alone for bias_add's bias.

use crate::fused::{ExprNode, FusedExpr};
use crate::op::{BinaryOp, DataFormat, Op};
use crate::program::{BufferId, Expr, Load, Operand, Step};
use crate::shape::fmt_dims;

/// Loads deduplicated by (buffer, strides).
fn load(expr: &mut Expr, buffer: BufferId, strides: Vec<usize>) -> Operand {
    let l = Load { buffer, strides };
    let i = match expr.loads.iter().position(|x| *x == l) {
        Some(i) => i,
        None => {
            expr.loads.push(l);
            expr.loads.len() - 1
        }
    };
    Operand::Load(i)
}

/// The epilogue of a fused node: operand `i` of the expression is `buffers[i]` with dims
/// `dims[i]`, broadcast to `out`.
pub(super) fn fused(
    f: &FusedExpr,
    buffers: &[BufferId],
    dims: &[&[usize]],
    out: &[usize],
) -> Result<Expr, String> {
    let mut expr = Expr::identity();
    let mut value: Vec<Operand> = Vec::with_capacity(f.nodes().len());
    for node in f.nodes() {
        let v = match *node {
            ExprNode::Main => Operand::Main,
            ExprNode::Operand(i) => {
                let (&b, d) = buffers
                    .get(i)
                    .zip(dims.get(i))
                    .ok_or_else(|| format!("the expression reads ${i}, which does not exist"))?;
                let strides = broadcast_strides(d, out)?;
                load(&mut expr, b, strides)
            }
            ExprNode::Unary(u, x) => {
                expr.steps.push(Step::Unary(u, value[x]));
                Operand::Step(expr.steps.len() - 1)
            }
            ExprNode::Binary(b, x, y) => {
                expr.steps.push(Step::Binary(b, value[x], value[y]));
                Operand::Step(expr.steps.len() - 1)
            }
        };
        value.push(v);
    }
    expr.result = value[f.result()];
    Ok(expr)
}

/// The epilogue of a lone unary, binary or bias_add node (an `Elementwise` kernel).
pub(super) fn single(
    op: &Op,
    buffers: &[BufferId],
    dims: &[&[usize]],
    out: &[usize],
) -> Result<Expr, String> {
    let mut expr = Expr::identity();
    let mut operand = |i: usize, channel: Option<DataFormat>| -> Result<Operand, String> {
        let (&b, d) = buffers
            .get(i)
            .zip(dims.get(i))
            .ok_or_else(|| format!("operand {i} is missing"))?;
        let strides = match channel {
            Some(format) => channel_strides(d, out, format)?,
            None => broadcast_strides(d, out)?,
        };
        Ok(load(&mut expr, b, strides))
    };
    let step = match op {
        Op::Unary(u) => Step::Unary(*u, operand(0, None)?),
        Op::Binary(b) => Step::Binary(*b, operand(0, None)?, operand(1, None)?),
        Op::BiasAdd { data_format } => Step::Binary(
            BinaryOp::Add,
            operand(0, None)?,
            operand(1, Some(*data_format))?,
        ),
        other => return Err(format!("{} is not an elementwise op", other.name())),
    };
    expr.steps.push(step);
    expr.result = Operand::Step(0);
    Ok(expr)
}

/// The epilogue of `broadcast_like`: a load of `buffer` (dims `dims`) broadcast to `out`.
pub(super) fn broadcast(buffer: BufferId, dims: &[usize], out: &[usize]) -> Result<Expr, String> {
    let mut expr = Expr::identity();
    expr.result = load(&mut expr, buffer, broadcast_strides(dims, out)?);
    Ok(expr)
}

/// Strides reading a value of dims `dims` broadcast (numpy rules) to `out`: the row-major
/// stride on real axes, 0 on size-1 and missing leading axes.
pub(super) fn broadcast_strides(dims: &[usize], out: &[usize]) -> Result<Vec<usize>, String> {
    let bad = || {
        format!(
            "operand {} does not broadcast to {}",
            fmt_dims(dims),
            fmt_dims(out)
        )
    };
    let offset = out.len().checked_sub(dims.len()).ok_or_else(bad)?;
    let mut strides = vec![0; out.len()];
    let mut stride = 1usize;
    for j in (0..dims.len()).rev() {
        let (d, o) = (dims[j], out[j + offset]);
        if d != 1 {
            if d != o {
                return Err(bad());
            }
            strides[j + offset] = stride;
        }
        stride = stride.saturating_mul(d);
    }
    Ok(strides)
}

/// Strides reading bias `dims` (which must be `[c]`) along the channel axis of `out`.
fn channel_strides(
    dims: &[usize],
    out: &[usize],
    format: DataFormat,
) -> Result<Vec<usize>, String> {
    let axis = match format {
        DataFormat::Nhwc => out.len().checked_sub(1),
        DataFormat::Nchw => (out.len() >= 2).then_some(1),
    };
    match axis {
        Some(a) if dims == [out[a]] => {
            let mut strides = vec![0; out.len()];
            strides[a] = 1;
            Ok(strides)
        }
        _ => Err(format!(
            "bias {} does not match the channel axis of {} ({})",
            fmt_dims(dims),
            fmt_dims(out),
            format.name()
        )),
    }
}
