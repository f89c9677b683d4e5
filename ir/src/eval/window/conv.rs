//! `conv2d` and `depthwise_conv2d`: cross-correlation as TensorFlow computes it, with strides,
//! SAME / VALID / explicit padding (padded cells are zero), dilations, and NHWC or NCHW images.
//! conv2d may be grouped (TensorFlow 2): an image with `groups * cin` channels is split into
//! `groups` consecutive channel blocks, and output channel block `g` (of `cout / groups`) reads
//! only input block `g`. Filters are always HWIO: `[kh, kw, cin, cout]` for conv2d, `[kh, kw, cin, multiplier]` for
//! depthwise, whose output channel `c * multiplier + m` convolves input channel `c` with
//! filter `[.., .., c, m]`. Sums accumulate in f64.

use super::super::{alloc, f32_data, finish, numel};
use super::{Image, spatial};
use crate::op::ConvAttrs;
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// The filter's `[kh, kw, cin, last]`, checking rank and that `cin` matches the image.
fn filter_dims(x: &Tensor, w: &Tensor, img: &Image, what: &str) -> Result<[usize; 4], String> {
    let &[kh, kw, ci, last] = w.dims() else {
        return Err(format!(
            "filter must be rank 4 ({what}), got {}",
            fmt_dims(w.dims())
        ));
    };
    if ci != img.c {
        return Err(format!(
            "input {} ({}) has {} channels but filter {} expects {ci}",
            fmt_dims(x.dims()),
            img.format.name(),
            img.c,
            fmt_dims(w.dims())
        ));
    }
    Ok([kh, kw, ci, last])
}

/// The number of groups of a conv2d whose image has `img.c` channels and whose filter reads
/// `ci` per group and makes `co` outputs: `img.c / ci`, which must divide `co` (TensorFlow 2's
/// grouped convolution). An empty filter depth needs an image without channels (one group).
fn conv_groups(x: &Tensor, w: &Tensor, img: &Image, ci: usize, co: usize) -> Result<usize, String> {
    let bad = |why: String| {
        format!(
            "input {} ({}) has {} channels, filter {} reads {ci} per group: {why}",
            fmt_dims(x.dims()),
            img.format.name(),
            img.c,
            fmt_dims(w.dims())
        )
    };
    if ci == 0 {
        return match img.c {
            0 => Ok(1),
            _ => Err(bad(
                "a filter with 0 input channels needs an input with 0".into()
            )),
        };
    }
    if img.c == 0 || !img.c.is_multiple_of(ci) {
        return Err(bad(format!("{} is not a positive multiple of {ci}", img.c)));
    }
    let groups = img.c / ci;
    if !co.is_multiple_of(groups) {
        return Err(bad(format!(
            "{co} output channels do not split into {groups} groups"
        )));
    }
    Ok(groups)
}

/// `conv2d(x, w)`: `out[n,y,x,o] = sum_{ky,kx,c} in[n, y*s+ky*d-pt, x*s+kx*d-pl, g*cin+c] *
/// w[ky,kx,c,o]`, where `g = o / (cout / groups)` is the output channel's group (always 0
/// without grouping).
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, attrs: &ConvAttrs) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let ws = f32_data(w, "filter")?;
    let img = Image::of(x.dims(), attrs.data_format, "input")?;
    let &[kh, kw, ci, co] = w.dims() else {
        return Err(format!(
            "filter must be rank 4 (HWIO [kh,kw,cin,cout]), got {}",
            fmt_dims(w.dims())
        ));
    };
    let groups = conv_groups(x, w, &img, ci, co)?;
    let (ay, ax) = spatial(
        &img,
        [kh, kw],
        attrs.strides,
        attrs.dilations,
        attrs.padding,
    )?;
    let out_img = Image {
        h: ay.out,
        w: ax.out,
        c: co,
        ..img
    };
    let out_dims = out_img.dims();
    let mut out = alloc(numel(&out_dims)?, 0.0)?;
    if out.is_empty() || ws.is_empty() {
        // Empty sums are 0; returning early also avoids looping over the extents of an empty
        // operand, which can be huge.
        return finish(&out_dims, out);
    }
    // co > 0 here (the output is not empty), so every group has at least one channel.
    let per_group = co / groups;
    for n in 0..img.n {
        for oy in 0..ay.out {
            for ox in 0..ax.out {
                for oc in 0..co {
                    let c0 = (oc / per_group) * ci;
                    let mut acc = 0.0f64;
                    for ky in 0..kh {
                        let Some(iy) = ay.src(oy, ky) else { continue };
                        for kx in 0..kw {
                            let Some(ix) = ax.src(ox, kx) else { continue };
                            for c in 0..ci {
                                let v = xs[img.at(n, iy, ix, c0 + c)];
                                let f = ws[((ky * kw + kx) * ci + c) * co + oc];
                                acc += v as f64 * f as f64;
                            }
                        }
                    }
                    out[out_img.at(n, oy, ox, oc)] = acc as f32;
                }
            }
        }
    }
    finish(&out_dims, out)
}

/// `depthwise_conv2d(x, w)`:
/// `out[n,y,x,c*mult+m] = sum_{ky,kx} in[n, y*s+ky*d-pt, x*s+kx*d-pl, c] * w[ky,kx,c,m]`.
pub(crate) fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let ws = f32_data(w, "filter")?;
    let img = Image::of(x.dims(), attrs.data_format, "input")?;
    let [kh, kw, ci, mult] = filter_dims(x, w, &img, "[kh,kw,cin,multiplier]")?;
    let (ay, ax) = spatial(
        &img,
        [kh, kw],
        attrs.strides,
        attrs.dilations,
        attrs.padding,
    )?;
    let co = ci
        .checked_mul(mult)
        .ok_or_else(|| format!("output channels {ci} x {mult} overflow"))?;
    let out_img = Image {
        h: ay.out,
        w: ax.out,
        c: co,
        ..img
    };
    let out_dims = out_img.dims();
    let mut out = alloc(numel(&out_dims)?, 0.0)?;
    if out.is_empty() || ws.is_empty() {
        // Empty sums are 0; returning early also avoids looping over the extents of an empty
        // operand, which can be huge.
        return finish(&out_dims, out);
    }
    for n in 0..img.n {
        for oy in 0..ay.out {
            for ox in 0..ax.out {
                for c in 0..ci {
                    for m in 0..mult {
                        let mut acc = 0.0f64;
                        for ky in 0..kh {
                            let Some(iy) = ay.src(oy, ky) else { continue };
                            for kx in 0..kw {
                                let Some(ix) = ax.src(ox, kx) else { continue };
                                let v = xs[img.at(n, iy, ix, c)];
                                let f = ws[((ky * kw + kx) * ci + c) * mult + m];
                                acc += v as f64 * f as f64;
                            }
                        }
                        out[out_img.at(n, oy, ox, c * mult + m)] = acc as f32;
                    }
                }
            }
        }
    }
    finish(&out_dims, out)
}

#[cfg(test)]
mod tests {
    use super::super::super::movement::transpose;
    use super::super::super::testutil::{assert_close, iota, noise, t};
    use super::*;
    use crate::op::{DataFormat, Padding};
    use crate::tensor::Data;

    #[test]
    fn same_stride2_on_3x3_by_hand() {
        // x = [[1,2,3],[4,5,6],[7,8,9]], w = [[1,2],[3,4]]. SAME, stride 2: out 2x2, total
        // padding 1 per axis, all of it after (bottom/right).
        let x = iota(&[1, 3, 3, 1]);
        let w = t(&[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
        let r = conv2d(&x, &w, &ConvAttrs::same().strides(2, 2)).unwrap();
        // o00 = 1+4+12+20; o01 = 3*1 + 6*3; o10 = 7*1 + 8*2; o11 = 9*1.
        assert_close(&r, &[1, 2, 2, 1], &[37.0, 21.0, 23.0, 9.0], 0.0);
    }

    #[test]
    fn same_stride1_pads_one_before_two_after() {
        // Width 5, kernel 4 of ones: total 3, before 1, after 2.
        let x = iota(&[1, 1, 5, 1]);
        let w = t(&[1, 4, 1, 1], &[1.0; 4]);
        let r = conv2d(&x, &w, &ConvAttrs::same()).unwrap();
        assert_close(&r, &[1, 1, 5, 1], &[6.0, 10.0, 14.0, 12.0, 9.0], 0.0);
    }

    #[test]
    fn valid_dilated_and_explicit() {
        let x = iota(&[1, 1, 5, 1]);
        let w = t(&[1, 2, 1, 1], &[1.0, 10.0]);
        // Dilation 2: out[j] = x[j] + 10 * x[j+2].
        let r = conv2d(&x, &w, &ConvAttrs::valid().dilations(1, 2)).unwrap();
        assert_close(&r, &[1, 1, 3, 1], &[31.0, 42.0, 53.0], 0.0);
        // VALID stride 2: out[j] = x[2j] + 10 x[2j+1].
        let r = conv2d(&x, &w, &ConvAttrs::valid().strides(1, 2)).unwrap();
        assert_close(&r, &[1, 1, 2, 1], &[21.0, 43.0], 0.0);
        // Explicit [[0,0],[1,2]] on [1,2,3]: padded [0,1,2,3,0,0], kernel [1,1].
        let x3 = iota(&[1, 1, 3, 1]);
        let ones = t(&[1, 2, 1, 1], &[1.0, 1.0]);
        let r = conv2d(
            &x3,
            &ones,
            &ConvAttrs::with_padding(Padding::Explicit([[0, 0], [1, 2]])),
        )
        .unwrap();
        assert_close(&r, &[1, 1, 5, 1], &[1.0, 3.0, 5.0, 3.0, 0.0], 0.0);
        // Explicit top/bottom padding acts on height.
        let xc = iota(&[1, 2, 1, 1]);
        let col = t(&[2, 1, 1, 1], &[1.0, 1.0]);
        let r = conv2d(
            &xc,
            &col,
            &ConvAttrs::with_padding(Padding::Explicit([[1, 0], [0, 0]])),
        )
        .unwrap();
        assert_close(&r, &[1, 2, 1, 1], &[1.0, 3.0], 0.0);
    }

    #[test]
    fn channels_mix_through_the_filter() {
        // 1x1 conv, cin 2 -> cout 3: a per-pixel matrix product with w[c, o].
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[1, 1, 2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 10.0]);
        let r = conv2d(&x, &w, &ConvAttrs::valid()).unwrap();
        assert_close(&r, &[1, 1, 2, 3], &[1.0, 2.0, 21.0, 3.0, 4.0, 43.0], 0.0);
    }

    #[test]
    fn conv_matches_an_independent_padded_computation() {
        // Explicitly zero-pad, then run the plain VALID formula written out here.
        let (h, wd, ci, co, k) = (5, 4, 2, 3, 3);
        let x = noise(&[2, h, wd, ci], 3);
        let w = noise(&[k, k, ci, co], 4);
        let r = conv2d(&x, &w, &ConvAttrs::same().strides(2, 2)).unwrap();
        // SAME stride 2: out 3x2; height total (3-1)*2+3-5 = 2 -> top 1; width total
        // (2-1)*2+3-4 = 1 -> left 0.
        let (oh, ow, top, left) = (3, 2, 1i64, 0i64);
        let (xv, wv) = (x.as_f32().unwrap(), w.as_f32().unwrap());
        let mut want = vec![];
        for n in 0..2 {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..co {
                        let mut s = 0.0f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * 2 + ky) as i64 - top;
                                let ix = (ox * 2 + kx) as i64 - left;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                for c in 0..ci {
                                    let xi = ((n * h + iy as usize) * wd + ix as usize) * ci + c;
                                    s += xv[xi] as f64
                                        * wv[((ky * k + kx) * ci + c) * co + o] as f64;
                                }
                            }
                        }
                        want.push(s as f32);
                    }
                }
            }
        }
        assert_close(&r, &[2, oh, ow, co], &want, 1e-6);
    }

    #[test]
    fn depthwise_multiplier_2_orders_channels_c_times_mult_plus_m() {
        let x = t(&[1, 1, 1, 2], &[2.0, 3.0]);
        // w[0,0,c,m]: c0 -> [10, 20], c1 -> [100, 1000].
        let w = t(&[1, 1, 2, 2], &[10.0, 20.0, 100.0, 1000.0]);
        let r = depthwise_conv2d(&x, &w, &ConvAttrs::valid()).unwrap();
        assert_close(&r, &[1, 1, 1, 4], &[20.0, 40.0, 300.0, 3000.0], 0.0);
    }

    #[test]
    fn depthwise_spatial_same_stride2() {
        // Channel 0 is 1..9, channel 1 is 10x that; kernel [[1,2],[3,4]] with multiplier 1.
        let c0 = iota(&[9]).into_f32().unwrap();
        let mut v = vec![];
        for &a in &c0 {
            v.extend([a, 10.0 * a]);
        }
        let x = t(&[1, 3, 3, 2], &v);
        let w = t(&[2, 2, 2, 1], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        let r = depthwise_conv2d(&x, &w, &ConvAttrs::same().strides(2, 2)).unwrap();
        let want = [37.0, 370.0, 21.0, 210.0, 23.0, 230.0, 9.0, 90.0];
        assert_close(&r, &[1, 2, 2, 2], &want, 0.0);
    }

    #[test]
    fn nchw_equals_transposed_nhwc() {
        let x = noise(&[2, 6, 5, 3], 7);
        let x_nchw = transpose(&x, &[0, 3, 1, 2]).unwrap();
        let cases = [
            ConvAttrs::same().strides(2, 2),
            ConvAttrs::valid().dilations(2, 1),
            ConvAttrs::with_padding(Padding::Explicit([[1, 0], [2, 1]])).strides(1, 2),
        ];
        for attrs in cases {
            let nchw = attrs.format(DataFormat::Nchw);
            let w = noise(&[3, 2, 3, 4], 8);
            let a = conv2d(&x, &w, &attrs).unwrap();
            let b = conv2d(&x_nchw, &w, &nchw).unwrap();
            let a_t = transpose(&a, &[0, 3, 1, 2]).unwrap();
            assert_eq!(a_t, b, "conv2d {attrs:?}");
            let wd = noise(&[3, 2, 3, 2], 9);
            let a = depthwise_conv2d(&x, &wd, &attrs).unwrap();
            let b = depthwise_conv2d(&x_nchw, &wd, &nchw).unwrap();
            assert_eq!(
                transpose(&a, &[0, 3, 1, 2]).unwrap(),
                b,
                "depthwise {attrs:?}"
            );
        }
    }

    #[test]
    fn grouped_by_hand() {
        // 1x1 conv, 4 input channels in 2 groups of 2, one output per group. w[0,0,c,o] is
        // [[1, 100], [10, 1000]]: o0 = 1*x0 + 10*x1 = 21, o1 = 100*x2 + 1000*x3 = 4300.
        let x = t(&[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[1, 1, 2, 2], &[1.0, 100.0, 10.0, 1000.0]);
        let r = conv2d(&x, &w, &ConvAttrs::valid()).unwrap();
        assert_close(&r, &[1, 1, 1, 2], &[21.0, 4300.0], 0.0);
    }

    #[test]
    fn grouped_equals_per_group_convs_concatenated() {
        use super::super::super::movement::{concat, slice};
        let (ci, groups, co) = (3, 4, 8);
        let x = noise(&[2, 7, 6, ci * groups], 21);
        let w = noise(&[3, 2, ci, co], 22);
        let per = co / groups;
        for attrs in [
            ConvAttrs::same().strides(2, 2),
            ConvAttrs::valid().dilations(2, 1),
            ConvAttrs::with_padding(Padding::Explicit([[1, 0], [0, 2]])),
        ] {
            let r = conv2d(&x, &w, &attrs).unwrap();
            let parts: Vec<Tensor> = (0..groups)
                .map(|g| {
                    let xg = slice(&x, &[0, 0, 0, g * ci], &[-1, -1, -1, ci as i64]).unwrap();
                    let wg = slice(&w, &[0, 0, 0, g * per], &[-1, -1, -1, per as i64]).unwrap();
                    conv2d(&xg, &wg, &attrs).unwrap()
                })
                .collect();
            let refs: Vec<&Tensor> = parts.iter().collect();
            assert_eq!(r, concat(&refs, 3).unwrap(), "{attrs:?}");
            // NCHW agrees with NHWC.
            let nchw = attrs.format(DataFormat::Nchw);
            let b = conv2d(&transpose(&x, &[0, 3, 1, 2]).unwrap(), &w, &nchw).unwrap();
            assert_eq!(transpose(&r, &[0, 3, 1, 2]).unwrap(), b);
        }
        // Channels that are not a multiple, or outputs that do not split, are errors.
        let e = conv2d(&noise(&[1, 3, 3, 5], 1), &w, &ConvAttrs::same()).unwrap_err();
        assert!(e.contains("not a positive multiple of 3"), "{e}");
        let e = conv2d(&noise(&[1, 3, 3, 9], 1), &w, &ConvAttrs::same()).unwrap_err();
        assert!(
            e.contains("8 output channels do not split into 3 groups"),
            "{e}"
        );
    }

    #[test]
    fn bad_operands_are_errors() {
        let x = iota(&[1, 3, 3, 2]);
        let err = conv2d(&x, &iota(&[2, 2, 1, 1]), &ConvAttrs::same()).unwrap_err();
        assert!(
            err.contains("[1,3,3,2]") && err.contains("[2,2,1,1]"),
            "{err}"
        );
        assert!(conv2d(&iota(&[3, 3, 2]), &iota(&[2, 2, 2, 1]), &ConvAttrs::same()).is_err());
        assert!(conv2d(&x, &iota(&[2, 2, 2]), &ConvAttrs::same()).is_err());
        // Kernel larger than the input under VALID.
        assert!(conv2d(&x, &iota(&[4, 1, 2, 1]), &ConvAttrs::valid()).is_err());
        assert!(conv2d(&x, &iota(&[1, 1, 2, 1]), &ConvAttrs::same().strides(0, 1)).is_err());
        assert!(depthwise_conv2d(&x, &iota(&[1, 1, 3, 1]), &ConvAttrs::same()).is_err());
        let ints = Tensor::new(&[1, 1, 1, 1], Data::I32(vec![1])).unwrap();
        assert!(conv2d(&ints, &iota(&[1, 1, 1, 1]), &ConvAttrs::same()).is_err());
        // NCHW reads channels from axis 1: [1,3,3,2] has 3 channels there.
        let nchw = ConvAttrs::same().format(DataFormat::Nchw);
        assert!(conv2d(&x, &iota(&[1, 1, 3, 1]), &nchw).is_ok());
        // An empty filter (cin 0) gives zeros without visiting its huge spatial extent.
        let empty_in = t(&[1, 2, 2, 0], &[]);
        let huge = Tensor::new(&[1 << 30, 1 << 30, 0, 1], Data::F32(vec![])).unwrap();
        let r = conv2d(&empty_in, &huge, &ConvAttrs::same()).unwrap();
        assert_close(&r, &[1, 2, 2, 1], &[0.0; 4], 0.0);
    }
}
