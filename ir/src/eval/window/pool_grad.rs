//! `max_pool_grad` and `avg_pool_grad`: the adjoints of the pools, as TensorFlow's MaxPoolGrad
//! and AvgPoolGrad compute them, over the forward pool's own window geometry.
//!
//! A max window sends its gradient to one cell: the first maximum in row-major window order
//! (a later cell must be strictly greater, so a NaN wins only as the first cell), never a
//! padded cell. An average window spreads its gradient over its unpadded cells, each getting
//! `grad / count` with the forward divisor. Sums accumulate in f64.

use super::super::{f32_data, finish, numel};
use super::backprop::resolve_shape;
use super::{Axis, Image, spatial};
use crate::op::PoolAttrs;
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// The forward pool's geometry for `img`, with every tensor of `grads` required to have its
/// output shape. Returns the output image and the axes.
fn forward(
    img: &Image,
    attrs: &PoolAttrs,
    grads: &[(&str, &Tensor)],
) -> Result<(Image, Axis, Axis), String> {
    let (ay, ax) = spatial(img, attrs.ksize, attrs.strides, [1, 1], attrs.padding)?;
    let out = Image {
        h: ay.out,
        w: ax.out,
        ..*img
    };
    for (role, t) in grads {
        if t.dims() != out.dims() {
            return Err(format!(
                "{role} {} must be the pool's output {} for the input {} ({}, ksize {:?}, strides {:?})",
                fmt_dims(t.dims()),
                fmt_dims(&out.dims()),
                fmt_dims(&img.dims()),
                img.format.name(),
                attrs.ksize,
                attrs.strides
            ));
        }
    }
    Ok((out, ay, ax))
}

/// The input cells `(iy, ix)` of output window `(oy, ox)`, in row-major window order.
fn cells(
    ay: &Axis,
    ax: &Axis,
    k: [usize; 2],
    oy: usize,
    ox: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let (ay, ax) = (*ay, *ax);
    ay.taps(oy, k[0])
        .filter_map(move |ky| ay.src(oy, ky))
        .flat_map(move |iy| {
            ax.taps(ox, k[1])
                .filter_map(move |kx| ax.src(ox, kx))
                .map(move |ix| (iy, ix))
        })
}

/// `max_pool_grad(orig_input, orig_output, grad)`.
pub(crate) fn max_pool_grad(
    x: &Tensor,
    y: &Tensor,
    grad: &Tensor,
    attrs: &PoolAttrs,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "orig_input")?;
    f32_data(y, "orig_output")?;
    let gs = f32_data(grad, "grad")?;
    let img = Image::of(x.dims(), attrs.data_format, "orig_input")?;
    let (out, ay, ax) = forward(&img, attrs, &[("orig_output", y), ("grad", grad)])?;
    let mut acc = vec![0.0f64; numel(x.dims())?];
    for n in 0..img.n {
        for oy in 0..out.h {
            for ox in 0..out.w {
                for c in 0..img.c {
                    let mut best: Option<(usize, f32)> = None;
                    for (iy, ix) in cells(&ay, &ax, attrs.ksize, oy, ox) {
                        let at = img.at(n, iy, ix, c);
                        if best.is_none_or(|(_, b)| xs[at] > b) {
                            best = Some((at, xs[at]));
                        }
                    }
                    // Inference keeps explicit padding below the window, so every window
                    // holds a cell; an empty one (impossible) would drop its gradient.
                    if let Some((at, _)) = best {
                        acc[at] += gs[out.at(n, oy, ox, c)] as f64;
                    }
                }
            }
        }
    }
    finish(x.dims(), acc.into_iter().map(|v| v as f32).collect())
}

/// `avg_pool_grad(grad; orig_input_shape)`.
pub(crate) fn avg_pool_grad(
    grad: &Tensor,
    orig_input_shape: [i64; 4],
    attrs: &PoolAttrs,
) -> Result<Tensor, String> {
    let gs = f32_data(grad, "grad")?;
    let gi = Image::of(grad.dims(), attrs.data_format, "grad")?;
    let dims = resolve_shape("orig_input_shape", orig_input_shape, gi.n)?;
    let img = Image::of(&dims, attrs.data_format, "orig_input_shape")?;
    let (out, ay, ax) = forward(&img, attrs, &[("grad", grad)])?;
    let mut acc = vec![0.0f64; numel(&dims)?];
    for n in 0..img.n {
        for oy in 0..out.h {
            for ox in 0..out.w {
                let count = cells(&ay, &ax, attrs.ksize, oy, ox).count();
                for c in 0..img.c {
                    let share = gs[out.at(n, oy, ox, c)] as f64 / count as f64;
                    for (iy, ix) in cells(&ay, &ax, attrs.ksize, oy, ox) {
                        acc[img.at(n, iy, ix, c)] += share;
                    }
                }
            }
        }
    }
    finish(&dims, acc.into_iter().map(|v| v as f32).collect())
}
