//! Main-stage kernels of the data-movement family (`reshape`, `transpose`, `concat`, `slice`,
//! `pad`; `gather` runs on the host), plus the loop-nest helper the reduction kernels share and
//! the run copy the state kernels share.
//!
//! Every movement op is expressed as a few *copy plans*: a loop nest over byte strides whose
//! innermost step copies one contiguous run of bytes. Plans are normalised before code is
//! emitted (size-1 loops dropped, loops whose strides line up merged into each other and into
//! the run), so a reshape is one run, a slice copies whole rows, a concat along the last axis is
//! a loop of interleaved block copies, and only a true transpose falls back to element-sized
//! runs, which are copied as a blocked transpose (movement/tile.rs: cache-line tiles, 4 x 4
//! register transposes for 4-byte elements). Runs copy 64 bytes per iteration as four 16-byte
//! vectors and finish with a straight-line tail, so nothing depends on the dtype: movement
//! kernels work for every dtype (element size from the buffer's dtype) and are bit-exact, NaN
//! payloads included. A kernel that fills nothing takes a range of parts of its copies' outer
//! loops, so its copies split across threads like the other ranged kernels ([`MOVE_PARTS`]).
//!
//! Invariants: shapes are checked against the op before any code is built (errors name the
//! kernel and op); generated code touches exactly the bytes of the output buffer and of the
//! input boxes it reads.

mod copy;
mod tile;

pub(crate) use copy::{Axis, c64, emit_run_copy, loop_nest, strides};

use kiln_ir::DType;
use kiln_ir::lower::axis_index;
use kiln_ir::op::Op;
use kiln_ir::program::{BufferKind, Kernel, Program};

use super::window::work_range;
use crate::jit::loops::{Bound, for_range};
use crate::jit::{Jit, KernelId};
use copy::{CopyPlan, emit_copy, emit_fill};

/// What a movement kernel does: fill the output (pad), then copies.
struct MovePlan {
    fill: Option<Vec<u8>>,
    copies: Vec<CopyPlan>,
}

/// Parts a ranged movement kernel's work is cut into ([`define_movement_range`]): a call with
/// the range `[start, end)` runs, of every copy, the iterations `count * start / MOVE_PARTS ..
/// count * end / MOVE_PARTS` of its outermost loop (and a copy without one in the call whose
/// range starts at 0). Copies write disjoint bytes, so the parts run on any threads.
pub const MOVE_PARTS: usize = 64;

/// Defines the main stage of a movement kernel (see the module docs). Buffers are
/// `kernel.inputs` then `kernel.output`.
pub fn define_movement(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<KernelId, String> {
    let plan = plan_of(program, kernel)?;
    define(jit, program, kernel, &plan, false)
}

/// [`define_movement`] taking one more buffer, the `[start, end)` pair of `i64` parts of
/// [`MOVE_PARTS`] it runs, or `None` when the kernel cannot split: it fills (a pad's fill must
/// come before its copies) or no copy has an outer loop. (The copies of one movement kernel
/// ran on one thread: ShuffleNet's channel shuffles, DenseNet's concat copies.)
pub fn define_movement_range(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<Option<KernelId>, String> {
    let plan = plan_of(program, kernel)?;
    if plan.fill.is_some() || !plan.copies.iter().any(CopyPlan::splits) {
        return Ok(None);
    }
    define(jit, program, kernel, &plan, true).map(Some)
}

/// [`plan_movement`], its error naming the kernel.
fn plan_of(program: &Program, kernel: &Kernel) -> Result<MovePlan, String> {
    plan_movement(program, kernel)
        .map_err(|why| format!("kernel '{}' ({}): {why}", kernel.name, kernel.op_name()))
}

fn define(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
    plan: &MovePlan,
    ranged: bool,
) -> Result<KernelId, String> {
    let n_in = kernel.inputs.len();
    let out_bytes = program.buffer(kernel.output).size_bytes();
    let suffix = if ranged { "__range" } else { "" };
    let n_bufs = n_in + 1 + usize::from(ranged);
    jit.define_kernel(
        &format!("{}.main{suffix}", kernel.name),
        n_bufs,
        |b, env| {
            let out = env.buffer(n_in)?;
            if let Some(pattern) = &plan.fill {
                emit_fill(b, out, out_bytes, pattern)?;
            }
            let part = if ranged {
                let parts = c64(MOVE_PARTS)?;
                let (start, end) = work_range(b, env, true, n_in + 1, parts)?;
                Some((start.value(b), end.value(b), MOVE_PARTS))
            } else {
                None
            };
            for copy in &plan.copies {
                let src = env.buffer(copy.src)?;
                match part {
                    Some(_) if copy.splits() => emit_copy(b, copy, src, out, part)?,
                    // The call whose range starts at part 0 copies it whole: start..1 is one
                    // iteration for it and none for the others.
                    Some((start, _, _)) => for_range(b, start, Bound::Const(1), 1, |b, _| {
                        emit_copy(b, copy, src, out, None)
                    })?,
                    None => emit_copy(b, copy, src, out, None)?,
                }
            }
            Ok(())
        },
    )
}

/// The copy plan of a movement op, after checking its shapes.
fn plan_movement(program: &Program, kernel: &Kernel) -> Result<MovePlan, String> {
    let out = program.buffer(kernel.output);
    let ins: Vec<_> = kernel.inputs.iter().map(|&i| program.buffer(i)).collect();
    let first = *ins.first().ok_or("the kernel has no inputs")?;
    if let Some(bad) = ins.iter().find(|b| b.dtype != out.dtype) {
        return Err(format!(
            "input {} is {} but the output is {}",
            bad.name, bad.dtype, out.dtype
        ));
    }
    let e = out.dtype.size_bytes();
    let single = |n: usize| -> Result<(), String> {
        if ins.len() == n {
            Ok(())
        } else {
            Err(format!("expected {n} input(s), got {}", ins.len()))
        }
    };
    let whole = |src: usize| CopyPlan {
        src,
        axes: Vec::new(),
        run: out.numel() * e,
        src_base: 0,
        dst_base: 0,
    };
    let rank = first.dims.len();
    let (in_s, out_s) = (strides(&first.dims), strides(&out.dims));
    let mut fill = None;
    let copies = match &kernel.main {
        Some(Op::Reshape { .. }) => {
            single(1)?;
            if first.numel() != out.numel() {
                return Err(format!(
                    "input {:?} and output {:?} differ in size",
                    first.dims, out.dims
                ));
            }
            vec![whole(0)]
        }
        Some(Op::Transpose { perm }) => {
            single(1)?;
            let mut seen = vec![false; rank];
            let ok = perm.len() == rank
                && perm
                    .iter()
                    .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true))
                && perm
                    .iter()
                    .map(|&p| first.dims[p])
                    .eq(out.dims.iter().copied());
            if !ok {
                return Err(format!(
                    "perm {perm:?} does not map input {:?} to output {:?}",
                    first.dims, out.dims
                ));
            }
            let axes = (0..rank)
                .map(|i| Axis {
                    count: out.dims[i],
                    in_stride: in_s[perm[i]] * e,
                    out_stride: out_s[i] * e,
                })
                .collect();
            vec![CopyPlan {
                src: 0,
                axes,
                run: e,
                src_base: 0,
                dst_base: 0,
            }]
        }
        Some(Op::Concat { axis }) => {
            let mut copies = plan_concat(&ins, out, axis_index(*axis), e)?;
            // Operands written in place by their producers are already in their slots.
            copies.retain(|c| {
                let part = &program.buffer(kernel.inputs[c.src]).kind;
                !matches!(part, BufferKind::Part { of, .. } if *of == kernel.output)
            });
            copies
        }
        Some(Op::Slice { begin, .. }) => {
            single(1)?;
            let ok = begin.len() == rank
                && out.dims.len() == rank
                && (0..rank).all(|i| {
                    begin[i]
                        .checked_add(out.dims[i])
                        .is_some_and(|end| end <= first.dims[i])
                });
            if !ok {
                return Err(format!(
                    "begin {begin:?} with size {:?} is not inside the input {:?}",
                    out.dims, first.dims
                ));
            }
            let axes = (0..rank)
                .map(|i| Axis {
                    count: out.dims[i],
                    in_stride: in_s[i] * e,
                    out_stride: out_s[i] * e,
                })
                .collect();
            let src_base = (0..rank).map(|i| begin[i] * in_s[i] * e).sum();
            vec![CopyPlan {
                src: 0,
                axes,
                run: e,
                src_base,
                dst_base: 0,
            }]
        }
        Some(Op::Pad {
            paddings,
            constant_value,
        }) => {
            single(1)?;
            let ok = paddings.len() == rank
                && out.dims.len() == rank
                && (0..rank).all(|i| {
                    let [lo, hi] = paddings[i];
                    first.dims[i]
                        .checked_add(lo)
                        .and_then(|v| v.checked_add(hi))
                        == Some(out.dims[i])
                });
            if !ok {
                return Err(format!(
                    "paddings {paddings:?} do not turn input {:?} into output {:?}",
                    first.dims, out.dims
                ));
            }
            let padded = out.numel() != first.numel();
            if padded {
                fill = Some(fill_pattern(out.dtype, constant_value.0));
            }
            let axes = (0..rank)
                .map(|i| Axis {
                    count: first.dims[i],
                    in_stride: in_s[i] * e,
                    out_stride: out_s[i] * e,
                })
                .collect();
            let dst_base = (0..rank).map(|i| paddings[i][0] * out_s[i] * e).sum();
            vec![CopyPlan {
                src: 0,
                axes,
                run: e,
                src_base: 0,
                dst_base,
            }]
        }
        _ => return Err(format!("{} is not a movement op", kernel.op_name())),
    };
    Ok(MovePlan {
        fill,
        copies: copies
            .into_iter()
            .filter_map(CopyPlan::normalized)
            .collect(),
    })
}

/// Concat along `axis`: each output row (the axes before `axis`) is the operands' blocks one
/// after another, so each operand is one strided block copy.
fn plan_concat(
    ins: &[&kiln_ir::program::Buffer],
    out: &kiln_ir::program::Buffer,
    axis: usize,
    e: usize,
) -> Result<Vec<CopyPlan>, String> {
    let rank = out.dims.len();
    let shapes = || {
        let parts: Vec<String> = ins.iter().map(|b| format!("{:?}", b.dims)).collect();
        parts.join(", ")
    };
    let mut total_axis = 0usize;
    for b in ins {
        let same = b.dims.len() == rank && (0..rank).all(|i| i == axis || b.dims[i] == out.dims[i]);
        if axis >= rank || !same {
            return Err(format!(
                "operands {} cannot be joined along axis {axis} into {:?}",
                shapes(),
                out.dims
            ));
        }
        total_axis = total_axis.saturating_add(b.dims[axis]);
    }
    if total_axis != out.dims[axis] {
        return Err(format!(
            "operands {} sum to {total_axis} along axis {axis}, output is {:?}",
            shapes(),
            out.dims
        ));
    }
    let outer: usize = out.dims[..axis].iter().product();
    let inner: usize = out.dims[axis + 1..].iter().product();
    let row = out.dims[axis] * inner * e;
    let mut at = 0;
    let mut copies = Vec::with_capacity(ins.len());
    for (k, b) in ins.iter().enumerate() {
        let block = b.dims[axis] * inner * e;
        copies.push(CopyPlan {
            src: k,
            axes: vec![Axis {
                count: outer,
                in_stride: block,
                out_stride: row,
            }],
            run: block,
            src_base: 0,
            dst_base: at,
        });
        at += block;
    }
    Ok(copies)
}

/// The padding value as one element of `dtype`, converted like the reference (numpy-style
/// saturating casts, NaN to 0; true when nonzero).
fn fill_pattern(dtype: DType, v: f32) -> Vec<u8> {
    match dtype {
        DType::F32 => v.to_bits().to_le_bytes().to_vec(),
        DType::I32 => (v as i32).to_le_bytes().to_vec(),
        DType::I64 => (v as i64).to_le_bytes().to_vec(),
        DType::Bool => vec![u8::from(v != 0.0)],
    }
}
