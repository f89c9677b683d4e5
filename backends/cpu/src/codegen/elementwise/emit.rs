//! CLIF emission for an epilogue [`Plan`]: the range prologue, one loop per collapsed axis, and
//! the row body (per-row hoisting of invariants, an `f32x4` main loop and a scalar tail).
//!
//! Pointers are advanced level by level (`ptr + iv * stride * 4`), so the innermost loop only
//! adds `iv * 4` to a per-row base. The plan guarantees every address stays inside its buffer
//! for any row range inside `0..plan.dims[0]`, which the range prologue clamps to.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::program::{Expr, Operand, Step};

use super::plan::Plan;
use crate::jit::FnEnv;
use crate::jit::loops::{Bound, data_flags, elem_addr, for_range, vector_end};
use crate::math::{MathConfig, emit_binary, emit_unary};

/// Vectors per iteration of the inner loop (more independent work per loop branch).
const UNROLL: i64 = 2;

struct Cx<'a> {
    plan: &'a Plan,
    expr: &'a Expr,
    cfg: MathConfig,
    /// Strides of the collapsed output dims, in elements (see [`Plan::out_strides`]).
    out_strides: Vec<i64>,
}

/// The kernel body: buffers are `[out, loads..., range]`.
pub(super) fn kernel_body(
    b: &mut FunctionBuilder,
    env: &mut FnEnv,
    plan: &Plan,
    expr: &Expr,
) -> Result<(), String> {
    if env.pointer_type() != types::I64 {
        return Err(format!(
            "epilogues need 64-bit pointers, the target has {}",
            env.pointer_type()
        ));
    }
    let outer = plan.outer() as i64;
    if outer == 0 {
        return Ok(());
    }
    let bufs = env.buffers().to_vec();
    let n = expr.loads.len() + 1;
    if bufs.len() != n + 1 {
        return Err(format!(
            "expected {} buffer pointers, the kernel has {}",
            n + 1,
            bufs.len()
        ));
    }
    let (start, end) = read_range(b, bufs[n], outer);
    let out_strides = plan.out_strides.iter().map(|&s| s as i64).collect();
    let cx = Cx {
        plan,
        expr,
        cfg: env.math(),
        out_strides,
    };
    emit_axis(b, &cx, 0, Bound::Dyn(start), Bound::Dyn(end), &bufs[..n])
}

/// `[start, end)` from the range pointer (the whole axis when it is null), clamped to
/// `0..outer`.
fn read_range(b: &mut FunctionBuilder, range: Value, outer: i64) -> (Value, Value) {
    let given = b.create_block();
    let join = b.create_block();
    b.append_block_param(join, types::I64);
    b.append_block_param(join, types::I64);
    let zero = b.ins().iconst(types::I64, 0);
    let full = b.ins().iconst(types::I64, outer);
    let is_null = b.ins().icmp_imm_s(IntCC::Equal, range, 0);
    b.ins()
        .brif(is_null, join, &[zero.into(), full.into()], given, &[]);
    b.switch_to_block(given);
    b.seal_block(given);
    let s = b.ins().load(types::I64, data_flags(), range, 0);
    let e = b.ins().load(types::I64, data_flags(), range, 8);
    b.ins().jump(join, &[s.into(), e.into()]);
    b.switch_to_block(join);
    b.seal_block(join);
    let params = b.block_params(join).to_vec();
    let s = b.ins().smax(params[0], zero);
    let e = b.ins().smin(params[1], full);
    (s, e)
}

/// `ptr + iv * stride` elements (the same pointer for stride 0).
fn advance(b: &mut FunctionBuilder, ptr: Value, iv: Value, stride: i64) -> Value {
    if stride == 0 {
        ptr
    } else {
        elem_addr(b, ptr, iv, stride * 4)
    }
}

/// The loop over collapsed axis `axis` from `lo` to `hi`; `ptrs` are `[out, loads...]` at the
/// start of this axis (index 0 of it).
fn emit_axis(
    b: &mut FunctionBuilder,
    cx: &Cx,
    axis: usize,
    lo: Bound,
    hi: Bound,
    ptrs: &[Value],
) -> Result<(), String> {
    if axis + 1 == cx.plan.dims.len() {
        return emit_row(b, cx, lo, hi, ptrs);
    }
    for_range(b, lo, hi, 1, |b, iv| {
        let mut inner = Vec::with_capacity(ptrs.len());
        inner.push(advance(b, ptrs[0], iv, cx.out_strides[axis]));
        for (j, &p) in ptrs[1..].iter().enumerate() {
            inner.push(advance(b, p, iv, cx.plan.strides[j][axis] as i64));
        }
        let next = cx.plan.dims[axis + 1] as i64;
        emit_axis(b, cx, axis + 1, Bound::Const(0), Bound::Const(next), &inner)
    })
}

/// Values of the row-invariant loads and steps (`None` where not invariant), of one type.
struct Invariants {
    loads: Vec<Option<Value>>,
    steps: Vec<Option<Value>>,
}

/// The innermost loop, elements `lo..hi` of a row whose pointers are `ptrs`.
fn emit_row(
    b: &mut FunctionBuilder,
    cx: &Cx,
    lo: Bound,
    hi: Bound,
    ptrs: &[Value],
) -> Result<(), String> {
    // Row-invariant values, computed once as scalars (and splatted for the vector loop).
    let mut scalar = Invariants {
        loads: vec![None; cx.expr.loads.len()],
        steps: vec![None; cx.expr.steps.len()],
    };
    for (j, &inv) in cx.plan.load_invariant.iter().enumerate() {
        if inv {
            scalar.loads[j] = Some(b.ins().load(types::F32, data_flags(), ptrs[1 + j], 0));
        }
    }
    for (i, step) in cx.expr.steps.iter().enumerate() {
        if cx.plan.step_invariant[i] {
            let get = |o: Operand| operand(&scalar, &[], None, o);
            let v = apply(b, cx.cfg, step, get)?;
            scalar.steps[i] = Some(v);
        }
    }
    if !cx.plan.vector {
        return for_range(b, lo, hi, 1, |b, iv| {
            element(b, cx, types::F32, &scalar, ptrs, iv)
        });
    }
    let splat = |b: &mut FunctionBuilder, v: &[Option<Value>]| -> Vec<Option<Value>> {
        v.iter()
            .map(|x| x.map(|x| b.ins().splat(types::F32X4, x)))
            .collect()
    };
    let vector = Invariants {
        loads: splat(b, &scalar.loads),
        steps: splat(b, &scalar.steps),
    };
    let wide = 4 * UNROLL;
    let split = vector_end(b, lo, hi, wide)?;
    for_range(b, lo, split, wide, |b, iv| {
        for u in 0..UNROLL {
            let at = b.ins().iadd_imm_s(iv, 4 * u);
            element(b, cx, types::F32X4, &vector, ptrs, at)?;
        }
        Ok(())
    })?;
    // At most UNROLL - 1 more whole vectors, then single elements.
    let split2 = vector_end(b, split, hi, 4)?;
    for_range(b, split, split2, 4, |b, iv| {
        element(b, cx, types::F32X4, &vector, ptrs, iv)
    })?;
    for_range(b, split2, hi, 1, |b, iv| {
        element(b, cx, types::F32, &scalar, ptrs, iv)
    })
}

/// One element (`F32`) or four consecutive elements (`F32X4`) at row position `iv`.
fn element(
    b: &mut FunctionBuilder,
    cx: &Cx,
    ty: Type,
    inv: &Invariants,
    ptrs: &[Value],
    iv: Value,
) -> Result<(), String> {
    let out_inner = cx.out_strides.last().copied().unwrap_or(1);
    let out_addr = elem_addr(b, ptrs[0], iv, out_inner * 4);
    let main = if cx.plan.uses_main {
        Some(b.ins().load(ty, data_flags(), out_addr, 0))
    } else {
        None
    };
    let mut loads = Vec::with_capacity(cx.expr.loads.len());
    for (j, s) in cx.plan.strides.iter().enumerate() {
        loads.push(match inv.loads[j] {
            Some(v) => v,
            None => {
                let inner = s.last().copied().unwrap_or(0) as i64;
                let addr = elem_addr(b, ptrs[1 + j], iv, inner * 4);
                b.ins().load(ty, data_flags(), addr, 0)
            }
        });
    }
    let mut steps: Vec<Option<Value>> = inv.steps.clone();
    for (i, step) in cx.expr.steps.iter().enumerate() {
        if steps[i].is_none() {
            let known = Invariants {
                loads: Vec::new(),
                steps: steps.clone(),
            };
            let get = |o: Operand| operand(&known, &loads, main, o);
            steps[i] = Some(apply(b, cx.cfg, step, get)?);
        }
    }
    let done = Invariants {
        loads: Vec::new(),
        steps,
    };
    let result = operand(&done, &loads, main, cx.expr.result)?;
    b.ins().store(data_flags(), result, out_addr, 0);
    Ok(())
}

/// The value of `o`: from `loads` when given (per-element loads), else from `known.loads`.
fn operand(
    known: &Invariants,
    loads: &[Value],
    main: Option<Value>,
    o: Operand,
) -> Result<Value, String> {
    let v = match o {
        Operand::Main => main,
        Operand::Load(j) if loads.is_empty() => known.loads.get(j).copied().flatten(),
        Operand::Load(j) => loads.get(j).copied(),
        Operand::Step(i) => known.steps.get(i).copied().flatten(),
    };
    v.ok_or_else(|| format!("operand {o} is not available here (plan invariant broken)"))
}

/// Emits one step given a way to fetch its operands.
fn apply(
    b: &mut FunctionBuilder,
    cfg: MathConfig,
    step: &Step,
    get: impl Fn(Operand) -> Result<Value, String>,
) -> Result<Value, String> {
    match *step {
        Step::Unary(op, x) => emit_unary(b, cfg, op, get(x)?),
        Step::Binary(op, x, y) => emit_binary(b, cfg, op, get(x)?, get(y)?),
    }
}
