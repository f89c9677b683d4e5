//! Shape and data-movement ops, and the folding of integer shape computations at import.
//!
//! Integer shape computations are folded first (see `fold.rs`); `Shape` produces the symbolic
//! vectors they work on. Movement ops on constants (Reshape,
//! Flatten, Squeeze, Unsqueeze, Transpose) are applied to the data at import; on run-time
//! values they become kiln's reshape, transpose, slice, concat, pad and gather.

use super::math::ints_input;
use super::{norm_axis, one, reshape_to};
use crate::attrs::Ctx;
use crate::error::Result;
use crate::importer::Importer;
use crate::tensor::read_tensor;
use crate::value::{Sym, Value, permute};
use kiln_ir::{Data, Dim, Float, Op, Tensor};
use std::sync::Arc;

/// `ConstantOfShape` never makes more elements than this (a corrupt model must not be able to
/// ask for gigabytes).
const MAX_FILL_ELEMENTS: usize = 1 << 28;

/// The dims of a value (constants and symbolic vectors are fully known).
fn dims_of(imp: &Importer<'_>, v: &Value) -> Vec<Dim> {
    match v {
        Value::Node(id) => imp.ty(*id).shape.dims().to_vec(),
        Value::Const(t) => t.dims().iter().map(|&d| Some(d)).collect(),
        Value::Sym(s) if s.scalar => vec![],
        Value::Sym(s) => vec![Some(s.vals.len())],
    }
}

/// Constant: the `value` tensor, or `value_float(s)` / `value_int(s)`.
pub fn constant(_imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let t = if let Some(t) = cx.tensor_opt("value")? {
        read_tensor(t, None, &format!("Constant {:?}", cx.name))?
    } else if let Some(v) = cx.float_opt("value_float")? {
        Tensor::scalar(v)
    } else if let Some(v) = cx.floats_opt("value_floats")? {
        Tensor::from_vec(&[v.len()], v).map_err(|e| cx.err(e.to_string()))?
    } else if let Some(v) = cx.int_opt("value_int")? {
        Tensor::new(&[], Data::I64(vec![v])).map_err(|e| cx.err(e.to_string()))?
    } else if let Some(v) = cx.ints_opt("value_ints")? {
        Tensor::new(&[v.len()], Data::I64(v)).map_err(|e| cx.err(e.to_string()))?
    } else {
        return Err(cx.err("needs a value, value_float(s) or value_int(s) attribute (sparse and string constants are not supported)"));
    };
    Ok(vec![Value::Const(Arc::new(t))])
}

/// Shape: the input's dims as a (possibly partly unknown) vector; `start`/`end` from opset 15.
pub fn shape(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let v = imp.required(cx, 0)?;
    let dims = dims_of(imp, &v);
    let r = dims.len() as i64;
    let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
    let (s, e) = (clamp(cx.int("start", 0)?), clamp(cx.int("end", r)?));
    let vals = dims[s..e.max(s)]
        .iter()
        .map(|d| d.map(|d| d as i64))
        .collect();
    Ok(vec![Sym::vector(vals).into_value()])
}

/// ConstantOfShape: a tensor of the given (known) shape filled with `value` (default f32 0).
pub fn constant_of_shape(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let shape = ints_input(imp, cx, 0)?;
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| cx.err(format!("shape {shape:?} has a negative dim")))?;
    let n = dims
        .iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .filter(|&n| n <= MAX_FILL_ELEMENTS)
        .ok_or_else(|| {
            cx.err(format!(
                "shape {shape:?} has more than {MAX_FILL_ELEMENTS} elements"
            ))
        })?;
    let value = match cx.tensor_opt("value")? {
        Some(t) => read_tensor(t, None, &format!("value of {:?}", cx.name))?,
        None => Tensor::scalar(0.0),
    };
    if value.numel() != 1 {
        return Err(cx.err(format!("value must have one element, got {}", value.ty())));
    }
    let data = match value.data() {
        Data::F32(v) => Data::F32(vec![v[0]; n]),
        Data::I32(v) => Data::I32(vec![v[0]; n]),
        Data::I64(v) => Data::I64(vec![v[0]; n]),
        Data::Bool(v) => Data::Bool(vec![v[0]; n]),
    };
    let t = Tensor::new(&dims, data).map_err(|e| cx.err(e.to_string()))?;
    Ok(vec![Value::Const(Arc::new(t))])
}

/// Gather (batch_dims 0) on a run-time tensor or a float constant.
pub fn gather(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let params = imp.node(cx, 0)?;
    let indices = imp.node(cx, 1)?;
    let axis = cx.int("axis", 0)?;
    one(imp.add(cx, &cx.hint(), Op::Gather { axis }, &[params, indices])?)
}

/// Concat along `axis` (required).
pub fn concat(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let axis = cx
        .int_opt("axis")?
        .ok_or_else(|| cx.err("attribute axis is required"))?;
    let n = cx.node.input.len();
    if n == 1 {
        return Ok(vec![imp.required(cx, 0)?]);
    }
    let ids = (0..n)
        .map(|i| imp.node(cx, i))
        .collect::<Result<Vec<_>>>()?;
    one(imp.add(cx, &cx.hint(), Op::Concat { axis }, &ids)?)
}

/// The value reshaped to `out`: constants at import, run-time values with kiln's reshape.
fn reshaped(imp: &mut Importer<'_>, cx: &Ctx<'_>, v: Value, out: &[Dim]) -> Result<Vec<Value>> {
    if let (Value::Const(t), Some(dims)) = (&v, out.iter().copied().collect::<Option<Vec<usize>>>())
    {
        let t = (**t)
            .clone()
            .reshaped(&dims)
            .map_err(|e| cx.err(e.to_string()))?;
        return Ok(vec![Value::Const(Arc::new(t))]);
    }
    let x = imp.node(cx, 0)?;
    one(reshape_to(imp, cx, &cx.hint(), x, out)?)
}

/// Reshape: `0` copies the input dim (unless `allowzero`, opset 14), `-1` is inferred. The
/// target may contain dims known only at run time (from `Shape`); they and the input's
/// unknown dims are taken to be the same (the model's dynamic batch).
pub fn reshape(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let v = imp.required(cx, 0)?;
    let in_dims = dims_of(imp, &v);
    let target: Vec<Option<i64>> = if cx.opset < 5 {
        cx.ints_opt("shape")?
            .unwrap_or_default()
            .into_iter()
            .map(Some)
            .collect()
    } else {
        imp.required(cx, 1)?
            .as_sym()
            .ok_or_else(|| {
                cx.err("the target shape (input 1) must be an integer vector known at import")
            })?
            .vals
    };
    let allowzero = cx.int("allowzero", 0)? != 0;
    let mut out: Vec<Dim> = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, t) in target.iter().enumerate() {
        out.push(match *t {
            None => None,
            Some(0) if !allowzero => *in_dims.get(i).ok_or_else(|| {
                cx.err(format!(
                    "target {target:?} copies dim {i} (0) but the input has rank {}",
                    in_dims.len()
                ))
            })?,
            Some(-1) if infer.is_none() => {
                infer = Some(i);
                None
            }
            Some(d) if d >= 0 => Some(d as usize),
            Some(d) => return Err(cx.err(format!("invalid target dim {d} in {target:?}"))),
        });
    }
    if let Some(i) = infer {
        let known_in: Option<usize> = in_dims
            .iter()
            .flatten()
            .try_fold(1usize, |p, &d| p.checked_mul(d));
        let unknown_in = in_dims.iter().filter(|d| d.is_none()).count();
        let unknown_out = out
            .iter()
            .enumerate()
            .filter(|&(j, d)| j != i && d.is_none())
            .count();
        let known_out: usize = out.iter().flatten().product();
        // Equal numbers of unknown dims on both sides are taken to be the same dims.
        if unknown_in == unknown_out
            && known_out > 0
            && let Some(k) = known_in.filter(|k| k % known_out == 0)
        {
            out[i] = Some(k / known_out);
        }
        if out[i].is_none() && unknown_out > 0 {
            return Err(cx.err(format!(
                "cannot infer the -1 in {target:?} from input dims {}",
                kiln_ir::Shape::of(&in_dims)
            )));
        }
    }
    if let Value::Sym(s) = &v {
        // A symbolic vector reshaped (to [n] or []): handled by fold; anything else is an error.
        return Err(cx.err(format!("cannot reshape the shape value {:?}", s.vals)));
    }
    reshaped(imp, cx, v, &out)
}

/// Flatten to 2-D at `axis` (default 1).
pub fn flatten(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let v = imp.required(cx, 0)?;
    let dims = dims_of(imp, &v);
    let a = cx.int("axis", 1)?;
    let a = if a == dims.len() as i64 {
        dims.len()
    } else {
        norm_axis(cx, a, dims.len(), "axis")?
    };
    let prod = |ds: &[Dim]| ds.iter().try_fold(1usize, |p, d| d.map(|d| p * d));
    reshaped(imp, cx, v, &[prod(&dims[..a]), prod(&dims[a..])])
}

/// Squeeze / Unsqueeze: axes from the attribute (before opset 13) or input 1.
pub fn squeeze(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let v = imp.required(cx, 0)?;
    let dims = dims_of(imp, &v);
    let axes = if cx.opset < 13 {
        cx.ints_opt("axes")?
    } else if imp.value(cx, 1).is_some() {
        Some(ints_input(imp, cx, 1)?)
    } else {
        None
    };
    let out: Vec<Dim> = if cx.op == "Squeeze" {
        let drop: Vec<usize> = match axes {
            Some(axes) => axes
                .iter()
                .map(|&a| norm_axis(cx, a, dims.len(), "axis"))
                .collect::<Result<_>>()?,
            None => (0..dims.len()).filter(|&i| dims[i] == Some(1)).collect(),
        };
        for &a in &drop {
            if dims[a].is_some_and(|d| d != 1) {
                return Err(cx.err(format!("cannot squeeze axis {a} of size {:?}", dims[a])));
            }
        }
        dims.iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, &d)| d)
            .collect()
    } else {
        let axes = axes.ok_or_else(|| cx.err("axes are required"))?;
        let rank = dims.len() + axes.len();
        let mut ins: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(cx, a, rank, "axis"))
            .collect::<Result<_>>()?;
        ins.sort_unstable();
        ins.dedup();
        if ins.len() != axes.len() {
            return Err(cx.err(format!("repeated axis in {axes:?}")));
        }
        let mut rest = dims.iter();
        (0..rank)
            .map(|i| {
                if ins.contains(&i) {
                    Some(1)
                } else {
                    rest.next().copied().flatten()
                }
            })
            .collect()
    };
    reshaped(imp, cx, v, &out)
}

/// Transpose (default: reverse the axes).
pub fn transpose(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let v = imp.required(cx, 0)?;
    let rank = dims_of(imp, &v).len();
    let perm: Vec<usize> = match cx.ints_opt("perm")? {
        Some(p) => {
            let mut seen = vec![false; rank];
            p.iter()
                .map(|&a| {
                    let ok = usize::try_from(a)
                        .ok()
                        .filter(|&a| a < rank && !std::mem::replace(&mut seen[a], true));
                    ok.ok_or_else(|| {
                        cx.err(format!("perm {p:?} is not a permutation of 0..{rank}"))
                    })
                })
                .collect::<Result<_>>()?
        }
        None => (0..rank).rev().collect(),
    };
    if perm.len() != rank {
        return Err(cx.err(format!("perm {perm:?} is not a permutation of 0..{rank}")));
    }
    if let Value::Const(t) = &v {
        return Ok(vec![Value::Const(Arc::new(
            permute(t, &perm).map_err(|e| cx.err(e))?,
        ))]);
    }
    let x = imp.node(cx, 0)?;
    one(imp.add(cx, &cx.hint(), Op::Transpose { perm }, &[x])?)
}

/// Slice with step 1: starts/ends/axes as attributes (before opset 10) or inputs.
pub fn slice(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let dims = imp.ty(x).shape.dims().to_vec();
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        let s = cx
            .ints_opt("starts")?
            .ok_or_else(|| cx.err("starts are required"))?;
        let e = cx
            .ints_opt("ends")?
            .ok_or_else(|| cx.err("ends are required"))?;
        (s, e, cx.ints_opt("axes")?, None)
    } else {
        let opt = |imp: &Importer<'_>, i| {
            if imp.value(cx, i).is_some() {
                ints_input(imp, cx, i).map(Some)
            } else {
                Ok(None)
            }
        };
        (
            ints_input(imp, cx, 1)?,
            ints_input(imp, cx, 2)?,
            opt(imp, 3)?,
            opt(imp, 4)?,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if starts.len() != ends.len() || axes.len() != starts.len() {
        return Err(cx.err(format!(
            "starts {starts:?}, ends {ends:?} and axes {axes:?} differ in length"
        )));
    }
    if steps.as_ref().is_some_and(|s| s.iter().any(|&s| s != 1)) {
        return Err(cx.err(format!(
            "steps {:?} are not supported (only 1)",
            steps.unwrap_or_default()
        )));
    }
    let mut begin = vec![0usize; dims.len()];
    let mut size = vec![-1i64; dims.len()];
    for ((&s, &e), &a) in starts.iter().zip(&ends).zip(&axes) {
        let a = norm_axis(cx, a, dims.len(), "axis")?;
        match dims[a] {
            Some(n) => {
                let n = n as i64;
                let c = |v: i64| (if v < 0 { v.saturating_add(n) } else { v }).clamp(0, n);
                let (b, en) = (c(s), c(e));
                begin[a] = b as usize;
                size[a] = (en - b).max(0);
            }
            // An unknown dim can be sliced from a non-negative start to "the end".
            None if s >= 0 && e >= i32::MAX as i64 => begin[a] = s as usize,
            None => {
                return Err(cx.err(format!(
                    "slicing axis {a} ({s}..{e}) needs its size, known only at run time"
                )));
            }
        }
    }
    one(imp.add(cx, &cx.hint(), Op::Slice { begin, size }, &[x])?)
}

/// Split along `axis` into `split` sizes (attribute before opset 13, input from 13) or equal
/// parts (`num_outputs` from opset 18, else the number of outputs).
pub fn split(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let dims = imp.ty(x).shape.dims().to_vec();
    let a = norm_axis(cx, cx.int("axis", 0)?, dims.len(), "axis")?;
    let n = dims[a].ok_or_else(|| cx.err(format!("the split axis {a} must have a known size")))?;
    let given = if cx.opset < 13 {
        cx.ints_opt("split")?
    } else if imp.value(cx, 1).is_some() {
        Some(ints_input(imp, cx, 1)?)
    } else {
        None
    };
    let sizes: Vec<usize> = match given {
        Some(s) => s
            .iter()
            .map(|&v| usize::try_from(v))
            .collect::<Result<_, _>>()
            .map_err(|_| cx.err(format!("negative split {s:?}")))?,
        None => {
            let parts = cx
                .int_opt("num_outputs")?
                .map_or(cx.node.output.len(), |p| p.max(1) as usize)
                .max(1);
            let chunk = n.div_ceil(parts);
            (0..parts)
                .map(|i| chunk.min(n.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != n {
        return Err(cx.err(format!(
            "split sizes {sizes:?} do not add up to the axis size {n}"
        )));
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &s) in sizes.iter().enumerate() {
        let mut begin = vec![0usize; dims.len()];
        let mut size = vec![-1i64; dims.len()];
        begin[a] = start;
        size[a] = s as i64;
        start += s;
        let hint = cx
            .output_name(i)
            .map_or_else(|| format!("{}/{i}", cx.hint()), str::to_string);
        out.push(Value::Node(imp.add(
            cx,
            &hint,
            Op::Slice { begin, size },
            &[x],
        )?));
    }
    Ok(out)
}

/// Pad, constant mode: `pads` and `value` attributes before opset 11, inputs from 11 (with
/// optional `axes` from 18).
pub fn pad(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let rank = imp.ty(x).rank();
    let mode = cx.string("mode", "constant")?;
    if mode != "constant" {
        return Err(cx.err(format!("mode {mode:?} is not supported (only constant)")));
    }
    let (pads, value, axes) = if cx.opset < 11 {
        let p = cx
            .ints_opt("pads")?
            .ok_or_else(|| cx.err("pads are required"))?;
        (p, cx.float("value", 0.0)?, None)
    } else {
        let value = match imp.value(cx, 2) {
            None => 0.0,
            Some(_) => {
                let t = imp.constant(cx, 2)?;
                *crate::value::tensor_f32s(&t)
                    .first()
                    .ok_or_else(|| cx.err("constant_value is empty"))?
            }
        };
        let axes = if imp.value(cx, 3).is_some() {
            Some(ints_input(imp, cx, 3)?)
        } else {
            None
        };
        (ints_input(imp, cx, 1)?, value, axes)
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| norm_axis(cx, a, rank, "axis"))
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
        return Err(cx.err(format!(
            "pads {pads:?} must be {} non-negative ints",
            2 * axes.len()
        )));
    }
    let mut paddings = vec![[0usize; 2]; rank];
    for (i, &a) in axes.iter().enumerate() {
        paddings[a] = [pads[i] as usize, pads[i + axes.len()] as usize];
    }
    let op = Op::Pad {
        paddings,
        constant_value: Float(value),
    };
    one(imp.add(cx, &cx.hint(), op, &[x])?)
}
