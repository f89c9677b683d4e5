//! Main-stage kernels of the state family: `assign`, `assign_add` and `assign_sub` compute a
//! variable's new value into the kernel's output (the runtime then makes it the variable's
//! value). Sources (`input`, `var`, `const`) are buffers and get no kernel.
//!
//! `assign` copies the value's bytes with the movement kernels' run copy, so it works for every
//! dtype and is bit-exact; `assign_add` / `assign_sub` compute `cur ± val` in f32 (f32x4 main
//! loop, scalar tail). Operands are checked against the variable before any code is built.

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::DType;
use kiln_ir::op::{AssignOp, Op};
use kiln_ir::program::{Kernel, Program};

use super::movement::{c64, emit_run_copy};
use crate::jit::loops::{data_flags, elem_addr, for_range_tail};
use crate::jit::{Jit, KernelId};

/// Defines the main stage of an assign kernel (see the module docs). Buffers are the variable,
/// the value, then `kernel.output`.
pub fn define_state(jit: &mut Jit, program: &Program, kernel: &Kernel) -> Result<KernelId, String> {
    let fail = |why: String| format!("kernel '{}' ({}): {why}", kernel.name, kernel.op_name());
    let Some(Op::Assign(op)) = kernel.main else {
        return Err(fail(format!("{} is not an assign", kernel.op_name())));
    };
    check_assign(program, kernel, op).map_err(fail)?;
    let out = program.buffer(kernel.output);
    let (n, bytes) = (out.numel(), out.size_bytes());
    jit.define_kernel(&format!("{}.main", kernel.name), 3, |b, env| {
        let (cur, val, out) = (env.buffer(0)?, env.buffer(1)?, env.buffer(2)?);
        match op {
            AssignOp::Assign => emit_run_copy(b, val, out, bytes),
            AssignOp::AssignAdd | AssignOp::AssignSub => {
                emit_assign_arith(b, cur, val, out, n, op == AssignOp::AssignAdd)
            }
        }
    })
}

/// Every assign needs a value and an output of the variable's exact type; `assign_add` and
/// `assign_sub` also need f32.
fn check_assign(program: &Program, kernel: &Kernel, op: AssignOp) -> Result<(), String> {
    let [cur, val] = kernel.inputs[..] else {
        return Err(format!("expected 2 inputs, got {}", kernel.inputs.len()));
    };
    let (cur, val, out) = (
        program.buffer(cur),
        program.buffer(val),
        program.buffer(kernel.output),
    );
    for (what, buf) in [("value", val), ("output", out)] {
        if buf.dtype != cur.dtype || buf.dims != cur.dims {
            return Err(format!(
                "{what} is {}{:?}, expected {}{:?} like the variable",
                buf.dtype, buf.dims, cur.dtype, cur.dims
            ));
        }
    }
    if op != AssignOp::Assign && cur.dtype != DType::F32 {
        return Err(format!(
            "{} needs an f32 variable, got {}",
            op.name(),
            cur.dtype
        ));
    }
    Ok(())
}

/// `out = cur ± val` over `n` f32 elements (f32x4 main loop, scalar tail).
fn emit_assign_arith(
    b: &mut FunctionBuilder,
    cur: Value,
    val: Value,
    out: Value,
    n: usize,
    add: bool,
) -> Result<(), String> {
    let step = |b: &mut FunctionBuilder, i: Value, ty: Type| {
        let (pc, pv, po) = (
            elem_addr(b, cur, i, 4),
            elem_addr(b, val, i, 4),
            elem_addr(b, out, i, 4),
        );
        let c = b.ins().load(ty, data_flags(), pc, 0);
        let v = b.ins().load(ty, data_flags(), pv, 0);
        let r = if add {
            b.ins().fadd(c, v)
        } else {
            b.ins().fsub(c, v)
        };
        b.ins().store(data_flags(), r, po, 0);
        Ok(())
    };
    for_range_tail(
        b,
        0,
        c64(n)?,
        4,
        |b, i| step(b, i, types::F32X4),
        |b, i| step(b, i, types::F32),
    )
}
