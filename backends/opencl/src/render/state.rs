//! The state family: `assign`, `assign_add` and `assign_sub` compute a variable's new value,
//! one work-item per element (sources are buffers and get no kernel). `assign` accepts any
//! dtype (the element type of the C pointers follows the buffers); `assign_add`/`assign_sub`
//! are f32.

use super::kernel::KernelSrc;
use super::movement::same_dtype;
use super::{Body, Limits, per_element};
use kiln_ir::DType;
use kiln_ir::op::AssignOp;
use kiln_ir::shape::fmt_dims;

/// `assign*(var, value)`: the variable's new value.
pub(super) fn assign(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    op: AssignOp,
) -> Result<Body, String> {
    let ty = same_dtype(src, 1)?;
    same_dtype(src, 0)?;
    if src.input(0)?.dims != src.out().dims || src.input(1)?.dims != src.out().dims {
        return Err(format!(
            "value {} does not match variable {}",
            fmt_dims(&src.input(1)?.dims),
            fmt_dims(&src.input(0)?.dims)
        ));
    }
    if op != AssignOp::Assign && src.out().dtype != DType::F32 {
        return Err(format!("{} needs f32, got {}", op.name(), src.out().dtype));
    }
    let cur = src.input_name(0)?;
    let val = src.input_name(1)?;
    let value = match op {
        AssignOp::Assign => format!("{val}[gid]"),
        AssignOp::AssignAdd => format!("{cur}[gid] + {val}[gid]"),
        AssignOp::AssignSub => format!("{cur}[gid] - {val}[gid]"),
    };
    per_element(src, limits, &format!("    const {ty} m = {value};\n"))
}
