//! Grouped `conv2d` in NCHW on the host: the case neither the GEMM path (NHWC only) nor the
//! generated window kernels (ungrouped only) cover. Plain loops over TensorFlow 2's grouped
//! definition: output channel `o` of group `g = o / (cout / groups)` sums input channels
//! `g * cin .. (g + 1) * cin` against filter `[.., .., c, o]`. The padding arithmetic is
//! kiln-ir's [`window_dim`], shared with inference and the reference evaluator.
//!
//! `channels.rs` holds the NHWC depthwise conv and pools vectorised across channels;
//! `pointwise.rs` runs a depthwise conv and the 1x1 conv reading it band by band.

mod channels;
mod conv_backprop;
mod lanes;
mod pointwise;
mod pool_grad;

pub use channels::{ChannelOp, ChannelWindow};
pub(super) use conv_backprop::{conv2d_backprop_filter, conv2d_backprop_input};
pub use pointwise::depthwise_pointwise;
pub(super) use pool_grad::{avg_pool_grad, max_pool_grad};

use super::HostBuffer;
use kiln_ir::infer::window_dim;
use kiln_ir::shape::fmt_dims;
use kiln_ir::{ConvAttrs, DType, DataFormat};

/// Checks a grouped NCHW conv's operands and output against each other.
pub(super) fn check(
    a: &ConvAttrs,
    x: &HostBuffer,
    w: &HostBuffer,
    out: &HostBuffer,
) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "grouped conv2d of x {} and filter {} into {}: {why}",
            fmt_dims(&x.dims),
            fmt_dims(&w.dims),
            fmt_dims(&out.dims)
        ))
    };
    if [x.dtype, w.dtype, out.dtype] != [DType::F32; 3] {
        return bad("every buffer must be f32");
    }
    if a.data_format != DataFormat::Nchw {
        return bad("only NCHW runs here");
    }
    let (&[n, c, h, wd], &[kh, kw, ci, co]) = (x.dims.as_slice(), w.dims.as_slice()) else {
        return bad("x and the filter must be rank 4");
    };
    if ci == 0 || c == 0 || !c.is_multiple_of(ci) || !co.is_multiple_of(c / ci) {
        return bad(
            "x's channels must be groups * the filter's cin, and cout a multiple of groups",
        );
    }
    let oh = window_dim(h, kh, a.strides[0], a.dilations[0], a.padding, 0)?.out;
    let ow = window_dim(wd, kw, a.strides[1], a.dilations[1], a.padding, 1)?.out;
    if out.dims != [n, co, oh, ow] {
        return bad(&format!("expected output {}", fmt_dims(&[n, co, oh, ow])));
    }
    Ok(())
}

/// `y = conv2d(x, w)` for NCHW `x` of `xd`, HWIO `w` of `wd` (grouped), checked by [`check`].
pub(super) fn grouped_conv(
    a: &ConvAttrs,
    x: &[f32],
    xd: &[usize],
    w: &[f32],
    wd: &[usize],
    y: &mut [f32],
) -> Result<(), String> {
    let (&[n, c, h, iw], &[kh, kw, ci, co]) = (xd, wd) else {
        return Err("grouped conv2d: operands must be rank 4".into());
    };
    let ay = window_dim(h, kh, a.strides[0], a.dilations[0], a.padding, 0)?;
    let ax = window_dim(iw, kw, a.strides[1], a.dilations[1], a.padding, 1)?;
    let groups = c / ci;
    let per = co / groups;
    // Input coordinate of output `o`, tap `k` on one axis, or None in the padding.
    let src = |o: usize, k: usize, s: usize, d: usize, before: usize, size: usize| {
        (o * s + k * d).checked_sub(before).filter(|&i| i < size)
    };
    for b in 0..n {
        for oc in 0..co {
            let c0 = (oc / per) * ci;
            for oy in 0..ay.out {
                for ox in 0..ax.out {
                    let mut acc = 0.0f32;
                    for ky in 0..kh {
                        let Some(iy) = src(oy, ky, a.strides[0], a.dilations[0], ay.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                src(ox, kx, a.strides[1], a.dilations[1], ax.pad_before, iw)
                            else {
                                continue;
                            };
                            for cc in 0..ci {
                                let v = x[((b * c + c0 + cc) * h + iy) * iw + ix];
                                acc += v * w[((ky * kw + kx) * ci + cc) * co + oc];
                            }
                        }
                    }
                    y[((b * co + oc) * ay.out + oy) * ax.out + ox] = acc;
                }
            }
        }
    }
    Ok(())
}
