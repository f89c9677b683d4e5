//! Running a batch one image at a time.
//!
//! A CNN's activations grow with the batch while its weights do not: MobileNet-v2 at batch 8
//! has a 38 MB tensor (8 x 112 x 112 x 96 floats), more than the L3, so its early layers
//! stream every activation through memory (25.2 ms against 8 x 2.3 ms at batch 1). When every
//! op of the fetched graph treats the images of its leading axis independently, the session
//! can instead run the batch-1 program once per image and stack the results: each image's
//! activations stay in cache, and the weights, if they fit in cache too, are read from there
//! by every image. Whether that wins is the backend's call ([`BackendKind`]'s answer from the
//! weights' and the largest activation's bytes); the graph's part is decided here.
//!
//! "Independent" is checked op by op from a fixed list, conservatively: a value is batched
//! when its leading axis is the batch (a placeholder's `?` first dim, or an op over batched
//! operands that keeps images apart: convolutions, pools, elementwise ops whose other operands
//! do not span the batch axis, reductions and softmax over other axes, reshapes that keep the
//! leading `-1`, ...). Anything else in the fetched graph (a fused node, a gather, a reduction
//! over the batch, a variable update) keeps the batch whole.

use crate::BackendKind;
use kiln_ir::op::Op;
use kiln_ir::tensor::Data;
use kiln_ir::{Error, Graph, NodeId, Result, Shape, Tensor};
use std::collections::HashMap;

/// What running images apart needs to know about a fetched graph.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Separable {
    /// Bytes of the constants and variables the fetches read.
    pub weight_bytes: usize,
    /// Bytes of one image's slice of the largest batched value.
    pub largest_image_bytes: usize,
}

/// `Some` when every fetch is batched and every op between the placeholders and the fetches
/// keeps the images of the leading axis apart; `None` otherwise (see the module comment).
pub(crate) fn separable(graph: &Graph, fetches: &[NodeId]) -> Option<Separable> {
    let mut batched: HashMap<NodeId, bool> = HashMap::new();
    let mut weight_bytes = 0usize;
    let mut largest_image_bytes = 0usize;
    for id in graph.topo_order_of(fetches.iter().copied()) {
        let node = graph.node(id);
        let inputs = graph.inputs(id);
        let operand_batched: Vec<bool> = inputs.iter().map(|i| batched[i]).collect();
        let is_batched = match &node.op {
            Op::Input(ty) => ty.shape.0.first().is_some_and(|d| d.is_none()),
            Op::Const(_) | Op::Var(_) => {
                let bytes = node.ty.shape.numel()? * node.ty.dtype.size_bytes();
                weight_bytes = weight_bytes.saturating_add(bytes);
                false
            }
            // Values computed from shared values only are shared: any op may compute them.
            _ if !operand_batched.contains(&true) => false,
            op => keeps_images_apart(graph, id, op, &operand_batched).then_some(true)?,
        };
        if is_batched {
            // Every dim but the batch is known, so one image's bytes are.
            let image = image_numel(&node.ty.shape)?;
            largest_image_bytes = largest_image_bytes.max(image * node.ty.dtype.size_bytes());
        }
        batched.insert(id, is_batched);
    }
    fetches.iter().all(|f| batched[f]).then_some(Separable {
        weight_bytes,
        largest_image_bytes,
    })
}

/// Whether op `op` of node `id`, some of whose operands are batched (`operand_batched`),
/// gives a batched value computed image by image (if not, the graph is not separable).
fn keeps_images_apart(graph: &Graph, id: NodeId, op: &Op, operand_batched: &[bool]) -> bool {
    let node = graph.node(id);
    let rank = node.ty.shape.0.len();
    let out_batched = rank >= 1 && node.ty.shape.0[0].is_none();
    let inputs = graph.inputs(id);
    // Only the first operand batched, the rest shared (weights, biases, statistics).
    let first_only =
        operand_batched.first() == Some(&true) && !operand_batched[1..].contains(&true);
    let ok = match op {
        Op::Unary(_) | Op::Cast { .. } | Op::LogicalNot | Op::StopGradient | Op::Lrn { .. } => true,
        Op::Binary(_) | Op::Compare(_) | Op::Logical(_) | Op::Select => {
            // Batched operands line up with the output's leading axis; shared ones broadcast
            // over it (lower rank, or a leading 1).
            inputs.iter().zip(operand_batched).all(|(&i, &b)| {
                let dims = &graph.node(i).ty.shape.0;
                if b {
                    dims.len() == rank
                } else {
                    dims.len() < rank || dims.first() == Some(&Some(1))
                }
            })
        }
        Op::BiasAdd { .. }
        | Op::Conv2d(_)
        | Op::DepthwiseConv2d(_)
        | Op::MaxPool(_)
        | Op::AvgPool(_)
        | Op::BatchNorm { .. } => first_only,
        Op::Reduce {
            axes: Some(axes), ..
        } => {
            let in_rank = graph.node(inputs[0]).ty.shape.0.len();
            axes.iter().all(|&a| !is_batch_axis(a, in_rank))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::ArgMax { axis, .. } => {
            !is_batch_axis(*axis, rank)
        }
        Op::Concat { axis } => !is_batch_axis(*axis, rank) && !operand_batched.contains(&false),
        Op::Reshape { shape } => {
            // `[-1, known...]` of an input whose other dims are known: row i is image i.
            let in_rest = image_numel(&graph.node(inputs[0]).ty.shape);
            let out_rest: Option<usize> = shape.get(1..).and_then(|s| {
                s.iter()
                    .try_fold(1usize, |p, &d| p.checked_mul(usize::try_from(d).ok()?))
            });
            shape.first() == Some(&-1) && in_rest.is_some() && in_rest == out_rest
        }
        Op::Transpose { perm } => perm.first() == Some(&0),
        Op::Slice { begin, size } => begin.first() == Some(&0) && size.first() == Some(&-1),
        Op::Pad { paddings, .. } => paddings.first() == Some(&[0, 0]),
        Op::MatMul { transpose_a, .. } => {
            // Rows of a are images, b is shared; or both batched `[B, m, k] x [B, k, n]`.
            let a_rank = graph.node(inputs[0]).ty.shape.0.len();
            (a_rank == 2 && !transpose_a && first_only)
                || (a_rank == 3 && !operand_batched.contains(&false))
        }
        _ => false,
    };
    ok && out_batched
}

/// Whether `axis` (negative counts from the end) of a rank-`rank` value is the batch axis.
fn is_batch_axis(axis: i64, rank: usize) -> bool {
    axis == 0 || axis == -(rank as i64)
}

/// Elements of one image of a value of `shape` (every dim after the first known).
fn image_numel(shape: &Shape) -> Option<usize> {
    Shape::of(shape.0.get(1..)?).numel()
}

/// The batch of `feeds` (placeholder, tensor) when images may run apart: every fed
/// placeholder has a `?` leading dim and every feed the same leading dim, at least 2.
pub(crate) fn batch_of(graph: &Graph, feeds: &[(NodeId, &Tensor)]) -> Option<usize> {
    let mut batch = None;
    for (id, t) in feeds {
        let Op::Input(ty) = &graph.node(*id).op else {
            return None;
        };
        if !ty.shape.0.first().is_some_and(|d| d.is_none()) {
            return None;
        }
        let n = *t.dims().first()?;
        if batch.is_some_and(|b| b != n) {
            return None;
        }
        batch = Some(n);
    }
    batch.filter(|&n| n >= 2)
}

/// Image `i` of a batched tensor `t`, with a leading dim of 1: a contiguous range of its
/// row-major values. (The reference evaluator's slice builds an index per element: with it,
/// MobileNet-v2 at batch 8 took 48 ms instead of 16, Zen 5.)
pub(crate) fn image(t: &Tensor, i: usize) -> Result<Tensor> {
    let mut dims = t.dims().to_vec();
    let per = dims[1..].iter().product::<usize>();
    dims[0] = 1;
    let range = i * per..(i + 1) * per;
    let data = match t.data() {
        Data::F32(v) => Data::F32(v[range].to_vec()),
        Data::I32(v) => Data::I32(v[range].to_vec()),
        Data::I64(v) => Data::I64(v[range].to_vec()),
        Data::Bool(v) => Data::Bool(v[range].to_vec()),
    };
    Tensor::new(&dims, data)
}

/// `parts` (each with a leading dim of 1, all of one type and shape) stacked along the
/// leading axis: their values one after the other.
pub(crate) fn stack(parts: &[Tensor]) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::Invalid("no images to stack".into()));
    };
    if let Some(p) = parts.iter().find(|p| p.ty() != first.ty()) {
        return Err(Error::Invalid(format!(
            "images to stack differ: {} and {}",
            first.ty(),
            p.ty()
        )));
    }
    let mut dims = first.dims().to_vec();
    dims[0] = parts.len();
    /// The values of every part, in order (checked above: the parts share `first`'s
    /// variant), one slice copy per part.
    fn join<T: Clone>(parts: &[Tensor], get: impl Fn(&Data) -> Option<&[T]>) -> Vec<T> {
        let mut out = Vec::new();
        for values in parts.iter().filter_map(|p| get(p.data())) {
            out.extend_from_slice(values);
        }
        out
    }
    let data = match first.data() {
        Data::F32(_) => Data::F32(join(parts, |d| match d {
            Data::F32(v) => Some(v.as_slice()),
            _ => None,
        })),
        Data::I32(_) => Data::I32(join(parts, |d| match d {
            Data::I32(v) => Some(v.as_slice()),
            _ => None,
        })),
        Data::I64(_) => Data::I64(join(parts, |d| match d {
            Data::I64(v) => Some(v.as_slice()),
            _ => None,
        })),
        Data::Bool(_) => Data::Bool(join(parts, |d| match d {
            Data::Bool(v) => Some(v.as_slice()),
            _ => None,
        })),
    };
    Tensor::new(&dims, data)
}

/// Whether `backend` runs a batch of `batch` images apart, given the graph's part.
pub(crate) fn chosen(backend: &BackendKind, s: &Separable, batch: usize) -> bool {
    match backend {
        BackendKind::Cpu => {
            kiln_cpu::gemm::images_apart(s.weight_bytes, s.largest_image_bytes, batch)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slicing a batch into images and stacking them back gives the batch, for every dtype;
    /// images of different types or shapes are an error, not a wrong batch.
    #[test]
    fn images_round_trip_and_mismatches_are_errors() {
        let batches = [
            Tensor::uniform(&[3, 2, 5], -1.0, 1.0, 1),
            Tensor::new(&[3, 4], Data::I32((0..12).collect())).unwrap(),
            Tensor::new(&[2, 3], Data::I64((0..6).collect())).unwrap(),
            Tensor::new(&[2, 2], Data::Bool(vec![true, false, false, true])).unwrap(),
        ];
        for t in &batches {
            let images: Vec<Tensor> = (0..t.dims()[0]).map(|i| image(t, i).unwrap()).collect();
            assert_eq!(images[1].dims()[0], 1);
            assert_eq!(&stack(&images).unwrap(), t);
        }
        let f = image(&batches[0], 0).unwrap();
        let i = image(&batches[1], 0).unwrap();
        assert!(stack(&[f.clone(), i]).is_err());
        let other = Tensor::zeros(&[1, 5, 2]);
        assert!(stack(&[f, other]).is_err());
        assert!(stack(&[]).is_err());
    }
}
