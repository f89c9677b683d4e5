//! What an op costs: floating-point operations, for GFLOP/s figures in `kiln bench` and
//! profiles. Counts follow the usual convention (a multiply-add is 2 FLOPs); movement ops cost
//! nothing. Unknown dims make the count unknown (`None`).

use crate::fused::ExprNode;
use crate::graph::Graph;
use crate::op::Op;
use crate::program::{BufferId, Kernel, Program};
use crate::shape::{Shape, TensorType};

/// FLOPs of one op given its operand types and its result type.
pub fn flops(op: &Op, inputs: &[&TensorType], output: &TensorType) -> Option<u64> {
    let out = output.shape.numel()? as u64;
    let dim = |t: &TensorType, i: usize| t.shape.dims().get(i).copied().flatten().map(|d| d as u64);
    Some(match op {
        Op::Input(_) | Op::Var(_) | Op::Const(_) => 0,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Pad { .. } => 0,
        Op::Unary(_) | Op::Binary(_) | Op::BiasAdd { .. } | Op::Assign(_) => out,
        Op::BatchNorm { .. } => 2 * out,
        Op::MatMul { transpose_a, .. } => {
            let a = inputs.first()?;
            let r = a.rank();
            let k = if *transpose_a {
                dim(a, r - 2)?
            } else {
                dim(a, r - 1)?
            };
            2 * out * k
        }
        Op::Conv2d(_) => {
            let w = inputs.get(1)?;
            2 * out * dim(w, 0)? * dim(w, 1)? * dim(w, 2)?
        }
        Op::DepthwiseConv2d(_) => {
            let w = inputs.get(1)?;
            2 * out * dim(w, 0)? * dim(w, 1)?
        }
        Op::MaxPool(p) | Op::AvgPool(p) => out * (p.ksize[0] * p.ksize[1]) as u64,
        Op::Reduce { .. } => inputs.first()?.shape.numel()? as u64,
        // max, subtract, exp, sum, divide (or log): about five per element.
        Op::Softmax { .. } | Op::LogSoftmax { .. } => 5 * out,
        Op::Gather { .. } | Op::Cast { .. } | Op::BroadcastLike => 0,
        Op::ArgMax { .. } => inputs.first()?.shape.numel()? as u64,
        // Per logit: max, subtract, exp, sum, and the label product and sum (or one pick).
        Op::SoftmaxCrossEntropyWithLogits => 6 * inputs.first()?.shape.numel()? as u64,
        Op::SparseSoftmaxCrossEntropyWithLogits => 4 * inputs.first()?.shape.numel()? as u64,
        Op::OneHot { .. } => 0,
        // One add per gradient element.
        Op::GatherGrad { .. } => inputs.first()?.shape.numel()? as u64,
        // Square, window sum (2r + 1 adds), scale, pow and divide per element.
        Op::Lrn { depth_radius, .. } => out * (2 * *depth_radius as u64 + 5),
        Op::Fused(f) => {
            let main = match f.main() {
                Some(m) => flops(m, inputs.get(..f.main_arity())?, output)?,
                None => 0,
            };
            let steps = f
                .expr()
                .nodes()
                .iter()
                .filter(|n| !matches!(n, ExprNode::Main | ExprNode::Operand(_)))
                .count() as u64;
            main + steps * out
        }
        Op::Compare(_) | Op::Logical(_) | Op::LogicalNot | Op::Select => out,
        Op::StopGradient => 0,
        // The forward conv2d's multiply-adds, counted over dy: one per (dy element, tap,
        // input channel of its group).
        Op::Conv2dBackpropInput { .. } => {
            let (w, dy) = (inputs.first()?, inputs.get(1)?);
            2 * dy.shape.numel()? as u64 * dim(w, 0)? * dim(w, 1)? * dim(w, 2)?
        }
        Op::Conv2dBackpropFilter { filter_shape, .. } => {
            let dy = inputs.get(1)?;
            let taps = (filter_shape[0] * filter_shape[1] * filter_shape[2]) as u64;
            2 * dy.shape.numel()? as u64 * taps
        }
        // One multiply-add per (dy element, tap): each output channel reads one input channel.
        Op::DepthwiseConv2dBackpropInput { .. } => {
            let (w, dy) = (inputs.first()?, inputs.get(1)?);
            2 * dy.shape.numel()? as u64 * dim(w, 0)? * dim(w, 1)?
        }
        Op::DepthwiseConv2dBackpropFilter { filter_shape, .. } => {
            let dy = inputs.get(1)?;
            2 * dy.shape.numel()? as u64 * (filter_shape[0] * filter_shape[1]) as u64
        }
        // One compare (max) or add (avg) per window cell of each gradient element.
        Op::MaxPoolGrad(p) => (inputs.get(2)?.shape.numel()? as u64)
            .saturating_mul((p.ksize[0] as u64).saturating_mul(p.ksize[1] as u64)),
        Op::AvgPoolGrad { attrs: p, .. } => (inputs.first()?.shape.numel()? as u64)
            .saturating_mul((p.ksize[0] as u64).saturating_mul(p.ksize[1] as u64)),
        // Per element of the variable: multiply and subtract (gradient descent); two
        // multiply-adds (momentum, whose value holds 2 values per element); about a dozen for
        // Adam (3 values per element). Nesterov's extra multiply-add is not counted.
        Op::ApplyGradientDescent | Op::ApplyMomentum { .. } => 2 * out,
        Op::ApplyAdam => 4 * out,
        Op::Group => 0,
    })
}

/// Total FLOPs of the nodes `roots` depend on, or `None` if any count is unknown.
pub fn graph_flops(graph: &Graph, roots: &[crate::NodeId]) -> Option<u64> {
    graph
        .topo_order_of(roots.iter().copied())
        .into_iter()
        .try_fold(0u64, |acc, id| {
            let node = graph.node(id);
            let inputs = graph.inputs(id);
            let types: Vec<&TensorType> = inputs.iter().map(|&i| &graph.node(i).ty).collect();
            Some(acc + flops(&node.op, &types, &node.ty)?)
        })
}

/// FLOPs of one lowered kernel: its main op's, plus one per output element for each epilogue
/// step; `None` if the main op's count is unknown.
pub fn kernel_flops(program: &Program, kernel: &Kernel) -> Option<u64> {
    let type_of = |b: BufferId| {
        let buffer = program.buffer(b);
        TensorType::new(buffer.dtype, Shape::known(&buffer.dims))
    };
    let out = type_of(kernel.output);
    let main = match &kernel.main {
        Some(op) => {
            let inputs: Vec<TensorType> = kernel.inputs.iter().map(|&b| type_of(b)).collect();
            let refs: Vec<&TensorType> = inputs.iter().collect();
            flops(op, &refs, &out)?
        }
        None => 0,
    };
    let steps = kernel.epilogue.steps.len() as u64;
    Some(main + steps * out.shape.numel()? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::ConvAttrs;
    use crate::shape::Shape;
    use crate::{Initializer, Source};

    #[test]
    fn conv_and_matmul_counts() {
        let mut g = Graph::new();
        let x = g
            .add(
                "x",
                Op::Input(TensorType::f32(Shape::known(&[1, 56, 56, 64]))),
                &[],
            )
            .unwrap();
        let src = Source {
            ty: TensorType::f32(Shape::known(&[3, 3, 64, 64])),
            init: Initializer::Zeros,
        };
        let w = g.add("w", Op::Const(src), &[]).unwrap();
        let c = g.add("c", Op::Conv2d(ConvAttrs::same()), &[x, w]).unwrap();
        assert_eq!(graph_flops(&g, &[c]), Some(2 * 56 * 56 * 64 * 64 * 9));

        let a = g
            .add("a", Op::Input(TensorType::f32(Shape::known(&[8, 5]))), &[])
            .unwrap();
        let b = g
            .add("b", Op::Input(TensorType::f32(Shape::known(&[5, 3]))), &[])
            .unwrap();
        let op = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let m = g.add("m", op, &[a, b]).unwrap();
        assert_eq!(graph_flops(&g, &[m]), Some(2 * 8 * 3 * 5));

        let u = g
            .add(
                "u",
                Op::Input(TensorType::f32(Shape::of(&[None, Some(3)]))),
                &[],
            )
            .unwrap();
        let r = g.add("r", Op::Unary(crate::UnaryOp::Relu), &[u]).unwrap();
        assert_eq!(
            graph_flops(&g, &[r]),
            None,
            "unknown dims give an unknown count"
        );
    }
}
