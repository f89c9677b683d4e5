//! Blocked transposes: the movement copies whose innermost loop is contiguous in the output
//! but not in the input (a transpose that moves the innermost axis, NHWC <-> NCHW, channel
//! shuffles).
//!
//! With A the loop contiguous in the input and B the one contiguous in the output, the A x B
//! plane is walked in tiles of about one cache line per edge, so each line read or written is
//! used whole while it is in L1 (one element at a time, the strided side refetches a line per
//! element). Inside a tile, 4-byte elements move through 16-byte registers (4 x 4 unpack
//! transposes, or a two-way interleave), other sizes run by run with the row along B unrolled.
//! Loops other than A and B stay outside, in order: a movement plan writes every output byte at
//! most once, so the loop order is free.
//! A split copy's parts take ranges of the outermost of those loops, or, for one plane with
//! none (one image's NHWC <-> NCHW), ranges of the tiles along A or B.

use cranelift_codegen::ir::{ConstantData, InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::copy::{Axis, CopyPlan, MAX_TILE, addr_plus, c64, emit_row, loop_nest, loop_nest_part};
use crate::jit::loops::data_flags;

/// Edge of a transpose tile in bytes: one cache line, so every line a tile reads or writes is
/// used whole before the tile moves on.
const TILE_BYTES: usize = 64;

/// A blocked transpose's tile edges along A and B (loops of `a_count` and `b_count` runs of
/// `run` bytes): about a cache line each, and all of A when B fits one tile (whole input rows
/// along A are read per pass: no need to cut A).
pub(super) fn tile_edges(a_count: usize, b_count: usize, run: usize) -> (usize, usize) {
    let edge = (TILE_BYTES / run).clamp(1, MAX_TILE);
    let tile_a = if b_count <= edge {
        a_count
    } else {
        edge.min(a_count)
    };
    (tile_a, edge.min(b_count))
}

/// A rectangle of tiles along one loop: its first run, how many tiles, and the tile's runs.
type Rect = (usize, usize, usize);

/// The full tiles of a loop of `count` runs, then its leftover strip: one or two rectangles.
fn rects(count: usize, tile: usize) -> Vec<Rect> {
    [
        (0, count / tile, tile),
        (count / tile * tile, 1, count % tile),
    ]
    .into_iter()
    .filter(|&(_, tiles, size)| tiles > 0 && size > 0)
    .collect()
}

/// Rectangle `(_, tiles, size)` of `axis` as the loop stepping over its tiles and the axis of
/// one tile.
fn tiled(axis: Axis, (_, tiles, size): Rect) -> (Axis, Axis) {
    let step = Axis {
        count: tiles,
        in_stride: axis.in_stride * size,
        out_stride: axis.out_stride * size,
    };
    (
        step,
        Axis {
            count: size,
            ..axis
        },
    )
}

/// Emits a blocked transpose of `plan`, where `a_index` is the loop contiguous in the input
/// (A) and the innermost loop is contiguous in the output (B); `src_base` and `dst_base` are
/// the plan's byte offsets as values; `part` restricts the outermost of the other loops (see
/// `loop_nest_part`).
#[allow(clippy::too_many_arguments)] // the plan, its two addresses and offsets, and the part
pub(super) fn emit_blocked(
    b: &mut FunctionBuilder,
    plan: &CopyPlan,
    a_index: usize,
    src: Value,
    dst: Value,
    src_base: Value,
    dst_base: Value,
    part: Option<(Value, Value, usize)>,
) -> Result<(), String> {
    let run = plan.run;
    let (&b_axis, rest) = plan.axes.split_last().ok_or("a tiled copy without loops")?;
    let &a_axis = rest
        .get(a_index)
        .ok_or("a tiled copy without an input-contiguous loop")?;
    let outer: Vec<Axis> = rest
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != a_index)
        .map(|(_, &a)| a)
        .collect();
    let (tile_a, tile_b) = tile_edges(a_axis.count, b_axis.count, run);
    // Full tiles, then the leftover strip, along each of A and B: up to four rectangles.
    let (a_parts, b_parts) = (rects(a_axis.count, tile_a), rects(b_axis.count, tile_b));
    if outer.is_empty() && part.is_some() {
        return emit_plane_part(
            b,
            (a_axis, &a_parts),
            (b_axis, &b_parts),
            src,
            dst,
            src_base,
            dst_base,
            part,
            run,
        );
    }
    loop_nest_part(
        b,
        &outer,
        part,
        src_base,
        dst_base,
        &[],
        &mut |b, i, o, _| {
            for &a_rect in &a_parts {
                for &b_rect in &b_parts {
                    let (a_start, b_start) = (a_rect.0, b_rect.0);
                    let i0 = b.ins().iadd_imm_s(
                        i,
                        c64(a_start * a_axis.in_stride + b_start * b_axis.in_stride)?,
                    );
                    let o0 = b.ins().iadd_imm_s(
                        o,
                        c64(a_start * a_axis.out_stride + b_start * b_axis.out_stride)?,
                    );
                    let ((a_step, a_tile), (b_step, b_tile)) =
                        (tiled(a_axis, a_rect), tiled(b_axis, b_rect));
                    let tile_loops: Vec<Axis> = [a_step, b_step]
                        .into_iter()
                        .filter(|step| step.count > 1)
                        .collect();
                    loop_nest(b, &tile_loops, i0, o0, &[], &mut |b, i, o, _| {
                        let s = b.ins().iadd(src, i);
                        let d = b.ins().iadd(dst, o);
                        emit_tile(b, s, d, a_tile, b_tile, run)?;
                        Ok(Vec::new())
                    })?;
                }
            }
            Ok(Vec::new())
        },
    )?;
    Ok(())
}

/// The part `part` of a blocked transpose of one plane (no loop outside A and B to split: one
/// image's NHWC <-> NCHW), given A's and B's rectangles `(start, tiles, size)`: the parts take
/// ranges of the tiles of whichever of A and B has more, the other's tiles inside each, so
/// that a part still reads and writes in long runs. (All of A's tiles within a range of B's,
/// for 64 channels by 56x56 pixels, had each part write 64 lines a page apart: 2.4x slower
/// than one thread on a 2-core Xeon, FMA peak 175 GFLOP/s a core; the reverse for NCHW -> NHWC cut each pixel's 64 channels among the
/// parts.) A leftover strip is a loop of one iteration, split like the full tiles: the part
/// that ends the range runs it.
#[allow(clippy::too_many_arguments)] // the plan's two axes, its addresses, offsets and part
fn emit_plane_part(
    b: &mut FunctionBuilder,
    (a_axis, a_parts): (Axis, &[Rect]),
    (b_axis, b_parts): (Axis, &[Rect]),
    src: Value,
    dst: Value,
    src_base: Value,
    dst_base: Value,
    part: Option<(Value, Value, usize)>,
    run: usize,
) -> Result<(), String> {
    let tiles = |rects: &[Rect]| rects.iter().map(|r| r.1).sum::<usize>();
    let split_a = tiles(a_parts) >= tiles(b_parts);
    let (a_part, b_part) = if split_a { (part, None) } else { (None, part) };
    // A's rectangles outside, B's inside; one of the two loops is split.
    for &a_rect in a_parts {
        let (a_step, a_tile) = tiled(a_axis, a_rect);
        let i0 = b
            .ins()
            .iadd_imm_s(src_base, c64(a_rect.0 * a_axis.in_stride)?);
        let o0 = b
            .ins()
            .iadd_imm_s(dst_base, c64(a_rect.0 * a_axis.out_stride)?);
        loop_nest_part(b, &[a_step], a_part, i0, o0, &[], &mut |b, i, o, _| {
            for &b_rect in b_parts {
                let (b_step, b_tile) = tiled(b_axis, b_rect);
                let ib = b.ins().iadd_imm_s(i, c64(b_rect.0 * b_axis.in_stride)?);
                let ob = b.ins().iadd_imm_s(o, c64(b_rect.0 * b_axis.out_stride)?);
                loop_nest_part(b, &[b_step], b_part, ib, ob, &[], &mut |b, i, o, _| {
                    let s = b.ins().iadd(src, i);
                    let d = b.ins().iadd(dst, o);
                    emit_tile(b, s, d, a_tile, b_tile, run)?;
                    Ok(Vec::new())
                })?;
            }
            Ok(Vec::new())
        })?;
    }
    Ok(())
}

/// One tile of a blocked transpose: `a.count` rows along A (contiguous in the input), each
/// copying `bx.count` runs along B (contiguous in the output), from address `src` to `dst`.
///
/// 4-byte elements go through registers four rows of A at a time: 4 x 4 blocks when B is a
/// multiple of 4, a two-way interleave when B is 2 and the output rows are packed (the
/// two-group channel shuffle). Leftover rows, and other element sizes, copy run by run.
fn emit_tile(
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    a: Axis,
    bx: Axis,
    run: usize,
) -> Result<(), String> {
    let zip = run == 4 && bx.count == 2 && a.out_stride == 2 * run;
    let group = if run == 4 && (bx.count.is_multiple_of(4) || zip) {
        4
    } else {
        1
    };
    let groups = a.count / group;
    if groups > 0 {
        let step = [Axis {
            count: groups,
            in_stride: a.in_stride * group,
            out_stride: a.out_stride * group,
        }];
        let loops = if groups > 1 { &step[..] } else { &[] };
        // The nest's offsets are addresses here: it starts from `src` and `dst`.
        loop_nest(b, loops, src, dst, &[], &mut |b, s, d, _| {
            if group == 1 {
                emit_row(b, s, d, bx, run)?;
            } else if zip {
                emit_zip_4x2(b, s, d, bx.in_stride)?;
            } else {
                for k in 0..bx.count / 4 {
                    let (sk, dk) = (
                        addr_plus(b, s, 4 * k * bx.in_stride)?,
                        addr_plus(b, d, 4 * k * bx.out_stride)?,
                    );
                    emit_block_4x4(b, sk, dk, bx.in_stride, a.out_stride)?;
                }
            }
            Ok(Vec::new())
        })?;
    }
    for r in groups * group..a.count {
        let (sr, dr) = (
            addr_plus(b, src, r * a.in_stride)?,
            addr_plus(b, dst, r * a.out_stride)?,
        );
        emit_row(b, sr, dr, bx, run)?;
    }
    Ok(())
}

/// A shuffle mask taking alternating `width`-byte lanes from bytes `first` of the first
/// operand and `second` of the second (CLIF numbers the second operand's bytes 16..32).
fn alternate(first: std::ops::Range<u8>, second: std::ops::Range<u8>, width: u8) -> Vec<u8> {
    first
        .step_by(width.into())
        .zip(second.step_by(width.into()))
        .flat_map(|(x, y)| (x..x + width).chain(y..y + width))
        .collect()
}

/// `shuffle(x, y, mask)` on two 16-byte vectors.
fn shuffle(b: &mut FunctionBuilder, x: Value, y: Value, mask: Vec<u8>) -> Value {
    let imm = b.func.dfg.immediates.push(ConstantData::from(mask));
    b.ins().shuffle(x, y, imm)
}

/// Transposes a 4 x 4 block of 4-byte elements: four 16-byte loads from `src + r * src_row`,
/// the two-stage unpack transpose (`punpck{l,h}dq` then `punpck{l,h}qdq` on x86, which
/// Cranelift matches from these shuffle masks; every x86-64 has them), four 16-byte stores to
/// `dst + r * dst_row`. Four loads and four stores move what takes sixteen of each one element
/// at a time.
fn emit_block_4x4(
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    src_row: usize,
    dst_row: usize,
) -> Result<(), String> {
    let mut rows = Vec::with_capacity(4);
    for r in 0..4 {
        let at = addr_plus(b, src, r * src_row)?;
        rows.push(b.ins().load(types::I8X16, data_flags(), at, 0));
    }
    let (lo32, hi32) = (alternate(0..8, 16..24, 4), alternate(8..16, 24..32, 4));
    let (lo64, hi64) = (alternate(0..8, 16..24, 8), alternate(8..16, 24..32, 8));
    // t0 = a0 b0 a1 b1, t1 = c0 d0 c1 d1, t2 = a2 b2 a3 b3, t3 = c2 d2 c3 d3.
    let t0 = shuffle(b, rows[0], rows[1], lo32.clone());
    let t1 = shuffle(b, rows[2], rows[3], lo32);
    let t2 = shuffle(b, rows[0], rows[1], hi32.clone());
    let t3 = shuffle(b, rows[2], rows[3], hi32);
    let out = [
        shuffle(b, t0, t1, lo64.clone()),
        shuffle(b, t0, t1, hi64.clone()),
        shuffle(b, t2, t3, lo64),
        shuffle(b, t2, t3, hi64),
    ];
    for (r, v) in out.into_iter().enumerate() {
        let at = addr_plus(b, dst, r * dst_row)?;
        b.ins().store(data_flags(), v, at, 0);
    }
    Ok(())
}

/// Interleaves two rows of four 4-byte elements (`src` and `src + src_row`) into 32 packed
/// output bytes at `dst`: `punpckldq` / `punpckhdq` on x86.
fn emit_zip_4x2(
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    src_row: usize,
) -> Result<(), String> {
    let second = addr_plus(b, src, src_row)?;
    let x = b.ins().load(types::I8X16, data_flags(), src, 0);
    let y = b.ins().load(types::I8X16, data_flags(), second, 0);
    let lo = shuffle(b, x, y, alternate(0..8, 16..24, 4));
    let hi = shuffle(b, x, y, alternate(8..16, 24..32, 4));
    b.ins().store(data_flags(), lo, dst, 0);
    b.ins().store(data_flags(), hi, dst, 16);
    Ok(())
}
