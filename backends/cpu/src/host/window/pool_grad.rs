//! `max_pool_grad` and `avg_pool_grad` on the host: plain loops over the forward pool's
//! windows (kiln-ir's `window_dim`, so SAME's odd cell sits bottom/right), NHWC or NCHW.
//! A max window's gradient goes to its first maximum in row-major window order (a later cell
//! must be strictly greater, TensorFlow's rule); an average window's is divided by its count
//! of unpadded cells. Padded cells take nothing. Sums are f32 in window order. Images run in
//! parallel on rayon's threads (each writes only its own block of dx, in the same order as on
//! one thread, so the bits do not depend on the thread count).

use crate::runtime::PARALLEL_MIN_WORK;
use kiln_ir::image::Image;
use kiln_ir::infer::{WindowDim, window_dim};
use kiln_ir::{DataFormat, PoolAttrs};
use rayon::prelude::*;

/// The unpadded input range `[lo, hi)` of output `o`'s window along one axis.
fn window(o: usize, k: usize, stride: usize, d: &WindowDim, size: usize) -> (usize, usize) {
    let start = o * stride;
    let lo = start.saturating_sub(d.pad_before).min(size);
    let hi = (start + k).saturating_sub(d.pad_before).min(size);
    (lo, hi)
}

/// Runs `per_image` on every image's block of `dx` (`image` values each), in parallel when the
/// work (`dx`'s values times the window's cells) is worth waking rayon's workers for.
fn for_each_image<F>(dx: &mut [f32], image: usize, window_cells: usize, per_image: F)
where
    F: Fn((usize, &mut [f32])) + Sync + Send,
{
    if (dx.len() * window_cells) as u64 >= PARALLEL_MIN_WORK {
        dx.par_chunks_mut(image).enumerate().for_each(per_image);
    } else {
        dx.chunks_mut(image).enumerate().for_each(per_image);
    }
}

/// The input and output images and each spatial axis's geometry.
fn geometry(
    a: &PoolAttrs,
    xd: &[usize],
    format: DataFormat,
) -> Result<(Image, Image, [WindowDim; 2]), String> {
    let img = Image::of(xd, format, "orig_input")?;
    let wy = window_dim(img.h, a.ksize[0], a.strides[0], 1, a.padding, 0)?;
    let wx = window_dim(img.w, a.ksize[1], a.strides[1], 1, a.padding, 1)?;
    let out = Image {
        h: wy.out,
        w: wx.out,
        ..img
    };
    Ok((img, out, [wy, wx]))
}

/// `dx = max_pool_grad(x, _, grad)`; `x` and `dx` have dims `xd`.
pub(in crate::host) fn max_pool_grad(
    a: &PoolAttrs,
    x: &[f32],
    xd: &[usize],
    grad: &[f32],
    dx: &mut [f32],
) -> Result<(), String> {
    let (img, out, [wy, wx]) = geometry(a, xd, a.data_format)?;
    dx.fill(0.0);
    let image = img.h * img.w * img.c;
    if image == 0 {
        return Ok(());
    }
    let per_image = |(n, dx): (usize, &mut [f32])| {
        // `img.at` indexes the whole batch; this task's block starts at image `n`.
        let base = n * image;
        for oy in 0..out.h {
            let (y0, y1) = window(oy, a.ksize[0], a.strides[0], &wy, img.h);
            for ox in 0..out.w {
                let (x0, x1) = window(ox, a.ksize[1], a.strides[1], &wx, img.w);
                for c in 0..img.c {
                    let mut best: Option<(usize, f32)> = None;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let at = img.at(n, iy, ix, c);
                            if best.is_none_or(|(_, b)| x[at] > b) {
                                best = Some((at, x[at]));
                            }
                        }
                    }
                    if let Some((at, _)) = best {
                        dx[at - base] += grad[out.at(n, oy, ox, c)];
                    }
                }
            }
        }
    };
    for_each_image(dx, image, a.ksize[0] * a.ksize[1], per_image);
    Ok(())
}

/// `dx = avg_pool_grad(grad)`; `dx` has dims `xd`.
pub(in crate::host) fn avg_pool_grad(
    a: &PoolAttrs,
    grad: &[f32],
    dx: &mut [f32],
    xd: &[usize],
) -> Result<(), String> {
    let (img, out, [wy, wx]) = geometry(a, xd, a.data_format)?;
    dx.fill(0.0);
    let image = img.h * img.w * img.c;
    if image == 0 {
        return Ok(());
    }
    let per_image = |(n, dx): (usize, &mut [f32])| {
        let base = n * image;
        for oy in 0..out.h {
            let (y0, y1) = window(oy, a.ksize[0], a.strides[0], &wy, img.h);
            for ox in 0..out.w {
                let (x0, x1) = window(ox, a.ksize[1], a.strides[1], &wx, img.w);
                let count = (y1 - y0) * (x1 - x0);
                if count == 0 {
                    continue;
                }
                for c in 0..img.c {
                    let share = grad[out.at(n, oy, ox, c)] / count as f32;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            dx[img.at(n, iy, ix, c) - base] += share;
                        }
                    }
                }
            }
        }
    };
    for_each_image(dx, image, a.ksize[0] * a.ksize[1], per_image);
    Ok(())
}
