//! The Winograd transforms with AVX-512 intrinsics, 16 channels (one zmm register) at a time,
//! for channel counts that are multiples of 16 (the others take the generic lane arrays).
//!
//! The generic code on 16-lane arrays left the compiler splitting arrays into ymm and xmm
//! pieces, zeroing them with `memset` and clamping four lanes at a time: the transforms took
//! 37% of a Winograd convolution (W2, 2 threads). Here every row of a patch is one register.
//! Same operations in the same order as the generic code, no contraction into FMA, and the
//! clamp is `max(lo, x)` then `min(hi, .)`, which keep NaN like [`Activation::apply`]: the
//! same bits.

use super::{Block, Epilogue, position_stride};
use crate::gemm::epilogue::Activation;
use std::arch::x86_64::*;

/// Channels per register.
const L: usize = 16;

/// [`super::transform_inputs`] for `cin % 16 == 0`.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_inputs(b: &Block<'_>, input: &[f32], v_out: &mut [f32]) {
    let (cin, tiles) = (b.s.cin, b.tiles);
    debug_assert_eq!(cin % L, 0);
    // Position e of tile t, channels c0.., lives at e * stride + t * cin + c0.
    let stride = position_stride(tiles, cin);
    assert!(v_out.len() >= 16 * stride, "winograd: V too short");
    let out = v_out.as_mut_ptr();
    for t in 0..tiles {
        let patch = b.patch(input, t);
        for c0 in (0..cin).step_by(L) {
            // Loops, not closures: a closure does not inherit the target feature, so the
            // intrinsics inside it would not be inlined.
            let mut d = [_mm512_setzero_ps(); 16];
            for (dp, px) in d.iter_mut().zip(&patch) {
                if let Some(px) = px {
                    // SAFETY: the pixel's slice holds `cin` values and c0 + 16 <= cin.
                    *dp = unsafe { _mm512_loadu_ps(px.as_ptr().add(c0)) };
                }
            }
            let v = input_transform(&d);
            for (e, ve) in v.iter().enumerate() {
                // SAFETY: e * stride + t * cin + c0 + 16 <= 16 * stride <= v_out.len()
                // (asserted above), as e < 16, t < tiles, c0 + 16 <= cin and
                // tiles * cin <= stride.
                unsafe { _mm512_storeu_ps(out.add(e * stride + t * cin + c0), *ve) };
            }
        }
    }
}

/// [`super::transform_outputs`] for `cout % 16 == 0`.
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
    let Block {
        s,
        img,
        ty0,
        tiles,
        tiles_w,
    } = *b;
    let cout = s.cout;
    debug_assert_eq!(cout % L, 0);
    let first_pixel = (img * s.oh + 2 * ty0) * s.ow;
    let stride = position_stride(tiles, cout);
    assert!(m.len() >= 16 * stride, "winograd: M too short");
    let (lo, hi) = (epilogue.activation.bounds()).unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for t in 0..tiles {
        let (ty, tx) = (ty0 + t / tiles_w, t % tiles_w);
        for c0 in (0..cout).step_by(L) {
            let mut mt = [_mm512_setzero_ps(); 16];
            for (e, me) in mt.iter_mut().enumerate() {
                // SAFETY: e * stride + t * cout + c0 + 16 <= 16 * stride <= m.len()
                // (asserted above), as e < 16, t < tiles, c0 + 16 <= cout and
                // tiles * cout <= stride.
                *me = unsafe { _mm512_loadu_ps(m.as_ptr().add(e * stride + t * cout + c0)) };
            }
            let y = output_transform(&mt);
            let bias = match epilogue.bias {
                Some(b) => load16(&b[c0..c0 + L]),
                None => _mm512_setzero_ps(),
            };
            for (q, &yq) in y.iter().enumerate() {
                let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                if oy >= s.oh || ox >= s.ow {
                    continue;
                }
                let local = (oy - 2 * ty0) * s.ow + ox;
                // Bias always added, zeros without one, as the generic code does.
                let mut v = _mm512_add_ps(yq, bias);
                if let Some(r) = epilogue.add {
                    let at = (first_pixel + local) * r.ld + c0;
                    v = _mm512_add_ps(v, load16(&r.data[at..at + L]));
                }
                v = match epilogue.activation {
                    Activation::None => v,
                    Activation::LeakyRelu(_) => {
                        let mut lanes = [0.0f32; L];
                        // SAFETY: `lanes` holds 16 values.
                        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                        lanes = lanes.map(|x| epilogue.activation.apply(x));
                        load16(&lanes)
                    }
                    _ => _mm512_min_ps(hi, _mm512_max_ps(lo, v)),
                };
                let dst = &mut out[local * s.ldc + c0..local * s.ldc + c0 + L];
                // SAFETY: `dst` holds 16 values.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) };
            }
        }
    }
}

/// 16 values from a slice of exactly 16.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(src: &[f32]) -> __m512 {
    assert_eq!(src.len(), L);
    // SAFETY: `src` holds 16 values.
    unsafe { _mm512_loadu_ps(src.as_ptr()) }
}

/// `B^T d B` as [`super::input_transform`] computes it, a register per position.
#[inline]
#[target_feature(enable = "avx512f")]
fn input_transform(d: &[__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (d0, d1, d2, d3) = (d[c], d[4 + c], d[8 + c], d[12 + c]);
        t[c] = _mm512_sub_ps(d0, d2);
        t[4 + c] = _mm512_add_ps(d1, d2);
        t[8 + c] = _mm512_sub_ps(d2, d1);
        t[12 + c] = _mm512_sub_ps(d1, d3);
    }
    let mut v = [_mm512_setzero_ps(); 16];
    for r in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
        v[4 * r] = _mm512_sub_ps(t0, t2);
        v[4 * r + 1] = _mm512_add_ps(t1, t2);
        v[4 * r + 2] = _mm512_sub_ps(t2, t1);
        v[4 * r + 3] = _mm512_sub_ps(t1, t3);
    }
    v
}

/// `A^T m A` as [`super::output_transform`] computes it: the 2x2 outputs, row-major.
#[inline]
#[target_feature(enable = "avx512f")]
fn output_transform(m: &[__m512; 16]) -> [__m512; 4] {
    let mut t = [_mm512_setzero_ps(); 8];
    for c in 0..4 {
        let (m0, m1, m2, m3) = (m[c], m[4 + c], m[8 + c], m[12 + c]);
        t[c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        t[4 + c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
    }
    let mut y = [_mm512_setzero_ps(); 4];
    for r in 0..2 {
        let (t0, t1, t2, t3) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
        y[2 * r] = _mm512_add_ps(_mm512_add_ps(t0, t1), t2);
        y[2 * r + 1] = _mm512_sub_ps(_mm512_sub_ps(t1, t2), t3);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::super::{Block, Shape, transform_inputs, transform_outputs};
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
    /// partial tiles at the image's edges, with every epilogue (NaN and infinities included).
    #[test]
    fn avx512_transforms_match_the_lane_arrays_bit_for_bit() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: nothing to compare");
            return;
        }
        let (n, h, w, c) = (2, 5, 7, 32);
        let s = Shape {
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
        let (tiles_w, ty0) = (w.div_ceil(2), 1);
        let tiles = (h.div_ceil(2) - ty0) * tiles_w;
        let block = Block {
            s: &s,
            img: 1,
            ty0,
            tiles,
            tiles_w,
        };
        let input = values(1, n * h * w * c);
        let len = 16 * position_stride(tiles, c);
        let (mut want, mut got) = (vec![0.0f32; len], vec![0.0f32; len]);
        transform_inputs::<16>(&block, &input, &mut want);
        // SAFETY: AVX-512F was detected above.
        unsafe { super::transform_inputs(&block, &input, &mut got) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "input transform");

        let m = values(2, 16 * position_stride(tiles, c));
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
            let len = (h - 2 * ty0) * w * c;
            let (mut want, mut got) = (vec![9.0f32; len], vec![9.0f32; len]);
            transform_outputs::<16>(&block, &m, &epilogue, &mut want);
            // SAFETY: AVX-512F was detected above.
            unsafe { super::transform_outputs(&block, &m, &epilogue, &mut got) };
            assert_eq!(bits(&got), bits(&want), "output transform, {activation:?}");
        }
    }
}
