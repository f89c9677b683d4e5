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
//! The late layers of such a network are small and its classifier a matrix-vector product:
//! run per image they read their weights once per image over a few pixels. So where one
//! batched value is all the rest of the graph is computed from (a [`Cut`]), and the whole
//! batch of every value after it fits in cache, the images run apart only up to it; its
//! values are stacked and the rest (the tail) runs once on the whole batch, as a graph of its
//! own in a session sharing the pool. MobileNet-v2 at batch 8 (`kiln bench`, two threads,
//! three alternated rounds on a 2-core Zen 5 EPYC, FMA peak 284 GFLOP/s a core, a noisy
//! host): 20.8-23.1 ms per image to the end, 18.8-19.4 with its 14x14 and 7x7 layers and
//! classifier batched.
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
use std::collections::{HashMap, HashSet};

/// What running images apart needs to know about a fetched graph.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Separable {
    /// Bytes of the constants and variables the fetches read.
    pub weight_bytes: usize,
    /// Bytes of one image's slice of the largest batched value.
    pub largest_image_bytes: usize,
    /// Where the batch may be stacked again (see [`Cut`]), in graph order.
    pub cuts: Vec<Cut>,
}

/// A batched value every later batched value is computed from alone: the images may run apart
/// up to it, be stacked, and the rest of the graph (the tail) run on the whole batch. A
/// network's tail holds its small late layers and its dense layers, which read their
/// weights once for the whole batch instead of once per image (MobileNet-v2 at batch 8, same
/// Zen 5: its 1280 -> 1000 classifier took 8 x 0.065 ms per image, 0.13 ms on the batch).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cut {
    /// The value.
    pub node: NodeId,
    /// Bytes of one image's slice of it.
    pub image_bytes: usize,
    /// Bytes of one image's slice of the largest batched value after it.
    pub tail_image_bytes: usize,
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
    if !fetches.iter().all(|f| batched[f]) {
        return None;
    }
    Some(Separable {
        weight_bytes,
        largest_image_bytes,
        cuts: cuts(graph, fetches, &batched),
    })
}

/// The [`Cut`]s of the fetched graph whose `batched` values are known: the batched values,
/// neither fed nor fetched, that are the only batched value computed before them and read
/// after them, and after which no variable is read (the tail runs as a graph of its own,
/// with its constants copied; a variable there would be a stale copy).
fn cuts(graph: &Graph, fetches: &[NodeId], batched: &HashMap<NodeId, bool>) -> Vec<Cut> {
    let order = graph.topo_order_of(fetches.iter().copied());
    // The last position reading each batched value (fetches: past the end).
    let mut last_read: HashMap<NodeId, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        for input in graph.inputs(id) {
            if batched[&input] {
                let last = last_read.entry(input).or_insert(i);
                *last = (*last).max(i);
            }
        }
    }
    for f in fetches {
        last_read.insert(*f, order.len());
    }
    // Shared values computed from a variable (a tail reading one would read a copy).
    let mut from_var: HashMap<NodeId, bool> = HashMap::new();
    for &id in &order {
        let inputs = graph.inputs(id);
        let var = matches!(graph.node(id).op, Op::Var(_))
            || (!batched[&id] && inputs.iter().any(|i| from_var[i]));
        from_var.insert(id, var);
    }
    // Going backwards: the largest image after each position, and whether a node after it
    // reads a variable's value.
    let mut tail_bytes = vec![0usize; order.len() + 1];
    let mut tail_var = vec![false; order.len() + 1];
    for (i, &id) in order.iter().enumerate().rev() {
        let image = if batched[&id] {
            image_bytes(graph, id)
        } else {
            0
        };
        tail_bytes[i] = tail_bytes[i + 1].max(image);
        tail_var[i] = tail_var[i + 1]
            || from_var[&id]
            || graph.inputs(id).iter().any(|u| !batched[u] && from_var[u]);
    }
    // Batched values open after each position: computed at or before it, read after it.
    let mut change = vec![0isize; order.len() + 1];
    for (i, id) in order.iter().enumerate() {
        if let Some(&last) = last_read.get(id).filter(|&&last| last > i) {
            change[i] += 1;
            change[last] -= 1;
        }
    }
    let mut open = 0isize;
    let mut cuts = Vec::new();
    for (i, id) in order.iter().enumerate() {
        open += change[i];
        let alone = open == 1 && last_read.get(id).is_some_and(|&last| last > i);
        let head = !matches!(graph.node(*id).op, Op::Input(_));
        if alone && head && batched[id] && !fetches.contains(id) && !tail_var[i + 1] {
            cuts.push(Cut {
                node: *id,
                image_bytes: image_bytes(graph, *id),
                tail_image_bytes: tail_bytes[i + 1],
            });
        }
    }
    cuts
}

/// Bytes of one image of batched value `id` (`usize::MAX` if they overflow).
fn image_bytes(graph: &Graph, id: NodeId) -> usize {
    let ty = &graph.node(id).ty;
    image_numel(&ty.shape)
        .and_then(|n| n.checked_mul(ty.dtype.size_bytes()))
        .unwrap_or(usize::MAX)
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

/// The part of the fetched graph after `cut` (a [`Cut`]) as a graph of its own: `cut`
/// becomes a placeholder of its type (batch `?`) and keeps its name, as every node copied
/// does. Returns the graph, the placeholder and the fetches, as the new graph's ids.
pub(crate) fn tail_graph(
    graph: &Graph,
    fetches: &[NodeId],
    cut: NodeId,
) -> Result<(Graph, NodeId, Vec<NodeId>)> {
    // The nodes the fetches read without going through the cut.
    let mut needed: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = fetches.to_vec();
    while let Some(id) = stack.pop() {
        if needed.insert(id) && id != cut {
            stack.extend(graph.inputs(id));
        }
    }
    let mut tail = Graph::new();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for id in graph.topo_order_of(fetches.iter().copied()) {
        if !needed.contains(&id) {
            continue;
        }
        let node = graph.node(id);
        let new = if id == cut {
            tail.add(node.name.clone(), Op::Input(node.ty.clone()), &[])?
        } else {
            let inputs: Vec<NodeId> = graph.inputs(id).iter().map(|i| map[i]).collect();
            tail.add(node.name.clone(), node.op.clone(), &inputs)?
        };
        map.insert(id, new);
    }
    let fetches = fetches.iter().map(|f| map[f]).collect();
    Ok((tail, map[&cut], fetches))
}

/// The cut after which `backend` runs a batch of `batch` images whole again, if any. Where
/// the whole batch of the cut and of every value after it fits the cache, the tail runs
/// whole: of those cuts, the smallest before the tail's largest value (the cut's values are
/// stacked, and in an imported NCHW graph transposed to NCHW and back: MobileNet-v2 at batch
/// 8 cut at its 56x56x144 expansion spent 1.7 ms of 22 on that, at its 28x28x32 block output
/// 0.1; `kiln bench --profile`, two threads, the Zen 5 above).
pub(crate) fn tail_cut(backend: &BackendKind, s: &Separable, batch: usize) -> Option<NodeId> {
    let fits = |c: &&Cut| match backend {
        BackendKind::Cpu => {
            kiln_cpu::gemm::batch_fits_cache(c.image_bytes.max(c.tail_image_bytes), batch)
        }
        _ => false,
    };
    let mut fitting = s.cuts.iter().filter(fits).peekable();
    let largest_after = fitting.peek()?.tail_image_bytes;
    // The last of the smallest: a conv, its batch norm and activation are one value's
    // size, and a cut inside the chain would keep them from being fused.
    fitting
        .take_while(|c| c.tail_image_bytes == largest_after)
        .max_by_key(|c| std::cmp::Reverse(c.image_bytes))
        .map(|c| c.node)
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

    /// A small CNN: conv, depthwise, 1x1 conv with the input added, pooling, a dense layer
    /// with `dense`'s weights, softmax.
    fn cnn(dense: &str) -> Graph {
        crate::Graph::parse(&format!(
            "kiln 2
input %x : f32[?,12,10,8]
const %w1 : f32[1,1,8,16] = normal(0.0, 0.3, 1)
const %dw : f32[3,3,16,1] = normal(0.0, 0.3, 2)
const %w2 : f32[1,1,16,8] = normal(0.0, 0.3, 3)
{dense}
%e = conv2d(%x, %w1, padding=\"SAME\")
%d = depthwise_conv2d(%e, %dw, padding=\"SAME\")
%p = conv2d(%d, %w2, padding=\"SAME\")
%s = add(%p, %x)
%m = reduce_mean(%s, axes=[1,2])
%l = matmul(%m, %fc)
%y = softmax(%l)
output %y
"
        ))
        .unwrap()
        .ir()
        .clone()
    }

    fn cut_names(g: &Graph) -> Vec<String> {
        let y = g.find("y").unwrap();
        separable(g, &[y])
            .unwrap()
            .cuts
            .iter()
            .map(|c| g.node(c.node).name.clone())
            .collect()
    }

    /// Cuts are the values the rest is computed from alone: not while the block's input is
    /// still to be added, not the fetch, and not before a variable's reader.
    #[test]
    fn cuts_are_single_values_before_a_constant_tail() {
        let constant = cnn("const %fc : f32[8,5] = normal(0.0, 0.3, 4)");
        assert_eq!(cut_names(&constant), ["s", "m", "l"]);
        let variable = cnn("var %fc : f32[8,5] = normal(0.0, 0.3, 4)");
        assert_eq!(cut_names(&variable), ["l"]);
        let y = constant.find("y").unwrap();
        let s = separable(&constant, &[y]).unwrap();
        let (tail, input, fetches) = tail_graph(&constant, &[y], s.cuts[0].node).unwrap();
        assert_eq!(tail.node(input).name, "s");
        assert!(matches!(tail.node(input).op, Op::Input(_)));
        assert_eq!(tail.node(fetches[0]).name, "y");
        let mut names: Vec<String> = tail
            .node_ids()
            .map(|id| tail.node(id).name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["fc", "l", "m", "s", "y"]);
    }

    /// Of the cuts whose whole batch fits the cache, the smallest before the tail's largest
    /// value, the last of equals; none where nothing fits.
    #[test]
    fn the_tail_starts_at_the_smallest_fitting_cut() {
        let ids: Vec<NodeId> = cnn("const %fc : f32[8,5] = zeros").node_ids().collect();
        let cut = |node: usize, image_bytes: usize, tail_image_bytes: usize| Cut {
            node: ids[node],
            image_bytes,
            tail_image_bytes,
        };
        let big = usize::MAX / 4;
        let s = Separable {
            weight_bytes: 0,
            largest_image_bytes: big,
            cuts: vec![
                cut(0, big, 4000),
                cut(1, 3000, 4000),
                cut(2, 1000, 4000),
                cut(3, 1000, 4000),
                cut(4, 4000, 2000),
                cut(5, 10, 20),
            ],
        };
        assert_eq!(tail_cut(&BackendKind::Cpu, &s, 2), Some(ids[3]));
        let huge = Separable {
            cuts: vec![cut(0, big, big)],
            ..s.clone()
        };
        assert_eq!(tail_cut(&BackendKind::Cpu, &huge, 2), None);
    }

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
