//! `select-layout`: puts every layout-sensitive op in the layout its backend prefers, with the
//! fewest transposes.
//!
//! Each backend states its preference ([`SelectLayout::prefer`]; the CPU and OpenCL backends
//! want NHWC, where channels are contiguous for their GEMM micro-kernels; their packed weight
//! formats are made at compile time by the backends from the constant HWIO weights). The pass
//! works in three steps, all logged:
//! 1. Convert: each conv2d, depthwise_conv2d, pool, bias_add and batch_norm of rank 4 in the
//!    other layout becomes `transpose -> op in the preferred layout -> transpose back`. Weights
//!    need no change (HWIO in both layouts) and per-channel vectors neither.
//! 2. Sink: a transpose feeding an op that commutes with it moves below the op: unary ops;
//!    binary ops whose other operand is a transpose with the same permutation, is all ones
//!    (layout-free broadcasting), already has a transpose to the other layout (reused), or is
//!    a constant (transposed to match, which constant folding then computes at compile time);
//!    reductions, softmax, concat, pad and slice (their axes permuted).
//! 3. Cancel: `transpose(transpose(y, p), inverse(p))` becomes `y`; a transpose that moves only
//!    size-1 axes becomes the reshape it is.
//!
//! So an NCHW network ends with one transpose after each NCHW feed and one before each NCHW
//! output, and none between its layers. Every rewrite keeps types exactly (a rewrite whose
//! result would differ is abandoned), so results are bit-identical: transposes move data and
//! each op computes the same sums in either layout.

use super::rewrite::{describe, remove_if_dead, replace_with_existing};
use super::{Pass, PassContext};
use crate::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{DataFormat, Op};

/// Most sink-and-cancel sweeps per run; each sweep moves every movable transpose one op down,
/// so this bounds the depth a transpose travels in one run (the pipeline reruns the pass).
const MAX_SWEEPS: usize = 256;

/// Converts layout-sensitive ops to the preferred layout and removes the transposes that
/// cancel.
#[derive(Clone, Copy, Debug)]
pub struct SelectLayout {
    /// The layout the backend's kernels want.
    pub prefer: DataFormat,
}

impl Default for SelectLayout {
    fn default() -> SelectLayout {
        SelectLayout {
            prefer: DataFormat::Nhwc,
        }
    }
}

/// The permutation taking a rank-4 tensor from layout `from` to layout `to`.
fn perm(from: DataFormat, to: DataFormat) -> Vec<usize> {
    match (from, to) {
        (DataFormat::Nchw, DataFormat::Nhwc) => vec![0, 2, 3, 1],
        (DataFormat::Nhwc, DataFormat::Nchw) => vec![0, 3, 1, 2],
        _ => vec![0, 1, 2, 3],
    }
}

fn inverse(p: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; p.len()];
    for (i, &pi) in p.iter().enumerate() {
        inv[pi] = i;
    }
    inv
}

/// `op` in layout `to`, with the layout it has now, if it is layout-sensitive and differs.
fn relayout(op: &Op, to: DataFormat) -> Option<(Op, DataFormat)> {
    let (new, from) = match op {
        Op::Conv2d(a) => (Op::Conv2d(a.format(to)), a.data_format),
        Op::DepthwiseConv2d(a) => (Op::DepthwiseConv2d(a.format(to)), a.data_format),
        Op::MaxPool(p) => {
            let mut q = *p;
            q.data_format = to;
            (Op::MaxPool(q), p.data_format)
        }
        Op::AvgPool(p) => {
            let mut q = *p;
            q.data_format = to;
            (Op::AvgPool(q), p.data_format)
        }
        Op::BiasAdd { data_format } => (Op::BiasAdd { data_format: to }, *data_format),
        Op::BatchNorm {
            epsilon,
            data_format,
        } => (
            Op::BatchNorm {
                epsilon: *epsilon,
                data_format: to,
            },
            *data_format,
        ),
        _ => return None,
    };
    (from != to).then_some((new, from))
}

impl Pass for SelectLayout {
    fn name(&self) -> &'static str {
        "select-layout"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut changed = false;
        for id in graph.topo_order() {
            if graph.get(id).is_none() {
                continue;
            }
            let Some((op, from)) = relayout(&graph.node(id).op, self.prefer) else {
                continue;
            };
            let x = graph.inputs(id)[0];
            if graph.node(x).ty.rank() != 4 {
                continue;
            }
            if self.convert(graph, cx, id, op, from)? {
                changed = true;
            }
        }
        for _ in 0..MAX_SWEEPS {
            let mut moved = false;
            for id in graph.topo_order() {
                if graph.get(id).is_none() {
                    continue;
                }
                if self.cancel(graph, cx, id)? || self.sink(graph, cx, id)? {
                    moved = true;
                }
            }
            changed |= moved;
            if !moved {
                break;
            }
        }
        Ok(changed)
    }
}

impl SelectLayout {
    /// Step 1 for node `id`: `transpose -> op in the preferred layout -> transpose back`.
    fn convert(
        &self,
        graph: &mut Graph,
        cx: &mut PassContext,
        id: NodeId,
        op: Op,
        from: DataFormat,
    ) -> Result<bool> {
        let inputs = graph.inputs(id);
        let name = graph.node(id).name.clone();
        let (to_name, from_name) = (self.prefer.name(), from.name());
        let x = inputs[0];
        let t_in = graph.add(
            graph.unique_name(&format!(
                "{}.{}",
                graph.node(x).name,
                to_name.to_lowercase()
            )),
            Op::Transpose {
                perm: perm(from, self.prefer),
            },
            &[x],
        )?;
        let mut operands = vec![t_in];
        operands.extend_from_slice(&inputs[1..]);
        let kind = op.name();
        let new = graph.add(
            graph.unique_name(&format!("{name}.{}", to_name.to_lowercase())),
            op,
            &operands,
        )?;
        let t_out = graph.add(
            graph.unique_name(&name),
            Op::Transpose {
                perm: perm(self.prefer, from),
            },
            &[new],
        )?;
        if !self.commit(graph, cx, id, t_out)? {
            return Ok(false);
        }
        cx.record(
            self.name(),
            format!(
                "%{name}: {kind} {from_name} -> {to_name}, with a transpose at its input and \
                 one back at its output"
            ),
        );
        Ok(true)
    }

    /// Replaces `old` by `new` when their types agree; otherwise drops `new` and what only it
    /// uses. Returns whether the replacement happened.
    fn commit(
        &self,
        graph: &mut Graph,
        cx: &mut PassContext,
        old: NodeId,
        new: NodeId,
    ) -> Result<bool> {
        if graph.node(old).ty != graph.node(new).ty {
            remove_if_dead(graph, cx, new)?;
            return Ok(false);
        }
        let inputs = graph.inputs(old);
        super::rewrite::replace_with_new(graph, cx, old, new)?;
        for i in inputs {
            remove_if_dead(graph, cx, i)?;
        }
        Ok(true)
    }

    /// Step 3 for transpose `id`: cancel an opposite pair, or turn a unit-axes-only transpose
    /// into a reshape.
    fn cancel(&self, graph: &mut Graph, cx: &mut PassContext, id: NodeId) -> Result<bool> {
        let Op::Transpose { perm: q } = &graph.node(id).op else {
            return Ok(false);
        };
        let q = q.clone();
        let x = graph.inputs(id)[0];
        if let Op::Transpose { perm: p } = &graph.node(x).op
            && q.len() == p.len()
            && q.iter().enumerate().all(|(i, &qi)| p[qi] == i)
        {
            let y = graph.inputs(x)[0];
            let before = describe(graph, id);
            if graph.node(y).ty == graph.node(id).ty && replace_with_existing(graph, cx, id, y)? {
                remove_if_dead(graph, cx, x)?;
                cx.record(
                    self.name(),
                    format!(
                        "cancelled opposite transposes: {before} -> %{}",
                        graph.node(y).name
                    ),
                );
                return Ok(true);
            }
            return Ok(false);
        }
        // A transpose that keeps the order of the axes longer than 1 only moves unit axes: the
        // elements stay in the same row-major order, so it is a reshape (free, and foldable
        // into neighbouring reshapes).
        let node = graph.node(id);
        let Some(out) = node.ty.shape.to_dims() else {
            return Ok(false);
        };
        let Some(dims) = graph.node(x).ty.shape.to_dims() else {
            return Ok(false);
        };
        let moved: Vec<usize> = q.iter().copied().filter(|&a| dims[a] != 1).collect();
        if !moved.windows(2).all(|w| w[0] < w[1]) {
            return Ok(false);
        }
        let before = describe(graph, id);
        let shape = out.iter().map(|&d| d as i64).collect();
        let name = graph.unique_name(&node.name);
        let new = graph.add(name, Op::Reshape { shape }, &[x])?;
        if !self.commit(graph, cx, id, new)? {
            return Ok(false);
        }
        cx.record(
            self.name(),
            format!(
                "a transpose of unit axes is a reshape: {before} -> {}",
                describe(graph, new)
            ),
        );
        Ok(true)
    }

    /// Step 2 for node `id`: move a transpose operand below it.
    fn sink(&self, graph: &mut Graph, cx: &mut PassContext, id: NodeId) -> Result<bool> {
        let node = graph.node(id).clone();
        let inputs = graph.inputs(id);
        // Operand `i` as `(y, p)` when it is a movable transpose `transpose(y, p)` (not of a
        // constant: those fold instead).
        let transposed = |i: usize| -> Option<(NodeId, Vec<usize>)> {
            let t = *inputs.get(i)?;
            let Op::Transpose { perm } = &graph.node(t).op else {
                return None;
            };
            let y = graph.inputs(t)[0];
            (!constant_like(graph, y)).then(|| (y, perm.clone()))
        };
        let Some((y, p)) = transposed(0).or_else(|| transposed(1).filter(|_| inputs.len() == 2))
        else {
            return Ok(false);
        };
        let r = p.len();
        let permuted_axis = |a: i64| -> Option<i64> {
            let a = if a < 0 { a + r as i64 } else { a };
            (0..r as i64).contains(&a).then(|| p[a as usize] as i64)
        };
        // The rewritten op and its operands (the transpose on top is added below), plus the
        // permutation of that transpose (`None`: no transpose needed).
        let (op, operands, top): (Op, Vec<NodeId>, Option<Vec<usize>>) = match &node.op {
            Op::Unary(u) => (Op::Unary(*u), vec![y], Some(p.clone())),
            Op::Binary(b) => {
                let Some(operands) = self.binary_operands(graph, &inputs, &p)? else {
                    return Ok(false);
                };
                (Op::Binary(*b), operands, Some(p.clone()))
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let Some(a) = permuted_axis(*axis) else {
                    return Ok(false);
                };
                let op = match node.op {
                    Op::Softmax { .. } => Op::Softmax { axis: a },
                    _ => Op::LogSoftmax { axis: a },
                };
                (op, vec![y], Some(p.clone()))
            }
            Op::Reduce {
                op,
                axes: Some(axes),
                keepdims,
            } => {
                let Some(mapped) = axes
                    .iter()
                    .map(|&a| permuted_axis(a))
                    .collect::<Option<Vec<i64>>>()
                else {
                    return Ok(false);
                };
                let top = reduced_perm(&p, &mapped, *keepdims);
                (
                    Op::Reduce {
                        op: *op,
                        axes: Some(mapped),
                        keepdims: *keepdims,
                    },
                    vec![y],
                    top,
                )
            }
            Op::Concat { axis } => {
                let all: Option<Vec<NodeId>> = (0..inputs.len())
                    .map(|i| transposed(i).filter(|(_, q)| *q == p).map(|(y, _)| y))
                    .collect();
                let (Some(ys), Some(a)) = (all, permuted_axis(*axis)) else {
                    return Ok(false);
                };
                (Op::Concat { axis: a }, ys, Some(p.clone()))
            }
            Op::Pad {
                paddings,
                constant_value,
            } if paddings.len() == r => {
                let mut permuted = vec![[0, 0]; r];
                for (i, &pad) in paddings.iter().enumerate() {
                    permuted[p[i]] = pad;
                }
                let op = Op::Pad {
                    paddings: permuted,
                    constant_value: *constant_value,
                };
                (op, vec![y], Some(p.clone()))
            }
            Op::Slice { begin, size } if begin.len() == r && size.len() == r => {
                let (mut b, mut s) = (vec![0; r], vec![0; r]);
                for i in 0..r {
                    b[p[i]] = begin[i];
                    s[p[i]] = size[i];
                }
                (Op::Slice { begin: b, size: s }, vec![y], Some(p.clone()))
            }
            _ => return Ok(false),
        };
        let name = node.name.clone();
        let before = describe(graph, id);
        let inner = graph.add(graph.unique_name(&format!("{name}.t")), op, &operands)?;
        let new = match top {
            Some(top) => graph.add(
                graph.unique_name(&name),
                Op::Transpose { perm: top },
                &[inner],
            )?,
            None => inner,
        };
        if !self.commit(graph, cx, id, new)? {
            return Ok(false);
        }
        cx.record(
            self.name(),
            format!(
                "moved a transpose below {before} -> {}",
                describe(graph, new)
            ),
        );
        Ok(true)
    }

    /// Operands of a binary op with a transposed operand `transpose(y, p)`, rewritten to work
    /// on untransposed values, or `None` if the other operand would need a transpose at run
    /// time.
    fn binary_operands(
        &self,
        graph: &mut Graph,
        inputs: &[NodeId],
        p: &[usize],
    ) -> Result<Option<Vec<NodeId>>> {
        let r = p.len();
        let mut out = Vec::with_capacity(2);
        for &operand in inputs {
            let node = graph.node(operand);
            if let Op::Transpose { perm } = &node.op
                && perm.as_slice() == p
            {
                out.push(graph.inputs(operand)[0]);
                continue;
            }
            let dims = node.ty.shape.dims().to_vec();
            if dims.len() > r {
                return Ok(None);
            }
            if dims.iter().all(|&d| d == Some(1)) {
                // All ones: broadcasting reads the one element wherever the axes are.
                out.push(operand);
                continue;
            }
            // A value already transposed back for another user (the input of an NCHW block
            // whose conv read it in NHWC): reuse that transpose, which costs nothing new.
            let inv = inverse(p);
            if let Some(t) = graph
                .users(operand)
                .into_iter()
                .map(|(u, _)| u)
                .find(|&u| matches!(&graph.node(u).op, Op::Transpose { perm } if *perm == inv))
            {
                out.push(t);
                continue;
            }
            if !matches!(node.op, Op::Const(_)) {
                return Ok(None);
            }
            // A constant: pad its rank with leading ones (numpy alignment), then transpose it
            // by the inverse permutation; constant folding computes both at compile time.
            let base = node.name.clone();
            let mut c = operand;
            if dims.len() < r {
                let mut shape = vec![1i64; r - dims.len()];
                shape.extend(dims.iter().map(|d| d.map_or(-1, |d| d as i64)));
                let name = graph.unique_name(&format!("{base}.r{r}"));
                c = graph.add(name, Op::Reshape { shape }, &[c])?;
            }
            let name = graph.unique_name(&format!("{base}.t"));
            c = graph.add(name, Op::Transpose { perm: inverse(p) }, &[c])?;
            out.push(c);
        }
        Ok(Some(out))
    }
}

/// The transpose needed after `reduce(y, axes)` when the original was
/// `reduce(transpose(y, p), axes')` with `axes = p[axes']`: `p` itself when dims are kept;
/// otherwise the order of the remaining axes, `None` when it is the identity.
fn reduced_perm(p: &[usize], axes: &[i64], keepdims: bool) -> Option<Vec<usize>> {
    if keepdims {
        return Some(p.to_vec());
    }
    let reduced = |a: usize| axes.contains(&(a as i64));
    // Original output axis j is original input axis i (not reduced), which is y's axis p[i].
    let kept_y: Vec<usize> = p.iter().copied().filter(|&a| !reduced(a)).collect();
    let mut sorted = kept_y.clone();
    sorted.sort_unstable();
    let q: Vec<usize> = kept_y
        .iter()
        .map(|a| sorted.iter().position(|s| s == a).unwrap_or(0))
        .collect();
    (!q.iter().enumerate().all(|(i, &v)| i == v)).then_some(q)
}

/// Whether `id` is a constant, possibly reshaped or transposed (constant folding computes it,
/// so moving a transpose past it gains nothing).
fn constant_like(graph: &Graph, id: NodeId) -> bool {
    let mut id = id;
    for _ in 0..4 {
        match graph.node(id).op {
            Op::Const(_) => return true,
            Op::Reshape { .. } | Op::Transpose { .. } => id = graph.inputs(id)[0],
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_are_inverse() {
        let a = perm(DataFormat::Nchw, DataFormat::Nhwc);
        let b = perm(DataFormat::Nhwc, DataFormat::Nchw);
        assert_eq!(inverse(&a), b);
        // NCHW [n,c,h,w] -> NHWC takes axes (0, 2, 3, 1).
        assert_eq!(a, vec![0, 2, 3, 1]);
    }

    #[test]
    fn reduced_perm_drops_reduced_axes() {
        // reduce_mean(transpose(y[n,h,w,c], [0,3,1,2]) = [n,c,h,w], axes [2,3]) over y's
        // axes [1,2]: y's result [n,c] is already in the original order.
        let p = vec![0, 3, 1, 2];
        assert_eq!(reduced_perm(&p, &[1, 2], false), None);
        // Reducing only batch: the remaining [c,h,w] come from y's [h,w,c] -> perm [2,0,1].
        assert_eq!(reduced_perm(&p, &[0], false), Some(vec![2, 0, 1]));
        assert_eq!(reduced_perm(&p, &[0], true), Some(p));
    }
}
