//! Dense contractions on precompiled SIMD micro-kernels: SGEMM with pre-packed B and a fused
//! epilogue, and NHWC convolution as implicit (indirect) GEMM.
//!
//! `C[m, n] = epilogue(A[m, k] * B[k, n])`, all row-major f32. B (the weights) is packed once,
//! at compile time, into panels for one ISA ([`pack_b`]); A is read in place, either as a dense
//! matrix with a leading dimension or through a [`RowSource`] that hands out slices of its rows
//! (a convolution's rows are pixels, its segments are filter taps: no im2col copy). The driver
//! (`driver.rs`) blocks over n, k and m for the caches and splits independent output tiles
//! across rayon's threads; the reduction over k is never split, so results are bitwise
//! identical for any thread count. Products of one to three rows (batch-1 dense layers) take
//! a matrix-vector path instead (`gemv.rs`) that streams B once, split across threads along n,
//! with the same bits as the driver. A 3x3 stride-1 convolution can also run as Winograd
//! F(2x2, 3x3) or F(4x4, 3x3) (`winograd.rs`: 16 or 36 GEMMs on transformed tiles), which the
//! plan picks where it was measured to win (enough channels; F(4x4) where its tiles fit the
//! image) and `KILN_WINOGRAD` overrides. Kernels per ISA live in `avx512.rs`, `avx2.rs`,
//! `portable.rs`; `unsafe` exists only inside the intrinsic kernels, behind
//! `Tile::assert_valid` (the matrix-vector ones behind `gemv::assert_dots`), and in the
//! Winograd transforms' AVX-512 code (`winograd/avx512.rs`), behind its asserted extents.

mod avx2;
mod avx512;
mod cache;
mod conv;
mod driver;
mod epilogue;
mod gemv;
mod isa;
mod out;
mod pack;
mod portable;
mod prologue;
pub(crate) mod scratch;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_conv;
#[cfg(test)]
mod tests_winograd;
mod winograd;

pub(crate) use cache::caches;
pub use cache::{batch_fits_cache, images_apart};
pub use conv::{
    ConvGeometry, conv2d_nchw_input_strided, conv2d_nhwc, conv2d_nhwc_grouped,
    conv2d_nhwc_grouped_strided, nchw_input_supported, pack_conv_groups,
};
pub use epilogue::{Activation, Epilogue, Residual};
pub use isa::{Isa, choose, detect};
pub use pack::{PackedB, pack_b, pack_b_for};
pub use prologue::Prologue;
pub use winograd::{
    WinogradFilter, WinogradVariant, conv2d_winograd, conv2d_winograd_strided, pack_winograd,
    winograd_applies, winograd_choice,
};

use epilogue::TileEpilogue;
use out::COut;

/// Expands `$body` once per listed literal, bound to `$r`: a loop the compiler cannot decline
/// to unroll (the micro-kernels need every accumulator index to be a constant).
macro_rules! unrolled {
    ($r:ident in [$($i:literal),*] $body:block) => {
        $( { let $r: usize = $i; $body } )*
    };
}
pub(crate) use unrolled;

/// The k-loop of an `$mr`-row micro-kernel over one panel: `$step!(rows, p)` for each of the
/// `$kseg` steps of every segment of tile `$t` (`rows` the segment's row pointers), the first
/// segment's first steps each also prefetching one line of `Tile::next_b`. Those steps run in
/// a loop of their own: a test in every k-step made ResNet-50's other GEMMs 2.5% slower
/// (2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core).
macro_rules! k_loop {
    ($t:expr, $mr:expr, $kseg:expr, $step:ident) => {{
        let next = $t.next_b.as_ptr();
        for s in 0..$t.segments::<$mr>() {
            let rows: [*const f32; $mr] = $t.segment_rows::<$mr>(s);
            let ahead = if s == 0 {
                ($t.next_b.len() / $crate::gemm::LINE).min($kseg)
            } else {
                0
            };
            for p in 0..ahead {
                $crate::gemm::prefetch_l2(next.wrapping_add(p * $crate::gemm::LINE));
                $step!(rows, p);
            }
            for p in ahead..$kseg {
                $step!(rows, p);
            }
        }
    }};
}
pub(crate) use k_loop;

/// A left operand read through slices of its rows instead of as one dense matrix.
///
/// The reduction dimension is cut into segments of `segment_len()` values; within one row a
/// segment is contiguous in memory, different segments need not be (for a convolution a
/// segment is one filter tap: `cin` channels of one input pixel).
pub trait RowSource: Sync {
    /// Number of rows (m).
    fn rows(&self) -> usize;
    /// Length of the reduction (k); a multiple of `segment_len()`.
    fn depth(&self) -> usize;
    /// Length of one segment; at least 1 when `depth() > 0`.
    fn segment_len(&self) -> usize;
    /// For each segment `s` in `0..nseg` (outer) and row `i` in `i0..i0 + rows` (inner),
    /// pushes the slice starting at `A[i, k0 + s * len]` (at least `len` values), or `None`
    /// where those values are all zero (padding). `[k0 + s * len, k0 + (s + 1) * len)` never
    /// crosses a segment boundary; `i0 + rows <= self.rows()`.
    fn segments<'s>(
        &'s self,
        i0: usize,
        rows: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        out: &mut Vec<Option<&'s [f32]>>,
    );
    /// Pushes one row tile's slices straight in the kernel's layout: for each segment `s` in
    /// `0..nseg` (outer), `mr` slices (inner), row `i0 + r`'s slice at `A[i0 + r, k0 + s * len]`
    /// for `r < rows`, else `zeros` (`len` values), `zeros` also standing for padding. Returns
    /// false, pushing nothing, when the source has no such path (the driver then goes through
    /// [`RowSource::segments`]); a source that has one skips the `Option` table and its second
    /// pass, which cost as much as the kernel on short segments.
    #[allow(clippy::too_many_arguments)] // a tile's coordinates, the zero row and the table
    fn tile_rows<'s>(
        &'s self,
        _i0: usize,
        _rows: usize,
        _mr: usize,
        _k0: usize,
        _len: usize,
        _nseg: usize,
        _zeros: &'s [f32],
        _out: &mut Vec<&'s [f32]>,
    ) -> bool {
        false
    }

    /// For a strip of row tiles from row `i0` (`mr` rows a tile, at most `rows` rows in all)
    /// whose segments all lie at the same offsets from one start per row, in one slice:
    /// pushes each row's start (an index into that slice) for every row of the tiles it
    /// covers (0 for the last tile's rows past the strip, up to a whole tile) into `starts`,
    /// each segment's offset from a start into `offsets`, and returns the slice and the rows
    /// covered, a multiple of `mr` or all `rows`; `None`, pushing nothing, when the first tile
    /// has no such form. One table of indices and one kernel call for a strip: built and
    /// checked as a slice per row, tile by tile, they took a third of a first-layer conv's time
    /// (k = 27).
    #[allow(clippy::too_many_arguments)] // a strip's coordinates and the two tables
    fn strip_starts(
        &self,
        _i0: usize,
        _rows: usize,
        _mr: usize,
        _k0: usize,
        _len: usize,
        _nseg: usize,
        _starts: &mut Vec<usize>,
        _offsets: &mut Vec<usize>,
    ) -> Option<(&[f32], usize)> {
        None
    }

    /// The dense matrix and its leading dimension, when A is one (lets the driver copy rows
    /// whose stride would thrash the L1 cache).
    fn dense(&self) -> Option<(&[f32], usize)> {
        None
    }

    /// The map the driver applies to A as it copies it ([`Prologue`]); a source with one
    /// must be [`RowSource::dense`], and its rows are read only through that copy.
    fn prologue(&self) -> Option<Prologue<'_>> {
        None
    }
}

/// A dense row-major A with a leading dimension.
struct DenseA<'a> {
    a: &'a [f32],
    lda: usize,
    m: usize,
    k: usize,
    /// Applied to A as the driver copies it, if any.
    prologue: Option<Prologue<'a>>,
}

impl RowSource for DenseA<'_> {
    fn rows(&self) -> usize {
        self.m
    }
    fn depth(&self) -> usize {
        self.k
    }
    fn segment_len(&self) -> usize {
        self.k.max(1)
    }
    fn segments<'s>(
        &'s self,
        i0: usize,
        rows: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        out: &mut Vec<Option<&'s [f32]>>,
    ) {
        for s in 0..nseg {
            for i in i0..i0 + rows {
                let start = i * self.lda + k0 + s * len;
                out.push(Some(&self.a[start..start + len]));
            }
        }
    }
    fn strip_starts(
        &self,
        i0: usize,
        rows: usize,
        mr: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        starts: &mut Vec<usize>,
        offsets: &mut Vec<usize>,
    ) -> Option<(&[f32], usize)> {
        dense_strip_starts(i0..i0 + rows, self.lda, k0, mr, len, nseg, starts, offsets);
        Some((self.a, rows))
    }

    fn dense(&self) -> Option<(&[f32], usize)> {
        Some((self.a, self.lda))
    }

    fn prologue(&self) -> Option<Prologue<'_>> {
        self.prologue
    }
}

/// [`RowSource::strip_starts`] for rows `rows` of a dense row-major A with leading dimension
/// `lda`, the k-block starting at column `k0`: every row is one contiguous run of the
/// k-block's `nseg` segments of `len` values.
#[allow(clippy::too_many_arguments)] // the strip's rows and layout, and the two tables
pub(crate) fn dense_strip_starts(
    rows: std::ops::Range<usize>,
    lda: usize,
    k0: usize,
    mr: usize,
    len: usize,
    nseg: usize,
    starts: &mut Vec<usize>,
    offsets: &mut Vec<usize>,
) {
    let n = rows.len();
    starts.extend(rows.map(|i| i * lda + k0));
    starts.resize(starts.len() + n.next_multiple_of(mr) - n, 0);
    offsets.extend((0..nseg).map(|s| s * len));
}

/// `C = epilogue(A * B)` for row-major `A[m, k]` (leading dimension `lda`) and
/// `C[m, n]` (leading dimension `ldc`), on the kernels `b` was packed for.
#[allow(clippy::too_many_arguments)] // the BLAS shape: sizes, operands, leading dimensions
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let a = MatrixA {
        a,
        lda,
        prologue: None,
    };
    sgemm_prologue(m, n, k, a, b, c, ldc, epilogue)
}

/// A row-major left operand with its leading dimension and the map applied to it on the way
/// into the kernels, if any.
#[derive(Clone, Copy)]
pub struct MatrixA<'a> {
    /// The values: row `i` starts at `a[i * lda]`.
    pub a: &'a [f32],
    /// Leading dimension.
    pub lda: usize,
    /// Applied to every value before it is multiplied.
    pub prologue: Option<Prologue<'a>>,
}

/// [`sgemm`] with `C = epilogue(prologue(A) * B)`: A's columns mapped as [`Prologue`] says,
/// with the same bits as mapping A first.
#[allow(clippy::too_many_arguments)] // the BLAS shape: sizes, operands, leading dimension
pub fn sgemm_prologue(
    m: usize,
    n: usize,
    k: usize,
    a: MatrixA<'_>,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let MatrixA { a, lda, prologue } = a;
    if let Some(p) = &prologue {
        p.validate(k)?;
    }
    if b.k() != k || b.n() != n {
        return Err(format!(
            "sgemm: B was packed as [{}, {}], expected [k={k}, n={n}]",
            b.k(),
            b.n()
        ));
    }
    if m > 0 && k > 0 {
        if lda < k {
            return Err(format!("sgemm: lda {lda} is smaller than k = {k}"));
        }
        let need = extent(m, lda, k).ok_or("sgemm: A's extent overflows usize")?;
        if a.len() < need {
            return Err(format!(
                "sgemm: A has {} values, expected at least {need} for [{m}, {k}] with lda {lda}",
                a.len()
            ));
        }
    }
    let src = DenseA {
        a,
        lda,
        m,
        k,
        prologue,
    };
    sgemm_rows(&src, b, c, ldc, epilogue)
}

/// `C = epilogue(A * B)` where A is read through a [`RowSource`]; `C` is `[src.rows(), b.n()]`
/// with leading dimension `ldc`.
pub fn sgemm_rows<S: RowSource>(
    src: &S,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let (m, n, k) = (src.rows(), b.n(), src.depth());
    if b.k() != k {
        return Err(format!(
            "sgemm: B was packed with k = {}, A has depth {k}",
            b.k()
        ));
    }
    if k > 0 && (src.segment_len() == 0 || !k.is_multiple_of(src.segment_len())) {
        return Err(format!(
            "sgemm: A's depth {k} is not a multiple of its segment length {}",
            src.segment_len()
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if ldc < n {
        return Err(format!("sgemm: ldc {ldc} is smaller than n = {n}"));
    }
    let need = extent(m, ldc, n).ok_or("sgemm: C's extent overflows usize")?;
    if c.len() < need {
        return Err(format!(
            "sgemm: C has {} values, expected at least {need} for [{m}, {n}] with ldc {ldc}",
            c.len()
        ));
    }
    epilogue.validate("sgemm", m, n)?;
    if !b.isa().is_supported() {
        return Err(format!(
            "sgemm: B is packed for {}, unsupported here",
            b.isa().name()
        ));
    }
    if let Some((a, lda)) = src.dense()
        && m <= gemv::MAX_ROWS
        && k > 0
        && src.prologue().is_none()
    {
        return gemv::run(m, a, lda, b, &mut c[..need], ldc, epilogue);
    }
    driver::run(src, b, &mut c[..need], ldc, epilogue)
}

/// Values spanned by `rows` rows of `cols` values at stride `ld`: `(rows - 1) * ld + cols`
/// (`rows >= 1`), or `None` on overflow.
pub(crate) fn extent(rows: usize, ld: usize, cols: usize) -> Option<usize> {
    (rows - 1).checked_mul(ld)?.checked_add(cols)
}

/// One call of a micro-kernel: a strip of `tiles` row tiles of `height` rows (the last with
/// `rows`) by `panels` column panels of C, one k-block deep.
pub(crate) struct Tile<'t, 'a> {
    /// Values per segment.
    pub kseg: usize,
    /// The strip's rows of A for this k-block.
    pub a: TileA<'t, 'a>,
    /// The B panels' rows for this k-block: `nseg * kseg * NR` values per panel, the panels
    /// `b_stride` apart.
    pub b: &'t [f32],
    /// Values from one B panel to the next (unused with one panel).
    pub b_stride: usize,
    /// NR-wide column panels computed in this call, `>= 1`: all but the last are full, the
    /// last has `cols` valid columns. Several panels share one call's setup, which costs as
    /// much as the products on thin layers (k = 16: MobileNet's 1x1 expansions); only the
    /// AVX-512 kernel takes more than one.
    pub panels: usize,
    /// Row tiles, `>= 1`: tile `q` is rows `q * height ..` of C (and of the residual) and the
    /// `q`-th table of `a`. One call per strip builds the tables and checks the bounds once
    /// (see [`RowSource::strip_starts`]).
    pub tiles: usize,
    /// C from the strip's corner on.
    pub c: COut<'t>,
    /// Leading dimension of C.
    pub ldc: usize,
    /// Rows of every row tile but the last, `1..=MR`. A strip that streams B (one panel a
    /// call, `driver::streams`) spreads its rows evenly, 49 rows as 10 + 10 + 10 + 10 + 9
    /// rather than 4 x 12 + 1: there the tiles run back to back on one panel, and a one-row
    /// tile, two FMA chains waiting on their latency, took as long as eight rows. ResNet-50's
    /// 7x7 stage 3.54 -> 3.13 ms, ResNet-18's 2.10 -> 1.94 (`kiln bench --profile`, 2 threads
    /// on a 2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core, each kernel's best of ten
    /// alternated runs). The other order keeps MR: its
    /// 25-row bands as 9 + 8 + 8 ran ResNet-50's 14x14 1x1 convs 3-7% slower than 12 + 12 + 1.
    pub height: usize,
    /// Valid rows of the last row tile, `1..=height`.
    pub rows: usize,
    /// B values the next call reads, prefetched into L2 during this one, one 64-byte line
    /// a k-step from the start (each row tile of the strip takes its share); empty for none.
    /// See `driver::streams`.
    pub next_b: &'t [f32],
    /// Valid columns, `1..=NR`.
    pub cols: usize,
    /// Whether C already holds the partial sum of earlier k-blocks (else start from zero).
    pub accumulate: bool,
    /// Applied before the store on the last k-block.
    pub epilogue: Option<TileEpilogue<'t>>,
}

/// A strip's rows of A for one k-block: one table per row tile, back to back.
#[derive(Clone, Copy)]
pub(crate) enum TileA<'t, 'a> {
    /// `nseg * MR` row slices a tile, segment-major, each holding at least `kseg` values
    /// (padding, and rows past the last tile's `rows`, read a slice of zeros).
    Slices(&'t [&'a [f32]]),
    /// One row start per row (tile `q`'s from `q * height`), MR a tile counted for the
    /// table's length (those past the strip's rows are never read), indices into `src`:
    /// segment `s` of row `r` is `src[starts[r] + seg_offsets[s]..][..kseg]`. A dense A, or a
    /// convolution whose taps all lie inside its input, needs no slice per row and tap.
    Starts {
        src: &'a [f32],
        starts: &'t [usize],
        seg_offsets: &'t [usize],
    },
}

/// The largest of `starts` (0 for none), with AVX-512's 64-bit maxima where the CPU has
/// them: the baseline x86-64 target has no 64-bit compare, and the emulation took 6-7% of a
/// 3-channel first layer's samples in [`Tile::assert_valid`].
fn max_start(starts: &[usize]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, the function's only requirement.
        return unsafe { max_start_avx512(starts) };
    }
    starts.iter().fold(0, |m, &s| m.max(s))
}

/// [`max_start`] compiled for AVX-512 (the fold vectorises to `vpmaxuq`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn max_start_avx512(starts: &[usize]) -> usize {
    starts.iter().fold(0, |m, &s| m.max(s))
}

impl<'a> Tile<'_, 'a> {
    /// Asserts every bound the kernels rely on. A failure is a bug in the driver, not bad
    /// caller input (the public functions validate that first), hence a panic.
    pub(crate) fn assert_valid(&self, mr: usize, nr: usize) {
        assert!(self.tiles >= 1, "tile: no row tiles");
        // Rows of C the call writes, and how many of the row slices (tile-major) are read.
        let m = (self.tiles - 1) * self.height + self.rows;
        let nseg = match self.a {
            TileA::Slices(a) => {
                assert!(
                    a.len().is_multiple_of(mr * self.tiles),
                    "tile: {} row slices for {} tiles of MR = {mr}",
                    a.len(),
                    self.tiles
                );
                assert!(
                    a.iter().all(|s| s.len() >= self.kseg),
                    "tile: row slice shorter than kseg"
                );
                a.len() / (mr * self.tiles)
            }
            TileA::Starts {
                src,
                starts,
                seg_offsets,
            } => {
                assert_eq!(
                    starts.len(),
                    mr * self.tiles,
                    "tile: {} row starts for {} tiles of MR = {mr}",
                    starts.len(),
                    self.tiles
                );
                let reach = seg_offsets.iter().max().map_or(0, |&o| o + self.kseg);
                let last = max_start(&starts[..m]);
                assert!(
                    last.checked_add(reach).is_some_and(|end| end <= src.len()),
                    "tile: a row's last segment ends past A"
                );
                seg_offsets.len()
            }
        };
        assert!(
            self.panels == 1 || (self.panels > 1 && self.cols == nr),
            "tile: {} panels, the last with {} columns",
            self.panels,
            self.cols
        );
        // Columns of C the call writes: full panels, then `cols` of the last.
        let width = (self.panels - 1) * nr + self.cols;
        let b_panel = nseg * self.kseg * nr;
        assert!(
            self.panels == 1 || self.b_stride >= b_panel,
            "tile: B panels overlap"
        );
        assert!(
            self.b.len() >= (self.panels - 1) * self.b_stride + b_panel,
            "tile: B panel too short"
        );
        assert!(
            (1..=mr).contains(&self.height)
                && (1..=self.height).contains(&self.rows)
                && (1..=nr).contains(&self.cols),
            "tile: bad size"
        );
        assert!(
            self.ldc >= width && self.c.len() >= (m - 1) * self.ldc + width,
            "tile: C too short"
        );
        assert!(
            self.epilogue.is_none_or(|e| e.covers(m, width)),
            "tile: epilogue slices too short"
        );
    }

    /// Row tile `q` of the strip as a call of its own (`tiles == 1`), for kernels of `M` rows;
    /// within the bounds [`Tile::assert_valid`] checked for the strip.
    #[inline(always)]
    pub(crate) fn row_tile<const M: usize>(&mut self, q: usize) -> Tile<'_, 'a> {
        let a = match self.a {
            TileA::Slices(a) => {
                let per = a.len() / self.tiles;
                TileA::Slices(&a[q * per..(q + 1) * per])
            }
            TileA::Starts {
                src,
                starts,
                seg_offsets,
            } => TileA::Starts {
                src,
                starts: &starts[q * self.height..][..M],
                seg_offsets,
            },
        };
        Tile {
            kseg: self.kseg,
            a,
            b: self.b,
            b_stride: self.b_stride,
            panels: self.panels,
            tiles: 1,
            c: self.c.from(q * self.height * self.ldc),
            ldc: self.ldc,
            height: self.height,
            rows: if q + 1 == self.tiles {
                self.rows
            } else {
                self.height
            },
            next_b: {
                let share = (self.next_b.len() / self.tiles).next_multiple_of(LINE);
                let from = (q * share).min(self.next_b.len());
                &self.next_b[from..(from + share).min(self.next_b.len())]
            },
            cols: self.cols,
            accumulate: self.accumulate,
            epilogue: self.epilogue.map(|e| e.down(q * self.height)),
        }
    }

    /// Segments in this k-block, for kernels of `M` rows.
    #[inline(always)]
    pub(crate) fn segments<const M: usize>(&self) -> usize {
        match self.a {
            TileA::Slices(a) => a.len() / (M * self.tiles),
            TileA::Starts { seg_offsets, .. } => seg_offsets.len(),
        }
    }

    /// The first value of segment `s` in each of the `M` rows of a one-tile call. Rows past
    /// `rows` may point anywhere (computed with wrapping arithmetic): the kernels never read
    /// them.
    #[inline(always)]
    pub(crate) fn segment_rows<const M: usize>(&self, s: usize) -> [*const f32; M] {
        match self.a {
            TileA::Slices(a) => std::array::from_fn(|r| a[s * M + r].as_ptr()),
            TileA::Starts {
                src,
                starts,
                seg_offsets,
            } => {
                let (base, off, starts) = (src.as_ptr(), seg_offsets[s], &starts[..M]);
                std::array::from_fn(|r| base.wrapping_add(starts[r] + off))
            }
        }
    }
}

/// f32 values in a 64-byte cache line.
pub(crate) const LINE: usize = 16;

/// Hints that the cache line holding `p` be brought into L2: a prefetch never faults, so `p`
/// may point anywhere.
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Runs one tile on the kernels of `isa`.
fn run_tile(isa: Isa, t: &mut Tile<'_, '_>) {
    match isa {
        Isa::Avx512 => avx512::run(t),
        Isa::Avx2Fma => avx2::run(t),
        Isa::Portable => portable::run(t),
    }
}
