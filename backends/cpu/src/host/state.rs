//! The optimizer updates (`apply_gradient_descent`, `apply_momentum`, `apply_adam`): the
//! kernel copies the current values of the variables it writes into its output, one after
//! another, and updates them there with [`kiln_ir::eval::apply_update`], the reference's own
//! per-element arithmetic, so the CPU backend and the reference agree bit for bit. The
//! runtime then commits each part to its variable (see [`kiln_ir::op::Op::ApplyGradientDescent`]).

use super::{HostBuffer, View};
use kiln_ir::DType;
use kiln_ir::eval::apply_update;
use kiln_ir::op::Op;
use kiln_ir::shape::fmt_dims;

/// The variables written and the gradient have the first operand's f32 dims, the other operands
/// are f32 scalars, and the output holds `k` values of the variable's size.
pub(super) fn check(op: &Op, ins: &[HostBuffer], out: &HostBuffer) -> Result<(), String> {
    let names = op
        .apply_operand_names()
        .ok_or_else(|| format!("{} is not an optimizer update", op.name()))?;
    if ins.len() != names.len() {
        return Err(format!(
            "expected {} operands, got {}",
            names.len(),
            ins.len()
        ));
    }
    let var = &ins[0];
    let k = op.updated_variables();
    for (i, (name, b)) in names.iter().zip(ins).enumerate() {
        let tensor = i < k || matches!(*name, "grad" | "delta");
        let ok = b.dtype == DType::F32
            && if tensor {
                b.dims == var.dims
            } else {
                b.dims.is_empty()
            };
        if !ok {
            return Err(format!(
                "{name} is {}{}, expected f32{}",
                b.dtype,
                fmt_dims(&b.dims),
                if tensor {
                    fmt_dims(&var.dims)
                } else {
                    "[]".into()
                }
            ));
        }
    }
    let n: usize = var.dims.iter().product();
    let want = n.checked_mul(k);
    if out.dtype != DType::F32 || Some(out.dims.iter().product()) != want {
        return Err(format!(
            "output is {}{}, expected {k} values of f32{}",
            out.dtype,
            fmt_dims(&out.dims),
            fmt_dims(&var.dims)
        ));
    }
    Ok(())
}

/// Writes the `k` new values into `out` (checked by [`check`], so every view is f32 and sized).
pub(super) fn apply(op: &Op, inputs: &[View<'_>], out: &mut [f32]) -> Result<(), String> {
    let names = op.apply_operand_names().unwrap_or_default();
    let k = op.updated_variables();
    let n = out.len() / k.max(1);
    let mut scalars = Vec::with_capacity(names.len());
    let mut grad: &[f32] = &[];
    for (i, (name, view)) in names.iter().zip(inputs).enumerate() {
        let View::F32(x) = *view else {
            return Err(format!("{name} is not an f32 buffer"));
        };
        if i < k {
            out[i * n..(i + 1) * n].copy_from_slice(x);
        } else if matches!(*name, "grad" | "delta") {
            grad = x;
        } else {
            scalars.push(x.first().copied().unwrap_or(0.0));
        }
    }
    let mut parts: Vec<&mut [f32]> = out.chunks_mut(n.max(1)).take(k).collect();
    apply_update(op, &scalars, &mut parts, grad)
}
