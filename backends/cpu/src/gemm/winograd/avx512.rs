//! The Winograd transforms (F(2x2, 3x3) and F(4x4, 3x3)) with AVX-512 intrinsics, 16 channels
//! (one zmm register) at a time, for channel counts that are multiples of 16 (the others take
//! the generic lane arrays).
//!
//! The generic code on 16-lane arrays left the compiler splitting arrays into ymm and xmm
//! pieces, zeroing them with `memset` and clamping four lanes at a time: the transforms took
//! 37% of a Winograd convolution (W2, 2 threads). Here every row of a patch is one register.
//! Same operations in the same order as the generic code, no contraction into FMA, and the
//! clamp is `max(lo, x)` then `min(hi, .)`, which keep NaN like [`Activation::apply`]: the
//! same bits.

use super::{Block, Epilogue, PatchOffsets, position_stride};
use crate::gemm::epilogue::Activation;
use std::arch::x86_64::*;

/// Channels per register.
const L: usize = 16;

/// [`super::transform_inputs`] of F(2x2, 3x3) for `cin % 16 == 0`.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_inputs(b: &Block<'_>, input: &[f32], v_out: &mut [f32]) {
    const P: usize = 16;
    let (cin, tiles) = (b.s.cin, b.tiles);
    let side = 4;
    debug_assert_eq!(cin % L, 0);
    // Position e of tile t, channels c0.., lives at e * stride + t * cin + c0.
    let stride = position_stride(tiles, cin);
    assert!(v_out.len() >= P * stride, "winograd: V too short");
    assert!(input.len() >= b.input_end(), "winograd: input too short");
    let out = v_out.as_mut_ptr();
    for t in 0..tiles {
        let patch = b.patch(t);
        for c0 in (0..cin).step_by(L) {
            // Loops, not closures: a closure does not inherit the target feature, so the
            // intrinsics inside it would not be inlined.
            let mut d = [_mm512_setzero_ps(); P];
            for (p, dp) in d.iter_mut().enumerate() {
                if let Some(at) = patch.pixel(p, side) {
                    // SAFETY: the pixel's `cin` values end before (img + 1) * h * w * cin <=
                    // input.len() (`Block::patch`, asserted above), and c0 + 16 <= cin.
                    *dp = unsafe { _mm512_loadu_ps(input.as_ptr().add(at + c0)) };
                }
            }
            let mut v = [_mm512_setzero_ps(); P];
            input_transform(&d, &mut v);
            for (e, ve) in v.iter().enumerate() {
                // SAFETY: e * stride + t * cin + c0 + 16 <= P * stride <= v_out.len()
                // (asserted above), as e < P, t < tiles, c0 + 16 <= cin and
                // tiles * cin <= stride.
                unsafe { _mm512_storeu_ps(out.add(e * stride + t * cin + c0), *ve) };
            }
        }
    }
}

/// [`super::transform_outputs`] of F(2x2, 3x3) for `cout % 16 == 0`.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_outputs(
    b: &Block<'_>,
    m: &[f32],
    epilogue: &Epilogue<'_>,
    out: &mut [f32],
) {
    const P: usize = 16;
    const Q: usize = 4;
    let Block {
        s,
        img,
        ty0,
        tiles,
        tiles_w,
    } = *b;
    let (cout, tile) = (s.cout, s.variant.tile());
    debug_assert_eq!(cout % L, 0);
    let first_pixel = (img * s.oh + tile * ty0) * s.ow;
    let stride = position_stride(tiles, cout);
    assert!(m.len() >= P * stride, "winograd: M too short");
    let (lo, hi) = (epilogue.activation.bounds()).unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for t in 0..tiles {
        let (ty, tx) = (ty0 + t / tiles_w, t % tiles_w);
        for c0 in (0..cout).step_by(L) {
            let mut mt = [_mm512_setzero_ps(); P];
            for (e, me) in mt.iter_mut().enumerate() {
                // SAFETY: e * stride + t * cout + c0 + 16 <= P * stride <= m.len()
                // (asserted above), as e < P, t < tiles, c0 + 16 <= cout and
                // tiles * cout <= stride.
                *me = unsafe { _mm512_loadu_ps(m.as_ptr().add(e * stride + t * cout + c0)) };
            }
            let mut y = [_mm512_setzero_ps(); Q];
            output_transform(&mt, &mut y);
            let bias = match epilogue.bias {
                Some(b) => load16(&b[c0..c0 + L]),
                None => _mm512_setzero_ps(),
            };
            for (q, &yq) in y.iter().enumerate() {
                let (oy, ox) = (tile * ty + q / tile, tile * tx + q % tile);
                if oy >= s.oh || ox >= s.ow {
                    continue;
                }
                let local = (oy - tile * ty0) * s.ow + ox;
                let v = finish(yq, bias, epilogue, (first_pixel + local, c0), (lo, hi));
                let dst = &mut out[local * s.ldc + c0..local * s.ldc + c0 + L];
                // SAFETY: `dst` holds 16 values.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) };
            }
        }
    }
}

/// The epilogue on one output vector `y` (channels `c0..` of output pixel `pixel`, counted
/// over all images): the bias (zeros without one, as the generic code adds), the residual, the
/// activation (`bounds`: its clamp, broadcast).
#[inline]
#[target_feature(enable = "avx512f")]
fn finish(
    y: __m512,
    bias: __m512,
    epilogue: &Epilogue<'_>,
    (pixel, c0): (usize, usize),
    (lo, hi): (__m512, __m512),
) -> __m512 {
    let mut v = _mm512_add_ps(y, bias);
    if let Some(r) = epilogue.add {
        let at = pixel * r.ld + c0;
        v = _mm512_add_ps(v, load16(&r.data[at..at + L]));
    }
    match epilogue.activation {
        Activation::None => v,
        Activation::LeakyRelu(_) => {
            let mut lanes = [0.0f32; L];
            // SAFETY: `lanes` holds 16 values.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
            lanes = lanes.map(|x| epilogue.activation.apply(x));
            load16(&lanes)
        }
        _ => _mm512_min_ps(hi, _mm512_max_ps(lo, v)),
    }
}

/// [`super::transform_inputs`] of F(4x4, 3x3) for `cin % 16 == 0`. Each column of a patch is
/// loaded straight into its 1-D transform and each row's result stored straight into V: with
/// the patch in a 36-register array (zeroed with `memset`, filled pixel by pixel in a loop
/// the compiler kept rolled) the loads took a third of the transforms' time.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_inputs_f4(b: &Block<'_>, input: &[f32], v_out: &mut [f32]) {
    let (cin, tiles) = (b.s.cin, b.tiles);
    debug_assert_eq!(cin % L, 0);
    // Position e of tile t, channels c0.., lives at e * stride + t * cin + c0.
    let stride = position_stride(tiles, cin);
    assert!(v_out.len() >= 36 * stride, "winograd: V too short");
    assert!(input.len() >= b.input_end(), "winograd: input too short");
    let (src, out) = (input.as_ptr(), v_out.as_mut_ptr());
    for t in 0..tiles {
        let patch = b.patch(t);
        for c0 in (0..cin).step_by(L) {
            // Column c of B^T d: t_col[c][r]. (An array literal: a zeroed array filled in a
            // loop was cleared with `memset` on every tile.)
            // SAFETY: (each column) the pixels' `cin` values end before (img + 1) * h * w * cin
            // <= input.len() (`Block::patch`, asserted above), and c0 + 16 <= cin.
            let t_col = unsafe {
                [
                    input_column_f4(src, &patch, 0, c0),
                    input_column_f4(src, &patch, 1, c0),
                    input_column_f4(src, &patch, 2, c0),
                    input_column_f4(src, &patch, 3, c0),
                    input_column_f4(src, &patch, 4, c0),
                    input_column_f4(src, &patch, 5, c0),
                ]
            };
            for r in 0..6 {
                let row = input_1d_f4(row_of(&t_col, r));
                for (c, &x) in row.iter().enumerate() {
                    let e = r * 6 + c;
                    // SAFETY: e * stride + t * cin + c0 + 16 <= 36 * stride <= v_out.len()
                    // (asserted above), as e < 36, t < tiles, c0 + 16 <= cin and
                    // tiles * cin <= stride.
                    unsafe { _mm512_storeu_ps(out.add(e * stride + t * cin + c0), x) };
                }
            }
        }
    }
}

/// [`super::transform_outputs`] of F(4x4, 3x3) for `cout % 16 == 0`: each column of M loaded
/// straight into its 1-D transform, each output through the epilogue as its row comes out
/// (see [`transform_inputs_f4`]).
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_outputs_f4(
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
    debug_assert_eq!(cout % L, 0);
    let first_pixel = (img * s.oh + 4 * ty0) * s.ow;
    let stride = position_stride(tiles, cout);
    assert!(m.len() >= 36 * stride, "winograd: M too short");
    let (lo, hi) = (epilogue.activation.bounds()).unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let bounds = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let src = m.as_ptr();
    for t in 0..tiles {
        let (ty, tx) = (ty0 + t / tiles_w, t % tiles_w);
        for c0 in (0..cout).step_by(L) {
            // Column c of A^T m: t_col[c][r], r < 4.
            let at = src.wrapping_add(t * cout + c0);
            // SAFETY: (each column) e * stride + t * cout + c0 + 16 <= 36 * stride <= m.len()
            // (asserted above) for every position e < 36, as t < tiles, c0 + 16 <= cout and
            // tiles * cout <= stride.
            let t_col = unsafe {
                [
                    output_column_f4(at, stride, 0),
                    output_column_f4(at, stride, 1),
                    output_column_f4(at, stride, 2),
                    output_column_f4(at, stride, 3),
                    output_column_f4(at, stride, 4),
                    output_column_f4(at, stride, 5),
                ]
            };
            let bias = match epilogue.bias {
                Some(b) => load16(&b[c0..c0 + L]),
                None => _mm512_setzero_ps(),
            };
            for r in 0..4 {
                let oy = 4 * ty + r;
                if oy >= s.oh {
                    break;
                }
                let row = output_1d_f4(row_of(&t_col, r));
                for (j, &y) in row.iter().enumerate() {
                    let ox = 4 * tx + j;
                    if ox >= s.ow {
                        break;
                    }
                    let local = (oy - 4 * ty0) * s.ow + ox;
                    let v = finish(y, bias, epilogue, (first_pixel + local, c0), bounds);
                    let dst = &mut out[local * s.ldc + c0..local * s.ldc + c0 + L];
                    // SAFETY: `dst` holds 16 values.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) };
                }
            }
        }
    }
}

/// `B^T` of F(4x4, 3x3) down column `c` of a patch, channels `c0..c0 + 16` (zeros outside
/// the image).
///
/// # Safety
/// The CPU supports AVX-512F; every pixel of the column inside the image (`patch`) holds 16
/// values from `src + offset + c0` on.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn input_column_f4(
    src: *const f32,
    patch: &PatchOffsets,
    c: usize,
    c0: usize,
) -> [__m512; 6] {
    let mut d = [_mm512_setzero_ps(); 6];
    if let Some(col) = patch.cols[c] {
        // Indexed, not a zip of iterators: LLVM kept the zip's state on the stack, a store
        // and a reload on every row, and that loop's speed then moved with where the linker
        // put it (the transforms 15% slower after an unrelated change elsewhere, on a
        // 2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core).
        #[allow(clippy::needless_range_loop)] // the iterator form is what this avoids
        for r in 0..6 {
            if let Some(row) = patch.rows[r] {
                // SAFETY: forwarded from this function's contract.
                d[r] = unsafe { _mm512_loadu_ps(src.add(row + col + c0)) };
            }
        }
    }
    input_1d_f4(d)
}

/// `A^T` of F(4x4, 3x3) down column `c` of a tile's 6x6 products, position `e` of which is
/// at `at + e * stride`.
///
/// # Safety
/// The CPU supports AVX-512F; `at + e * stride` holds 16 values for every `e < 36`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn output_column_f4(at: *const f32, stride: usize, c: usize) -> [__m512; 4] {
    let mut m = [_mm512_setzero_ps(); 6];
    for (r, x) in m.iter_mut().enumerate() {
        // SAFETY: forwarded from this function's contract (r * 6 + c < 36).
        *x = unsafe { _mm512_loadu_ps(at.add((r * 6 + c) * stride)) };
    }
    output_1d_f4(m)
}

/// Row `r` of a 2-D transform's column pass (`columns[c][r]` for each of the six columns).
#[inline]
#[target_feature(enable = "avx512f")]
fn row_of<const N: usize>(columns: &[[__m512; N]; 6], r: usize) -> [__m512; 6] {
    [
        columns[0][r],
        columns[1][r],
        columns[2][r],
        columns[3][r],
        columns[4][r],
        columns[5][r],
    ]
}

/// 16 values from a slice of exactly 16.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(src: &[f32]) -> __m512 {
    assert_eq!(src.len(), L);
    // SAFETY: `src` holds 16 values.
    unsafe { _mm512_loadu_ps(src.as_ptr()) }
}

/// `v = B^T d B` as [`super::input_transform`] computes it, a register per position.
#[inline]
#[target_feature(enable = "avx512f")]
fn input_transform(d: &[__m512], v: &mut [__m512]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (d0, d1, d2, d3) = (d[c], d[4 + c], d[8 + c], d[12 + c]);
        t[c] = _mm512_sub_ps(d0, d2);
        t[4 + c] = _mm512_add_ps(d1, d2);
        t[8 + c] = _mm512_sub_ps(d2, d1);
        t[12 + c] = _mm512_sub_ps(d1, d3);
    }
    for r in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
        v[4 * r] = _mm512_sub_ps(t0, t2);
        v[4 * r + 1] = _mm512_add_ps(t1, t2);
        v[4 * r + 2] = _mm512_sub_ps(t2, t1);
        v[4 * r + 3] = _mm512_sub_ps(t1, t3);
    }
}

/// `y = A^T m A` as [`super::output_transform`] computes it: the 2x2 outputs, row-major.
#[inline]
#[target_feature(enable = "avx512f")]
fn output_transform(m: &[__m512], y: &mut [__m512]) {
    let mut t = [_mm512_setzero_ps(); 8];
    for c in 0..4 {
        let (m0, m1, m2, m3) = (m[c], m[4 + c], m[8 + c], m[12 + c]);
        t[c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        t[4 + c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
    }
    for r in 0..2 {
        let (t0, t1, t2, t3) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
        y[2 * r] = _mm512_add_ps(_mm512_add_ps(t0, t1), t2);
        y[2 * r + 1] = _mm512_sub_ps(_mm512_sub_ps(t1, t2), t3);
    }
}

/// `x * c`.
#[inline]
#[target_feature(enable = "avx512f")]
fn scale(x: __m512, c: f32) -> __m512 {
    _mm512_mul_ps(_mm512_set1_ps(c), x)
}

/// `B^T` of F(4x4, 3x3) applied to six registers, as `f4::input_1d` computes it.
#[inline]
#[target_feature(enable = "avx512f")]
fn input_1d_f4(d: [__m512; 6]) -> [__m512; 6] {
    let a = _mm512_sub_ps(d[4], scale(d[2], 4.0));
    let b = _mm512_sub_ps(d[3], scale(d[1], 4.0));
    let c = _mm512_sub_ps(d[4], d[2]);
    let e = scale(_mm512_sub_ps(d[3], d[1]), 2.0);
    [
        _mm512_add_ps(_mm512_sub_ps(scale(d[0], 4.0), scale(d[2], 5.0)), d[4]),
        _mm512_add_ps(a, b),
        _mm512_sub_ps(a, b),
        _mm512_add_ps(c, e),
        _mm512_sub_ps(c, e),
        _mm512_add_ps(_mm512_sub_ps(scale(d[1], 4.0), scale(d[3], 5.0)), d[5]),
    ]
}

/// `A^T` of F(4x4, 3x3) applied to six registers, as `f4::output_1d` computes it.
#[inline]
#[target_feature(enable = "avx512f")]
fn output_1d_f4(m: [__m512; 6]) -> [__m512; 4] {
    let (s12, d12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (s34, d34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
        _mm512_add_ps(d12, scale(d34, 2.0)),
        _mm512_add_ps(s12, scale(s34, 4.0)),
        _mm512_add_ps(_mm512_add_ps(d12, scale(d34, 8.0)), m[5]),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::{Block, Shape, WinogradVariant, transform_inputs, transform_outputs};
    use super::*;
    use crate::gemm::epilogue::Residual;

    /// Values in [-2, 2) from a small LCG, with a NaN and infinities among them.
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut out: Vec<f32> = (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        for (i, special) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]
            .into_iter()
            .enumerate()
        {
            let at = (7 + 13 * i) % len;
            out[at] = special;
        }
        out
    }

    /// The intrinsics give the generic 16-lane arrays' bits, inputs and outputs, on a block of
    /// partial tiles at the image's edges, with every epilogue (NaN and infinities included),
    /// for both variants.
    #[test]
    fn avx512_transforms_match_the_lane_arrays_bit_for_bit() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: nothing to compare");
            return;
        }
        // SAFETY: AVX-512F was detected above.
        unsafe {
            compare::<16, 4>(WinogradVariant::F2);
            compare::<36, 16>(WinogradVariant::F4);
        }
    }

    /// One variant's comparison (`P` positions, `Q` outputs per tile).
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    unsafe fn compare<const P: usize, const Q: usize>(variant: WinogradVariant) {
        let (n, h, w, c) = (2, 9, 7, 32);
        let s = Shape {
            variant,
            h,
            w,
            cin: c,
            oh: h,
            ow: w,
            cout: c,
            ldc: c,
            pad_top: 1,
            pad_left: 1,
        };
        let tile = variant.tile();
        let (tiles_w, ty0) = (w.div_ceil(tile), 1);
        let tiles = (h.div_ceil(tile) - ty0) * tiles_w;
        let block = Block {
            s: &s,
            img: 1,
            ty0,
            tiles,
            tiles_w,
        };
        let input = values(1, n * h * w * c);
        let len = P * position_stride(tiles, c);
        let (mut want, mut got) = (vec![0.0f32; len], vec![0.0f32; len]);
        transform_inputs::<16, P>(&block, &input, &mut want);
        // SAFETY: the caller's CPU has AVX-512F.
        unsafe {
            match variant {
                WinogradVariant::F2 => super::transform_inputs(&block, &input, &mut got),
                WinogradVariant::F4 => super::transform_inputs_f4(&block, &input, &mut got),
            }
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{variant:?} input transform");

        let m = values(2, P * position_stride(tiles, c));
        let bias = values(3, c);
        let res = values(4, n * h * w * c);
        for (i, activation) in [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::LeakyRelu(0.1),
            Activation::Clamp {
                min: -1.0,
                max: 0.5,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let epilogue = Epilogue {
                bias: (i % 2 == 0).then_some(&bias[..]),
                add: (i != 1).then_some(Residual { data: &res, ld: c }),
                activation,
            };
            let len = (h - tile * ty0) * w * c;
            let (mut want, mut got) = (vec![9.0f32; len], vec![9.0f32; len]);
            transform_outputs::<16, P, Q>(&block, &m, &epilogue, &mut want);
            // SAFETY: the caller's CPU has AVX-512F.
            unsafe {
                match variant {
                    WinogradVariant::F2 => {
                        super::transform_outputs(&block, &m, &epilogue, &mut got)
                    }
                    WinogradVariant::F4 => {
                        super::transform_outputs_f4(&block, &m, &epilogue, &mut got)
                    }
                }
            };
            assert_eq!(
                bits(&got),
                bits(&want),
                "{variant:?} output transform, {activation:?}"
            );
        }
    }
}
