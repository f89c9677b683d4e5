//! `batch_norm` in its inference form:
//! `y = (x - mean) * scale / sqrt(variance + epsilon) + offset`, per channel, with the channel
//! axis chosen by the data format like `bias_add` (last for NHWC, axis 1 for NCHW).
//! Evaluated in f64 and rounded once.

use super::super::{channel_axis, f32_data, finish, prod};
use crate::op::DataFormat;
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// `batch_norm(x, scale, offset, mean, variance)`; `params` are in that order after `x`.
pub(crate) fn batch_norm(
    x: &Tensor,
    params: [&Tensor; 4],
    epsilon: f32,
    format: DataFormat,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let axis = channel_axis(x.dims(), format, "input")?;
    let c = x.dims()[axis];
    let names = ["scale", "offset", "mean", "variance"];
    let mut p: [&[f32]; 4] = [&[]; 4];
    for ((slot, t), name) in p.iter_mut().zip(params).zip(names) {
        *slot = f32_data(t, name)?;
        if t.dims() != [c] {
            return Err(format!(
                "{name} must be [{c}] to match the channel axis {axis} of input {} ({}), got {}",
                fmt_dims(x.dims()),
                format.name(),
                fmt_dims(t.dims())
            ));
        }
    }
    let [scale, offset, mean, variance] = p;
    // Non-empty when the loop body runs, so the product is exact.
    let inner = prod(&x.dims()[axis + 1..]);
    let values = xs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner) % c;
            let inv = 1.0 / (variance[ch] as f64 + epsilon as f64).sqrt();
            ((v as f64 - mean[ch] as f64) * scale[ch] as f64 * inv + offset[ch] as f64) as f32
        })
        .collect();
    finish(x.dims(), values)
}

#[cfg(test)]
mod tests {
    use super::super::super::movement::transpose;
    use super::super::super::testutil::{assert_close, noise, t};
    use super::*;

    #[test]
    fn by_hand_nhwc_and_nchw() {
        // Channel 0: mean 1, var 4 - eps, scale 2, offset 10 -> (x-1)*2/2 + 10 = x + 9.
        // Channel 1: mean 0, var 1 - eps, scale 1, offset 0 -> identity.
        let eps = 0.001f32;
        let scale = t(&[2], &[2.0, 1.0]);
        let offset = t(&[2], &[10.0, 0.0]);
        let mean = t(&[2], &[1.0, 0.0]);
        let var = t(&[2], &[4.0 - eps, 1.0 - eps]);
        let x = t(&[1, 1, 2, 2], &[1.0, 5.0, 3.0, -2.0]);
        let r = batch_norm(&x, [&scale, &offset, &mean, &var], eps, DataFormat::Nhwc).unwrap();
        assert_close(&r, &[1, 1, 2, 2], &[10.0, 5.0, 12.0, -2.0], 1e-6);
        // NCHW: channel axis 1, so the first two elements are channel 0.
        let x2 = t(&[1, 2, 1, 2], &[1.0, 5.0, 3.0, -2.0]);
        let r = batch_norm(&x2, [&scale, &offset, &mean, &var], eps, DataFormat::Nchw).unwrap();
        assert_close(&r, &[1, 2, 1, 2], &[10.0, 14.0, 3.0, -2.0], 1e-6);
    }

    #[test]
    fn nchw_equals_transposed_nhwc() {
        let x = noise(&[2, 3, 4, 5], 21);
        let ps: Vec<Tensor> = (0..4).map(|i| noise(&[5], 30 + i)).collect();
        // Variance must be positive.
        let var = t(
            &[5],
            &ps[3]
                .as_f32()
                .unwrap()
                .iter()
                .map(|v| v.abs() + 0.5)
                .collect::<Vec<_>>(),
        );
        let params = [&ps[0], &ps[1], &ps[2], &var];
        let a = batch_norm(&x, params, 1e-3, DataFormat::Nhwc).unwrap();
        let x_nchw = transpose(&x, &[0, 3, 1, 2]).unwrap();
        let b = batch_norm(&x_nchw, params, 1e-3, DataFormat::Nchw).unwrap();
        assert_eq!(transpose(&a, &[0, 3, 1, 2]).unwrap(), b);
    }

    #[test]
    fn errors_name_shapes() {
        let x = noise(&[1, 2, 2, 3], 1);
        let ok = t(&[3], &[1.0; 3]);
        let bad = t(&[2], &[1.0; 2]);
        let err = batch_norm(&x, [&ok, &ok, &bad, &ok], 1e-3, DataFormat::Nhwc).unwrap_err();
        assert!(
            err.contains("mean") && err.contains("[2]") && err.contains("[1,2,2,3]"),
            "{err}"
        );
        // NCHW reads 2 channels from axis 1.
        assert!(batch_norm(&x, [&ok, &ok, &ok, &ok], 1e-3, DataFormat::Nchw).is_err());
        assert!(
            batch_norm(
                &Tensor::scalar(1.0),
                [&ok, &ok, &ok, &ok],
                1e-3,
                DataFormat::Nhwc
            )
            .is_err()
        );
    }
}
