//! Sources and state: a `var`/`const` declaration's type (checked against its initialiser) and
//! the type an `assign*` gives its variable, and the operands and value of the optimizer
//! updates (`apply_*`). (`input` declares its type and needs no rule.)

use super::{check_size, require_f32};
use crate::DType;
use crate::op::{AssignOp, Initializer, Op, Source};
use crate::shape::{Shape, TensorType};

/// Checks a `var`/`const` declaration: concrete type, and an initialiser that makes exactly it.
pub(super) fn source(s: &Source) -> Result<TensorType, String> {
    let ty = &s.ty;
    if !ty.shape.is_concrete() {
        return Err(format!(
            "the declared type {ty} has unknown dims; variables and constants need every dim known"
        ));
    }
    // Check the size first: a literal's own dims were checked when it was built, but the
    // generated initialisers would allocate the declared size.
    check_size(ty)?;
    let float_only = |what: String| -> Result<(), String> {
        if ty.dtype == DType::F32 {
            Ok(())
        } else {
            Err(format!(
                "initializer {what} makes f32 values, but the declared type is {ty}"
            ))
        }
    };
    let finite = |name: &str, v: f32| -> Result<(), String> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(format!("{name} must be finite, got {v}"))
        }
    };
    match &s.init {
        Initializer::Zeros => {}
        Initializer::Ones => float_only("ones".into())?,
        Initializer::Fill(v) => float_only(format!("fill({})", v.0))?,
        Initializer::Normal { mean, std, .. } => {
            float_only("normal".into())?;
            finite("normal mean", mean.0)?;
            finite("normal std", std.0)?;
            if std.0 < 0.0 {
                return Err(format!("normal std must be >= 0, got {}", std.0));
            }
        }
        Initializer::Uniform { lo, hi, .. } => {
            float_only("uniform".into())?;
            finite("uniform lo", lo.0)?;
            finite("uniform hi", hi.0)?;
            if lo.0 > hi.0 {
                return Err(format!(
                    "uniform needs lo <= hi, got lo = {} and hi = {}",
                    lo.0, hi.0
                ));
            }
        }
        Initializer::Literal(t) => {
            if t.ty() != *ty {
                return Err(format!(
                    "the literal is {} but the declared type is {ty}",
                    t.ty()
                ));
            }
        }
        Initializer::Npy { path, value } => {
            if value.ty() != *ty {
                return Err(format!(
                    "npy(\"{path}\") holds {} but the declared type is {ty}",
                    value.ty()
                ));
            }
        }
        Initializer::Safetensors {
            path,
            tensor,
            value,
        } => {
            if value.ty() != *ty {
                return Err(format!(
                    "safetensors(\"{path}\", \"{tensor}\") holds {} but the declared type is {ty}",
                    value.ty()
                ));
            }
        }
    }
    Ok(ty.clone())
}

/// `assign*(var, value)`: the value must have exactly the variable's type.
pub(super) fn assign(
    op: AssignOp,
    var: &TensorType,
    value: &TensorType,
) -> Result<TensorType, String> {
    if var != value {
        return Err(format!(
            "the value must have exactly the variable's type: variable is {var}, value is {value}"
        ));
    }
    if op != AssignOp::Assign {
        require_f32("the variable", var)?;
    }
    Ok(var.clone())
}

/// `apply_*(...)`: the variables written share one f32 type, the gradient has it too (a `?`
/// dim of the gradient is checked at run time), every other operand is an `f32[]` scalar. The
/// value is the variable's type for one variable written, else `[k, ...dims]` for `k` (their
/// new values one after another).
pub(super) fn apply(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, String> {
    let names = op
        .apply_operand_names()
        .ok_or_else(|| format!("{} is not an optimizer update", op.name()))?;
    let var = inputs[0];
    require_f32("var", var)?;
    let k = op.updated_variables();
    for (i, (name, ty)) in names.iter().zip(inputs).enumerate() {
        let fits_var = || {
            ty.dtype == var.dtype
                && ty.shape.rank() == var.shape.rank()
                && ty
                    .shape
                    .dims()
                    .iter()
                    .zip(var.shape.dims())
                    .all(|(g, v)| g.is_none() || g == v)
        };
        let ok = if i < k {
            *ty == var
        } else if matches!(*name, "grad" | "delta") {
            fits_var()
        } else {
            ty.dtype == DType::F32 && ty.shape.rank() == 0
        };
        if !ok {
            let want = if i < k || matches!(*name, "grad" | "delta") {
                format!("the variable's type {var}")
            } else {
                "an f32 scalar (f32[])".to_string()
            };
            return Err(format!("{name} (operand {i}) must be {want}, got {ty}"));
        }
    }
    if k == 1 {
        return Ok(var.clone());
    }
    let mut dims = vec![Some(k)];
    dims.extend(var.shape.dims().iter().copied());
    Ok(TensorType::new(DType::F32, Shape::of(&dims)))
}
