//! Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3, stride-1, dilation-1 NHWC convolutions.
//!
//! Each `m x m` block of output pixels (a tile, `m` = 2 or 4) is computed from the
//! `(m + 2) x (m + 2)` input patch under it: `Y = A^T [ (G g G^T) .* (B^T d B) ] A` per
//! input/output channel pair, summed over input channels. The element-wise product summed over
//! channels is `(m + 2)^2` independent GEMMs `V_e[tiles, cin] x U_e[cin, cout]` (`e` one of the
//! transformed positions), which run on the SGEMM micro-kernels with `U_e` transformed and
//! packed once, at compile time. F(2x2): 16 multiplies per 4 outputs instead of 36, 2.25x
//! fewer FLOPs than the direct convolution, at the price of two cheap linear transforms per
//! tile and a little rounding (the transforms add and subtract up to 4 values; `G` has only
//! 0.5 and 1, so the filter transform is nearly exact). F(4x4) (`f4.rs`): 36 multiplies per 16
//! outputs, 4x fewer, with fewer transformed values per output too, at the price of
//! transforms with constants up to 8 (more rounding, still far inside the test tolerance; see
//! `tests_winograd.rs`).
//!
//! Tiles are processed in blocks sized so that a block's transformed inputs and products stay
//! in L2; blocks are whole rows of tiles of one image, so each block owns a contiguous band of
//! the output and blocks run in parallel. Padding (any of SAME, VALID, explicit) is the zero
//! patch values outside the image; the output rows and columns a partial tile would spill
//! past the edge are dropped.

use super::cache::caches;
use super::conv::ConvGeometry;
use super::epilogue::Epilogue;
use super::pack::PackedB;
use super::scratch::with_buffer;
use super::{Isa, LINE, sgemm};
use rayon::prelude::*;
use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
mod avx512;
mod f4;

/// A Winograd algorithm `F(m x m, 3x3)`: `m x m` outputs from an `(m + 2) x (m + 2)` patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradVariant {
    /// F(2x2, 3x3): 16 transformed positions per 4 outputs.
    F2,
    /// F(4x4, 3x3): 36 transformed positions per 16 outputs.
    F4,
}

impl WinogradVariant {
    /// Output pixels per tile side.
    pub fn tile(self) -> usize {
        match self {
            Self::F2 => 2,
            Self::F4 => 4,
        }
    }

    /// Input pixels per patch side.
    fn side(self) -> usize {
        self.tile() + 2
    }

    /// Transformed positions per tile: one GEMM each.
    fn positions(self) -> usize {
        self.side() * self.side()
    }
}

/// Values from one position's `[tiles, c]` matrix to the next in `V` (`c = cin`) and `M`
/// (`c = cout`): `tiles * c` rounded up to an odd number of cache lines. A transform reads or
/// writes all positions of a tile at once; `tiles * c` apart, a multiple of 4 KB for W4's
/// 32->32 layer (128 tiles), F(2x2)'s 16 streams fell in one L1 set and its transforms took
/// longer than its GEMMs. An odd number of lines apart, they fall in different sets. (A
/// tile's positions side by side instead, one GEMM row per tile, made the GEMMs' A rows
/// scattered: 1x56x56x64 1.3x slower on Zen 5, 2-core EPYC, FMA peak 284 GFLOP/s a core.)
fn position_stride(tiles: usize, c: usize) -> usize {
    let lines = (tiles * c).div_ceil(LINE);
    (lines | 1) * LINE
}

/// Channels a transform handles at once below AVX-512 (fixed-size arrays the compiler
/// vectorises); 16 under AVX-512.
const LANES: usize = 8;

/// A 3x3 filter transformed and packed for [`conv2d_winograd`]: one packed `[cin, cout]` B per
/// position `e` of the variant's transformed patch.
#[derive(Clone, Debug)]
pub struct WinogradFilter {
    cin: usize,
    cout: usize,
    variant: WinogradVariant,
    packed: Vec<PackedB>,
}

impl WinogradFilter {
    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
    }

    /// The algorithm it was transformed for.
    pub fn variant(&self) -> WinogradVariant {
        self.variant
    }
}

/// Whether a convolution can run as Winograd (either variant): a 3x3 filter at stride 1 and
/// dilation 1 (any padding).
pub fn winograd_applies(g: &ConvGeometry) -> bool {
    [
        g.kh,
        g.kw,
        g.stride_h,
        g.stride_w,
        g.dilation_h,
        g.dilation_w,
    ] == [3, 3, 1, 1, 1, 1]
}

/// Channels below which the implicit GEMM keeps a 3x3 convolution: thin GEMMs waste most of
/// a micro-kernel tile, and the transforms' cost grows relative to the multiplies saved.
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Which Winograd algorithm, if any, the plan runs a convolution of a `batch`-image input with
/// `cin` input and `cout` output channels as. `KILN_WINOGRAD` (read once per process) decides
/// when set: `0` never; `1` whenever it applies and both channel counts reach
/// `WINOGRAD_MIN_CHANNELS`, in the default variant (`default_variant`); `2` or `4` the same in
/// F(2x2, 3x3) or F(4x4, 3x3). Unset, the plan takes it where it was measured to win: the
/// channel counts' harmonic mean at least `auto_min_channels` for the detected kernels and at
/// least `AUTO_MIN_TILES` tiles, in the default variant.
pub fn winograd_choice(
    g: &ConvGeometry,
    batch: usize,
    cin: usize,
    cout: usize,
) -> Option<WinogradVariant> {
    /// `KILN_WINOGRAD`: `Some((always, forced variant))`, or `None` for the default rule.
    type Setting = Option<(bool, Option<WinogradVariant>)>;
    static SETTING: std::sync::OnceLock<Setting> = std::sync::OnceLock::new();
    let setting = *SETTING.get_or_init(|| match std::env::var("KILN_WINOGRAD").as_deref() {
        Ok("1") => Some((true, None)),
        Ok("2") => Some((true, Some(WinogradVariant::F2))),
        Ok("4") => Some((true, Some(WinogradVariant::F4))),
        Ok("0") => Some((false, None)),
        _ => None,
    });
    if !winograd_applies(g) {
        return None;
    }
    match setting {
        Some((true, forced)) => (cin.min(cout) >= WINOGRAD_MIN_CHANNELS)
            .then(|| forced.unwrap_or_else(|| default_variant(g))),
        Some((false, _)) => None,
        None => auto_choice(g, batch, cin, cout, super::detect()),
    }
}

/// The variant a convolution takes when it takes Winograd: F(4x4, 3x3) where its 4x4 tiles
/// cover the output with little waste and each image has at least 16 of them, else
/// F(2x2, 3x3).
///
/// Measured on Zen 5 (2-core EPYC, FMA peak 284 GFLOP/s a core, 574 on two;
/// examples/gemm_speed.rs, two threads, best of 30-40, GFLOP/s of the direct FLOPs, F2 vs
/// F4): 4x4 tiles covering 14x14 outputs compute 16x16 (1.31x the work), and there F4 only
/// ties: 1x14x14x256 678-830 vs 830-866 one run and 1x14x14x64 354 vs 247,
/// 1x14x14x96 442 vs 475 the next, 8x14x14x256 862-880 vs 866-875, 4x14x14x64 658-675 vs
/// 572-718; 7x7 images (4 tiles each) lose badly, as each block (one image at most) re-reads
/// the 4x larger transformed filter for 4 tiles: 8x7x7x512 709 vs 292, 8x7x7x128 463 vs 452.
/// Where the tiles fit the output F4 wins: 16x32x32x32 -> 32 (W4) 474 vs 613, 16x16x16x32 ->
/// 64 583 vs 692, 1x28x28x128 728-771 vs 981-1010, 1x56x56x64 735 vs 837, 1x27x27x32 -> 128
/// 480 vs 579, 1x56x56x128 -> 32 687 vs 786; on the AVX2 kernels (same CPU) 16x32x32x32 239
/// vs 313, 1x28x28x128 359 vs 539, 1x56x56x64 337 vs 387.
fn default_variant(g: &ConvGeometry) -> WinogradVariant {
    let (tiles_h, tiles_w) = (g.out_h.div_ceil(4), g.out_w.div_ceil(4));
    let covered = 16 * tiles_h * tiles_w;
    // At most 1.2x the output (27x27: 1.08, 55x55: 1.06; 14x14 and 7x7: 1.31, 13x13: 1.51).
    if tiles_h * tiles_w >= 16 && 5 * covered <= 6 * g.out_h * g.out_w {
        WinogradVariant::F4
    } else {
        WinogradVariant::F2
    }
}

/// The default choice of [`winograd_choice`] (for a geometry Winograd applies to), for the
/// kernels of `isa`: the channel counts' harmonic mean at least `auto_min_channels` (32 in
/// F(4x4, 3x3), whose transforms cost less per output), at least `AUTO_MIN_TILES` 2x2 tiles,
/// in [`default_variant`].
pub(crate) fn auto_choice(
    g: &ConvGeometry,
    batch: usize,
    cin: usize,
    cout: usize,
    isa: Isa,
) -> Option<WinogradVariant> {
    let tiles = batch * g.out_h.div_ceil(2) * g.out_w.div_ceil(2);
    // The harmonic mean of the channel counts, 2 cin cout / (cin + cout): the multiplies
    // saved grow with cin * cout, the transforms with cin + cout.
    let mean = 2 * cin * cout / (cin + cout).max(1);
    let variant = default_variant(g);
    let min = auto_min_channels(isa, variant)?;
    (mean >= min && tiles >= AUTO_MIN_TILES).then_some(variant)
}

/// Output tiles (2x2 pixels, all images) from which the plan picks Winograd by default.
///
/// Each transformed weight (16/9 the filter's bytes) serves only 2 FLOPs per tile, and in a
/// whole network the weights come from memory, not from cache: at 7x7 (16 tiles) streaming
/// them costs more than the multiplies saved. Measured on Zen 5 (ResNet-50 b1, kiln bench
/// --profile, 2 threads, two alternated rounds, direct vs Winograd ms): 7x7x512 0.64-0.69 vs
/// 0.73-0.98 (with the weights hot in cache, examples/gemm_speed.rs, 7x7 would have won: 0.50
/// vs 0.40 ms).
///
/// From 32 tiles one small image wins once a block's 16 GEMMs run in parallel when there are
/// fewer blocks than threads and the transforms use AVX-512 intrinsics. Zen 5,
/// examples/gemm_speed.rs, 2 threads, best of 30, direct vs Winograd ms: 1x13x13x64 -> 256
/// (49 tiles) 0.127 vs 0.117, 1x14x14x64 0.038 vs 0.032, 1x14x14x256 0.487 vs 0.346,
/// 1x28x28x64 0.147 vs 0.115. (On Zen 4, before both changes, 1x14x14x64 lost: 0.08-0.12 vs
/// 0.12-0.13 ms, and 128 tiles were required; not measured there since.)
pub const AUTO_MIN_TILES: usize = 32;

/// The harmonic mean of the input and output channel counts from which Winograd in `variant`
/// beats the implicit GEMM by default on kernels `isa`; `None`: never by default.
///
/// F(2x2, 3x3) saves 2.25x of the GEMM's multiplies but adds the transforms, whose cost per output
/// grows with `cin + cout` while the saving grows with `cin * cout`, so it pays from some
/// mean channel count on. Zen 5 (examples/gemm_speed.rs, one thread, best of 30, direct /
/// Winograd time at 1xHxWxcin for H = 14, 28, 56): 32 -> 64 (mean 42.7) 1.15 1.29 1.37,
/// 64 -> 32 1.27 1.36 1.38, 48 -> 48 1.3-1.4, 48 -> 32 (38.4) 1.14 1.20 1.26, 32 -> 32 (32)
/// 1.03 1.09 1.16 but W4's 16x32x32x32 0.90, 16 -> 64 (25.6) 1.00 1.05 1.06, 64 -> 16 1.11
/// 1.13 1.15, 16 -> 32 0.85-0.90; the AVX2 kernels on the same CPU, H = 28, 56: 32 -> 64
/// 0.97 1.18, 48 -> 32 1.17 1.19, 32 -> 32 1.06 1.07, 16 -> 64 0.86 0.86. A mean of 40 keeps
/// every pair that lost. Before (one count, the smaller, from 64), measured with
/// examples/gemm_speed.rs (best of 20, direct vs Winograd GFLOP/s, the direct convolution's
/// FLOPs over each time):
/// - 2-core EPYC, Zen 4 (512-bit FMAs on 256-bit units), one thread: W2 1x56x56x64 99-105 vs
///   91-120, W3 8x56x56x64 97 vs 109-112, 1x28x28x128 108-112 vs 147-165, 1x14x14x256
///   109-114 vs 185-199, 1x7x7x512 103-108 vs 112-132.
/// - 2-core EPYC, Zen 5 (full-width 512-bit FMAs, twice Zen 4's peak per cycle), one / two
///   threads: W2 234 vs 268 / 471 vs 546, W3 225 vs 259 / 467 vs 538, 1x28x28x128 250 vs
///   355 / 427 vs 590, 1x14x14x256 249 vs 378 / 497 vs 623, 1x7x7x512 233 vs 348 / 470 vs
///   597. The faster GEMM did not move the threshold (it had been guessed to double there).
///
/// 32 channels lose on both (Zen 5: 16x32x32x32 197 vs 161 on one thread, 402 vs 311 on two).
/// The portable kernels are never switched over by default: not measured.
///
/// F(4x4, 3x3) from a mean of 32 (Zen 5 as above, two threads, best of 30, direct vs F4
/// GFLOP/s):
/// 16x32x32x32 -> 32 (W4) 460 vs 613, 1x56x56x32 -> 32 378 vs 456-469; below, 1x55x55x16 ->
/// 64 (25.6) 382 vs 379-409 and 1x28x28x16 -> 32 (21.3) 159 vs 160-240 tie, and 1x28x28x24
/// -> 24 (no multiple of 16: the generic transforms) 258 vs 125 loses.
pub(crate) fn auto_min_channels(isa: Isa, variant: WinogradVariant) -> Option<usize> {
    match (isa, variant) {
        (Isa::Portable, _) => None,
        (_, WinogradVariant::F2) => Some(40),
        (_, WinogradVariant::F4) => Some(32),
    }
}

/// Transforms the HWIO filter `w` (`[3, 3, cin, cout]` row-major) into `G g G^T` and packs it
/// for the kernels [`super::detect`] chooses.
pub fn pack_winograd(
    w: &[f32],
    cin: usize,
    cout: usize,
    variant: WinogradVariant,
) -> Result<WinogradFilter, String> {
    pack_winograd_for(super::detect(), w, cin, cout, variant)
}

/// [`pack_winograd`] for the kernels of `isa`.
pub(crate) fn pack_winograd_for(
    isa: Isa,
    w: &[f32],
    cin: usize,
    cout: usize,
    variant: WinogradVariant,
) -> Result<WinogradFilter, String> {
    let plane = cin
        .checked_mul(cout)
        .ok_or_else(|| format!("winograd: filter [3, 3, {cin}, {cout}] overflows"))?;
    let need = plane
        .checked_mul(9)
        .ok_or_else(|| format!("winograd: filter [3, 3, {cin}, {cout}] overflows"))?;
    if w.len() < need {
        return Err(format!(
            "winograd: filter has {} values, expected {need} for [3, 3, {cin}, {cout}]",
            w.len()
        ));
    }
    // U_e[ci, co] for every position e, row-major [cin, cout] each.
    let mut u = vec![vec![0.0f32; plane]; variant.positions()];
    for p in 0..plane {
        let g: [[f32; 3]; 3] =
            std::array::from_fn(|dy| std::array::from_fn(|dx| w[(dy * 3 + dx) * plane + p]));
        match variant {
            WinogradVariant::F2 => {
                // G g (4x3), then (G g) G^T (4x4); G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1].
                let gg: [[f32; 3]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|c| filter_row(i, [g[0][c], g[1][c], g[2][c]]))
                });
                for (i, row) in gg.iter().enumerate() {
                    for j in 0..4 {
                        u[i * 4 + j][p] = filter_row(j, *row);
                    }
                }
            }
            WinogradVariant::F4 => {
                for (ue, value) in u.iter_mut().zip(f4::filter_transform(&g)) {
                    ue[p] = value;
                }
            }
        }
    }
    let packed = u
        .iter()
        .map(|ue| super::pack_b_for(isa, cin, cout, ue, false))
        .collect::<Result<_, _>>()?;
    Ok(WinogradFilter {
        cin,
        cout,
        variant,
        packed,
    })
}

/// Row `i` of `G` applied to three values.
fn filter_row(i: usize, [a, b, c]: [f32; 3]) -> f32 {
    match i {
        0 => a,
        1 => 0.5 * (a + b + c),
        2 => 0.5 * (a - b + c),
        _ => c,
    }
}

/// `out = epilogue(conv2d(input, filter))` for `input` `[n, h, w, cin]` (`in_dims`), a 3x3
/// stride-1 dilation-1 `geom` (see [`winograd_applies`]) and `out` `[n, out_h, out_w, cout]`.
/// The epilogue's bias has one value per output channel; its residual is indexed
/// `[pixel, channel]` with its own leading dimension.
pub fn conv2d_winograd(
    input: &[f32],
    in_dims: [usize; 4],
    filter: &WinogradFilter,
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    conv2d_winograd_strided(input, in_dims, filter, geom, out, filter.cout, epilogue)
}

/// [`conv2d_winograd`] storing output pixel `p` at `out[p * ldc..][..cout]` (`ldc >= cout`;
/// a concat slot: `out` spans from the slot's first value to its last).
pub fn conv2d_winograd_strided(
    input: &[f32],
    in_dims: [usize; 4],
    filter: &WinogradFilter,
    geom: &ConvGeometry,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let [n, h, w, cin] = in_dims;
    let cout = filter.cout;
    if !winograd_applies(geom) {
        return Err(format!(
            "winograd: needs a 3x3 filter at stride 1 and dilation 1, got {geom:?}"
        ));
    }
    if cin != filter.cin {
        return Err(format!(
            "winograd: input {in_dims:?} has {cin} channels, the filter expects {}",
            filter.cin
        ));
    }
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    let overflow = || format!("winograd: sizes overflow usize (input {in_dims:?}, {geom:?})");
    let in_len = product(&in_dims).ok_or_else(overflow)?;
    if input.len() < in_len {
        return Err(format!(
            "winograd: input has {} values, expected at least {in_len} for {in_dims:?}",
            input.len()
        ));
    }
    let (oh, ow) = (geom.out_h, geom.out_w);
    let m = product(&[n, oh, ow]).ok_or_else(overflow)?;
    if ldc < cout {
        return Err(format!(
            "winograd: output pixels {ldc} values apart hold only part of {cout} channels"
        ));
    }
    if m == 0 || cout == 0 {
        return Ok(());
    }
    let out_len = super::extent(m, ldc, cout).ok_or_else(overflow)?;
    if out.len() < out_len {
        return Err(format!(
            "winograd: output has {} values, expected at least {out_len} for [{n}, {oh}, {ow}, {cout}] \
             at {ldc} values a pixel",
            out.len()
        ));
    }
    epilogue.validate("winograd", m, cout)?;
    let variant = filter.variant;
    let (tile, positions) = (variant.tile(), variant.positions());
    let (tiles_h, tiles_w) = (oh.div_ceil(tile), ow.div_ceil(tile));
    // Blocks of whole tile rows whose transformed inputs and products fill about 3/4 of the L2
    // (fewer, larger GEMMs), at least one row, the image's rows split evenly among them. With
    // half the L2, W4's 32 -> 32 layer in F(4x4) ran GEMMs of 32 rows; 3/4 (64 rows), Zen 5
    // (2-core EPYC, FMA peak 284 GFLOP/s a core), gemm_speed, two threads, best of 40, two
    // rounds: 0.451-0.457 -> 0.403-0.415 ms, 1x28x28x128 0.229-0.363 -> 0.204-0.213, 1x14x14x256 in F(2x2) 0.316-0.511 -> 0.281-0.292,
    // 1x56x56x64 and 2x7x7x512 unchanged (the full L2 was no better, 1.5x it worse).
    let per_tile = positions * (cin + cout) * 4;
    let max_rows = (caches().l2 * 3 / 4 / per_tile.max(1) / tiles_w).clamp(1, tiles_h);
    let rows_per_block = tiles_h.div_ceil(tiles_h.div_ceil(max_rows));
    let band = tile * rows_per_block * ow * ldc;
    let shape = Shape {
        variant,
        h,
        w,
        cin,
        oh,
        ow,
        cout,
        ldc,
        pad_top: geom.pad_top,
        pad_left: geom.pad_left,
    };
    let input = &input[..in_len];
    // Every block's band of the output, so that blocks of one image also run in parallel.
    let blocks: Vec<(usize, usize, &mut [f32])> = out[..out_len]
        .chunks_mut(oh * ow * ldc)
        .enumerate()
        .flat_map(|(img, image_out)| {
            image_out
                .chunks_mut(band)
                .enumerate()
                .map(move |(b, chunk)| (img, b, chunk))
        })
        .collect();
    // Fewer blocks than threads (one small image): the blocks' GEMMs are split instead.
    let split_gemms = blocks.len() < rayon::current_num_threads();
    blocks.into_par_iter().try_for_each(|(img, b, chunk)| {
        let ty0 = b * rows_per_block;
        let ty1 = (ty0 + rows_per_block).min(tiles_h);
        let tiles = (ty1 - ty0) * tiles_w;
        // The input transform writes all of V and the GEMMs all of M before either is read.
        with_buffer(&V, positions * position_stride(tiles, cin), |v| {
            with_buffer(&M, positions * position_stride(tiles, cout), |m| {
                let block = (img, ty0, ty1, split_gemms);
                run_block(&shape, input, block, filter, epilogue, chunk, (v, m))
            })
        })
    })
}

thread_local! {
    /// Each thread's transformed inputs `[positions, tiles, cin]` (see [`super::scratch`]; fresh
    /// buffers, about 0.5 MB a block, were page-faulted in on every call: 15% of a 64-channel
    /// Winograd conv on Zen 4).
    static V: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each thread's products `[positions, tiles, cout]`.
    static M: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Sizes one block needs.
struct Shape {
    variant: WinogradVariant,
    h: usize,
    w: usize,
    cin: usize,
    oh: usize,
    ow: usize,
    cout: usize,
    /// Values from one output pixel to the next (`cout`, or a concat's channels).
    ldc: usize,
    pad_top: usize,
    pad_left: usize,
}

/// Tile rows `ty0..ty1` of image `img` (`(img, ty0, ty1, split_gemms)`): output rows
/// `tile * ty0 ..`, stored into `out` (which starts at output row `tile * ty0` of that image),
/// with `(v, m)` the block's transformed inputs and products; with `split_gemms`, the GEMMs run
/// in parallel.
fn run_block(
    s: &Shape,
    input: &[f32],
    (img, ty0, ty1, split_gemms): (usize, usize, usize, bool),
    filter: &WinogradFilter,
    epilogue: &Epilogue<'_>,
    out: &mut [f32],
    (v, m): (&mut [f32], &mut [f32]),
) -> Result<(), String> {
    let tiles_w = s.ow.div_ceil(s.variant.tile());
    let tiles = (ty1 - ty0) * tiles_w;
    let (cin, cout) = (s.cin, s.cout);
    let isa = filter.packed.first().map_or(Isa::Portable, |p| p.isa());
    let block = Block {
        s,
        img,
        ty0,
        tiles,
        tiles_w,
    };
    transforms(isa, Transform::Input(&block, input, v));
    // One GEMM per position: M_e = V_e x U_e.
    let gemm = |((ue, a), c): ((&PackedB, &[f32]), &mut [f32])| {
        let c = &mut c[..tiles * cout];
        sgemm(tiles, cout, cin, a, cin, ue, c, cout, &Epilogue::none())
    };
    let (vs, ms) = (position_stride(tiles, cin), position_stride(tiles, cout));
    let v: &[f32] = v;
    if split_gemms {
        filter
            .packed
            .par_iter()
            .zip(v.par_chunks(vs))
            .zip(m.par_chunks_mut(ms))
            .try_for_each(gemm)?;
    } else {
        filter
            .packed
            .iter()
            .zip(v.chunks(vs))
            .zip(m.chunks_mut(ms))
            .try_for_each(gemm)?;
    }
    transforms(isa, Transform::Output(&block, m, epilogue, out));
    Ok(())
}

/// One block of tiles: the image, its first tile row and its tile count.
struct Block<'s> {
    s: &'s Shape,
    img: usize,
    ty0: usize,
    tiles: usize,
    tiles_w: usize,
}

impl Block<'_> {
    /// Where the pixels under tile `t`'s patch start in the input: for each patch row, the
    /// offset of its image row, and for each patch column, the offset of its pixel within a
    /// row, or `None` where they lie outside the image (padding). Pixel `(r, c)` of the patch
    /// starts at `rows[r] + cols[c]` and holds `cin` values, all before
    /// `(img + 1) * h * w * cin`. (Twelve offsets instead of a slice per pixel: building 36
    /// checked slices took 7% of an F(4x4) convolution's perf samples on Zen 5.)
    #[inline(always)]
    fn patch(&self, t: usize) -> PatchOffsets {
        let s = self.s;
        let (tile, side) = (s.variant.tile(), s.variant.side());
        let (ty, tx) = self.tile_at(t);
        let mut offsets = PatchOffsets {
            rows: [None; 6],
            cols: [None; 6],
        };
        for i in 0..side {
            offsets.rows[i] = (tile * ty + i)
                .checked_sub(s.pad_top)
                .filter(|&y| y < s.h)
                .map(|y| (self.img * s.h + y) * s.w * s.cin);
            offsets.cols[i] = (tile * tx + i)
                .checked_sub(s.pad_left)
                .filter(|&x| x < s.w)
                .map(|x| x * s.cin);
        }
        offsets
    }

    /// Tile `t`'s tile row and column in its image.
    #[inline(always)]
    fn tile_at(&self, t: usize) -> (usize, usize) {
        (self.ty0 + t / self.tiles_w, t % self.tiles_w)
    }

    /// Where the block's image ends in the input: every pixel [`Block::patch`] names lies
    /// before it.
    fn input_end(&self) -> usize {
        let s = self.s;
        (self.img + 1) * s.h * s.w * s.cin
    }
}

/// [`Block::patch`]: offsets of a patch's rows and columns (the first `side` of each).
struct PatchOffsets {
    rows: [Option<usize>; 6],
    cols: [Option<usize>; 6],
}

impl PatchOffsets {
    /// Where pixel `p` (row-major in a patch of `side` columns) starts, if inside the image.
    #[inline(always)]
    fn pixel(&self, p: usize, side: usize) -> Option<usize> {
        Some(self.rows[p / side]? + self.cols[p % side]?)
    }
}

/// A transform pass of one block: the inputs into `V` (`[positions, tiles, cin]`), or the
/// products `M` (`[positions, tiles, cout]`) through the epilogue into the output.
enum Transform<'a> {
    Input(&'a Block<'a>, &'a [f32], &'a mut [f32]),
    Output(&'a Block<'a>, &'a [f32], &'a Epilogue<'a>, &'a mut [f32]),
}

/// Runs a transform pass with the widest vectors the kernels' ISA has (the kernels are AVX-512
/// or AVX2, so the CPU has that much): 16-lane arrays in one zmm operation each under
/// AVX-512, 8-lane ones in one ymm operation under AVX2 (instead of two SSE ones each, which
/// halved the transforms' share of a Winograd convolution). Same operations in the same order
/// on every lane (no contraction into FMA), so the same bits whatever the width.
fn transforms(isa: Isa, pass: Transform<'_>) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && is_x86_feature_detected!("avx512f") {
            // SAFETY: the only requirement of a `target_feature` function is that the CPU has
            // the feature, checked just above.
            unsafe { transforms_avx512(pass) };
            return;
        }
        if isa >= Isa::Avx2Fma && is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { transforms_avx2(pass) };
            return;
        }
    }
    let _ = isa;
    transforms_any::<LANES>(pass);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transforms_avx512(pass: Transform<'_>) {
    use WinogradVariant::{F2, F4};
    match pass {
        Transform::Input(b, input, v) if b.s.cin.is_multiple_of(16) => match b.s.variant {
            // SAFETY: this function's target feature is the CPU's (checked by the caller).
            F2 => unsafe { avx512::transform_inputs(b, input, v) },
            // SAFETY: as above.
            F4 => unsafe { avx512::transform_inputs_f4(b, input, v) },
        },
        Transform::Output(b, m, epilogue, out) if b.s.cout.is_multiple_of(16) => {
            match b.s.variant {
                // SAFETY: as above.
                F2 => unsafe { avx512::transform_outputs(b, m, epilogue, out) },
                // SAFETY: as above.
                F4 => unsafe { avx512::transform_outputs_f4(b, m, epilogue, out) },
            }
        }
        pass => transforms_any::<16>(pass),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transforms_avx2(pass: Transform<'_>) {
    transforms_any::<LANES>(pass);
}

#[inline(always)]
fn transforms_any<const L: usize>(pass: Transform<'_>) {
    use WinogradVariant::{F2, F4};
    match pass {
        Transform::Input(b, input, v) => match b.s.variant {
            F2 => transform_inputs::<L, 16>(b, input, v),
            F4 => transform_inputs::<L, 36>(b, input, v),
        },
        Transform::Output(b, m, epilogue, out) => match b.s.variant {
            F2 => transform_outputs::<L, 16, 4>(b, m, epilogue, out),
            F4 => transform_outputs::<L, 36, 16>(b, m, epilogue, out),
        },
    }
}

/// Input transform: `V_e[t, ci] = (B^T d B)[e]` for tile `t`'s patch `d` of `P` pixels.
#[inline(always)]
fn transform_inputs<const L: usize, const P: usize>(
    b: &Block<'_>,
    input: &[f32],
    v_out: &mut [f32],
) {
    let (cin, tiles, side) = (b.s.cin, b.tiles, b.s.variant.side());
    debug_assert_eq!(side * side, P);
    let stride = position_stride(tiles, cin);
    let zeros = [0.0f32; L];
    for t in 0..tiles {
        let patch = b.patch(t);
        for c0 in (0..cin).step_by(L) {
            let len = L.min(cin - c0);
            let mut d = [[0.0f32; L]; P];
            for (p, dp) in d.iter_mut().enumerate() {
                let src = patch
                    .pixel(p, side)
                    .map_or(&zeros[..len], |at| &input[at + c0..at + c0 + len]);
                copy_lanes::<L>(&mut dp[..len], src);
            }
            let mut v = [[0.0f32; L]; P];
            if P == 16 {
                input_transform::<L>(&d, &mut v);
            } else {
                f4::input_transform::<L>(&d, &mut v);
            }
            for (e, ve) in v.iter().enumerate() {
                let at = e * stride + t * cin + c0;
                copy_lanes::<L>(&mut v_out[at..at + len], &ve[..len]);
            }
        }
    }
}

/// Output transform `A^T M A` (`P` positions into `Q` outputs), then the epilogue, for the
/// output pixels inside the image; `out` starts at output row `tile * ty0` of the image.
#[inline(always)]
fn transform_outputs<const L: usize, const P: usize, const Q: usize>(
    b: &Block<'_>,
    m: &[f32],
    epilogue: &Epilogue<'_>,
    out: &mut [f32],
) {
    let Block {
        s,
        img,
        ty0,
        tiles,
        tiles_w,
    } = *b;
    let (cout, tile) = (s.cout, s.variant.tile());
    let stride = position_stride(tiles, cout);
    let first_pixel = (img * s.oh + tile * ty0) * s.ow;
    for t in 0..tiles {
        let (ty, tx) = (ty0 + t / tiles_w, t % tiles_w);
        for c0 in (0..cout).step_by(L) {
            let len = L.min(cout - c0);
            let mut mt = [[0.0f32; L]; P];
            for (e, me) in mt.iter_mut().enumerate() {
                let at = e * stride + t * cout + c0;
                copy_lanes::<L>(&mut me[..len], &m[at..at + len]);
            }
            let mut y = [[0.0f32; L]; Q];
            if P == 16 {
                output_transform::<L>(&mt, &mut y);
            } else {
                f4::output_transform::<L>(&mt, &mut y);
            }
            let mut bias = [0.0f32; L];
            if let Some(b) = epilogue.bias {
                copy_lanes::<L>(&mut bias[..len], &b[c0..c0 + len]);
            }
            for (q, yq) in y.iter().enumerate() {
                let (oy, ox) = (tile * ty + q / tile, tile * tx + q % tile);
                if oy >= s.oh || ox >= s.ow {
                    continue;
                }
                let local = (oy - tile * ty0) * s.ow + ox;
                let dst = &mut out[local * s.ldc + c0..local * s.ldc + c0 + len];
                let mut v = *yq;
                for (x, b) in v.iter_mut().zip(&bias) {
                    *x += b;
                }
                if let Some(r) = epilogue.add {
                    let at = (first_pixel + local) * r.ld + c0;
                    for (x, a) in v.iter_mut().zip(&r.data[at..at + len]) {
                        *x += a;
                    }
                }
                epilogue.activation.apply_all(&mut v);
                copy_lanes::<L>(dst, &v[..len]);
            }
        }
    }
}

/// Copies up to `L` values; a full group is a fixed-size copy the compiler keeps in
/// registers. The partial group is a separate, never-inlined call: otherwise the compiler
/// merges both into one `memcpy` call of run-time length (a fifth of the run time).
#[inline(always)]
fn copy_lanes<const L: usize>(dst: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; L]>::try_from(&mut *dst),
        <&[f32; L]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => copy_partial(dst, src),
    }
}

#[inline(never)]
fn copy_partial(dst: &mut [f32], src: &[f32]) {
    dst.copy_from_slice(src);
}

/// `v = B^T d B` for a 4x4 patch `d` (row-major positions, 16 of each), lane by lane.
/// `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`. Inlined: otherwise the arrays would be
/// copied through `memcpy` (a fifth of the run time).
#[inline(always)]
fn input_transform<const L: usize>(d: &[[f32; L]], v: &mut [[f32; L]]) {
    let mut t = [[0.0f32; L]; 16];
    for c in 0..4 {
        for l in 0..L {
            let (d0, d1, d2, d3) = (d[c][l], d[4 + c][l], d[8 + c][l], d[12 + c][l]);
            t[c][l] = d0 - d2;
            t[4 + c][l] = d1 + d2;
            t[8 + c][l] = d2 - d1;
            t[12 + c][l] = d1 - d3;
        }
    }
    for r in 0..4 {
        for l in 0..L {
            let (t0, t1, t2, t3) = (
                t[4 * r][l],
                t[4 * r + 1][l],
                t[4 * r + 2][l],
                t[4 * r + 3][l],
            );
            v[4 * r][l] = t0 - t2;
            v[4 * r + 1][l] = t1 + t2;
            v[4 * r + 2][l] = t2 - t1;
            v[4 * r + 3][l] = t1 - t3;
        }
    }
}

/// `y = A^T m A` for a 4x4 `m` (16 values): the 2x2 outputs, row-major.
/// `A^T = [1 1 1 0; 0 1 -1 -1]`.
#[inline(always)]
fn output_transform<const L: usize>(m: &[[f32; L]], y: &mut [[f32; L]]) {
    let mut t = [[0.0f32; L]; 8];
    for c in 0..4 {
        for l in 0..L {
            let (m0, m1, m2, m3) = (m[c][l], m[4 + c][l], m[8 + c][l], m[12 + c][l]);
            t[c][l] = m0 + m1 + m2;
            t[4 + c][l] = m1 - m2 - m3;
        }
    }
    for r in 0..2 {
        for l in 0..L {
            let (t0, t1, t2, t3) = (
                t[4 * r][l],
                t[4 * r + 1][l],
                t[4 * r + 2][l],
                t[4 * r + 3][l],
            );
            y[2 * r][l] = t0 + t1 + t2;
            y[2 * r + 1][l] = t1 - t2 - t3;
        }
    }
}
