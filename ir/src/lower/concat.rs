//! Concatenation without copies: the kernels that produce a concat's operands write straight
//! into their slots of the concat's output ([`BufferKind::Part`]), and the concat kernel
//! copies only the operands left out.
//!
//! Along axis `a` of an output with dims `d`, operand `i` fills, in each of the
//! `outer = d[..a].product()` rows of the output, a block of `d_i[a] * inner` contiguous
//! elements (`inner = d[a + 1..].product()`) at `(d_0[a] + ... + d_{i-1}[a]) * inner`, and
//! output rows are `d[a] * inner` apart. With one row (an outer-axis concat, a batch-1 NCHW
//! channel concat) the slot is one contiguous block that any kernel can write; with several
//! (an NHWC channel concat) the producer must store rows at a stride, which only some
//! backend kernels can (the caller says which).
//!
//! An operand is written in place only when nothing else could see the difference: it is a
//! temporary (not a feed, variable, constant, fetch or variable update), the concat is its one
//! and only read (not fetched, not viewed by a reshape, not another kernel's input nor a second
//! operand of the same or another concat), and it is not itself a concat output holding parts
//! (parts of parts are not supported). The concat must have no epilogue (it would have to be
//! applied to what the producers store). The arena is planned again afterwards: the concat
//! output is live from the first producer on, so nothing in between is placed in its bytes.

use super::memory;
use crate::Result;
use crate::op::Op;
use crate::program::{BufferId, BufferKind, Kernel, Program};

/// Where operand `operand` of concat kernel `kernel` lies in the kernel's output, as the
/// [`BufferKind::Part`] it would become; `None` when `kernel` is not a concat (with its axis
/// in normal form) or the operand does not exist. Shapes are taken as validated.
pub fn concat_part(program: &Program, kernel: &Kernel, operand: usize) -> Option<BufferKind> {
    let Some(Op::Concat { axis }) = kernel.main else {
        return None;
    };
    let axis = usize::try_from(axis).ok()?;
    let out = program.buffers.get(kernel.output.index())?;
    let dims_of = |b: BufferId| program.buffers.get(b.index()).map(|b| &b.dims);
    let inner: usize = out.dims.get(axis + 1..)?.iter().product();
    let before: usize = kernel
        .inputs
        .get(..operand)?
        .iter()
        .try_fold(0usize, |n, &b| n.checked_add(*dims_of(b)?.get(axis)?))?;
    let own = *dims_of(*kernel.inputs.get(operand)?)?.get(axis)?;
    Some(BufferKind::Part {
        of: kernel.output,
        offset: before.checked_mul(inner)?,
        row: own.checked_mul(inner)?,
        stride: out.dims.get(axis)?.checked_mul(inner)?,
    })
}

/// Whether a part's rows are one contiguous block (one row, or rows exactly as long as the
/// stride); any kernel can write such a part as if it were its own buffer.
pub fn part_is_contiguous(numel: usize, row: usize, stride: usize) -> bool {
    row == stride || numel <= row
}

/// Turns every concat operand that may be written in place into a [`BufferKind::Part`] of the
/// concat's output and plans the arena again; returns how many operands it placed.
///
/// `can_write(program, producer, row, stride)` says whether the backend can run kernel
/// `producer` storing its output as rows of `row` elements `stride` apart (it is asked only
/// for parts that are not contiguous).
pub fn write_concat_operands_in_place(
    program: &mut Program,
    can_write: impl Fn(&Program, &Kernel, usize, usize) -> bool,
) -> Result<usize> {
    let n = program.buffers.len();
    // How often each buffer is read (a kernel listing it twice counts twice) and which kernel
    // writes it.
    let mut reads = vec![0usize; n];
    let mut writer: Vec<Option<usize>> = vec![None; n];
    for (k, kernel) in program.kernels.iter().enumerate() {
        let listed = kernel.inputs.iter().copied();
        for b in listed.chain(kernel.epilogue.loads.iter().map(|l| l.buffer)) {
            reads[program.storage(b).index()] += 1;
        }
        writer[kernel.output.index()] = Some(k);
    }
    for &b in program
        .fetches
        .iter()
        .chain(program.updates.iter().map(|u| &u.value))
    {
        reads[program.storage(b).index()] += 1;
    }
    // A temporary viewed by an alias may be read through the alias.
    for buf in &program.buffers {
        if let BufferKind::Alias { of } = buf.kind {
            reads[of.index()] += 1;
        }
    }
    let mut placed = 0;
    for k in 0..program.kernels.len() {
        let kernel = &program.kernels[k];
        let out_kind = &program.buffers[kernel.output.index()].kind;
        if !matches!(kernel.main, Some(Op::Concat { .. }))
            || !kernel.epilogue.is_identity()
            || !matches!(
                out_kind,
                BufferKind::Temporary { .. } | BufferKind::Output(_)
            )
        {
            continue;
        }
        let mut parts = Vec::new();
        for (i, &b) in kernel.inputs.iter().enumerate() {
            let buf = &program.buffers[b.index()];
            let Some(producer) = writer[b.index()] else {
                continue;
            };
            let holds_parts = program
                .buffers
                .iter()
                .any(|x| matches!(x.kind, BufferKind::Part { of, .. } if of == b));
            if !matches!(buf.kind, BufferKind::Temporary { .. })
                || reads[b.index()] != 1
                || holds_parts
            {
                continue;
            }
            let Some(part) = concat_part(program, kernel, i) else {
                continue;
            };
            let BufferKind::Part { row, stride, .. } = part else {
                continue;
            };
            let producer = &program.kernels[producer];
            if part_is_contiguous(buf.numel(), row, stride)
                || can_write(program, producer, row, stride)
            {
                parts.push((b, part));
            }
        }
        for (b, part) in parts {
            program.buffers[b.index()].kind = part;
            placed += 1;
        }
    }
    if placed > 0 {
        memory::plan(program)?;
    }
    Ok(placed)
}
