//! Main-stage kernels of the reduction family: `reduce_sum/mean/max/min` over a set of axes and
//! `softmax` / `log_softmax` along one axis, specialised to the kernel's exact shapes.
//!
//! Reductions first collapse the input into alternating groups of kept and reduced axes
//! (size-1 axes dropped, neighbours of one kind merged). When the innermost group is reduced,
//! each output element is a dot-product-like sweep over contiguous memory with four f32x4
//! partial accumulators (16 elements per iteration), then one f32x4, then a scalar tail, then a
//! fixed horizontal combine. When the innermost group is kept, the kernel vectorises across it
//! instead: 16 (then 4, then 1) neighbouring outputs accumulate together over every reduced
//! coordinate. Softmax sweeps a row three times (max, sum of exp, normalise) with the same
//! vectorisation choice: along the row when the axis is the last one, across the contiguous
//! inner extent otherwise.
//!
//! Invariants and semantics (those of `kiln_ir::eval`): the order of accumulation is fixed by
//! the generated code (threads never change results); max/min propagate NaN; reductions over
//! zero elements give sum 0, mean NaN, max -inf, min +inf. Sums accumulate in f32 (the
//! reference uses f64): with at least 16 independent partial sums the error against the
//! reference stays below about 1e-5 relative to the sum of absolute values for the sizes
//! kernels meet (up to ~10^5 elements per output); exp/log are the inline ≤1-ulp
//! approximations of `crate::math`.

mod softmax;

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::DType;
use kiln_ir::lower::axis_index;
use kiln_ir::op::Op;
use kiln_ir::op::ReduceOp;
use kiln_ir::program::{Kernel, Program};

use super::movement::{Axis, c64, loop_nest, strides};
use crate::jit::loops::{data_flags, elem_addr, for_range, for_range_carry};
use crate::jit::{Jit, KernelId};
use crate::math::{emit_f32_const, emit_maximum, emit_minimum};
use softmax::Softmax;

/// Defines the main stage of a reduce, softmax or log_softmax kernel. Buffers are the input,
/// then the output (f32, row-major).
pub fn define_reduce(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<KernelId, String> {
    let fail = |why: String| format!("kernel '{}' ({}): {why}", kernel.name, kernel.op_name());
    let [input] = kernel.inputs[..] else {
        return Err(fail(format!(
            "expected 1 input, got {}",
            kernel.inputs.len()
        )));
    };
    let (x, out) = (program.buffer(input), program.buffer(kernel.output));
    if x.dtype != DType::F32 || out.dtype != DType::F32 {
        return Err(fail(format!(
            "needs f32 buffers, input is {} and output {}",
            x.dtype, out.dtype
        )));
    }
    let name = format!("{}.main", kernel.name);
    let cfg = jit.math_config();
    match &kernel.main {
        Some(Op::Reduce { op, axes, .. }) => {
            let axes: Vec<usize> = axes.iter().flatten().map(|&a| axis_index(a)).collect();
            let plan = ReducePlan::new(&x.dims, &axes, &out.dims).map_err(fail)?;
            let op = *op;
            jit.define_kernel(&name, 2, |b, env| {
                let (src, dst) = (env.buffer(0)?, env.buffer(1)?);
                emit_reduce(b, &plan, op, src, dst)
            })
        }
        Some(Op::Softmax { axis } | Op::LogSoftmax { axis }) => {
            let log = matches!(kernel.main, Some(Op::LogSoftmax { .. }));
            let axis = axis_index(*axis);
            if axis >= x.dims.len() || out.dims != x.dims {
                return Err(fail(format!(
                    "axis {axis} of input {:?} with output {:?}",
                    x.dims, out.dims
                )));
            }
            let outer: usize = x.dims[..axis].iter().product();
            let inner: usize = x.dims[axis + 1..].iter().product();
            let len = x.dims[axis];
            jit.define_kernel(&name, 2, |b, env| {
                let (src, dst) = (env.buffer(0)?, env.buffer(1)?);
                if x.numel() == 0 {
                    return Ok(());
                }
                let sm = Softmax {
                    cfg,
                    src,
                    dst,
                    len: c64(len)?,
                    inner: c64(inner)?,
                    log,
                };
                for_range(b, 0, c64(outer)?, 1, |b, o| {
                    let base = b.ins().imul_imm_s(o, c64(len * inner)?);
                    if inner == 1 {
                        sm.row(b, base)
                    } else {
                        sm.columns(b, base)
                    }
                })
            })
        }
        _ => Err(fail(format!("{} is not a reduction", kernel.op_name()))),
    }
}

/// A reduction's collapsed loop structure (strides in elements).
struct ReducePlan {
    /// Kept groups, outermost first, with input and output strides; when the innermost group
    /// is kept it is *not* here but in `columns`.
    kept: Vec<Axis>,
    /// Reduced groups, outermost first (input strides; output stride 0); when the innermost
    /// group is reduced it is not here but in `run`.
    reduced: Vec<Axis>,
    /// Length of the innermost reduced group (contiguous), or 0 when the innermost group is kept.
    run: usize,
    /// Length of the innermost kept group (contiguous on both sides), or 0 when it is reduced.
    columns: usize,
    /// Elements reduced into each output (`Mean` divides by it).
    count: usize,
    /// Some reduced axis is empty: every output is the identity (or NaN for mean).
    empty_reduction: bool,
    /// Output elements.
    n_out: usize,
}

impl ReducePlan {
    fn new(dims: &[usize], axes: &[usize], out_dims: &[usize]) -> Result<ReducePlan, String> {
        let rank = dims.len();
        let sorted = axes.windows(2).all(|w| w[0] < w[1]);
        if !sorted || axes.iter().any(|&a| a >= rank) {
            return Err(format!(
                "axes {axes:?} must be sorted, distinct and below the input's rank {rank}"
            ));
        }
        let reduced: Vec<bool> = (0..rank).map(|i| axes.contains(&i)).collect();
        let kept_dims: Vec<usize> = (0..rank)
            .filter(|&i| !reduced[i])
            .map(|i| dims[i])
            .collect();
        let n_out: usize = kept_dims.iter().product();
        let out_n: usize = out_dims.iter().product();
        if out_n != n_out || (out_dims.len() != kept_dims.len() && out_dims.len() != rank) {
            return Err(format!(
                "reducing axes {axes:?} of {dims:?} cannot give output {out_dims:?}"
            ));
        }
        let count: usize = axes.iter().map(|&a| dims[a]).product();
        // Groups of (size, reduced, input stride, output stride), size-1 axes dropped and
        // neighbours of one kind merged (row-major, so the inner stride survives).
        let (in_s, out_s) = (strides(dims), strides(&kept_dims));
        let mut groups: Vec<(Axis, bool)> = Vec::new();
        let mut k = 0;
        for i in 0..rank {
            let os = if reduced[i] { 0 } else { out_s[k] };
            k += usize::from(!reduced[i]);
            if dims[i] == 1 {
                continue;
            }
            let axis = Axis {
                count: dims[i],
                in_stride: in_s[i],
                out_stride: os,
            };
            match groups.last_mut() {
                Some((g, r)) if *r == reduced[i] => {
                    *g = Axis {
                        count: g.count * axis.count,
                        ..axis
                    }
                }
                _ => groups.push((axis, reduced[i])),
            }
        }
        let (mut run, mut columns) = (0, 0);
        match groups.last() {
            Some(&(g, true)) => {
                run = g.count;
                groups.pop();
            }
            Some(&(g, false)) => {
                columns = g.count;
                groups.pop();
            }
            // A single element: one "column" reduced over nothing.
            None => columns = 1,
        }
        let empty_reduction = n_out > 0 && count == 0;
        Ok(ReducePlan {
            kept: groups.iter().filter(|g| !g.1).map(|g| g.0).collect(),
            reduced: groups.iter().filter(|g| g.1).map(|g| g.0).collect(),
            run,
            columns,
            count,
            empty_reduction,
            n_out,
        })
    }
}

/// A reduction of `dims` over `axes` (sorted, distinct) into `out_dims` whose axes, size-1
/// ones dropped and neighbours of one kind merged, read kept, reduced, kept (global pooling):
/// `[values kept outside, values reduced, values kept inside]`; `None` for any other form
/// or for shapes that do not agree.
pub(crate) fn middle_reduction(
    dims: &[usize],
    axes: &[usize],
    out_dims: &[usize],
) -> Option<[usize; 3]> {
    let plan = ReducePlan::new(dims, axes, out_dims).ok()?;
    let [reduced] = plan.reduced.as_slice() else {
        return None;
    };
    let outer = match plan.kept.as_slice() {
        [] => 1,
        [kept] => kept.count,
        _ => return None,
    };
    (plan.run == 0 && plan.columns > 0).then_some([outer, reduced.count, plan.columns])
}

/// The reduction's identity (the value over zero elements, before the mean's division).
fn identity(op: ReduceOp) -> f32 {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
        ReduceOp::Max => f32::NEG_INFINITY,
        ReduceOp::Min => f32::INFINITY,
    }
}

/// `acc ⊕ x` for f32 or f32x4 values.
fn combine(b: &mut FunctionBuilder, op: ReduceOp, acc: Value, x: Value) -> Result<Value, String> {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => Ok(b.ins().fadd(acc, x)),
        ReduceOp::Max => emit_maximum(b, acc, x),
        ReduceOp::Min => emit_minimum(b, acc, x),
    }
}

/// Folds the lanes of `v` with `op` in a fixed order: (l0 ⊕ l1) ⊕ (l2 ⊕ l3).
fn horizontal(b: &mut FunctionBuilder, op: ReduceOp, v: Value) -> Result<Value, String> {
    let l: Vec<Value> = (0..4).map(|i| b.ins().extractlane(v, i)).collect();
    let lo = combine(b, op, l[0], l[1])?;
    let hi = combine(b, op, l[2], l[3])?;
    combine(b, op, lo, hi)
}

/// The mean's division (by the reduced count, like the reference), identity otherwise.
fn finish(b: &mut FunctionBuilder, op: ReduceOp, count: usize, v: Value) -> Result<Value, String> {
    if op != ReduceOp::Mean {
        return Ok(v);
    }
    let ty = b.func.dfg.value_type(v);
    let n = emit_f32_const(b, ty, count as f32)?;
    Ok(b.ins().fdiv(v, n))
}

fn load(b: &mut FunctionBuilder, ty: Type, base: Value, index: Value) -> Value {
    let p = elem_addr(b, base, index, 4);
    b.ins().load(ty, data_flags(), p, 0)
}

fn store(b: &mut FunctionBuilder, v: Value, base: Value, index: Value) {
    let p = elem_addr(b, base, index, 4);
    b.ins().store(data_flags(), v, p, 0);
}

fn emit_reduce(
    b: &mut FunctionBuilder,
    plan: &ReducePlan,
    op: ReduceOp,
    src: Value,
    dst: Value,
) -> Result<(), String> {
    if plan.n_out == 0 {
        return Ok(());
    }
    let zero = b.ins().iconst(types::I64, 0);
    if plan.empty_reduction {
        // Nothing to read: every output is the identity, and a mean is 0/0.
        let v = if op == ReduceOp::Mean {
            f32::NAN
        } else {
            identity(op)
        };
        let v = b.ins().f32const(v);
        return for_range(b, 0, c64(plan.n_out)?, 1, |b, i| {
            store(b, v, dst, i);
            Ok(())
        });
    }
    let id = identity(op);
    loop_nest(b, &plan.kept, zero, zero, &[], &mut |b, i_off, o_off, _| {
        if plan.run > 0 {
            reduce_run(b, plan, op, src, dst, i_off, o_off, id)?;
        } else {
            reduce_columns(b, plan, op, src, dst, i_off, o_off, id)?;
        }
        Ok(Vec::new())
    })?;
    Ok(())
}

/// One output element whose innermost reduced group is contiguous: 4 f32x4 + 1 f32x4 + scalar
/// partial results, carried over the outer reduced groups, then combined in a fixed order.
#[allow(clippy::too_many_arguments)]
fn reduce_run(
    b: &mut FunctionBuilder,
    plan: &ReducePlan,
    op: ReduceOp,
    src: Value,
    dst: Value,
    i_off: Value,
    o_off: Value,
    id: f32,
) -> Result<(), String> {
    let vid = emit_f32_const(b, types::F32X4, id)?;
    let sid = b.ins().f32const(id);
    let init = [vid, vid, vid, vid, sid];
    let run = c64(plan.run)?;
    let accs = loop_nest(
        b,
        &plan.reduced,
        i_off,
        o_off,
        &init,
        &mut |b, base, _, acc| fold_row(b, op, src, base, run, acc, &mut |_, x, _| Ok(x)),
    )?;
    let r = collapse(b, op, &accs)?;
    let r = finish(b, op, plan.count, r)?;
    store(b, r, dst, o_off);
    Ok(())
}

/// What [`fold_row`] applies to each loaded value (f32x4 or f32) before folding it; it also
/// gets the value's element index (to store a by-product there).
type RowMap<'a> = dyn FnMut(&mut FunctionBuilder, Value, Value) -> Result<Value, String> + 'a;

/// Folds `f(x[base + j])` for `j in 0..len` into five partial results `acc` (four f32x4 taking
/// 16 elements per step, the first of them alone for the next multiples of 4, a scalar tail).
#[allow(clippy::too_many_arguments)]
fn fold_row(
    b: &mut FunctionBuilder,
    op: ReduceOp,
    src: Value,
    base: Value,
    len: i64,
    acc: &[Value],
    f: &mut RowMap<'_>,
) -> Result<Vec<Value>, String> {
    fn step(
        b: &mut FunctionBuilder,
        (src, base, j, ty): (Value, Value, Value, Type),
        f: &mut RowMap<'_>,
    ) -> Result<Value, String> {
        let at = b.ins().iadd(base, j);
        let x = load(b, ty, src, at);
        f(b, x, at)
    }
    let end16 = len / 16 * 16;
    let end4 = len / 4 * 4;
    let acc = for_range_carry(b, 0, end16, 16, acc, |b, j, acc| {
        let mut next = acc.to_vec();
        for k in 0..4 {
            let jk = b.ins().iadd_imm_s(j, 4 * k as i64);
            let x = step(b, (src, base, jk, types::F32X4), f)?;
            next[k] = combine(b, op, acc[k], x)?;
        }
        Ok(next)
    })?;
    let acc = for_range_carry(b, end16, end4, 4, &acc, |b, j, acc| {
        let mut next = acc.to_vec();
        let x = step(b, (src, base, j, types::F32X4), f)?;
        next[0] = combine(b, op, acc[0], x)?;
        Ok(next)
    })?;
    for_range_carry(b, end4, len, 1, &acc, |b, j, acc| {
        let mut next = acc.to_vec();
        let x = step(b, (src, base, j, types::F32), f)?;
        next[4] = combine(b, op, acc[4], x)?;
        Ok(next)
    })
}

/// One output row whose innermost group is kept: blocks of 16, then 4, then 1 neighbouring
/// outputs accumulate together over every reduced coordinate.
#[allow(clippy::too_many_arguments)]
fn reduce_columns(
    b: &mut FunctionBuilder,
    plan: &ReducePlan,
    op: ReduceOp,
    src: Value,
    dst: Value,
    i_off: Value,
    o_off: Value,
    id: f32,
) -> Result<(), String> {
    let cols = c64(plan.columns)?;
    let end16 = cols / 16 * 16;
    let end4 = cols / 4 * 4;
    let block = |b: &mut FunctionBuilder, c: Value, ty: Type, n: usize| -> Result<(), String> {
        let lanes = i64::from(ty.lane_count());
        let idv = emit_f32_const(b, ty, id)?;
        let i0 = b.ins().iadd(i_off, c);
        let o0 = b.ins().iadd(o_off, c);
        let init = vec![idv; n];
        let accs = loop_nest(b, &plan.reduced, i0, o0, &init, &mut |b, at, _, acc| {
            let mut next = Vec::with_capacity(n);
            for (k, &a) in acc.iter().enumerate() {
                let atk = b.ins().iadd_imm_s(at, k as i64 * lanes);
                let x = load(b, ty, src, atk);
                next.push(combine(b, op, a, x)?);
            }
            Ok(next)
        })?;
        for (k, &a) in accs.iter().enumerate() {
            let r = finish(b, op, plan.count, a)?;
            let ok = b.ins().iadd_imm_s(o0, k as i64 * lanes);
            store(b, r, dst, ok);
        }
        Ok(())
    };
    for_range(b, 0, end16, 16, |b, c| block(b, c, types::F32X4, 4))?;
    for_range(b, end16, end4, 4, |b, c| block(b, c, types::F32X4, 1))?;
    for_range(b, end4, cols, 1, |b, c| block(b, c, types::F32, 1))
}

/// Combines the five partial results of [`fold_row`] into one scalar, in a fixed order.
fn collapse(b: &mut FunctionBuilder, op: ReduceOp, acc: &[Value]) -> Result<Value, String> {
    let a = combine(b, op, acc[0], acc[1])?;
    let c = combine(b, op, acc[2], acc[3])?;
    let v = combine(b, op, a, c)?;
    let h = horizontal(b, op, v)?;
    combine(b, op, h, acc[4])
}
