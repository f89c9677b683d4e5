//! `conv2d_backprop_input` and `conv2d_backprop_filter`: the adjoints of `conv2d` in its input
//! and in its filter, as TensorFlow's Conv2DBackpropInput / Conv2DBackpropFilter compute them.
//!
//! Both walk the forward convolution's loops (the same [`spatial`] geometry, so SAME's odd
//! padding cell sits bottom/right exactly as in the forward op) and scatter each product of
//! the output gradient into the cell the forward op read it from; padded cells receive
//! nothing. Grouping is the forward op's: output channel `o` belongs to group
//! `o / (cout / groups)`, which reads input channels `g * cin ..`. Sums accumulate in f64.

use super::super::{alloc, f32_data, finish, numel};
use super::{Image, spatial};
use crate::op::ConvAttrs;
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// A shape attribute in `format` order whose batch may be `-1` (the gradient's batch).
pub(super) fn resolve_shape(
    name: &str,
    dims: [i64; 4],
    batch: usize,
) -> Result<[usize; 4], String> {
    let mut out = [0; 4];
    for (axis, (&d, o)) in dims.iter().zip(&mut out).enumerate() {
        *o = match d {
            -1 if axis == 0 => batch,
            d => usize::try_from(d).map_err(|_| {
                format!(
                    "{name} {dims:?}: dim {d} at axis {axis} is negative (only the batch may be -1)"
                )
            })?,
        };
    }
    Ok(out)
}

/// Groups of a convolution of an image with `c` channels and a filter reading `ci` channels
/// per group into `co` outputs (see [`crate::op::Op::Conv2d`]).
fn groups_of(c: usize, ci: usize, co: usize, shapes: &str) -> Result<usize, String> {
    if ci == 0 || c == 0 {
        return if c == ci {
            Ok(1)
        } else {
            Err(format!("{shapes}: channel counts differ"))
        };
    }
    if !c.is_multiple_of(ci) || !co.is_multiple_of(c / ci) {
        return Err(format!(
            "{shapes}: {c} input channels are not groups of the filter's {ci} that split its {co} outputs"
        ));
    }
    Ok(c / ci)
}

/// The forward geometry of a convolution of `img` by a `[kh, kw, ci, co]` filter, with dy
/// required to be its output. Returns (groups, out image, (ay, ax)).
fn forward(
    img: &Image,
    fd: [usize; 4],
    dy: &Tensor,
    attrs: &ConvAttrs,
) -> Result<(usize, Image, (super::Axis, super::Axis)), String> {
    let [kh, kw, ci, co] = fd;
    let shapes = format!(
        "input {} ({}), filter {}, dy {}",
        fmt_dims(&img.dims()),
        img.format.name(),
        fmt_dims(&fd),
        fmt_dims(dy.dims())
    );
    let groups = groups_of(img.c, ci, co, &shapes)?;
    let axes = spatial(img, [kh, kw], attrs.strides, attrs.dilations, attrs.padding)
        .map_err(|m| format!("{shapes}: {m}"))?;
    let out_img = Image {
        h: axes.0.out,
        w: axes.1.out,
        c: co,
        ..*img
    };
    if dy.dims() != out_img.dims() {
        return Err(format!(
            "{shapes}: dy must be conv2d's output {}",
            fmt_dims(&out_img.dims())
        ));
    }
    Ok((groups, out_img, axes))
}

/// `conv2d_backprop_input(w, dy; input_shape)`.
pub(crate) fn conv2d_backprop_input(
    w: &Tensor,
    dy: &Tensor,
    input_shape: [i64; 4],
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let ws = f32_data(w, "filter")?;
    let dys = f32_data(dy, "dy")?;
    let dyi = Image::of(dy.dims(), attrs.data_format, "dy")?;
    let in_dims = resolve_shape("input_shape", input_shape, dyi.n)?;
    let img = Image::of(&in_dims, attrs.data_format, "input_shape")?;
    let &[kh, kw, ci, co] = w.dims() else {
        return Err(format!(
            "filter must be rank 4 (HWIO), got {}",
            fmt_dims(w.dims())
        ));
    };
    let (groups, out_img, (ay, ax)) = forward(&img, [kh, kw, ci, co], dy, attrs)?;
    let mut acc = vec![0.0f64; numel(&in_dims)?];
    if acc.is_empty() || dys.is_empty() || ws.is_empty() {
        return finish(&in_dims, alloc(acc.len(), 0.0)?);
    }
    let per_group = co / groups;
    for n in 0..img.n {
        for oy in 0..ay.out {
            for ox in 0..ax.out {
                for oc in 0..co {
                    let g = dys[out_img.at(n, oy, ox, oc)] as f64;
                    let c0 = (oc / per_group) * ci;
                    for ky in 0..kh {
                        let Some(iy) = ay.src(oy, ky) else { continue };
                        for kx in 0..kw {
                            let Some(ix) = ax.src(ox, kx) else { continue };
                            for c in 0..ci {
                                let f = ws[((ky * kw + kx) * ci + c) * co + oc];
                                acc[img.at(n, iy, ix, c0 + c)] += g * f as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    finish(&in_dims, acc.into_iter().map(|v| v as f32).collect())
}

/// `conv2d_backprop_filter(x, dy; filter_shape)`.
pub(crate) fn conv2d_backprop_filter(
    x: &Tensor,
    dy: &Tensor,
    filter_shape: [usize; 4],
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let dys = f32_data(dy, "dy")?;
    let img = Image::of(x.dims(), attrs.data_format, "input")?;
    let [kh, kw, ci, co] = filter_shape;
    let (groups, out_img, (ay, ax)) = forward(&img, filter_shape, dy, attrs)?;
    let mut acc = vec![0.0f64; numel(&filter_shape)?];
    if acc.is_empty() || dys.is_empty() {
        return finish(&filter_shape, alloc(acc.len(), 0.0)?);
    }
    let per_group = co / groups;
    for n in 0..img.n {
        for oy in 0..ay.out {
            for ox in 0..ax.out {
                for oc in 0..co {
                    let g = dys[out_img.at(n, oy, ox, oc)] as f64;
                    let c0 = (oc / per_group) * ci;
                    for ky in 0..kh {
                        let Some(iy) = ay.src(oy, ky) else { continue };
                        for kx in 0..kw {
                            let Some(ix) = ax.src(ox, kx) else { continue };
                            for c in 0..ci {
                                let v = xs[img.at(n, iy, ix, c0 + c)] as f64;
                                acc[((ky * kw + kx) * ci + c) * co + oc] += g * v;
                            }
                        }
                    }
                }
            }
        }
    }
    finish(&filter_shape, acc.into_iter().map(|v| v as f32).collect())
}

/// A depthwise filter `[kh, kw, cin, mult]` read as the grouped conv2d filter `[kh, kw, 1, cin
/// * mult]` it equals: output channel `c * mult + m` of group `c` reads input channel `c` with
/// `w[.., .., c, m]`, and the flat layouts coincide.
fn as_grouped(fd: [usize; 4]) -> Result<[usize; 4], String> {
    let [kh, kw, ci, mult] = fd;
    let co = ci
        .checked_mul(mult)
        .ok_or_else(|| format!("output channels {ci} x {mult} overflow"))?;
    Ok([kh, kw, 1, co])
}

/// `depthwise_conv2d_backprop_input(w, dy; input_shape)`: the grouped conv2d's, with one group
/// per input channel.
pub(crate) fn depthwise_backprop_input(
    w: &Tensor,
    dy: &Tensor,
    input_shape: [i64; 4],
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let &[kh, kw, ci, mult] = w.dims() else {
        return Err(format!(
            "filter must be rank 4 [kh,kw,cin,multiplier], got {}",
            fmt_dims(w.dims())
        ));
    };
    let grouped = w
        .clone()
        .reshaped(&as_grouped([kh, kw, ci, mult])?)
        .map_err(|e| e.to_string())?;
    let dyi = Image::of(dy.dims(), attrs.data_format, "dy")?;
    let in_dims = resolve_shape("input_shape", input_shape, dyi.n)?;
    let img = Image::of(&in_dims, attrs.data_format, "input_shape")?;
    if img.c != ci {
        return Err(format!(
            "input_shape {} has {} channels but the filter {} expects {ci}",
            fmt_dims(&in_dims),
            img.c,
            fmt_dims(w.dims())
        ));
    }
    conv2d_backprop_input(&grouped, dy, input_shape, attrs)
}

/// `depthwise_conv2d_backprop_filter(x, dy; filter_shape)`: the grouped conv2d's, with one
/// group per input channel.
pub(crate) fn depthwise_backprop_filter(
    x: &Tensor,
    dy: &Tensor,
    filter_shape: [usize; 4],
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let img = Image::of(x.dims(), attrs.data_format, "input")?;
    if img.c != filter_shape[2] {
        return Err(format!(
            "input {} has {} channels but filter_shape {} expects {}",
            fmt_dims(x.dims()),
            img.c,
            fmt_dims(&filter_shape),
            filter_shape[2]
        ));
    }
    let dw = conv2d_backprop_filter(x, dy, as_grouped(filter_shape)?, attrs)?;
    dw.reshaped(&filter_shape).map_err(|e| e.to_string())
}
