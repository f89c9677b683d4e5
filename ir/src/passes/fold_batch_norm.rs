//! `fold-batch-norm`: folds an inference-form batch norm into the weights of the contraction
//! that feeds it.
//!
//! ```text
//! batch_norm(conv(x, W) [+ bias b0], scale, offset, mean, var)
//!   -> bias_add(conv(x, W'), b')
//! f[c]  = scale[c] / sqrt(var[c] + eps)
//! W'[.., c] = W[.., c] * f[c]
//! b'[c] = (b0[c] - mean[c]) * f[c] + offset[c]          (b0 = 0 without a bias)
//! ```
//!
//! The contraction is `conv2d` (HWIO: channel = last weight axis), `depthwise_conv2d`
//! (`[kh,kw,cin,mult]`: output channel `c*mult+m` is the flat index over the last two axes,
//! TensorFlow's order) or `matmul` (channel = output column; rank 2, or rank 3 with the
//! channels last). The conv's data format, the optional bias_add's and the batch norm's must
//! agree so they all mean the same channel axis. W, b0 and the four parameters must be
//! constants (or frozen variables, see [`PassContext::freeze_variables`]). W' and b' are
//! computed in f64 and rounded once; the result matches the original within float rounding
//! (about 1e-6 relative), not bit for bit.
//!
//! Invariants: the conv (and the bias_add) must have no other user and not be pinned (graph
//! output or root), since their values change; when the old weight stays alive (other users,
//! or a variable, which is never removed) W' is a second copy, made only within
//! [`PassContext::fold_budget_bytes`]. The bias_add replacing the batch norm takes its name;
//! the new conv takes the old conv's name.

use super::rewrite::{
    frozen_variables, is_pinned, remove_if_dead, replace_with_new, shared_source_of, source_of,
};
use super::{Pass, PassContext};
use crate::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{DataFormat, Initializer, Op, Source};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;

/// Weight elements from which scaling is split across threads (below it a fork/join costs
/// more than the loop).
const PARALLEL_SCALE_MIN: usize = 1 << 16;

/// Folds `batch_norm` into a preceding conv2d / depthwise_conv2d / matmul.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldBatchNorm;

/// A matched pattern: a per-channel affine map `y[c] = factor[c] * (contraction + b0)[c] +
/// shift[c]` at node `bn` (the batch norm, or the multiplication or addition
/// [`super::fold_scale_shift`] folds), the nodes involved and the constant values read.
pub(super) struct Match {
    pub bn: NodeId,
    pub conv: NodeId,
    pub bias: Option<(NodeId, Vec<f32>)>,
    pub weight: NodeId,
    /// The weight's value, shared with its node (read, never written).
    pub w: Arc<Tensor>,
    /// Output channel of weight element `i`: `(i / inner) % channels`.
    pub inner: usize,
    pub channels: usize,
    /// Per channel, in f64; `None`: all ones (the weight is kept as it is).
    pub factor: Option<Vec<f64>>,
    /// Per channel, in f64.
    pub shift: Vec<f64>,
    pub format: DataFormat,
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batch-norm"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        fold_all(graph, cx, self.name(), match_bn)
    }
}

/// Folds every match `matcher` finds, in topological order (a fold leaves later nodes'
/// operands valid, so chains fold in one run); returns whether anything changed.
pub(super) fn fold_all(
    graph: &mut Graph,
    cx: &mut PassContext,
    pass: &'static str,
    matcher: fn(&Graph, &PassContext, NodeId, &HashSet<NodeId>) -> Option<Match>,
) -> Result<bool> {
    let frozen = frozen_variables(graph, cx);
    let mut changed = false;
    for id in graph.topo_order() {
        if graph.get(id).is_none() {
            continue;
        }
        if let Some(m) = matcher(graph, cx, id, &frozen) {
            changed |= fold(graph, cx, pass, m)?;
        }
    }
    Ok(changed)
}

/// Rewrites a match (see [`Match`]) into `bias_add(contraction(x, W'), b')` with
/// `W'[.., c] = W[.., c] * factor[c]` and `b'[c] = b0[c] * factor[c] + shift[c]`, computed in
/// f64 and rounded once; returns false, changing nothing, when the new weight would be a
/// second copy beyond the context's fold budget.
pub(super) fn fold(
    graph: &mut Graph,
    cx: &mut PassContext,
    pass: &'static str,
    m: Match,
) -> Result<bool> {
    // W' is a second copy when the old weight outlives the rewrite.
    let w_alive = graph.users(m.weight).len() > 1
        || is_pinned(graph, cx, m.weight)
        || !matches!(graph.node(m.weight).op, Op::Const(_));
    if m.factor.is_some() && w_alive && m.w.numel() * 4 > cx.fold_budget_bytes {
        return Ok(false);
    }
    let literal = |t: Tensor| {
        Op::Const(Source {
            ty: t.ty(),
            init: Initializer::Literal(Arc::new(t)),
        })
    };
    let conv_name = graph.node(m.conv).name.clone();
    let bn_name = graph.node(m.bn).name.clone();
    let w_name = graph.node(m.weight).name.clone();
    let before = match &m.bias {
        Some((b, _)) => format!("%{conv_name} + %{} + %{bn_name}", graph.node(*b).name),
        None => format!("%{conv_name} + %{bn_name}"),
    };
    let w_id = match &m.factor {
        Some(factor) => {
            let w_t = Tensor::from_vec(m.w.dims(), scaled_weight(&m, factor))?;
            // `_bn` for a batch norm, `_scaled` for a factor.
            let suffix = if pass == "fold-batch-norm" {
                "bn"
            } else {
                "scaled"
            };
            graph.add(
                graph.unique_name(&format!("{w_name}_{suffix}")),
                literal(w_t),
                &[],
            )?
        }
        None => m.weight,
    };
    let b0 = m.bias.as_ref().map(|(_, b)| b.as_slice());
    let b_new: Vec<f32> = (0..m.channels)
        .map(|c| {
            let b = b0.map_or(0.0, |b| b[c] as f64);
            let f = m.factor.as_ref().map_or(1.0, |f| f[c]);
            (b * f + m.shift[c]) as f32
        })
        .collect();
    let b_t = Tensor::from_vec(&[m.channels], b_new)?;
    let b_id = graph.add(
        graph.unique_name(&format!("{bn_name}_bias")),
        literal(b_t),
        &[],
    )?;
    let x = graph.inputs(m.conv)[0];
    let conv_op = graph.node(m.conv).op.clone();
    let conv = graph.add(graph.unique_name(&conv_name), conv_op, &[x, w_id])?;
    let biased = graph.add(
        graph.unique_name(&bn_name),
        Op::BiasAdd {
            data_format: m.format,
        },
        &[conv, b_id],
    )?;
    let old_operands = graph.inputs(m.bn);
    replace_with_new(graph, cx, m.bn, biased)?;
    // The old conv (and bias_add) only fed the batch norm: now dead.
    if let Some((b, _)) = m.bias {
        remove_if_dead(graph, cx, b)?;
    }
    remove_if_dead(graph, cx, m.conv)?;
    for i in old_operands {
        remove_if_dead(graph, cx, i)?;
    }
    graph.rename(conv, conv_name.clone())?;
    let w_final = graph.node(w_id).name.clone();
    let b_final = graph.node(b_id).name.clone();
    cx.record(
        pass,
        format!(
            "folded {before} -> %{conv_name} = {}(.., %{w_final}) + bias_add %{bn_name} (%{b_final})",
            graph.node(conv).op.name()
        ),
    );
    Ok(true)
}

/// `W[.., c] * factor[c]` for every weight element, rounded once from f64.
fn scaled_weight(m: &Match, factor: &[f64]) -> Vec<f32> {
    // Block by block over the channels, so no element pays a division for its channel
    // (`(i / inner) % channels`); `max(1)`: a zero-sized axis means no elements, and
    // `chunks(0)` panics. A large weight is scaled on every thread: most of its cost is
    // the first touch of the new weight's pages (whole networks: tens of MB).
    let w = m.w.as_f32().unwrap_or(&[]);
    let mut w_new = vec![0.0f32; w.len()];
    let block = (m.inner * m.channels).max(1);
    let scale = |(dst, src): (&mut [f32], &[f32])| {
        let scaled = |(d, (v, f)): (&mut f32, (&f32, &f64))| *d = (*v as f64 * f) as f32;
        if m.inner == 1 {
            dst.iter_mut().zip(src.iter().zip(factor)).for_each(scaled);
        } else {
            let runs = dst.chunks_mut(m.inner.max(1));
            for ((d, s), f) in runs.zip(src.chunks(m.inner.max(1))).zip(factor) {
                d.iter_mut().zip(s).for_each(|(d, v)| scaled((d, (v, f))));
            }
        }
    };
    if w.len() >= PARALLEL_SCALE_MIN {
        w_new
            .par_chunks_mut(block)
            .zip(w.par_chunks(block))
            .for_each(scale);
    } else {
        w_new.chunks_mut(block).zip(w.chunks(block)).for_each(scale);
    }
    w_new
}

/// Whether `id` has exactly one user (one operand slot) and is not pinned.
fn single_use(graph: &Graph, cx: &PassContext, id: NodeId) -> bool {
    graph.users(id).len() == 1 && !is_pinned(graph, cx, id)
}

/// A known f32 vector of length `n`.
fn vector(graph: &Graph, id: NodeId, frozen: &HashSet<NodeId>, n: usize) -> Option<Vec<f32>> {
    let t = source_of(graph, id, frozen)?;
    (t.dims() == [n]).then(|| t.into_f32())?
}

/// Matches `batch_norm(conv(x, W) [+ b0], scale, offset, mean, var)` at `bn`.
fn match_bn(
    graph: &Graph,
    cx: &PassContext,
    bn: NodeId,
    frozen: &HashSet<NodeId>,
) -> Option<Match> {
    let Op::BatchNorm {
        epsilon,
        data_format,
    } = graph.node(bn).op
    else {
        return None;
    };
    let bn_inputs = graph.inputs(bn);
    let mut m = match_contraction(graph, cx, bn, bn_inputs[0], data_format, frozen)?;
    let p = |k: usize| vector(graph, bn_inputs[k], frozen, m.channels);
    let [scale, offset, mean, var] = [p(1)?, p(2)?, p(3)?, p(4)?];
    // f[c] = scale[c] / sqrt(var[c] + eps), in f64 as the reference evaluates batch_norm;
    // b' = (b0 - mean) * f + offset = b0 * f + (offset - mean * f).
    let factor: Vec<f64> = (0..m.channels)
        .map(|c| scale[c] as f64 / (var[c] as f64 + epsilon.0 as f64).sqrt())
        .collect();
    m.shift = (0..m.channels)
        .map(|c| offset[c] as f64 - mean[c] as f64 * factor[c])
        .collect();
    m.factor = Some(factor);
    Some(m)
}

/// Matches `conv(x, W) [+ b0]` at `src`, the only operand read by node `at` of its value,
/// channels along `data_format`'s channel axis: a [`Match`] with a factor of one and no
/// shift, for the caller to fill in.
pub(super) fn match_contraction(
    graph: &Graph,
    cx: &PassContext,
    at: NodeId,
    src: NodeId,
    data_format: DataFormat,
    frozen: &HashSet<NodeId>,
) -> Option<Match> {
    let mut src = src;
    let mut bias_node = None;
    if let Op::BiasAdd { data_format: f } = graph.node(src).op {
        if f != data_format || !single_use(graph, cx, src) {
            return None;
        }
        bias_node = Some(src);
        src = graph.inputs(src)[0];
    }
    let conv = src;
    if !single_use(graph, cx, conv) {
        return None;
    }
    let out = graph.node(conv).ty.shape.clone();
    let rank = out.rank();
    let weight = graph.inputs(conv).get(1).copied()?;
    let w = shared_source_of(graph, weight, frozen)?;
    w.as_f32()?;
    let wd = w.dims().to_vec();
    // (inner, channels): weight element i belongs to output channel (i / inner) % channels.
    let (inner, channels) = match graph.node(conv).op {
        Op::Conv2d(a) if a.data_format == data_format && wd.len() == 4 => (1, wd[3]),
        Op::DepthwiseConv2d(a) if a.data_format == data_format && wd.len() == 4 => {
            (1, wd[2] * wd[3])
        }
        // Matmul channels are the output's last axis; NCHW means axis 1, last only at rank 2.
        Op::MatMul { transpose_b, .. } if data_format == DataFormat::Nhwc || rank == 2 => {
            let r = wd.len();
            if r < 2 {
                return None;
            }
            if transpose_b {
                (wd[r - 1], wd[r - 2])
            } else {
                (1, wd[r - 1])
            }
        }
        _ => return None,
    };
    // The map's channel axis must hold exactly those channels.
    if out.dim(channel_axis(data_format, rank)?) != Some(channels) {
        return None;
    }
    let bias = match bias_node {
        Some(b) => Some((b, vector(graph, graph.inputs(b)[1], frozen, channels)?)),
        None => None,
    };
    Some(Match {
        bn: at,
        conv,
        bias,
        weight,
        w,
        inner,
        channels,
        factor: None,
        shift: vec![0.0; channels],
        format: data_format,
    })
}

/// The channel axis of a rank-`rank` value in `format`: the last (NHWC), or 1 (NCHW, from
/// rank 2 on).
pub(super) fn channel_axis(format: DataFormat, rank: usize) -> Option<usize> {
    match format {
        DataFormat::Nhwc => rank.checked_sub(1),
        DataFormat::Nchw if rank >= 2 => Some(1),
        DataFormat::Nchw => None,
    }
}
