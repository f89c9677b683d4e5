//! Elementwise ops, activations, Gemm/MatMul, softmax, reductions, ArgMax, Cast, the
//! comparisons, logical ops, Where and Sign, and the pass-through ops (Identity, Dropout).

use super::{binary, leaky, norm_axis, one, reshape_to, scalar, unary};
use crate::attrs::Ctx;
use crate::error::Result;
use crate::importer::Importer;
use crate::tensor::import_dtype;
use crate::value::{Value, cast_tensor, tensor_f32s, tensor_ints};
use kiln_ir::{BinaryOp, DType, Dim, NodeId, Op, ReduceOp, UnaryOp};
use std::sync::Arc;

/// `Add`, `Sub`, `Mul`, `Div` with numpy broadcasting (ONNX opset 7+ semantics).
pub fn binary_op(op: &str) -> BinaryOp {
    match op {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        _ => BinaryOp::Div,
    }
}

/// Add, Sub, Mul, Div.
pub fn binary_node(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let a = imp.node(cx, 0)?;
    let b = imp.node(cx, 1)?;
    one(binary(imp, cx, &cx.hint(), binary_op(cx.op), a, b)?)
}

/// Sum, Max, Min over any number of inputs: a chain of binary ops.
pub fn variadic(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let op = match cx.op {
        "Sum" => BinaryOp::Add,
        "Max" => BinaryOp::Maximum,
        _ => BinaryOp::Minimum,
    };
    let n = cx.node.input.len();
    if n == 0 {
        return Err(cx.err("needs at least one input"));
    }
    if n == 1 {
        return Ok(vec![imp.required(cx, 0)?]);
    }
    let mut acc = imp.node(cx, 0)?;
    for i in 1..n {
        let x = imp.node(cx, i)?;
        let hint = if i + 1 == n {
            cx.hint()
        } else {
            format!("{}/{i}", cx.hint())
        };
        acc = binary(imp, cx, &hint, op, acc, x)?;
    }
    one(acc)
}

/// Relu, Sigmoid, Tanh, LeakyRelu (alpha default 0.01).
pub fn activation(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let op = match cx.op {
        "Relu" => UnaryOp::Relu,
        "Sigmoid" => UnaryOp::Sigmoid,
        "Tanh" => UnaryOp::Tanh,
        _ => leaky(cx.float("alpha", 0.01)?),
    };
    one(unary(imp, cx, &cx.hint(), op, x)?)
}

/// A Clip bound: a constant, a run-time node, or absent.
enum Bound {
    None,
    Const(f32),
    Node(NodeId),
}

/// Clip: bounds are attributes before opset 11 and optional inputs from 11. `Clip(0, 6)` is
/// relu6 and `Clip(0, inf)` relu; others are maximum/minimum with the bounds.
pub fn clip(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let (lo, hi) = if cx.opset < 11 {
        let b = |v: Option<f32>| v.map_or(Bound::None, Bound::Const);
        (b(cx.float_opt("min")?), b(cx.float_opt("max")?))
    } else {
        let mut bound = |i: usize| -> Result<Bound> {
            Ok(match imp.value(cx, i) {
                None => Bound::None,
                Some(Value::Const(t)) => match tensor_f32s(&t).as_slice() {
                    [v] => Bound::Const(*v),
                    _ => return Err(cx.err(format!("bound {i} must be a scalar, got {}", t.ty()))),
                },
                Some(_) => Bound::Node(imp.node(cx, i)?),
            })
        };
        (bound(1)?, bound(2)?)
    };
    let hint = cx.hint();
    let id = match (&lo, &hi) {
        (Bound::Const(l), Bound::Const(h)) if *l == 0.0 && *h == 6.0 => {
            unary(imp, cx, &hint, UnaryOp::Relu6, x)?
        }
        (Bound::Const(l), Bound::None) if *l == 0.0 => unary(imp, cx, &hint, UnaryOp::Relu, x)?,
        (Bound::Const(l), Bound::Const(h)) if *h == f32::INFINITY && *l == 0.0 => {
            unary(imp, cx, &hint, UnaryOp::Relu, x)?
        }
        _ => {
            let mut y = x;
            let has_hi = !matches!(hi, Bound::None);
            for (b, op, tag) in [
                (lo, BinaryOp::Maximum, "min"),
                (hi, BinaryOp::Minimum, "max"),
            ] {
                let is_last = op == BinaryOp::Minimum || !has_hi;
                let h = if is_last {
                    hint.clone()
                } else {
                    format!("{hint}/lower")
                };
                let bn = match b {
                    Bound::None => continue,
                    Bound::Const(v) => scalar(imp, cx, &format!("{hint}/{tag}"), v)?,
                    Bound::Node(n) => n,
                };
                y = binary(imp, cx, &h, op, y, bn)?;
            }
            y
        }
    };
    one(id)
}

/// HardSigmoid `max(0, min(1, alpha*x + beta))` (defaults 0.2, 0.5) and HardSwish
/// `x * hard_sigmoid(x)` with alpha 1/6, beta 0.5.
pub fn hard(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let swish = cx.op == "HardSwish";
    let (alpha, beta) = if swish {
        (1.0 / 6.0, 0.5)
    } else {
        (cx.float("alpha", 0.2)?, cx.float("beta", 0.5)?)
    };
    let h = cx.hint();
    let a = scalar(imp, cx, &format!("{h}/alpha"), alpha)?;
    let b = scalar(imp, cx, &format!("{h}/beta"), beta)?;
    let one_c = scalar(imp, cx, &format!("{h}/one"), 1.0)?;
    let t = binary(imp, cx, &format!("{h}/scaled"), BinaryOp::Mul, x, a)?;
    let t = binary(imp, cx, &format!("{h}/shifted"), BinaryOp::Add, t, b)?;
    let t = unary(imp, cx, &format!("{h}/relu"), UnaryOp::Relu, t)?;
    let last = if swish {
        format!("{h}/gate")
    } else {
        h.clone()
    };
    let t = binary(imp, cx, &last, BinaryOp::Minimum, t, one_c)?;
    if swish {
        return one(binary(imp, cx, &h, BinaryOp::Mul, x, t)?);
    }
    one(t)
}

/// Gemm: `alpha * A' B' + beta * C` with transA/transB.
pub fn gemm(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let a = imp.node(cx, 0)?;
    let b = imp.node(cx, 1)?;
    let (alpha, beta) = (cx.float("alpha", 1.0)?, cx.float("beta", 1.0)?);
    let op = Op::MatMul {
        transpose_a: cx.int("transA", 0)? != 0,
        transpose_b: cx.int("transB", 0)? != 0,
    };
    for (i, id) in [(0, a), (1, b)] {
        if imp.ty(id).rank() != 2 {
            return Err(cx.err(format!("input {i} must have rank 2, got {}", imp.ty(id))));
        }
    }
    let h = cx.hint();
    let has_c = imp.value(cx, 2).is_some();
    let mm_hint = if has_c || alpha != 1.0 {
        format!("{h}/matmul")
    } else {
        h.clone()
    };
    let mut y = imp.add(cx, &mm_hint, op, &[a, b])?;
    if alpha != 1.0 {
        let s = scalar(imp, cx, &format!("{h}/alpha"), alpha)?;
        let hint = if has_c {
            format!("{h}/scaled")
        } else {
            h.clone()
        };
        y = binary(imp, cx, &hint, BinaryOp::Mul, y, s)?;
    }
    if has_c {
        let c = match (imp.required(cx, 2)?, beta) {
            (_, 1.0) => imp.node(cx, 2)?,
            (Value::Const(t), _) => {
                // Scale a constant C once at import rather than at every run.
                let name = cx.input_name(2).unwrap_or_default().to_string();
                let scaled: Vec<f32> = t
                    .f32s()
                    .map_err(|e| cx.err(e.to_string()))?
                    .iter()
                    .map(|v| v * beta)
                    .collect();
                let t = kiln_ir::Tensor::from_vec(t.dims(), scaled)
                    .map_err(|e| cx.err(e.to_string()))?;
                imp.constant_node(&name, "beta", Arc::new(t))?
            }
            _ => {
                let c = imp.node(cx, 2)?;
                let s = scalar(imp, cx, &format!("{h}/beta"), beta)?;
                binary(imp, cx, &format!("{h}/c"), BinaryOp::Mul, c, s)?
            }
        };
        y = binary(imp, cx, &h, BinaryOp::Add, y, c)?;
    }
    one(y)
}

/// MatMul with numpy semantics: rank 2 and equal-batch rank 3 map directly; a rank-1 operand
/// is promoted and the added axis removed; `[.., m, k] x [k, n]` flattens the leading axes;
/// equal leading axes of rank > 3 are flattened to one batch axis.
pub fn matmul(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let mut a = imp.node(cx, 0)?;
    let mut b = imp.node(cx, 1)?;
    let (ta, tb) = (imp.ty(a), imp.ty(b));
    let (ad, bd) = (ta.shape.dims().to_vec(), tb.shape.dims().to_vec());
    let h = cx.hint();
    let mm = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let bad = || {
        cx.err(format!("cannot multiply {ta} by {tb}: kiln's matmul takes rank 2, equal-batch rank 3, or [..,m,k] x [k,n]"))
    };
    if ad.is_empty() || bd.is_empty() {
        return Err(bad());
    }
    // The output dims numpy gives, to reshape back to.
    let mut out: Vec<Dim>;
    if ad.len() == 1 {
        a = reshape_to(imp, cx, &format!("{h}/a2d"), a, &[Some(1), ad[0]])?;
    }
    if bd.len() == 1 {
        b = reshape_to(imp, cx, &format!("{h}/b2d"), b, &[bd[0], Some(1)])?;
    }
    let (ra, rb) = (imp.ty(a).rank(), imp.ty(b).rank());
    let (a_dims, b_dims) = (
        imp.ty(a).shape.dims().to_vec(),
        imp.ty(b).shape.dims().to_vec(),
    );
    let y = if ra == rb && ra <= 3 {
        out = a_dims[..ra - 1].to_vec();
        out.push(b_dims[rb - 1]);
        imp.add(cx, &format!("{h}/matmul"), mm, &[a, b])?
    } else if rb == 2 && ra > 2 {
        // [.., m, k] x [k, n]: fold the leading axes into m.
        let lead: Option<usize> = a_dims[..ra - 1]
            .iter()
            .try_fold(1usize, |p, d| d.map(|d| p * d));
        let a2 = reshape_to(imp, cx, &format!("{h}/a2d"), a, &[lead, a_dims[ra - 1]])?;
        out = a_dims[..ra - 1].to_vec();
        out.push(b_dims[1]);
        imp.add(cx, &format!("{h}/matmul"), mm, &[a2, b])?
    } else if ra == rb && a_dims[..ra - 2] == b_dims[..rb - 2] {
        let batch: Option<usize> = a_dims[..ra - 2]
            .iter()
            .try_fold(1usize, |p, d| d.map(|d| p * d));
        let a3 = reshape_to(
            imp,
            cx,
            &format!("{h}/a3d"),
            a,
            &[batch, a_dims[ra - 2], a_dims[ra - 1]],
        )?;
        let b3 = reshape_to(
            imp,
            cx,
            &format!("{h}/b3d"),
            b,
            &[batch, b_dims[rb - 2], b_dims[rb - 1]],
        )?;
        out = a_dims[..ra - 1].to_vec();
        out.push(b_dims[rb - 1]);
        imp.add(cx, &format!("{h}/matmul"), mm, &[a3, b3])?
    } else {
        return Err(bad());
    };
    if ad.len() == 1 {
        out.remove(out.len() - 2);
    }
    if bd.len() == 1 {
        out.pop();
    }
    let y = reshape_to(imp, cx, &h, y, &out)?;
    if imp.graph.node(y).name != crate::sanitize(&h) {
        // No reshape was needed: give the matmul the output's name.
        rename_to_hint(imp, y, &h);
    }
    one(y)
}

/// Renames `id` to the sanitised `hint` when that name is free (cosmetic).
fn rename_to_hint(imp: &mut Importer<'_>, id: NodeId, hint: &str) {
    let name = crate::sanitize(hint);
    if imp.graph.find(&name).is_none() {
        let _ = imp.graph.rename(id, name);
    }
}

/// Softmax / LogSoftmax. Before opset 13 the input is flattened to 2-D at `axis` (default 1)
/// and normalised over the second dim: reshape, softmax over the last axis, reshape back.
/// From opset 13 it normalises along `axis` (default -1).
pub fn softmax(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let dims = imp.ty(x).shape.dims().to_vec();
    let legacy = cx.opset < 13;
    let axis = cx.int("axis", if legacy { 1 } else { -1 })?;
    let a = norm_axis(cx, axis, dims.len(), "axis")?;
    let make = |axis: i64| {
        if cx.op == "Softmax" {
            Op::Softmax { axis }
        } else {
            Op::LogSoftmax { axis }
        }
    };
    let h = cx.hint();
    if !legacy || a + 1 == dims.len() {
        return one(imp.add(cx, &h, make(a as i64), &[x])?);
    }
    let prod = |ds: &[Dim]| ds.iter().try_fold(1usize, |p, d| d.map(|d| p * d));
    let flat = [prod(&dims[..a]), prod(&dims[a..])];
    let x2 = reshape_to(imp, cx, &format!("{h}/2d"), x, &flat)?;
    let s = imp.add(cx, &format!("{h}/flat"), make(-1), &[x2])?;
    one(reshape_to(imp, cx, &h, s, &dims)?)
}

/// ReduceMean / ReduceSum / ReduceMax: axes from the attribute, or from input 1 (ReduceSum
/// from opset 13, the others from 18); `keepdims` default 1; no axes reduces everything unless
/// `noop_with_empty_axes`.
pub fn reduce(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let op = match cx.op {
        "ReduceMean" => ReduceOp::Mean,
        "ReduceSum" => ReduceOp::Sum,
        _ => ReduceOp::Max,
    };
    let axes_from_input = cx.opset >= if op == ReduceOp::Sum { 13 } else { 18 };
    let axes = if axes_from_input {
        match imp.value(cx, 1) {
            None => None,
            Some(_) => Some(ints_input(imp, cx, 1)?),
        }
    } else {
        cx.ints_opt("axes")?
    };
    let axes = axes.filter(|a| !a.is_empty());
    if axes.is_none() && cx.int("noop_with_empty_axes", 0)? != 0 {
        return Ok(vec![Value::Node(x)]);
    }
    let keepdims = cx.int("keepdims", 1)? != 0;
    one(imp.add(cx, &cx.hint(), Op::Reduce { op, axes, keepdims }, &[x])?)
}

/// Input `i` as a constant integer list.
pub fn ints_input(imp: &Importer<'_>, cx: &Ctx<'_>, i: usize) -> Result<Vec<i64>> {
    let t = imp.constant(cx, i)?;
    tensor_ints(&t).ok_or_else(|| {
        cx.err(format!(
            "input {i} must be an integer tensor, got {}",
            t.ty()
        ))
    })
}

/// ArgMax: kiln's argmax drops the axis; `keepdims` (default 1) reshapes it back to 1.
pub fn argmax(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    if cx.int("select_last_index", 0)? != 0 {
        return Err(cx.err(
            "select_last_index=1 is not supported (kiln's argmax returns the first maximum)",
        ));
    }
    let dims = imp.ty(x).shape.dims().to_vec();
    let a = norm_axis(cx, cx.int("axis", 0)?, dims.len(), "axis")?;
    let keep = cx.int("keepdims", 1)? != 0;
    let h = cx.hint();
    let hint = if keep {
        format!("{h}/argmax")
    } else {
        h.clone()
    };
    let op = Op::ArgMax {
        axis: a as i64,
        output_type: DType::I64,
    };
    let y = imp.add(cx, &hint, op, &[x])?;
    if !keep {
        return one(y);
    }
    let mut out = dims;
    out[a] = Some(1);
    one(reshape_to(imp, cx, &h, y, &out)?)
}

/// Identity and Dropout (inference: the input unchanged; Dropout's mask is not computed).
pub fn pass_through(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    if cx.op == "Dropout" && cx.opset >= 12 {
        if let Some(Value::Const(t)) = imp.value(cx, 2) {
            if tensor_ints(&t).is_some_and(|v| v.iter().any(|&b| b != 0)) {
                return Err(
                    cx.err("training_mode=true is not supported (kiln imports for inference)")
                );
            }
        } else if imp.value(cx, 2).is_some() {
            return Err(cx.err("training_mode must be a constant false"));
        }
    }
    Ok(vec![imp.required(cx, 0)?])
}

/// Cast to the kiln dtype of `to`; constants are converted at import.
pub fn cast(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let to_onnx = cx
        .int_opt("to")?
        .ok_or_else(|| cx.err("attribute `to` is required"))?;
    let to = i32::try_from(to_onnx)
        .ok()
        .and_then(import_dtype)
        .ok_or_else(|| {
            cx.err(format!(
                "cast to {} is not supported (kiln has f32, i32, i64 and bool)",
                crate::proto::data_type::name(to_onnx as i32)
            ))
        })?;
    match imp.required(cx, 0)? {
        Value::Const(t) => {
            let c = cast_tensor(&t, to).map_err(|e| cx.err(e))?;
            Ok(vec![Value::Const(Arc::new(c))])
        }
        _ => {
            let x = imp.node(cx, 0)?;
            if imp.ty(x).dtype == to {
                return Ok(vec![Value::Node(x)]);
            }
            one(imp.add(cx, &cx.hint(), Op::Cast { to }, &[x])?)
        }
    }
}

/// Equal, Less, LessOrEqual, Greater, GreaterOrEqual (bool results), And, Or, Not, Where
/// (`select`) and Sign: the same semantics as kiln's ops, numpy broadcasting included, so each
/// is one node.
pub fn logic(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    use kiln_ir::op::{CompareOp, LogicalOp};
    let (op, arity) = match cx.op {
        "Equal" => (Op::Compare(CompareOp::Equal), 2),
        "Less" => (Op::Compare(CompareOp::Less), 2),
        "LessOrEqual" => (Op::Compare(CompareOp::LessEqual), 2),
        "Greater" => (Op::Compare(CompareOp::Greater), 2),
        "GreaterOrEqual" => (Op::Compare(CompareOp::GreaterEqual), 2),
        "And" => (Op::Logical(LogicalOp::And), 2),
        "Or" => (Op::Logical(LogicalOp::Or), 2),
        "Not" => (Op::LogicalNot, 1),
        "Where" => (Op::Select, 3),
        _ => (Op::Unary(UnaryOp::Sign), 1),
    };
    let inputs = (0..arity)
        .map(|i| imp.node(cx, i))
        .collect::<Result<Vec<NodeId>>>()?;
    one(imp.add(cx, &cx.hint(), op, &inputs)?)
}
