//! Winograd F(2x2, 3x3) for 3x3, stride-1, dilation-1 NHWC convolutions.
//!
//! Each 2x2 block of output pixels (a tile) is computed from the 4x4 input patch under it:
//! `Y = A^T [ (G g G^T) .* (B^T d B) ] A` per input/output channel pair, summed over input
//! channels. The element-wise product summed over channels is 16 independent GEMMs
//! `V_e[tiles, cin] x U_e[cin, cout]` (`e` one of the 16 transformed positions), which run on
//! the SGEMM micro-kernels with `U_e` transformed and packed once, at compile time. 16
//! multiplies per tile instead of 36: 2.25x fewer FLOPs than the direct convolution, at the
//! price of two cheap linear transforms per tile and a little rounding (the transforms add and
//! subtract up to 4 values; `G` has only 0.5 and 1, so the filter transform is nearly exact).
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
use super::{Isa, sgemm};
use rayon::prelude::*;
use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Positions of a transformed 4x4 tile: one GEMM each.
const POSITIONS: usize = 16;
/// Values from one position's `[tiles, c]` matrix to the next in `V` (`c = cin`) and `M`
/// (`c = cout`): `tiles * c` rounded up to an odd number of cache lines. A transform reads or
/// writes all 16 positions of a tile at once; `tiles * c` apart, a multiple of 4 KB for
/// W4's 32->32 layer (128 tiles), its 16 streams fell in one L1 set and its transforms took
/// longer than its GEMMs. An odd number of lines apart, they fall in 16 different sets.
/// (A tile's positions side by side instead, one GEMM row per tile, made the GEMMs' A rows
/// scattered: 1x56x56x64 1.3x slower.)
fn position_stride(tiles: usize, c: usize) -> usize {
    const LINE: usize = 16;
    let lines = (tiles * c).div_ceil(LINE);
    (lines | 1) * LINE
}

/// Channels a transform handles at once below AVX-512 (fixed-size arrays the compiler
/// vectorises); 16 under AVX-512.
const LANES: usize = 8;

/// A 3x3 filter transformed and packed for [`conv2d_winograd`]: one packed `[cin, cout]` B per
/// position `e` of the 4x4 transformed tile.
#[derive(Clone, Debug)]
pub struct WinogradFilter {
    cin: usize,
    cout: usize,
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
}

/// Whether a convolution can run as Winograd F(2x2, 3x3): a 3x3 filter at stride 1 and
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

/// Whether the plan runs a convolution of a `batch`-image input with `cin` input and `cout`
/// output channels as Winograd. `KILN_WINOGRAD` (read once per process) decides when set:
/// `0` never, `1` whenever it applies and both channel counts reach `WINOGRAD_MIN_CHANNELS`.
/// Unset, the plan takes it where it was measured to win: the channel counts' harmonic mean
/// at least `auto_min_channels` for the detected kernels and at least `AUTO_MIN_TILES` tiles.
pub fn winograd_chosen(g: &ConvGeometry, batch: usize, cin: usize, cout: usize) -> bool {
    static SETTING: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let setting = *SETTING.get_or_init(|| match std::env::var("KILN_WINOGRAD").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    });
    if !winograd_applies(g) {
        return false;
    }
    match setting {
        Some(true) => cin.min(cout) >= WINOGRAD_MIN_CHANNELS,
        Some(false) => false,
        None => auto_chosen(g, batch, cin, cout, super::detect()),
    }
}

/// The default choice of [`winograd_chosen`] (for a geometry Winograd applies to), for the
/// kernels of `isa`.
pub(crate) fn auto_chosen(
    g: &ConvGeometry,
    batch: usize,
    cin: usize,
    cout: usize,
    isa: Isa,
) -> bool {
    let tiles = batch * g.out_h.div_ceil(2) * g.out_w.div_ceil(2);
    // The harmonic mean of the channel counts, 2 cin cout / (cin + cout): the multiplies
    // saved grow with cin * cout, the transforms with cin + cout.
    let mean = 2 * cin * cout / (cin + cout).max(1);
    auto_min_channels(isa).is_some_and(|min| mean >= min && tiles >= AUTO_MIN_TILES)
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

/// The harmonic mean of the input and output channel counts from which Winograd beats the
/// implicit GEMM by default on kernels `isa`; `None`: never by default.
///
/// It saves 2.25x of the GEMM's multiplies but adds the transforms, whose cost per output
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
pub(crate) fn auto_min_channels(isa: Isa) -> Option<usize> {
    match isa {
        Isa::Avx512 | Isa::Avx2Fma => Some(40),
        Isa::Portable => None,
    }
}

/// Transforms the HWIO filter `w` (`[3, 3, cin, cout]` row-major) into `G g G^T` and packs it
/// for the kernels [`super::detect`] chooses.
pub fn pack_winograd(w: &[f32], cin: usize, cout: usize) -> Result<WinogradFilter, String> {
    pack_winograd_for(super::detect(), w, cin, cout)
}

/// [`pack_winograd`] for the kernels of `isa`.
pub(crate) fn pack_winograd_for(
    isa: Isa,
    w: &[f32],
    cin: usize,
    cout: usize,
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
    let mut u = vec![vec![0.0f32; plane]; POSITIONS];
    for p in 0..plane {
        let g: [[f32; 3]; 3] =
            std::array::from_fn(|dy| std::array::from_fn(|dx| w[(dy * 3 + dx) * plane + p]));
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
    let packed = u
        .iter()
        .map(|ue| super::pack_b_for(isa, cin, cout, ue, false))
        .collect::<Result<_, _>>()?;
    Ok(WinogradFilter { cin, cout, packed })
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
    let (tiles_h, tiles_w) = (oh.div_ceil(2), ow.div_ceil(2));
    // Blocks of whole tile rows whose transformed inputs and products fill about the L2
    // (fewer, larger GEMMs), at least one row.
    let per_tile = POSITIONS * (cin + cout) * 4;
    let rows_per_block = (caches().l2 / 2 / per_tile.max(1) / tiles_w).clamp(1, tiles_h);
    let band = 2 * rows_per_block * ow * ldc;
    let shape = Shape {
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
    // Fewer blocks than threads (one small image): the blocks' 16 GEMMs are split instead.
    let split_gemms = blocks.len() < rayon::current_num_threads();
    blocks.into_par_iter().try_for_each(|(img, b, chunk)| {
        let ty0 = b * rows_per_block;
        let ty1 = (ty0 + rows_per_block).min(tiles_h);
        let tiles = (ty1 - ty0) * tiles_w;
        // The input transform writes all of V and the GEMMs all of M before either is read.
        with_buffer(&V, POSITIONS * position_stride(tiles, cin), |v| {
            with_buffer(&M, POSITIONS * position_stride(tiles, cout), |m| {
                let block = (img, ty0, ty1, split_gemms);
                run_block(&shape, input, block, filter, epilogue, chunk, (v, m))
            })
        })
    })
}

thread_local! {
    /// Each thread's transformed inputs `[16, tiles, cin]` (see [`super::scratch`]; fresh
    /// buffers, about 0.5 MB a block, were page-faulted in on every call: 15% of a 64-channel
    /// Winograd conv on Zen 4).
    static V: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each thread's products `[16, tiles, cout]`.
    static M: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Sizes one block needs.
struct Shape {
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
/// `2 * ty0 ..`, stored into `out` (which starts at output row `2 * ty0` of that image), with
/// `(v, m)` the block's transformed inputs and products; with `split_gemms`, the 16 GEMMs run
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
    let tiles_w = s.ow.div_ceil(2);
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
    // 16 GEMMs: M_e = V_e x U_e.
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
    /// The input pixels (all `cin` channels each) under tile `t`'s 4x4 patch, row-major, or
    /// `None` where the patch lies outside the image (padding).
    #[inline(always)]
    fn patch<'i>(&self, input: &'i [f32], t: usize) -> [Option<&'i [f32]>; 16] {
        let s = self.s;
        let (ty, tx) = (self.ty0 + t / self.tiles_w, t % self.tiles_w);
        let image = &input[self.img * s.h * s.w * s.cin..(self.img + 1) * s.h * s.w * s.cin];
        std::array::from_fn(|p| {
            let y = (2 * ty + p / 4).checked_sub(s.pad_top)?;
            let x = (2 * tx + p % 4).checked_sub(s.pad_left)?;
            let at = (y * s.w + x) * s.cin;
            (y < s.h && x < s.w).then(|| &image[at..at + s.cin])
        })
    }
}

/// A transform pass of one block: the inputs into `V` (`[16, tiles, cin]`), or the products
/// `M` (`[16, tiles, cout]`) through the epilogue into the output.
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
    match pass {
        Transform::Input(b, input, v) if b.s.cin.is_multiple_of(16) => {
            // SAFETY: this function's target feature is the CPU's (checked by the caller).
            unsafe { avx512::transform_inputs(b, input, v) }
        }
        Transform::Output(b, m, epilogue, out) if b.s.cout.is_multiple_of(16) => {
            // SAFETY: as above.
            unsafe { avx512::transform_outputs(b, m, epilogue, out) }
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
    match pass {
        Transform::Input(b, input, v) => transform_inputs::<L>(b, input, v),
        Transform::Output(b, m, epilogue, out) => transform_outputs::<L>(b, m, epilogue, out),
    }
}

/// Input transform: `V_e[t, ci] = (B^T d B)[e]` for tile `t`'s 4x4 patch `d`.
#[inline(always)]
fn transform_inputs<const L: usize>(b: &Block<'_>, input: &[f32], v_out: &mut [f32]) {
    let (cin, tiles) = (b.s.cin, b.tiles);
    let stride = position_stride(tiles, cin);
    let zeros = [0.0f32; L];
    for t in 0..tiles {
        let patch = b.patch(input, t);
        for c0 in (0..cin).step_by(L) {
            let len = L.min(cin - c0);
            let mut d = [[0.0f32; L]; 16];
            for (dp, src) in d.iter_mut().zip(&patch) {
                let src = src.map_or(&zeros[..len], |px| &px[c0..c0 + len]);
                copy_lanes::<L>(&mut dp[..len], src);
            }
            let v = input_transform::<L>(&d);
            for (e, ve) in v.iter().enumerate() {
                let at = e * stride + t * cin + c0;
                copy_lanes::<L>(&mut v_out[at..at + len], &ve[..len]);
            }
        }
    }
}

/// Output transform `A^T M A`, then the epilogue, for the output pixels inside the image;
/// `out` starts at output row `2 * ty0` of the image.
#[inline(always)]
fn transform_outputs<const L: usize>(
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
    let cout = s.cout;
    let stride = position_stride(tiles, cout);
    let first_pixel = (img * s.oh + 2 * ty0) * s.ow;
    for t in 0..tiles {
        let (ty, tx) = (ty0 + t / tiles_w, t % tiles_w);
        for c0 in (0..cout).step_by(L) {
            let len = L.min(cout - c0);
            let mut mt = [[0.0f32; L]; 16];
            for (e, me) in mt.iter_mut().enumerate() {
                let at = e * stride + t * cout + c0;
                copy_lanes::<L>(&mut me[..len], &m[at..at + len]);
            }
            let y = output_transform::<L>(&mt);
            let mut bias = [0.0f32; L];
            if let Some(b) = epilogue.bias {
                copy_lanes::<L>(&mut bias[..len], &b[c0..c0 + len]);
            }
            for (q, yq) in y.iter().enumerate() {
                let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                if oy >= s.oh || ox >= s.ow {
                    continue;
                }
                let local = (oy - 2 * ty0) * s.ow + ox;
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

/// `B^T d B` for a 4x4 patch `d` (row-major positions), lane by lane.
/// `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`. Inlined: returned by value, the arrays
/// would be copied through `memcpy` (a fifth of the run time).
#[inline(always)]
fn input_transform<const L: usize>(d: &[[f32; L]; 16]) -> [[f32; L]; 16] {
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
    let mut v = [[0.0f32; L]; 16];
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
    v
}

/// `A^T m A` for a 4x4 `m`: the 2x2 outputs, row-major. `A^T = [1 1 1 0; 0 1 -1 -1]`.
#[inline(always)]
fn output_transform<const L: usize>(m: &[[f32; L]; 16]) -> [[f32; L]; 4] {
    let mut t = [[0.0f32; L]; 8];
    for c in 0..4 {
        for l in 0..L {
            let (m0, m1, m2, m3) = (m[c][l], m[4 + c][l], m[8 + c][l], m[12 + c][l]);
            t[c][l] = m0 + m1 + m2;
            t[4 + c][l] = m1 - m2 - m3;
        }
    }
    let mut y = [[0.0f32; L]; 4];
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
    y
}
