//! ONNX op -> kiln ops, one function per ONNX op family, dispatched by op type.
//!
//! Each function reads its node's inputs and attributes for the model's opset, adds kiln nodes
//! and returns one [`Value`] per output it computes (optional outputs it does not compute are
//! left off; the driver reports them if anything uses them). Integer shape computations are
//! folded at import ([`fold::fold`]) before this dispatch sees them.

mod fold;
mod math;
mod nn;
mod shape;

use crate::attrs::Ctx;
use crate::error::Result;
use crate::importer::Importer;
use crate::value::Value;
use kiln_ir::{BinaryOp, Dim, Float, NodeId, Op, Tensor, UnaryOp};

/// Every op type the importer maps.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "ArgMax",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "LRN",
    "MatMul",
    "Max",
    "MaxPool",
    "Min",
    "Mul",
    "Pad",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Not",
    "Where",
    "Sign",
];

/// Whether the importer maps `op` (default domain).
pub fn supported(op: &str) -> bool {
    SUPPORTED.contains(&op)
}

/// Imports one node; returns its outputs' values in order.
pub fn import_node(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    if let Some(folded) = fold::fold(imp, cx)? {
        return Ok(folded);
    }
    match cx.op {
        "Add" | "Sub" | "Mul" | "Div" => math::binary_node(imp, cx),
        "Sum" | "Max" | "Min" => math::variadic(imp, cx),
        "Relu" | "Sigmoid" | "Tanh" | "LeakyRelu" => math::activation(imp, cx),
        "Clip" => math::clip(imp, cx),
        "HardSigmoid" | "HardSwish" => math::hard(imp, cx),
        "Gemm" => math::gemm(imp, cx),
        "MatMul" => math::matmul(imp, cx),
        "Softmax" | "LogSoftmax" => math::softmax(imp, cx),
        "ReduceMean" | "ReduceSum" | "ReduceMax" => math::reduce(imp, cx),
        "ArgMax" => math::argmax(imp, cx),
        "Identity" | "Dropout" => math::pass_through(imp, cx),
        "Cast" => math::cast(imp, cx),
        "Conv" => nn::conv(imp, cx),
        "MaxPool" | "AveragePool" => nn::pool(imp, cx),
        "GlobalAveragePool" | "GlobalMaxPool" => nn::global_pool(imp, cx),
        "BatchNormalization" => nn::batch_norm(imp, cx),
        "LRN" => nn::lrn(imp, cx),
        "Constant" => shape::constant(imp, cx),
        "Shape" => shape::shape(imp, cx),
        "ConstantOfShape" => shape::constant_of_shape(imp, cx),
        "Gather" => shape::gather(imp, cx),
        "Concat" => shape::concat(imp, cx),
        "Reshape" => shape::reshape(imp, cx),
        "Flatten" => shape::flatten(imp, cx),
        "Squeeze" | "Unsqueeze" => shape::squeeze(imp, cx),
        "Transpose" => shape::transpose(imp, cx),
        "Slice" => shape::slice(imp, cx),
        "Split" => shape::split(imp, cx),
        "Pad" => shape::pad(imp, cx),
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Not"
        | "Where" | "Sign" => math::logic(imp, cx),
        other => Err(cx.err(format!("op {other} is not supported"))),
    }
}

/// `axis` (negative counts from the end) in `0..rank`, or an error naming the node.
pub(crate) fn norm_axis(cx: &Ctx<'_>, axis: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(cx.err(format!(
            "{what} {axis} is out of range for rank {rank} (allowed {}..{})",
            -r,
            r - 1
        )));
    }
    Ok((if axis < 0 { axis + r } else { axis }) as usize)
}

/// A reshape of `x` to `dims`; one unknown dim becomes `-1`, more is an error.
pub(crate) fn reshape_to(
    imp: &mut Importer<'_>,
    cx: &Ctx<'_>,
    hint: &str,
    x: NodeId,
    dims: &[Dim],
) -> Result<NodeId> {
    if dims.iter().filter(|d| d.is_none()).count() > 1 {
        return Err(cx.err(format!(
            "cannot reshape {} to {} with kiln's reshape: more than one dim is known only at \
             run time",
            imp.ty(x),
            kiln_ir::Shape::of(dims)
        )));
    }
    if imp.ty(x).shape.dims() == dims {
        return Ok(x);
    }
    let shape = dims.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
    imp.add(cx, hint, Op::Reshape { shape }, &[x])
}

/// An f32 scalar constant.
pub(crate) fn scalar(imp: &mut Importer<'_>, cx: &Ctx<'_>, hint: &str, v: f32) -> Result<NodeId> {
    imp.literal(cx, hint, Tensor::scalar(v))
}

/// `op(a, b)` with broadcasting.
pub(crate) fn binary(
    imp: &mut Importer<'_>,
    cx: &Ctx<'_>,
    hint: &str,
    op: BinaryOp,
    a: NodeId,
    b: NodeId,
) -> Result<NodeId> {
    imp.add(cx, hint, Op::Binary(op), &[a, b])
}

/// `op(x)`.
pub(crate) fn unary(
    imp: &mut Importer<'_>,
    cx: &Ctx<'_>,
    hint: &str,
    op: UnaryOp,
    x: NodeId,
) -> Result<NodeId> {
    imp.add(cx, hint, Op::Unary(op), &[x])
}

/// `leaky_relu` with slope `alpha`.
pub(crate) fn leaky(alpha: f32) -> UnaryOp {
    UnaryOp::LeakyRelu {
        alpha: Float(alpha),
    }
}

/// The node's single value output.
pub(crate) fn one(id: NodeId) -> Result<Vec<Value>> {
    Ok(vec![Value::Node(id)])
}
