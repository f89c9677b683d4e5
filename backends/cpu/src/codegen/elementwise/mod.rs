//! The elementwise family: the epilogue stage, and whole elementwise kernels (no main op),
//! generated from a kernel's [`Expr`](kiln_ir::program::Expr). (`cast`, also elementwise, runs
//! on the host: see `crate::host`.)
//!
//! # ABI (differs from main-stage kernels)
//!
//! The buffer pointer array of an epilogue kernel is
//!
//! ```text
//! [ kernel.output, loads[0].buffer, ..., loads[n-1].buffer, range ]
//! ```
//!
//! one pointer per `Load` entry, even when two loads read the same buffer, and `range` LAST:
//! either null (run the whole output) or a pointer to two `i64` `[start, end)`, a sub-range of
//! `0..epilogue_outer_extent(program, kernel)` on the outermost collapsed axis (values outside
//! are clamped to it, so a bad range cannot write outside the output). Disjoint ranges write
//! disjoint output elements and read nothing another range writes, so the driver may call the
//! kernel from several threads at once, e.g. with rayon over chunks of the outer extent.
//! [`epilogue_n_buffers`] gives the pointer count.
//!
//! # Semantics
//!
//! For every output index `i` (row-major over the output's dims): `Main` is the value in
//! `out[i]` when the kernel starts (written by the main stage; an `Elementwise` kernel may not
//! use it), `Load(j)` is `loads[j].buffer[sum_k idx_k * loads[j].strides[k]]`, steps run in
//! order through [`crate::math::emit_unary`] / [`crate::math::emit_binary`], and `result` is
//! stored to `out[i]`. Buffers other than the output may not overlap it.
//!
//! # Code shape
//!
//! The iteration space is collapsed first (`plan`: size-1 axes dropped, axes that every load
//! walks contiguously merged), then one loop per collapsed axis with the shape baked in as
//! constants. The inner loop is `f32x4` (two vectors per iteration) with a scalar tail when
//! every load's innermost stride is 0 or 1; otherwise it is scalar. Loads with innermost stride
//! 0 and the steps that depend only on them are computed once per row, outside the inner loop.

mod emit;
mod plan;

use kiln_ir::program::{Kernel, Program};

use crate::jit::{Jit, KernelId};
use plan::Plan;

/// Defines the epilogue kernel of `kernel` in `jit` (see the module docs for its ABI).
///
/// Returns `Ok(None)` when there is nothing to do: the epilogue is the identity and the main op
/// is not `Elementwise`. Errors name the kernel for anything malformed: non-f32 buffers, strides
/// that do not match the output rank or reach past a buffer, bad operand references, or `Main`
/// used by an `Elementwise` kernel.
pub fn define_epilogue(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<Option<KernelId>, String> {
    if kernel.epilogue.is_identity() && kernel.main.is_some() {
        return Ok(None);
    }
    let plan = Plan::new(program, kernel)?;
    let name = format!("{}.epilogue", kernel.name);
    let expr = &kernel.epilogue;
    let id = jit.define_kernel(&name, epilogue_n_buffers(kernel), |b, env| {
        emit::kernel_body(b, env, &plan, expr)
    })?;
    Ok(Some(id))
}

/// How many pointers the epilogue kernel of `kernel` takes: the output, one per load, and the
/// range pointer.
pub fn epilogue_n_buffers(kernel: &Kernel) -> usize {
    kernel.epilogue.loads.len() + 2
}

/// Extent of the outermost collapsed axis: the range `[start, end)` passed to the kernel is a
/// sub-range of `0..epilogue_outer_extent`. It is 0 for an empty output, and also for a kernel
/// that [`define_epilogue`] rejects (there is nothing to split).
pub fn epilogue_outer_extent(program: &Program, kernel: &Kernel) -> usize {
    Plan::new(program, kernel).map_or(0, |p| p.outer())
}
