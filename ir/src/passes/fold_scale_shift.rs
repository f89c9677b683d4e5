//! `fold-scale-shift`: folds a multiplication or addition by a per-channel constant into the
//! weights and bias of the contraction that feeds it.
//!
//! ```text
//! mul(conv(x, W) [+ bias b0], s)  ->  bias_add(conv(x, W'), b')   W'[.., c] = W[.., c] * s[c]
//!                                                                  b'[c] = b0[c] * s[c]
//! add(conv(x, W) [+ bias b0], t)  ->  bias_add(conv(x, W), b')    b'[c] = b0[c] + t[c]
//! ```
//!
//! Models exported from Caffe2 (the ONNX model zoo's Inception v2 and DenseNet-121) follow
//! each batch norm with an explicit `Mul` and `Add` by per-channel constants; once
//! `fold-batch-norm` has folded the batch norm, these stayed, and with them a pass over every
//! conv output that the micro-kernels' bias-and-activation store could not take. Same
//! contractions and conditions as `fold-batch-norm` (the shared matcher and rewrite live
//! there): the contraction and its bias_add have no other user and are not pinned, the weight
//! and bias are constants (or frozen variables), a second copy of the weight only within the
//! fold budget. The constant broadcasts along the contraction's channel axis only (one value
//! per channel, or one for all) and is finite, and the node's result has the contraction's
//! shape. W' and b' are computed in f64 and rounded once: the result matches the original
//! within float rounding (about 1e-6 relative), not bit for bit.

use super::fold_batch_norm::{Match, channel_axis, fold_all, match_contraction};
use super::rewrite::source_of;
use super::{Pass, PassContext};
use crate::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, DataFormat, Op};
use std::collections::HashSet;

/// Folds per-channel constant factors and terms into a preceding conv2d / depthwise_conv2d /
/// matmul.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldScaleShift;

impl Pass for FoldScaleShift {
    fn name(&self) -> &'static str {
        "fold-scale-shift"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        fold_all(graph, cx, self.name(), match_scale_shift)
    }
}

/// Matches `mul` or `add` at `id` of a contraction (with its bias) and a per-channel
/// constant, in either operand order.
fn match_scale_shift(
    graph: &Graph,
    cx: &PassContext,
    id: NodeId,
    frozen: &HashSet<NodeId>,
) -> Option<Match> {
    let Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Add)) = graph.node(id).op else {
        return None;
    };
    let inputs = graph.inputs(id);
    for (value, constant) in [(inputs[0], inputs[1]), (inputs[1], inputs[0])] {
        if graph.node(value).ty != graph.node(id).ty {
            continue; // the constant would broadcast the value to a bigger shape
        }
        // The contraction's channel axis: its own data format, or the last for matmul.
        let mut src = value;
        if let Op::BiasAdd { .. } = graph.node(src).op {
            src = graph.inputs(src)[0];
        }
        let format = match graph.node(src).op {
            Op::Conv2d(a) | Op::DepthwiseConv2d(a) => a.data_format,
            Op::MatMul { .. } => DataFormat::Nhwc,
            _ => continue,
        };
        let Some(mut m) = match_contraction(graph, cx, id, value, format, frozen) else {
            continue;
        };
        let Some(v) = channel_constant(graph, constant, value, format, m.channels, frozen) else {
            continue;
        };
        match op {
            BinaryOp::Mul => m.factor = Some(v),
            _ => m.shift = v,
        }
        return Some(m);
    }
    None
}

/// The `channels` values of constant `constant` as it broadcasts onto `value` (rank `r`):
/// only along the channel axis, or a single value for every channel; all finite; in f64.
fn channel_constant(
    graph: &Graph,
    constant: NodeId,
    value: NodeId,
    format: DataFormat,
    channels: usize,
    frozen: &HashSet<NodeId>,
) -> Option<Vec<f64>> {
    let t = source_of(graph, constant, frozen)?;
    let values = t.as_f32()?;
    let rank = graph.node(value).ty.shape.rank();
    let axis = channel_axis(format, rank)?;
    let dims = t.dims();
    if dims.len() > rank || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    // Right-aligned broadcasting: the constant's axis j is the value's axis j + lead.
    let lead = rank - dims.len();
    let along_channels = dims
        .iter()
        .enumerate()
        .all(|(j, &d)| d == 1 || j + lead == axis);
    match values.len() {
        1 => Some(vec![f64::from(values[0]); channels]),
        n if n == channels && along_channels => {
            Some(values.iter().map(|&v| f64::from(v)).collect())
        }
        _ => None,
    }
}
