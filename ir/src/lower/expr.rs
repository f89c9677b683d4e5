//! Turns a group's elementwise members into an epilogue [`Expr`].
//!
//! Members are visited in topological order, so every operand is the main result, an earlier
//! step or a materialised buffer; the steps come out in a valid evaluation order with no
//! recursion (a chain of thousands of ops costs no stack). Every member has the kernel's output
//! dims (grouping guarantees it), so only reads of materialised buffers broadcast, and their
//! broadcasting is resolved here into per-axis strides over the output index space: numpy
//! rules for binary ops (stride 0 on size-1 and missing axes), the channel axis alone for
//! bias_add's bias.

use super::group::Group;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, DataFormat, Op};
use crate::program::{BufferId, Expr, Load, Operand, Step};
use crate::shape::fmt_dims;
use crate::{Error, Result};
use std::collections::HashMap;

/// The epilogue of group `g` (whose main op, if any, is `Operand::Main`).
pub(super) fn build(
    graph: &Graph,
    g: &Group,
    dims: &HashMap<NodeId, Vec<usize>>,
    buffer_of: &HashMap<NodeId, BufferId>,
) -> Result<Expr> {
    let out = &dims[&g.root];
    let mut expr = Expr {
        loads: Vec::new(),
        steps: Vec::new(),
        result: Operand::Main,
    };
    let mut value: HashMap<NodeId, Operand> = HashMap::new();
    if let Some(m) = g.main {
        value.insert(m, Operand::Main);
    }
    for &m in &g.members {
        if Some(m) == g.main {
            continue;
        }
        let node = graph.node(m);
        let fail = |message: String| Error::Op {
            node: node.name.clone(),
            op: node.op.name(),
            message,
        };
        if &dims[&m] != out {
            return Err(fail(format!(
                "fused into a kernel whose output is {} but has dims {}",
                fmt_dims(out),
                fmt_dims(&dims[&m])
            )));
        }
        let inputs = graph.inputs(m);
        // The operand at `port`, read as the op at that port reads it.
        let mut operand = |port: usize, channel: Option<DataFormat>| -> Result<Operand> {
            let p = *inputs
                .get(port)
                .ok_or_else(|| fail(format!("operand {port} is missing")))?;
            if let Some(&v) = value.get(&p) {
                return Ok(v);
            }
            let buffer = *buffer_of
                .get(&p)
                .ok_or_else(|| fail(format!("operand %{} has no buffer", graph.node(p).name)))?;
            let strides = match channel {
                Some(format) => channel_strides(&dims[&p], out, format),
                None => broadcast_strides(&dims[&p], out),
            }
            .map_err(&fail)?;
            let load = Load { buffer, strides };
            let i = match expr.loads.iter().position(|l| *l == load) {
                Some(i) => i,
                None => {
                    expr.loads.push(load);
                    expr.loads.len() - 1
                }
            };
            Ok(Operand::Load(i))
        };
        let step = match &node.op {
            Op::Unary(u) => Step::Unary(*u, operand(0, None)?),
            Op::Binary(b) => Step::Binary(*b, operand(0, None)?, operand(1, None)?),
            Op::BiasAdd { data_format } => Step::Binary(
                BinaryOp::Add,
                operand(0, None)?,
                operand(1, Some(*data_format))?,
            ),
            other => {
                return Err(fail(format!(
                    "{} cannot be part of an epilogue",
                    other.name()
                )));
            }
        };
        expr.steps.push(step);
        let v = Operand::Step(expr.steps.len() - 1);
        value.insert(m, v);
    }
    expr.result = *value.get(&g.root).ok_or_else(|| {
        Error::Invalid(format!(
            "lowering: group of %{} lost its root",
            graph.node(g.root).name
        ))
    })?;
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
