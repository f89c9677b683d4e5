//! Portable micro-kernel: a 4x8 tile in plain, safe Rust that LLVM vectorises for whatever
//! baseline the target has (SSE2 on x86-64, NEON on aarch64). Correct for every shape; used
//! where no SIMD family is available or `KILN_CPU_FEATURES=none` asks for it. 4x8 keeps the
//! accumulators in 8 of SSE2's 16 registers; the inner loop zips the row slices with B's rows
//! so it has no bounds checks (a check in the loop stops LLVM from vectorising it).
//!
//! It multiplies and adds separately (no `mul_add`: without hardware FMA that is a slow libm
//! call), so its results differ from the FMA kernels by rounding only.

use super::{Tile, TileA};

/// Rows of the register tile.
pub(crate) const MR: usize = 4;
/// Columns of the register tile.
pub(crate) const NR: usize = 8;

/// Runs one strip of row tiles; panics if the tile's slices do not cover what the kernel reads
/// and writes (a driver bug, never caller input).
pub(crate) fn run(t: &mut Tile<'_, '_>) {
    t.assert_valid(MR, NR);
    assert_eq!(t.panels, 1, "this kernel computes one panel a call");
    for q in 0..t.tiles {
        tile(&mut t.row_tile::<MR>(q));
    }
}

/// One row tile (`t.tiles == 1`) within the bounds `assert_valid` checked.
fn tile(t: &mut Tile<'_, '_>) {
    let kseg = t.kseg;
    // `acc` is only ever indexed by constants or copied whole, so it can live in registers;
    // the run-time-sized copies from and to C go through `edge` (see avx512.rs).
    let mut edge = [[0.0f32; NR]; MR];
    if t.accumulate {
        for (r, e) in edge.iter_mut().enumerate().take(t.rows) {
            e[..t.cols].copy_from_slice(t.c.slice(r * t.ldc, t.cols));
        }
    }
    let mut acc = edge;
    for s in 0..t.segments::<MR>() {
        // Each row's segment as a slice of exactly kseg values; rows past `rows` (empty
        // starts past the strip) read row 0's, whose products are never stored.
        let seg: [&[f32]; MR] = std::array::from_fn(|r| {
            let r = if r < t.rows { r } else { 0 };
            match t.a {
                TileA::Slices(a) => &a[s * MR + r][..kseg],
                TileA::Starts {
                    src,
                    starts,
                    seg_offsets,
                } => &src[starts[r] + seg_offsets[s]..][..kseg],
            }
        });
        let b = &t.b[s * kseg * NR..(s + 1) * kseg * NR];
        let steps = b
            .chunks_exact(NR)
            .zip(seg[0])
            .zip(seg[1])
            .zip(seg[2])
            .zip(seg[3]);
        for ((((bk, &a0), &a1), &a2), &a3) in steps {
            let av = [a0, a1, a2, a3];
            super::unrolled!(r in [0, 1, 2, 3] {
                for j in 0..NR {
                    acc[r][j] += av[r] * bk[j];
                }
            });
        }
    }
    let edge = acc;
    for (r, acc) in edge.iter().enumerate().take(t.rows) {
        let out = t.c.slice(r * t.ldc, t.cols);
        match &t.epilogue {
            None => out.copy_from_slice(&acc[..t.cols]),
            Some(e) => {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = e.apply(r, j, acc[j]);
                }
            }
        }
    }
}

/// Matrix-vector sums for the GEMV path: `out[(r * P + q) * NR + l] = sum_p a[r][p] *
/// panels[q][p * NR + l]` for `P = panels.len()`, summed in k order with separate multiply
/// and add like [`run`] (so both give the same bits). Panics on short slices.
pub(crate) fn dots(a: &[&[f32]], panels: &[&[f32]], k: usize, out: &mut [f32]) {
    super::gemv::assert_dots(a, panels, k, out, NR);
    let p_count = panels.len();
    for (r, row) in a.iter().enumerate() {
        for (q, panel) in panels.iter().enumerate() {
            let mut acc = [0.0f32; NR];
            for (bk, &av) in panel[..k * NR].chunks_exact(NR).zip(&row[..k]) {
                for j in 0..NR {
                    acc[j] += av * bk[j];
                }
            }
            out[(r * p_count + q) * NR..][..NR].copy_from_slice(&acc);
        }
    }
}
