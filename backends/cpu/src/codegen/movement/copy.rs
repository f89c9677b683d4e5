//! The copy machinery of the movement kernels: loop nests over strided offsets (shared with the
//! reduction kernels), copy plans and their normalisation, the emitters that copy or fill one
//! contiguous run of bytes, and the choice between a plain nest and a blocked transpose.
//!
//! Invariant: a normalised [`CopyPlan`] touches exactly the bytes the un-normalised one does,
//! in the same order within each run; normalisation only removes loop overhead.

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::tile::emit_blocked;
use crate::jit::loops::{Bound, data_flags, for_range, for_range_carry};

/// One loop of a nest: its trip count and what one iteration adds to the input and output
/// offsets (in whatever unit the caller uses: bytes for movement, elements for reductions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Axis {
    /// Trip count.
    pub count: usize,
    /// Input offset step per iteration.
    pub in_stride: usize,
    /// Output offset step per iteration.
    pub out_stride: usize,
}

/// A leaf of [`loop_nest`]: gets the input and output offsets (`i64`) and the carried values,
/// returns the next carried values.
pub(crate) type Leaf<'a> =
    dyn FnMut(&mut FunctionBuilder, Value, Value, &[Value]) -> Result<Vec<Value>, String> + 'a;

/// `usize` → `i64` for generated constants (shapes come from user graphs, so this is checked).
pub(crate) fn c64(v: usize) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("size {v} does not fit in i64"))
}

/// Emits nested loops over `axes` (outermost first) and calls `leaf` once per point with the
/// offsets `in_off + sum(i_k * in_stride_k)` and `out_off + sum(i_k * out_stride_k)`, threading
/// `carried` through every iteration (in loop order, so the order of accumulation is fixed by
/// the generated code). With no axes `leaf` runs once.
pub(crate) fn loop_nest(
    b: &mut FunctionBuilder,
    axes: &[Axis],
    in_off: Value,
    out_off: Value,
    carried: &[Value],
    leaf: &mut Leaf<'_>,
) -> Result<Vec<Value>, String> {
    loop_nest_part(b, axes, None, in_off, out_off, carried, leaf)
}

/// [`loop_nest`] over only part `[start, end)` of `parts` of the outermost loop (iterations
/// `count * start / parts .. count * end / parts`), when `part` is `Some((start, end,
/// parts))`: calls for the parts of a split cover every iteration once.
pub(crate) fn loop_nest_part(
    b: &mut FunctionBuilder,
    axes: &[Axis],
    part: Option<(Value, Value, usize)>,
    in_off: Value,
    out_off: Value,
    carried: &[Value],
    leaf: &mut Leaf<'_>,
) -> Result<Vec<Value>, String> {
    let Some((first, rest)) = axes.split_first() else {
        return leaf(b, in_off, out_off, carried);
    };
    let (count, sin, sout) = (
        c64(first.count)?,
        c64(first.in_stride)?,
        c64(first.out_stride)?,
    );
    let (lo, hi) = match part {
        None => (Bound::Const(0), Bound::Const(count)),
        Some((start, end, parts)) => {
            let parts = c64(parts)?;
            let mut at = |p: Value| {
                let scaled = b.ins().imul_imm_s(p, count);
                Bound::Dyn(b.ins().sdiv_imm_s(scaled, parts))
            };
            (at(start), at(end))
        }
    };
    for_range_carry(b, lo, hi, 1, carried, |b, i, c| {
        let di = b.ins().imul_imm_s(i, sin);
        let i_off = b.ins().iadd(in_off, di);
        let do_ = b.ins().imul_imm_s(i, sout);
        let o_off = b.ins().iadd(out_off, do_);
        loop_nest(b, rest, i_off, o_off, c, leaf)
    })
}

/// Copy `run` bytes from `src_base + Σ i·in_stride` of kernel buffer `src` to
/// `dst_base + Σ i·out_stride` of the output, for every point of `axes` (all in bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CopyPlan {
    /// Kernel buffer index of the source.
    pub src: usize,
    /// Loops, outermost first (byte strides).
    pub axes: Vec<Axis>,
    /// Bytes per contiguous run.
    pub run: usize,
    /// Byte offset of the first run in the source.
    pub src_base: usize,
    /// Byte offset of the first run in the output.
    pub dst_base: usize,
}

impl CopyPlan {
    /// The same copy with a minimal nest, or `None` when it copies nothing.
    pub(super) fn normalized(mut self) -> Option<CopyPlan> {
        if self.run == 0 || self.axes.iter().any(|a| a.count == 0) {
            return None;
        }
        self.axes.retain(|a| a.count != 1);
        // An innermost loop that steps by exactly one run on both sides extends the run.
        while let Some(&last) = self.axes.last() {
            if last.in_stride != self.run || last.out_stride != self.run {
                break;
            }
            self.run *= last.count;
            self.axes.pop();
        }
        // Two loops whose outer stride is the inner loop's whole extent on both sides are one.
        let mut i = self.axes.len();
        while i >= 2 {
            let (outer, inner) = (self.axes[i - 2], self.axes[i - 1]);
            if outer.in_stride == inner.count * inner.in_stride
                && outer.out_stride == inner.count * inner.out_stride
            {
                self.axes[i - 2] = Axis {
                    count: outer.count * inner.count,
                    ..inner
                };
                self.axes.remove(i - 1);
            }
            i -= 1;
        }
        Some(self)
    }
}

/// Runs narrower than this are copied as a blocked transpose when the innermost loop is
/// contiguous only in the output (a wider run already moves whole vectors).
const NARROW_RUN: usize = 16;
/// Most runs an unrolled row copies (the row is straight-line code).
pub(super) const MAX_TILE: usize = 16;
impl CopyPlan {
    /// For a normalised transpose-like plan (narrow runs, innermost loop contiguous in the
    /// output but not in the input), the index of the loop that is contiguous in the input.
    fn input_contiguous_axis(&self) -> Option<usize> {
        let (last, rest) = self.axes.split_last()?;
        if self.run >= NARROW_RUN || last.out_stride != self.run || last.in_stride == self.run {
            return None;
        }
        rest.iter().rposition(|a| a.in_stride == self.run)
    }
}

impl CopyPlan {
    /// The loops [`emit_copy`] emits as loops, outermost first, and the row it unrolls inside
    /// them, for a plain nest (no blocked transpose): a short innermost loop of narrow runs
    /// becomes straight-line code.
    fn plain_loops(&self) -> (&[Axis], Axis) {
        match self.axes.split_last() {
            Some((&last, rest)) if self.run < NARROW_RUN && last.count <= MAX_TILE => (rest, last),
            _ => (
                &self.axes[..],
                Axis {
                    count: 1,
                    in_stride: 0,
                    out_stride: 0,
                },
            ),
        }
    }

    /// Whether [`emit_copy`] can emit a part of the copy: it has an outer loop to split, or
    /// it is a blocked transpose of one plane with two full tiles or more along A or B
    /// (`tile.rs`).
    pub(super) fn splits(&self) -> bool {
        match self.input_contiguous_axis() {
            Some(a) => {
                let (a_count, b_count) =
                    (self.axes[a].count, self.axes.last().map_or(0, |b| b.count));
                let (tile_a, tile_b) = super::tile::tile_edges(a_count, b_count, self.run);
                self.axes.len() > 2 || (a_count / tile_a).max(b_count / tile_b) >= 2
            }
            None => !self.plain_loops().0.is_empty(),
        }
    }
}

/// Emits `plan`, copying from kernel buffer address `src` to output address `dst`: a
/// transpose that moves the innermost axis as a blocked transpose (see `tile.rs`), anything
/// else as its loop nest with a short innermost loop of narrow runs unrolled. With `part`
/// `Some((start, end, parts))`, only that part of the outermost loop ([`loop_nest_part`]);
/// the plan must then [`CopyPlan::splits`].
pub(super) fn emit_copy(
    b: &mut FunctionBuilder,
    plan: &CopyPlan,
    src: Value,
    dst: Value,
    part: Option<(Value, Value, usize)>,
) -> Result<(), String> {
    if part.is_some() && !plan.splits() {
        return Err("a part of a copy without an outer loop".into());
    }
    let src_base = b.ins().iconst(types::I64, c64(plan.src_base)?);
    let dst_base = b.ins().iconst(types::I64, c64(plan.dst_base)?);
    let run = plan.run;
    let Some(a_index) = plan.input_contiguous_axis() else {
        let (axes, row) = plan.plain_loops();
        loop_nest_part(b, axes, part, src_base, dst_base, &[], &mut |b, i, o, _| {
            let s = b.ins().iadd(src, i);
            let d = b.ins().iadd(dst, o);
            emit_row(b, s, d, row, run)?;
            Ok(Vec::new())
        })?;
        return Ok(());
    };
    emit_blocked(b, plan, a_index, src, dst, src_base, dst_base, part)
}

/// Straight-line copies of `row.count` runs of `run` bytes, the k-th from
/// `src + k * row.in_stride` to `dst + k * row.out_stride`.
pub(super) fn emit_row(
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    row: Axis,
    run: usize,
) -> Result<(), String> {
    for k in 0..row.count {
        let (sk, dk) = (
            addr_plus(b, src, k * row.in_stride)?,
            addr_plus(b, dst, k * row.out_stride)?,
        );
        emit_run_copy(b, sk, dk, run)?;
    }
    Ok(())
}

/// The integer type of a `bytes`-wide memory access (1, 2, 4, 8 or 16 bytes).
fn piece_type(bytes: usize) -> Type {
    match bytes {
        16 => types::I8X16,
        8 => types::I64,
        4 => types::I32,
        2 => types::I16,
        _ => types::I8,
    }
}

/// `base + off` as an address, folding a zero offset.
pub(super) fn addr_plus(b: &mut FunctionBuilder, base: Value, off: usize) -> Result<Value, String> {
    Ok(if off == 0 {
        base
    } else {
        b.ins().iadd_imm_s(base, c64(off)?)
    })
}

/// Copies `bytes` bytes from `src` to `dst` (not overlapping): 64-byte vector loop, then a
/// straight-line tail of 16/8/4/2/1-byte pieces (the length is a compile-time constant).
pub(crate) fn emit_run_copy(
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    bytes: usize,
) -> Result<(), String> {
    let whole = bytes / 64 * 64;
    for_range(b, 0, c64(whole)?, 64, |b, off| {
        let s = b.ins().iadd(src, off);
        let d = b.ins().iadd(dst, off);
        for k in 0..4 {
            let v = b.ins().load(types::I8X16, data_flags(), s, 16 * k);
            b.ins().store(data_flags(), v, d, 16 * k);
        }
        Ok(())
    })?;
    let mut at = whole;
    for piece in [16, 8, 4, 2, 1] {
        while bytes - at >= piece {
            let s = addr_plus(b, src, at)?;
            let d = addr_plus(b, dst, at)?;
            let v = b.ins().load(piece_type(piece), data_flags(), s, 0);
            b.ins().store(data_flags(), v, d, 0);
            at += piece;
        }
    }
    Ok(())
}

/// Fills `bytes` bytes at `dst` with the element `pattern` repeated (`pattern.len()` is 1, 4
/// or 8 and divides `bytes`).
pub(super) fn emit_fill(
    b: &mut FunctionBuilder,
    dst: Value,
    bytes: usize,
    pattern: &[u8],
) -> Result<(), String> {
    let e = pattern.len();
    let mut word = [0u8; 8];
    word[..e].copy_from_slice(pattern);
    let bits = i64::from_le_bytes(word);
    let elem_ty = piece_type(e);
    let scalar = b.ins().iconst(elem_ty, bits);
    let vec_ty = elem_ty
        .by(16 / e as u32)
        .ok_or_else(|| format!("no 16-byte vector of {elem_ty}"))?;
    let vector = b.ins().splat(vec_ty, scalar);
    let whole = bytes / 64 * 64;
    for_range(b, 0, c64(whole)?, 64, |b, off| {
        let d = b.ins().iadd(dst, off);
        for k in 0..4 {
            b.ins().store(data_flags(), vector, d, 16 * k);
        }
        Ok(())
    })?;
    let mut at = whole;
    while bytes - at >= 16 {
        let d = addr_plus(b, dst, at)?;
        b.ins().store(data_flags(), vector, d, 0);
        at += 16;
    }
    while bytes - at >= e {
        let d = addr_plus(b, dst, at)?;
        b.ins().store(data_flags(), scalar, d, 0);
        at += e;
    }
    Ok(())
}

/// Row-major strides (in elements) of `dims`.
pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_merges_runs_and_loops() {
        let a = |count, in_stride, out_stride| Axis {
            count,
            in_stride,
            out_stride,
        };
        // A row-major identity copy of [3, 5, 7] f32 collapses to one run.
        let p = CopyPlan {
            src: 0,
            axes: vec![a(3, 140, 140), a(5, 28, 28), a(7, 4, 4)],
            run: 4,
            src_base: 0,
            dst_base: 0,
        };
        let n = p.normalized().expect("non-empty");
        assert!(n.axes.is_empty());
        assert_eq!(n.run, 420);
        // Slice of columns 1..3 of [4, 6]: one loop of 4 rows, 8-byte runs.
        let p = CopyPlan {
            src: 0,
            axes: vec![a(4, 24, 8), a(2, 4, 4)],
            run: 4,
            src_base: 4,
            dst_base: 0,
        };
        let n = p.normalized().expect("non-empty");
        assert_eq!((n.axes, n.run), (vec![a(4, 24, 8)], 8));
        // Empty axes copy nothing; size-1 axes disappear.
        let p = CopyPlan {
            src: 0,
            axes: vec![a(0, 4, 4)],
            run: 4,
            src_base: 0,
            dst_base: 0,
        };
        assert!(p.normalized().is_none());
        let p = CopyPlan {
            src: 0,
            axes: vec![a(1, 99, 77), a(3, 4, 12)],
            run: 4,
            src_base: 0,
            dst_base: 0,
        };
        assert_eq!(p.normalized().expect("non-empty").axes, vec![a(3, 4, 12)]);
    }

    #[test]
    fn nhwc_to_nchw_is_a_batched_2d_transpose_with_a_blocked_axis() {
        let a = |count, in_stride, out_stride| Axis {
            count,
            in_stride,
            out_stride,
        };
        // f32 [2, 5, 7, 3] by [0, 3, 1, 2]: the H and W loops merge, the C loop is input-contiguous.
        let p = CopyPlan {
            src: 0,
            axes: vec![a(2, 420, 420), a(3, 4, 140), a(5, 84, 28), a(7, 12, 4)],
            run: 4,
            src_base: 0,
            dst_base: 0,
        };
        let n = p.normalized().expect("non-empty");
        assert_eq!(n.axes, vec![a(2, 420, 420), a(3, 4, 140), a(35, 12, 4)]);
        assert_eq!(n.input_contiguous_axis(), Some(1));
        // A slice's rows are contiguous on both sides: a plain nest.
        let p = CopyPlan {
            src: 0,
            axes: vec![a(4, 24, 8), a(2, 4, 4)],
            run: 4,
            src_base: 4,
            dst_base: 0,
        };
        assert_eq!(
            p.normalized().expect("non-empty").input_contiguous_axis(),
            None
        );
    }
}
