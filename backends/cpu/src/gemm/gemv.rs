//! Matrix-vector and small-M products (batch-1 dense layers): `m <= MAX_ROWS` rows of a dense A
//! against a packed B.
//!
//! With one to three rows the blocked driver's register tile is mostly empty: one row keeps
//! only two FMA chains busy, a quarter of what the FMA latency needs, and the product is too
//! small for the driver's FLOP-based threading threshold although it streams megabytes of
//! weights. Here B is streamed once, panel by panel, `P` panels side by side so `rows * P * 2`
//! accumulator chains hide the FMA latency; each output column still sums its products in k
//! order from zero, exactly as the blocked kernels do, so both paths give the same bits. The
//! epilogue is applied to the finished sums on their way into C. The panels are split across
//! threads by the bytes of B they stream (the cost of a matrix-vector product is memory
//! traffic, not FLOPs).

use super::epilogue::Epilogue;
use super::{Isa, PackedB, avx2, avx512, portable};
use rayon::prelude::*;

/// Products with at most this many rows take this path; from four rows on, the blocked
/// kernels' tiles are full enough.
pub(super) const MAX_ROWS: usize = 3;
/// Bytes of B a parallel task should stream at least. Inside a run the other workers spin
/// (`awake.rs`), so a fork costs a microsecond or two, against about 20 us for a MiB of B
/// streamed from the last-level cache on one Zen 5 core. MobileNet-v2's 1280 -> 1000
/// classifier (5 MiB) took 0.054-0.098 ms on one thread and 0.032-0.051 split in two (kiln
/// bench --profile, six alternated rounds, 2-core EPYC, FMA peak 286 GFLOP/s a core), ResNet-18's 512 -> 1000 (2 MiB) 0.051-0.063 and
/// 0.047-0.051. (4 MiB was the threshold while workers slept between stages: a wake-up cost
/// 10-20 us.)
const MIN_TASK_BYTES: usize = 1 << 20;
/// Panels processed side by side, at most (sizes the sums buffer).
const MAX_PANELS: usize = 4;
/// Widest panel of any ISA (AVX-512's NR).
const MAX_NR: usize = avx512::NR;

/// Panels processed side by side for `rows` rows: at least 8 accumulator chains (two
/// vectors per row and panel; two FMA pipes of latency 4 need 8), at most 12 so they stay in
/// AVX2's 16 registers next to the loads.
fn panels_at_once(rows: usize) -> usize {
    if rows == 1 { MAX_PANELS } else { 2 }
}

/// `c = epilogue(a * b)` for `m` rows (`1..=MAX_ROWS`) of `a` at stride `lda`; C, the
/// epilogue and B's ISA already validated by the caller (`sgemm_rows`).
pub(super) fn run(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epi: &Epilogue<'_>,
) -> Result<(), String> {
    let (n, k, isa) = (b.n(), b.k(), b.isa());
    if !(1..=MAX_ROWS).contains(&m) {
        return Err(format!("gemv: {m} rows, expected 1..={MAX_ROWS}"));
    }
    // `sgemm` checked A's extent, but a custom `RowSource::dense` may hand in anything.
    let rows = (0..m)
        .map(|i| a.get(i * lda..i * lda + k))
        .collect::<Option<Vec<&[f32]>>>()
        .ok_or_else(|| {
            format!(
                "gemv: A has {} values, expected {m} rows of {k} at stride {lda}",
                a.len()
            )
        })?;
    let nr = isa.nr();
    let group = panels_at_once(m);
    let panels = n.div_ceil(nr);
    let bytes = panels * nr * k * 4;
    let tasks = rayon::current_num_threads()
        .min(bytes / MIN_TASK_BYTES)
        .min(panels.div_ceil(group))
        .max(1);
    if tasks == 1 {
        return columns(&rows, b, 0, n, epi, c, ldc);
    }
    // Disjoint column ranges of whole panel groups, each into its own buffer, then copied
    // (m x n values, nothing next to the k x n weights).
    let per = panels.div_ceil(tasks).div_ceil(group) * group * nr;
    let parts: Vec<(usize, usize, Vec<f32>)> = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let (c0, c1) = (t * per, ((t + 1) * per).min(n));
            let mut buf = vec![0.0f32; m * (c1 - c0)];
            columns(&rows, b, c0, c1, epi, &mut buf, c1 - c0).map(|()| (c0, c1, buf))
        })
        .collect::<Result<_, _>>()?;
    for (c0, c1, buf) in parts {
        for (i, row) in buf.chunks_exact(c1 - c0).enumerate() {
            c[i * ldc + c0..i * ldc + c1].copy_from_slice(row);
        }
    }
    Ok(())
}

/// Columns `c0..c1` (`c0` a multiple of NR) of every row into `dst`, where element `(i, j)`
/// lives at `dst[i * ld + j - c0]`.
fn columns(
    rows: &[&[f32]],
    b: &PackedB,
    c0: usize,
    c1: usize,
    epi: &Epilogue<'_>,
    dst: &mut [f32],
    ld: usize,
) -> Result<(), String> {
    let (k, isa) = (b.k(), b.isa());
    let nr = isa.nr();
    let group = panels_at_once(rows.len());
    let mut sums = [0.0f32; MAX_ROWS * MAX_PANELS * MAX_NR];
    let mut j0 = c0;
    while j0 < c1 {
        let p = group.min((c1 - j0).div_ceil(nr));
        let width = (p * nr).min(c1 - j0);
        let mut panel_slices: [&[f32]; MAX_PANELS] = [&[]; MAX_PANELS];
        for (q, slot) in panel_slices.iter_mut().enumerate().take(p) {
            *slot = b.panel_rows(j0 + q * nr, 0, k);
        }
        let panel_slices = &panel_slices[..p];
        let out = &mut sums[..rows.len() * p * nr];
        match isa {
            Isa::Avx512 => avx512::dots(rows, panel_slices, k, out),
            Isa::Avx2Fma => avx2::dots(rows, panel_slices, k, out),
            Isa::Portable => portable::dots(rows, panel_slices, k, out),
        }
        let tile = epi.at(0, j0);
        for (i, row_sums) in out.chunks_exact(p * nr).enumerate() {
            let start = i * ld + j0 - c0;
            let dst_row = dst
                .get_mut(start..start + width)
                .ok_or("gemv: output slice too short")?;
            for (jj, (d, &s)) in dst_row.iter_mut().zip(row_sums).enumerate() {
                *d = tile.apply(i, jj, s);
            }
        }
        j0 += width;
    }
    Ok(())
}

/// Asserts the bounds every `dots` kernel relies on: each row holds `k` values, each panel
/// `k * nr`, `out` one sum per row, panel and lane. A failure is a bug in this file's driver,
/// never caller input, hence a panic.
pub(super) fn assert_dots(a: &[&[f32]], panels: &[&[f32]], k: usize, out: &[f32], nr: usize) {
    assert!(a.iter().all(|r| r.len() >= k), "gemv: row shorter than k");
    assert!(
        panels.iter().all(|p| p.len() >= k * nr),
        "gemv: panel shorter than k * nr"
    );
    assert!(
        out.len() >= a.len() * panels.len() * nr,
        "gemv: sums buffer too short"
    );
}
