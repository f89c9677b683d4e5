//! `lrn`: local response normalisation across channels, as `tf.nn.local_response_normalization`
//! computes it on an NHWC tensor:
//!
//! `out[.., c] = x[.., c] / (bias + alpha * sum_{j = c-r}^{c+r} x[.., j]^2) ^ beta`
//!
//! with the window clipped at the first and last channel. Unlike Caffe's LRN, `alpha` is not
//! divided by the window size. The sum and the power are evaluated in f64 and rounded once.

use super::super::{alloc, f32_data, finish};
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// `lrn(x; depth_radius, bias, alpha, beta)` over the last axis of the rank-4 `x`.
pub(crate) fn lrn(
    x: &Tensor,
    depth_radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "x")?;
    let dims = x.dims();
    if dims.len() != 4 {
        return Err(format!("x must have rank 4 (NHWC), got {}", fmt_dims(dims)));
    }
    let c = dims[3];
    let mut out = alloc(xs.len(), 0.0)?;
    if c == 0 {
        return finish(dims, out);
    }
    for (row, out_row) in xs.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        for (ch, o) in out_row.iter_mut().enumerate() {
            // A direct sum over the clipped window (not prefix sums, whose differences lose
            // small windows next to a huge value); the clipping bounds the work by `c`.
            let lo = ch.saturating_sub(depth_radius);
            let hi = ch.saturating_add(depth_radius).min(c - 1);
            let sum: f64 = row[lo..=hi].iter().map(|&v| v as f64 * v as f64).sum();
            let denom = (bias as f64 + alpha as f64 * sum).powf(beta as f64);
            *o = (row[ch] as f64 / denom) as f32;
        }
    }
    finish(dims, out)
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{assert_close, noise, t};
    use super::*;

    #[test]
    fn by_hand_radius_1() {
        // One pixel, channels [1, 2, 3, 4], r = 1, bias 1, alpha 0.5, beta 1:
        // sums 1+4=5, 1+4+9=14, 4+9+16=29, 9+16=25.
        let x = t(&[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let r = lrn(&x, 1, 1.0, 0.5, 1.0).unwrap();
        let want = [1.0 / 3.5, 2.0 / 8.0, 3.0 / 15.5, 4.0 / 13.5];
        assert_close(&r, &[1, 1, 1, 4], &want, 1e-7);
        // beta 0.5 takes the square root; radius 0 uses the channel alone.
        let r = lrn(&x, 0, 2.0, 1.0, 0.5).unwrap();
        let want = [
            1.0 / 3f32.sqrt(),
            2.0 / 6f32.sqrt(),
            3.0 / 11f32.sqrt(),
            4.0 / 18f32.sqrt(),
        ];
        assert_close(&r, &[1, 1, 1, 4], &want, 1e-6);
    }

    #[test]
    fn matches_a_direct_window_sum() {
        let x = noise(&[2, 3, 2, 7], 5);
        let v = x.as_f32().unwrap();
        for radius in [0usize, 1, 2, 5, 1 << 40] {
            let r = lrn(&x, radius, 0.7, 0.3, 0.75).unwrap();
            let want: Vec<f32> = (0..v.len())
                .map(|i| {
                    let (base, ch) = (i - i % 7, i % 7);
                    let mut s = 0.0f64;
                    for j in 0..7 {
                        if j + radius >= ch && j <= ch + radius.min(7) {
                            s += (v[base + j] as f64).powi(2);
                        }
                    }
                    (v[i] as f64 / (0.7 + 0.3 * s).powf(0.75)) as f32
                })
                .collect();
            assert_close(&r, &[2, 3, 2, 7], &want, 1e-6);
        }
    }

    #[test]
    fn errors_and_empty() {
        assert!(lrn(&t(&[2, 2], &[1.0; 4]), 1, 1.0, 1.0, 0.5).is_err());
        let ints = Tensor::new(&[1, 1, 1, 1], crate::tensor::Data::I32(vec![1])).unwrap();
        assert!(lrn(&ints, 1, 1.0, 1.0, 0.5).unwrap_err().contains("f32"));
        let r = lrn(&t(&[1, 2, 2, 0], &[]), 3, 1.0, 1.0, 0.5).unwrap();
        assert_eq!(r.dims(), [1, 2, 2, 0]);
    }
}
