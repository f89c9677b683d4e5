//! `max_pool` and `avg_pool` over NHWC or NCHW images, with TensorFlow's window geometry.
//!
//! Padded cells never take part: a max ignores them (so an all-negative border stays
//! negative) and an average divides by the number of unpadded cells of each window. A window
//! that covers only padding (possible with explicit padding at least the kernel size) is an
//! error rather than an invented value. NaN in a window makes its max NaN, like `maximum`.

use super::super::{alloc, f32_data, finish, nan_max, numel};
use super::{Image, spatial};
use crate::op::PoolAttrs;
use crate::tensor::Tensor;

/// Visits every window: `reduce(values of its unpadded cells)` gives each output element.
fn pool(
    x: &Tensor,
    attrs: &PoolAttrs,
    reduce: impl Fn(&mut dyn Iterator<Item = f32>) -> Option<f32>,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let img = Image::of(x.dims(), attrs.data_format, "input")?;
    let (ay, ax) = spatial(&img, attrs.ksize, attrs.strides, [1, 1], attrs.padding)?;
    let out_img = Image {
        h: ay.out,
        w: ax.out,
        ..img
    };
    let out_dims = out_img.dims();
    let mut out = alloc(numel(&out_dims)?, 0.0)?;
    let [kh, kw] = attrs.ksize;
    for n in 0..img.n {
        for oy in 0..ay.out {
            for ox in 0..ax.out {
                for c in 0..img.c {
                    let mut cells = ay
                        .taps(oy, kh)
                        .filter_map(|ky| ay.src(oy, ky))
                        .flat_map(|iy| {
                            ax.taps(ox, kw)
                                .filter_map(move |kx| ax.src(ox, kx))
                                .map(move |ix| (iy, ix))
                        })
                        .map(|(iy, ix)| xs[img.at(n, iy, ix, c)]);
                    out[out_img.at(n, oy, ox, c)] = reduce(&mut cells).ok_or_else(|| {
                        format!(
                            "the pooling window at output (y={oy}, x={ox}) covers only padding \
                             (input {}x{}, padding {:?})",
                            img.h, img.w, attrs.padding
                        )
                    })?;
                }
            }
        }
    }
    finish(&out_dims, out)
}

/// `max_pool(x)`: the maximum of each window's unpadded cells.
pub(crate) fn max_pool(x: &Tensor, attrs: &PoolAttrs) -> Result<Tensor, String> {
    pool(x, attrs, |cells| cells.reduce(nan_max))
}

/// `avg_pool(x)`: the mean of each window's unpadded cells (f64 sum / valid count).
pub(crate) fn avg_pool(x: &Tensor, attrs: &PoolAttrs) -> Result<Tensor, String> {
    pool(x, attrs, |cells| {
        let (sum, count) = cells.fold((0.0f64, 0usize), |(s, k), v| (s + v as f64, k + 1));
        (count > 0).then(|| (sum / count as f64) as f32)
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::movement::transpose;
    use super::super::super::testutil::{assert_close, iota, noise, t};
    use super::*;
    use crate::op::{DataFormat, Padding};

    #[test]
    fn avg_pool_same_divides_by_valid_cells() {
        // x = 1..9 in 3x3; 2x2 windows, stride 2, SAME: padding only at bottom/right.
        let x = iota(&[1, 3, 3, 1]);
        let r = avg_pool(&x, &PoolAttrs::new(2, 2, Padding::Same)).unwrap();
        // (1+2+4+5)/4, (3+6)/2, (7+8)/2, 9/1
        assert_close(&r, &[1, 2, 2, 1], &[3.0, 4.5, 7.5, 9.0], 0.0);
        // 3x3 stride 1 SAME: corners average 4 cells, edges 6, the centre 9.
        let r = avg_pool(&x, &PoolAttrs::new(3, 1, Padding::Same)).unwrap();
        let want = [3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0];
        assert_close(&r, &[1, 3, 3, 1], &want, 1e-7);
    }

    #[test]
    fn max_pool_ignores_padding() {
        // All values negative: counting padded zeros would give 0 at the border.
        let x = t(
            &[1, 3, 3, 1],
            &[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0],
        );
        let r = max_pool(&x, &PoolAttrs::new(2, 2, Padding::Same)).unwrap();
        assert_close(&r, &[1, 2, 2, 1], &[-1.0, -3.0, -7.0, -9.0], 0.0);
        let r = max_pool(&x, &PoolAttrs::new(3, 1, Padding::Same)).unwrap();
        let want = [-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -4.0, -4.0, -5.0];
        assert_close(&r, &[1, 3, 3, 1], &want, 0.0);
    }

    #[test]
    fn valid_and_explicit_padding() {
        let x = iota(&[1, 4, 4, 1]);
        let r = max_pool(&x, &PoolAttrs::new(2, 2, Padding::Valid)).unwrap();
        assert_close(&r, &[1, 2, 2, 1], &[6.0, 8.0, 14.0, 16.0], 0.0);
        let r = avg_pool(&x, &PoolAttrs::new(2, 2, Padding::Valid)).unwrap();
        assert_close(&r, &[1, 2, 2, 1], &[3.5, 5.5, 11.5, 13.5], 0.0);
        // Explicit: one padded row on top only; the first windows average 2 cells.
        let pad = Padding::Explicit([[1, 0], [0, 0]]);
        let attrs = PoolAttrs {
            ksize: [2, 2],
            strides: [2, 2],
            padding: pad,
            data_format: DataFormat::Nhwc,
        };
        let r = avg_pool(&x, &attrs).unwrap();
        // rows: (pad,row0) (row1,row2); out height (4+1-2)/2+1 = 2.
        assert_close(&r, &[1, 2, 2, 1], &[1.5, 3.5, 7.5, 9.5], 0.0);
        // Window of padding only.
        let all_pad = Padding::Explicit([[2, 0], [0, 0]]);
        let attrs = PoolAttrs {
            ksize: [2, 1],
            strides: [2, 1],
            padding: all_pad,
            data_format: DataFormat::Nhwc,
        };
        let err = max_pool(&x, &attrs).unwrap_err();
        assert!(err.contains("only padding"), "{err}");
    }

    #[test]
    fn channels_and_batches_pool_independently() {
        // Two channels: c1 = -c0. Max of c1 is minus the min of c0.
        let mut v = vec![];
        for i in 1..=8 {
            v.extend([i as f32, -(i as f32)]);
        }
        let x = t(&[2, 2, 2, 2], &v);
        let r = max_pool(&x, &PoolAttrs::new(2, 2, Padding::Valid)).unwrap();
        assert_close(&r, &[2, 1, 1, 2], &[4.0, -1.0, 8.0, -5.0], 0.0);
    }

    #[test]
    fn nan_propagates_through_max() {
        let x = t(&[1, 1, 2, 1], &[f32::NAN, 1.0]);
        let r = max_pool(&x, &PoolAttrs::new(1, 1, Padding::Valid)).unwrap();
        assert!(r.as_f32().unwrap()[0].is_nan());
        let attrs = PoolAttrs {
            ksize: [1, 2],
            strides: [1, 1],
            padding: Padding::Valid,
            data_format: DataFormat::Nhwc,
        };
        assert!(max_pool(&x, &attrs).unwrap().as_f32().unwrap()[0].is_nan());
    }

    #[test]
    fn nchw_equals_transposed_nhwc() {
        let x = noise(&[2, 5, 7, 3], 11);
        let x_nchw = transpose(&x, &[0, 3, 1, 2]).unwrap();
        for padding in [
            Padding::Same,
            Padding::Valid,
            Padding::Explicit([[1, 1], [0, 2]]),
        ] {
            let attrs = PoolAttrs {
                ksize: [3, 2],
                strides: [2, 3],
                padding,
                data_format: DataFormat::Nhwc,
            };
            let nchw = PoolAttrs {
                data_format: DataFormat::Nchw,
                ..attrs
            };
            for f in [max_pool, avg_pool] {
                let a = f(&x, &attrs).unwrap();
                let b = f(&x_nchw, &nchw).unwrap();
                assert_eq!(transpose(&a, &[0, 3, 1, 2]).unwrap(), b, "{attrs:?}");
            }
        }
    }

    #[test]
    fn huge_window_visits_only_real_cells() {
        // A window far larger than the image (SAME): every output averages the whole image.
        let x = iota(&[1, 3, 3, 1]);
        let r = avg_pool(&x, &PoolAttrs::new(1 << 40, 1, Padding::Same)).unwrap();
        assert_close(&r, &[1, 3, 3, 1], &[5.0; 9], 0.0);
    }

    #[test]
    fn bad_operands_are_errors() {
        assert!(max_pool(&iota(&[3, 3, 1]), &PoolAttrs::new(2, 1, Padding::Same)).is_err());
        assert!(avg_pool(&iota(&[1, 3, 3, 1]), &PoolAttrs::new(0, 1, Padding::Same)).is_err());
        assert!(avg_pool(&iota(&[1, 3, 3, 1]), &PoolAttrs::new(4, 1, Padding::Valid)).is_err());
        assert!(max_pool(&iota(&[1, 3, 3, 1]), &PoolAttrs::new(2, 0, Padding::Valid)).is_err());
    }
}
