//! The blocked GEMM driver: splits C among threads, walks cache blocks, feeds micro-kernels.
//!
//! Loop nest per task (BLIS order, with B already packed): columns in blocks of `NC`, then
//! k-blocks of about `KC` (the partial sum is kept in C between k-blocks; the first starts from
//! zero, the last applies the epilogue), then rows in blocks of `MC` and row tiles of `MR`
//! (one tile's A rows are reused from cache while the tile sweeps the B panels of the column
//! block; one kernel call takes a strip of tiles where their A table has one form). A product
//! of few rows and a large B streams B instead: panels outer, each reused by all the row
//! tiles while the next is prefetched ([`streams`]). Threads take disjoint row bands, several
//! per thread so that one delayed thread (these machines are shared) does not leave the other
//! idle at the end, or disjoint column ranges of every row (written in place through aliased
//! views of C, `out.rs`) when there are too few row tiles.
//! Every output element sees the same k-blocks in the same order whatever the split, so the
//! result does not depend on the thread count.

use super::epilogue::Epilogue;
use super::out::COut;
use super::pack::{PackedB, band_stride, pack_a_band, rows_conflict};
use super::prologue::Prologue;
use super::{Isa, RowSource, Tile, TileA, dense_strip_starts, run_tile};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::ops::Range;

/// Target depth of a k-block. Deep blocks win on the 2-core EPYC (Zen 4): the broadcasts of A
/// stream fine from L2, while every extra k-block costs a round trip of C through the caches.
/// Measured (examples/gemm_speed.rs, one thread, GFLOP/s for matmul 1024^3 / conv W2 / W3):
/// KC=256: 94/97/83, 512: 100/99/89, 1024: 106/102/99, 4096: 107/104/96. Re-measured on Zen 5
/// (full-width FMAs; matmul 1024^3, best of 20, one / two threads, three rounds): KC 1024 with
/// NC 512 8.60-8.62 / 4.50-4.55 ms, KC 512 8.67-8.87 / 4.61-4.67, KC 2048 8.61-8.63 /
/// 4.51-4.56, NC 256 8.68-8.79 / 4.55-4.64, NC 1024 8.45-8.55 / 4.48-4.55: within 2%, kept.
const KC: usize = 1024;
/// Columns per block of a GEMM that streams B (see [`streams`]; the others size theirs to the
/// L2, [`block_cols`]). When every GEMM ran its column blocks outside the row strips, copying
/// a strip's A again for each block, widths from 64 to 1024 measured within noise (KC = 1024,
/// Zen 4), and a block narrowed to half the L2 for few rows 0.82x (ResNet's 3x3 conv on
/// 7x7x512, which now streams).
const NC: usize = 512;
/// Row bands per thread in the row split: each band is a rayon task, so a thread that falls
/// behind (a shared machine) has its last bands taken by the other; more bands than this
/// only add fork/join overhead.
const BANDS_PER_THREAD: usize = 4;
/// Rows per block of a copied A band, and at most per kernel call (a strip of row tiles that
/// shares one A table; a multiple of every MR: 12, 6, 4).
const MC: usize = 144;
/// Rows up to which a GEMM whose B is larger than the L2 streams it (see [`streams`]).
const STREAM_MAX_ROWS: usize = 64;

/// Whether an `m` x `n` x `k` product streams its B: one panel a kernel call, so every row
/// tile reuses the panel while it is in cache, each call prefetching the panel the next call
/// reads (`Tile::next_b`). For few rows and a B larger than the L2, which such products read
/// once, or a few times, from memory: the 7x7 layers of a CNN at batch 1 (49 rows, weights of
/// 1-9 MB, which a whole network's weights push out of the cache before the next run). In
/// the other order the first row tile waited on memory for each block of B while the others
/// ran from cache. Measured on a 2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core (`kiln bench
/// --profile`, 2 threads, each kernel's best of ten alternated runs, ms): ResNet-50's 7x7
/// stage 3.96 -> 3.81 (1x1 convs 0.296-0.302 -> 0.281-0.297, its stride-2 3x3 0.667 ->
/// 0.618), ResNet-18's 2.24 -> 2.15 (3x3 convs 0.625-0.632 -> 0.585-0.592, though its
/// stride-2 one went 0.318 -> 0.349). Winograd's
/// GEMMs, as few rows but a B that every block of tiles reuses from the L2, keep the other
/// order: streamed, ResNet-50's lost 5-10%.
pub(super) fn streams(m: usize, n: usize, k: usize) -> bool {
    m <= STREAM_MAX_ROWS
        && n.saturating_mul(k).saturating_mul(size_of::<f32>()) > super::cache::caches().l2
}

/// Minimum work per parallel task; below it one thread does everything. With the pool's
/// workers spinning through a run (`awake.rs`) a fork costs a microsecond or two, and 1 MFLOP
/// about 4 us on one Zen 5 core: at 2 MFLOP, SqueezeNet's 13x13 48->192 1x1 convs (3.1
/// MFLOP) ran on one thread in 0.016 ms; split, they take 0.011. The grouped conv's row-band
/// split (`conv.rs`) uses the same threshold.
pub(super) const MIN_TASK_FLOPS: f64 = 1.0e6;

/// What a tile call costs besides its k-steps (loading and storing C, the epilogue, the row
/// table), in k-steps: an estimate from the first-layer convs (k = 27), where the kernel's
/// loop took about two thirds of the tile's time.
const TILE_SETUP_STEPS: f64 = 30.0;
/// What the column split adds per tile, in k-steps: every task reads all of A's rows, and
/// the tasks' column ranges meet inside C's rows. Once the cost of a copy out of private
/// buffers (a 12x32 tile is 1.5 KB written and copied on one thread); the tasks now write C in
/// place (`out.rs`), and the term still keeps the choices it made: at 0, more GEMMs took the
/// column split and SqueezeNet ran 3.42-3.53 ms against 3.25-3.32 (`kiln bench`, 2 threads,
/// three alternated rounds, 2-core Xeon, FMA peak 175 GFLOP/s a core).
const COLUMN_SPLIT_STEPS: f64 = 8.0;

/// One k-block: `nseg` consecutive segments of `kseg` values starting at depth `k0`.
#[derive(Clone, Copy, Debug)]
struct KBlock {
    k0: usize,
    nseg: usize,
    kseg: usize,
}

/// Cuts the depth into k-blocks of whole segments (or pieces of one long segment), as equal
/// as possible and at most about `KC` deep; one empty block when `depth == 0`, so the
/// epilogue still runs. (Inline for up to four: a heap allocation per call was 4% of a
/// Winograd convolution's many small GEMMs.)
fn k_blocks(depth: usize, seg: usize) -> SmallVec<[KBlock; 4]> {
    let mut out = SmallVec::new();
    if depth == 0 {
        out.push(KBlock {
            k0: 0,
            nseg: 0,
            kseg: 0,
        });
        return out;
    }
    let total = depth / seg;
    if seg <= KC {
        let blocks = total.div_ceil(KC / seg);
        let per = total.div_ceil(blocks);
        let mut s = 0;
        while s < total {
            let nseg = per.min(total - s);
            out.push(KBlock {
                k0: s * seg,
                nseg,
                kseg: seg,
            });
            s += nseg;
        }
    } else {
        let pieces = seg.div_ceil(KC);
        let piece = seg.div_ceil(pieces);
        for s in 0..total {
            let mut off = 0;
            while off < seg {
                let kseg = piece.min(seg - off);
                out.push(KBlock {
                    k0: s * seg + off,
                    nseg: 1,
                    kseg,
                });
                off += kseg;
            }
        }
    }
    out
}

/// The share of the L2 a column block's B takes where B does not stream (`Job::block_in`):
/// half, the other half for the strip's copied rows of A. W5 (1024^3 + bias + relu, 2
/// threads, `kiln bench`, median of 100, four alternated rounds, 2-core Zen 5 EPYC with a 1
/// MiB L2, FMA peak 286 GFLOP/s a core): B's column blocks of 512 outside the strips
/// 4.50-4.70 ms, of 64 (a quarter of the L2) inside them 4.44-4.59, of 128 (half)
/// 4.41-4.55; ResNet-50's kernels (`--profile`, each kernel's best of four alternated
/// rounds) 16.96 / 16.85 / 16.55 ms.
const B_L2_SHARE: usize = 2;

/// Columns per block of a GEMM that does not stream B: as many whole panels as keep the
/// deepest k-block's B block within [`B_L2_SHARE`] of the L2, at least one panel.
fn block_cols(blocks: &[KBlock], nr: usize) -> usize {
    let deepest = blocks.iter().map(|kb| kb.nseg * kb.kseg).max().unwrap_or(0);
    let bytes = super::cache::caches().l2 / B_L2_SHARE;
    let cols = bytes / (deepest.max(1) * size_of::<f32>());
    (cols / nr).max(1) * nr
}

/// [`block_cols`] for a GEMM `depth` deep in segments of `seg` (for the tests).
#[cfg(test)]
pub(super) fn block_cols_for(depth: usize, seg: usize, nr: usize) -> usize {
    block_cols(&k_blocks(depth, seg), nr)
}

/// The panel (its first column) and k-block a task streaming B (one `nr`-wide panel a call)
/// reads after panel `j0` of k-block `bi` (of `blocks`), in column block `jc ..
/// (jc + NC).min(c1)`: the next panel of the k-block, else the column block's first panel in
/// the next k-block, else the next column block's first; `None` after the last.
fn next_call(
    j0: usize,
    jc: usize,
    c1: usize,
    bi: usize,
    blocks: usize,
    nr: usize,
) -> Option<(usize, usize)> {
    let jc_end = (jc + NC).min(c1);
    if j0 + nr < jc_end {
        Some((j0 + nr, bi))
    } else if bi + 1 < blocks {
        Some((jc, bi + 1))
    } else if jc_end < c1 {
        Some((jc_end, 0))
    } else {
        None
    }
}

/// Computes `c = epilogue(src * b)`; `c` is exactly `(m - 1) * ldc + n` long, inputs validated.
pub(super) fn run<S: RowSource>(
    src: &S,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epi: &Epilogue<'_>,
) -> Result<(), String> {
    let (m, n, k) = (src.rows(), b.n(), src.depth());
    let isa = b.isa();
    let (mr, nr) = (isa.mr(), isa.nr());
    let blocks = k_blocks(k, src.segment_len());
    let job = Job {
        src,
        b,
        epi,
        blocks: &blocks,
        isa,
    };
    let flops = 2.0 * m as f64 * n as f64 * k.max(1) as f64;
    let tasks = rayon::current_num_threads()
        .min((flops / MIN_TASK_FLOPS) as usize)
        .max(1);
    let (m_tiles, n_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    if tasks == 1 || (m_tiles < 2 && n_panels < 2) {
        return job.block(CBlock::whole(m, n, ldc), COut::new(c));
    }
    // Split whichever way costs the busiest task less, counting what the column split adds
    // (COLUMN_SPLIT_STEPS). (Counting tile calls alone sent every conv with two panels and an
    // odd number of row tiles, such as SqueezeNet's 55x55x64 layers, through the column split,
    // then with a copy: 1.2x slower than rows.)
    // A panel of at most half its width costs half (the kernels skip the empty vector): with
    // whole panels counted, SqueezeNet's 384->48 1x1 conv on 13x13 pixels split by columns,
    // one thread taking 32 columns and the other 16 (speedup 1.28 on two threads).
    let half = nr / 2;
    let last = n - (n_panels - 1) * nr;
    let panel_work = (n_panels - 1) as f64 + if last <= half { 0.5 } else { 1.0 };
    // Counted in whole tiles although the bands below are equal to a row: with a thread's
    // fractional share instead, 1x7x7x512 3x3 -> 512 split by rows and ran 1.1x slower.
    let by_rows = m_tiles.div_ceil(tasks) as f64 * panel_work;
    // The first column range is the busiest: all its panels are full.
    let by_cols = (m_tiles * n_panels.div_ceil(tasks)) as f64;
    let step = k as f64 + TILE_SETUP_STEPS;
    let rows_cost = by_rows * step;
    let cols_cost = by_cols * step + (m_tiles * n_panels) as f64 * COLUMN_SPLIT_STEPS;
    if rows_cost <= cols_cost {
        // Row bands of equal rows (to a row), each a disjoint chunk of C; up to
        // BANDS_PER_THREAD per thread while each keeps at least MIN_TASK_FLOPS, and a whole
        // number per thread (three bands on two threads left one thread two thirds of the
        // work: SqueezeNet's 55x55 16->64 1x1 conv ran no faster on two threads than on one).
        // Bands of whole tiles left one thread a band's remainder more than the other: on
        // 1x28x28x128 3x3 -> 128 (66 tiles in 8 bands, 432 rows against 352) 1.1x slower.
        let bands = (tasks * BANDS_PER_THREAD)
            .min((flops / MIN_TASK_FLOPS) as usize)
            .min(m_tiles)
            .max(tasks);
        let bands = bands / tasks * tasks;
        let mut chunks = Vec::with_capacity(bands);
        let mut rest = c;
        for band in 0..bands {
            let (r0, r1) = (band * m / bands, (band + 1) * m / bands);
            let len = if band + 1 == bands {
                rest.len()
            } else {
                (r1 - r0) * ldc
            };
            let (chunk, tail) = rest.split_at_mut(len);
            chunks.push((r0, r1, chunk));
            rest = tail;
        }
        return chunks.into_par_iter().try_for_each(|(r0, r1, chunk)| {
            let rows = CBlock {
                r0,
                r1,
                ..CBlock::whole(m, n, ldc)
            };
            job.block(rows, COut::new(chunk))
        });
    }
    // Few rows, many columns (late CNN layers, matrix-vector-like products): split the panels,
    // each task writing its range of columns of every row in place (see `out.rs`).
    let per = n_panels.div_ceil(tasks) * nr;
    let ranges: Vec<(usize, usize)> = (0..n.div_ceil(per))
        .map(|t| (t * per, ((t + 1) * per).min(n)))
        .collect();
    let c = COut::new(c);
    ranges.par_iter().try_for_each(|&(c0, c1)| {
        let cols = CBlock {
            c0,
            c1,
            ..CBlock::whole(m, n, ldc)
        };
        // SAFETY: the ranges are disjoint, and the task's kernel calls write only its own
        // columns `c0..c1` of each row (`Tile::cols`, `Tile::assert_valid`).
        job.block(cols, unsafe { c.alias() })
    })
}

thread_local! {
    /// Each thread's copied A band (see [`super::scratch`]).
    static BAND: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The rows past a tile and the padding of an edge tile read these.
static ZEROS: [f32; KC] = [0.0; KC];

/// Column panels from which a dense A whose rows collide in L1 is copied first. The copy
/// costs a pass over the band's rows, repaid by every panel that reuses them: on Zen 4 it won
/// 5-10% on the 1024^3 matmul (32 panels); on Zen 5 (examples/gemm_speed.rs, one thread,
/// three alternated rounds, copied vs read in place, ms) it lost on ResNet-50's and
/// SqueezeNet's 1x1 convs, 13x13x512 -> 64 (2 panels) 0.068-0.074 vs 0.054-0.063, 56x56x256
/// -> 64 0.486-0.517 vs 0.429-0.506, 28x28x512 -> 128 0.448-0.470 vs 0.412-0.490 (each upper
/// read-in-place figure from one noisy round), 14x14x1024 -> 256 (8 panels) 0.444-0.449 vs
/// 0.414-0.423, and tied on the 1024^3 matmul.
const COPY_MIN_PANELS: usize = 32;

/// Everything a task needs, shared read-only between tasks.
struct Job<'j, S> {
    src: &'j S,
    b: &'j PackedB,
    epi: &'j Epilogue<'j>,
    blocks: &'j [KBlock],
    isa: Isa,
}

/// A block of C one task computes: rows `r0..r1` x columns `c0..c1`, element `(i, j)` stored
/// at `(i - r0) * ld + j` of the task's destination. `c0` is a multiple of NR.
#[derive(Clone, Copy, Debug)]
struct CBlock {
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
    ld: usize,
}

impl CBlock {
    /// All of an `m` x `n` C stored with leading dimension `ld`.
    fn whole(m: usize, n: usize, ld: usize) -> CBlock {
        CBlock {
            r0: 0,
            r1: m,
            c0: 0,
            c1: n,
            ld,
        }
    }
}

/// Where a block's dense A is copied before the kernels read it, if it is (see
/// COPY_MIN_PANELS): the source and its leading dimension, the copy's row stride, and the map
/// the copy applies.
#[derive(Clone, Copy)]
struct BandCopy<'a> {
    from: Option<(&'a [f32], usize)>,
    stride: usize,
    prologue: Option<Prologue<'a>>,
}

impl<'j, S: RowSource> Job<'j, S> {
    /// Computes block `at` of C into `dst`.
    fn block(&self, at: CBlock, mut dst: COut<'_>) -> Result<(), String> {
        let CBlock { r0, r1, c0, c1, .. } = at;
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        // `k_blocks` keeps every k-block's segments at most KC long.
        let max_kseg = self.blocks.iter().map(|kb| kb.kseg).max().unwrap_or(0);
        let zeros = ZEROS
            .get(..max_kseg)
            .ok_or("sgemm: a k-block segment longer than KC")?;
        // A dense A whose rows would collide in L1 is copied, MC rows at a time, into a band
        // with a padded stride, where enough column panels reuse each copied row (see
        // COPY_MIN_PANELS).
        let band_rows = MC.min(r1 - r0);
        // A prologue is applied in that copy, so a source with one is always copied.
        let prologue = self.src.prologue();
        let panels = (c1 - c0).div_ceil(nr);
        let copy_from = self.src.dense().filter(|&(_, lda)| {
            prologue.is_some()
                || (panels >= COPY_MIN_PANELS && rows_conflict(lda, mr.min(band_rows)))
        });
        if prologue.is_some() && copy_from.is_none() {
            return Err("sgemm: a prologue needs a dense A".into());
        }
        let max_klen = self
            .blocks
            .iter()
            .map(|kb| kb.nseg * kb.kseg)
            .max()
            .unwrap_or(0);
        let stride = band_stride(max_klen);
        let band_len = if copy_from.is_some() {
            band_rows * stride
        } else {
            0
        };
        // `pack_a_band` writes every value the kernels read.
        let copy = BandCopy {
            from: copy_from,
            stride,
            prologue,
        };
        super::scratch::with_aligned_buffer(&BAND, band_len, |band| {
            self.block_in(at, &mut dst, zeros, copy, band)
        })
    }

    /// [`Job::block`] with what it prepared: `zeros` at least as long as every segment, and
    /// the band `copy` writes into `band`.
    fn block_in(
        &self,
        at: CBlock,
        dst: &mut COut<'_>,
        zeros: &[f32],
        copy: BandCopy<'_>,
        band: &mut [f32],
    ) -> Result<(), String> {
        let CBlock { r0, r1, c0, c1, .. } = at;
        let BandCopy {
            from: copy_from,
            stride,
            prologue,
        } = copy;
        let nr = self.isa.nr();
        let mut raw: Vec<Option<&'j [f32]>> = Vec::new();
        let (mut starts, mut offsets) = (Vec::with_capacity(MC), Vec::new());
        let streaming = streams(self.src.rows(), self.b.n(), self.src.depth());
        // Streaming, each column block runs through every k-block before the next (the order
        // `next_call` follows), a panel a call. Otherwise every column block runs inside each
        // strip of rows, so each strip's A (copied once per k-block) meets all of B's columns
        // while it is in cache, the columns in blocks whose B stays in the L2 (see
        // `block_cols`).
        let (outer, inner) = if streaming {
            (NC, usize::MAX)
        } else {
            (usize::MAX, block_cols(self.blocks, nr))
        };
        for jo in (c0..c1).step_by(outer) {
            let jo_end = jo.saturating_add(outer).min(c1);
            for (bi, kb) in self.blocks.iter().enumerate() {
                let klen = kb.nseg * kb.kseg;
                for ic in (r0..r1).step_by(MC) {
                    let ic_end = (ic + MC).min(r1);
                    if let Some((a, lda)) = copy_from {
                        let rows = ic_end - ic;
                        pack_a_band(
                            a, lda, ic, rows, kb.k0, klen, band, stride, prologue, self.isa,
                        );
                    }
                    let band = copy_from.map(|_| Band {
                        data: &*band,
                        stride,
                        first: ic,
                    });
                    // Row slices borrow the band, rewritten for the next block: a table per block
                    // (allocated only for tiles on a padded edge).
                    let mut segs: Vec<&[f32]> = Vec::new();
                    let mut i0 = ic;
                    while i0 < ic_end {
                        let tables = (&mut raw, &mut segs, &mut starts, &mut offsets);
                        let (src, covered) =
                            self.strip_tables(i0, ic_end, kb, band, zeros, tables)?;
                        let a = match src {
                            Some(src) => TileA::Starts {
                                src,
                                starts: &starts,
                                seg_offsets: &offsets,
                            },
                            None => TileA::Slices(&segs),
                        };
                        let strip = Strip {
                            a,
                            i0,
                            rows: covered,
                            bi,
                        };
                        self.strip_calls(strip, jo..jo_end, inner, streaming, &at, dst);
                        i0 += covered;
                    }
                }
            }
        }
        Ok(())
    }

    /// The kernel calls of one strip across columns `cols`, in blocks of `block` columns: a
    /// block's full panels in one call where the kernel takes several (`Tile::panels`), then
    /// the partial one; one panel a call, with tiles of equal height, where B streams (each
    /// call prefetching what the next one reads). `at` and `dst` are the task's block of C.
    fn strip_calls(
        &self,
        strip: Strip<'_, '_>,
        cols: Range<usize>,
        block: usize,
        streaming: bool,
        at: &CBlock,
        dst: &mut COut<'_>,
    ) {
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        let Strip { a, i0, rows, bi } = strip;
        let kb = self.blocks[bi];
        let klen = kb.nseg * kb.kseg;
        let last = self.blocks.len() - 1;
        // Streaming, tiles of equal height (see `Tile::height`).
        let tiles = rows.div_ceil(mr);
        let height = if streaming { rows.div_ceil(tiles) } else { mr };
        for jc in cols.clone().step_by(block) {
            let jc_end = jc.saturating_add(block).min(cols.end);
            let per_call = match self.isa {
                Isa::Avx512 if !streaming => ((jc_end - jc) / nr).max(1),
                _ => 1,
            };
            let mut j0 = jc;
            while j0 < jc_end {
                let panels = if j0 + nr <= jc_end {
                    per_call.min((jc_end - j0) / nr)
                } else {
                    1
                };
                let next_b = match streaming
                    .then(|| next_call(j0, jc, at.c1, bi, self.blocks.len(), nr))
                    .flatten()
                {
                    Some((j, next)) => {
                        let kb = self.blocks[next];
                        self.b.panels_rows(j, 1, kb.k0, kb.nseg * kb.kseg)
                    }
                    None => &[],
                };
                let mut tile = Tile {
                    kseg: kb.kseg,
                    a,
                    b: self.b.panels_rows(j0, panels, kb.k0, klen),
                    b_stride: self.b.panel_stride(),
                    panels,
                    tiles,
                    c: dst.from((i0 - at.r0) * at.ld + j0),
                    ldc: at.ld,
                    height,
                    rows: rows - (tiles - 1) * height,
                    next_b,
                    cols: nr.min(jc_end - j0),
                    accumulate: bi > 0,
                    epilogue: (bi == last).then(|| self.epi.at(i0, j0)),
                };
                run_tile(self.isa, &mut tile);
                j0 += panels * nr;
            }
        }
    }

    /// Fills the A tables for a strip of row tiles from row `i0` up to at most `end` and
    /// returns the slice the row starts index, if any, and the rows covered (at least one).
    /// Where the rows come from the copied `band` or a source with
    /// [`RowSource::strip_starts`], the strip runs to `end` or to the first tile without that
    /// form, `starts` holds one start per row and `offsets` the segments' offsets from it (see
    /// `TileA::Starts`). Otherwise the strip is one tile: `segs` holds its MR row slices of
    /// every segment (segment-major; rows past the tile's and padding read `zeros`) from
    /// [`RowSource::tile_rows`], or from [`RowSource::segments`] via `raw`.
    fn strip_tables<'b>(
        &self,
        i0: usize,
        end: usize,
        kb: &KBlock,
        band: Option<Band<'b>>,
        zeros: &'b [f32],
        (raw, segs, starts, offsets): TileTables<'_, 'j, 'b>,
    ) -> Result<(Option<&'b [f32]>, usize), String>
    where
        'j: 'b,
    {
        let (mr, kseg) = (self.isa.mr(), kb.kseg);
        segs.clear();
        starts.clear();
        offsets.clear();
        if let Some(band) = band {
            // A dense A of its own: row `first` at 0, the k-block from column 0.
            let rows = i0 - band.first..end - band.first;
            dense_strip_starts(rows, band.stride, 0, mr, kseg, kb.nseg, starts, offsets);
            return Ok((Some(band.data), end - i0));
        }
        if let Some((src, covered)) =
            self.src
                .strip_starts(i0, end - i0, mr, kb.k0, kseg, kb.nseg, starts, offsets)
        {
            // The starts' reach is checked by the kernel's `assert_valid`.
            if covered == 0
                || covered > end - i0
                || starts.len() != covered.next_multiple_of(mr)
                || offsets.len() != kb.nseg
            {
                return Err(format!(
                    "sgemm: row source covered {covered} of {} rows with {} row starts and {} \
                     offsets, expected {} and {}",
                    end - i0,
                    starts.len(),
                    offsets.len(),
                    covered.next_multiple_of(mr),
                    kb.nseg
                ));
            }
            return Ok((Some(src), covered));
        }
        let rows = mr.min(end - i0);
        let zero = &zeros[..kseg];
        if self
            .src
            .tile_rows(i0, rows, mr, kb.k0, kseg, kb.nseg, zero, segs)
        {
            // The slices' lengths are checked by the kernel's `assert_valid`.
            if segs.len() != kb.nseg * mr {
                return Err(format!(
                    "sgemm: row source gave {} tile rows, expected {}",
                    segs.len(),
                    kb.nseg * mr
                ));
            }
            return Ok((None, rows));
        }
        raw.clear();
        self.src.segments(i0, rows, kb.k0, kseg, kb.nseg, raw);
        if raw.len() != kb.nseg * rows {
            return Err(format!(
                "sgemm: row source gave {} segments, expected {}",
                raw.len(),
                kb.nseg * rows
            ));
        }
        for s in 0..kb.nseg {
            for r in 0..mr {
                let seg = if r < rows { raw[s * rows + r] } else { None };
                let seg = seg.unwrap_or(&zeros[..kseg]);
                if seg.len() < kseg {
                    return Err(format!(
                        "sgemm: row source gave a segment of {} values, expected {kseg}",
                        seg.len()
                    ));
                }
                segs.push(seg);
            }
        }
        Ok((None, rows))
    }
}

/// The buffers a strip's A tables are built in, reused from strip to strip: the generic
/// segment table, the kernel's row slices, the row starts, and the segments' offsets.
type TileTables<'t, 'j, 'b> = (
    &'t mut Vec<Option<&'j [f32]>>,
    &'t mut Vec<&'b [f32]>,
    &'t mut Vec<usize>,
    &'t mut Vec<usize>,
);

/// One strip of row tiles for one k-block: its A tables, its first row, its rows and the
/// k-block's index.
#[derive(Clone, Copy)]
struct Strip<'t, 'a> {
    a: TileA<'t, 'a>,
    i0: usize,
    rows: usize,
    bi: usize,
}

/// Rows of A copied at a padded stride; row `i` of A starts at `data[(i - first) * stride]`
/// (with column 0 at the current k-block's start).
#[derive(Clone, Copy)]
struct Band<'b> {
    data: &'b [f32],
    stride: usize,
    first: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_next_call_names_the_call_that_follows() {
        // The calls of a streaming task, in the order `block_in` makes them, for column
        // ranges starting at 0 and past a first block, with one and three k-blocks.
        for (c0, c1, blocks) in [(0, 1100, 3), (64, 600, 1), (0, 20, 2), (32, 64, 1)] {
            let nr = 32;
            let mut calls = Vec::new();
            for jc in (c0..c1).step_by(NC) {
                for bi in 0..blocks {
                    for j0 in (jc..(jc + NC).min(c1)).step_by(nr) {
                        calls.push((j0, jc, bi));
                    }
                }
            }
            for (i, &(j0, jc, bi)) in calls.iter().enumerate() {
                let next = calls.get(i + 1).map(|&(j, _, b)| (j, b));
                assert_eq!(
                    next_call(j0, jc, c1, bi, blocks, nr),
                    next,
                    "{calls:?} at {i}"
                );
            }
        }
    }

    #[test]
    fn gemm_k_blocks_cover_depth_in_order() {
        let empty = k_blocks(0, 1);
        assert_eq!((empty.len(), empty[0].nseg, empty[0].k0), (1, 0, 0));
        for (depth, seg) in [
            (1, 1),
            (576, 64),
            (1024, 1024),
            (27, 3),
            (2100, 2100),
            (9, 1),
            (9 * 300, 300),
        ] {
            let blocks = k_blocks(depth, seg);
            let mut next = 0;
            for kb in &blocks {
                assert_eq!(kb.k0, next, "depth {depth} seg {seg}: {blocks:?}");
                assert!(kb.nseg * kb.kseg <= KC.max(seg.min(KC)), "{blocks:?}");
                assert!(kb.nseg == 1 || kb.kseg == seg, "{blocks:?}");
                next += kb.nseg * kb.kseg;
            }
            assert_eq!(next, depth, "{blocks:?}");
        }
        // 9 taps of 256 channels: three equal blocks of three taps, not 4 + 4 + 1.
        let b = k_blocks(9 * 256, 256);
        assert_eq!(
            b.iter().map(|kb| kb.nseg).collect::<Vec<_>>(),
            vec![3, 3, 3]
        );
    }
}
