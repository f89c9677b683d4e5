//! Sliding-window ops (conv2d, depthwise_conv2d, max_pool, avg_pool) and the padding arithmetic
//! that the reference evaluator and the backends share with inference.
//!
//! One spatial axis of a window op is described by input size, kernel size, stride, dilation and
//! padding; [`window_dim`] turns those into the output size and the cells of padding before and
//! after, exactly as TensorFlow computes them (SAME puts the odd cell at the bottom/right).
//! Output cell `o` reads input cells `o * stride - pad_before + k * dilation` for `k` in
//! `0..kernel`; cells outside `0..input` are padding. Inference uses the same function, so a
//! shape inferred here is the shape every backend produces.

mod backprop;

pub(super) use backprop::{
    avg_pool_grad, conv2d_backprop_filter, conv2d_backprop_input, depthwise_backprop_filter,
    depthwise_backprop_input, max_pool_grad,
};

use super::require_f32;
use crate::op::{ConvAttrs, DataFormat, Padding, PoolAttrs};
use crate::shape::{Dim, Shape, TensorType};

/// Output size and padding of one spatial axis of a window op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowDim {
    /// Output size along the axis.
    pub out: usize,
    /// Padding cells before the first input cell (top or left).
    pub pad_before: usize,
    /// Padding cells after the last input cell (bottom or right). For VALID it is 0 even when
    /// the stride leaves trailing input cells unread.
    pub pad_after: usize,
}

/// The extent of a dilated kernel, `(kernel - 1) * dilation + 1`; errors on a zero kernel or
/// dilation and on overflow.
pub fn effective_kernel(kernel: usize, dilation: usize) -> Result<usize, String> {
    if kernel == 0 {
        return Err("kernel size must be >= 1, got 0".into());
    }
    if dilation == 0 {
        return Err("dilation must be >= 1, got 0".into());
    }
    (kernel - 1)
        .checked_mul(dilation)
        .and_then(|e| e.checked_add(1))
        .ok_or_else(|| format!("kernel {kernel} with dilation {dilation} overflows usize"))
}

/// Output size and padding of spatial axis `axis` (0 = height, 1 = width, which selects the
/// row of [`Padding::Explicit`]) for an input of `input` cells:
///
/// - SAME: `out = ceil(input / stride)`; total padding `max((out - 1) * stride + eff - input, 0)`
///   with `pad_before = total / 2` and the rest after.
/// - VALID: `out = ceil((input - eff + 1) / stride)`; an error if `eff > input`.
/// - Explicit `[[top, bottom], [left, right]]`: `out = floor((input + before + after - eff) /
///   stride) + 1`; an error if the padded input is smaller than `eff`.
///
/// `eff` is the [`effective_kernel`]. Strides, dilations and kernels of 0 are errors.
pub fn window_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> Result<WindowDim, String> {
    if stride == 0 {
        return Err("stride must be >= 1, got 0".into());
    }
    let eff = effective_kernel(kernel, dilation)?;
    let overflow = || format!("window arithmetic overflows usize (input {input}, kernel {eff})");
    match padding {
        Padding::Same => {
            let out = input.div_ceil(stride);
            // out == 0 only for an empty input, which needs no padding.
            let needed = match out.checked_sub(1) {
                None => 0,
                Some(o) => o
                    .checked_mul(stride)
                    .and_then(|n| n.checked_add(eff))
                    .ok_or_else(overflow)?,
            };
            let total = needed.saturating_sub(input);
            Ok(WindowDim {
                out,
                pad_before: total / 2,
                pad_after: total - total / 2,
            })
        }
        Padding::Valid => {
            if eff > input {
                return Err(format!(
                    "the kernel ({}) is larger than the input ({input}) with VALID padding",
                    describe_kernel(kernel, dilation, eff)
                ));
            }
            Ok(WindowDim {
                out: (input - eff) / stride + 1,
                pad_before: 0,
                pad_after: 0,
            })
        }
        Padding::Explicit(p) => {
            let [before, after] = *p.get(axis).ok_or_else(|| {
                format!("spatial axis {axis} does not exist (0 = height, 1 = width)")
            })?;
            let padded = input
                .checked_add(before)
                .and_then(|n| n.checked_add(after))
                .ok_or_else(overflow)?;
            if eff > padded {
                return Err(format!(
                    "the kernel ({}) is larger than the padded input ({input} + {before} + {after} = {padded})",
                    describe_kernel(kernel, dilation, eff)
                ));
            }
            Ok(WindowDim {
                out: (padded - eff) / stride + 1,
                pad_before: before,
                pad_after: after,
            })
        }
    }
}

/// `(out, pad_before)` of one spatial axis: [`window_dim`] without the trailing padding, which
/// a loop that bounds-checks each input index never needs.
pub fn conv_output_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> Result<(usize, usize), String> {
    window_dim(input, kernel, stride, dilation, padding, axis).map(|w| (w.out, w.pad_before))
}

fn describe_kernel(kernel: usize, dilation: usize, eff: usize) -> String {
    if dilation > 1 {
        format!("effective size {eff}: {kernel} dilated by {dilation}")
    } else {
        format!("size {kernel}")
    }
}

/// Output size of one axis when the input or kernel size may be unknown.
fn window_out(
    input: Dim,
    kernel: Dim,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> Result<Dim, String> {
    match (input, kernel, padding) {
        (Some(i), Some(k), _) => {
            window_dim(i, k, stride, dilation, padding, axis).map(|w| Some(w.out))
        }
        // SAME output size does not depend on the kernel.
        (Some(i), None, Padding::Same) => Ok(Some(i.div_ceil(stride))),
        (_, Some(k), _) => effective_kernel(k, dilation).map(|_| None),
        (_, None, _) => Ok(None),
    }
}

/// Checks that strides (and dilations) are >= 1.
fn check_attr(name: &str, v: [usize; 2]) -> Result<(), String> {
    if v.contains(&0) {
        return Err(format!("{name} must be >= 1, got [{},{}]", v[0], v[1]));
    }
    Ok(())
}

const AXIS_NAMES: [&str; 2] = ["height", "width"];

/// `conv2d(x, w)` (w HWIO `[kh,kw,cin/groups,cout]`; x's channels may be any multiple `groups`
/// of the filter's `cin` that divides `cout`) or, with `depthwise`, `depthwise_conv2d(x, w)`
/// (w `[kh,kw,cin,mult]`, output channels `cin * mult`).
pub(super) fn conv2d(
    a: &ConvAttrs,
    x: &TensorType,
    w: &TensorType,
    depthwise: bool,
) -> Result<TensorType, String> {
    require_f32("x", x)?;
    require_f32("filter", w)?;
    check_attr("strides", a.strides)?;
    check_attr("dilations", a.dilations)?;
    // TensorFlow's tf.nn.convolution rejects this combination (and so does its depthwise op).
    if a.strides.iter().any(|&s| s > 1) && a.dilations.iter().any(|&d| d > 1) {
        return Err(format!(
            "strides > 1 cannot be combined with dilations > 1 (strides [{},{}], dilations [{},{}])",
            a.strides[0], a.strides[1], a.dilations[0], a.dilations[1]
        ));
    }
    check_image_rank(a.data_format, x)?;
    if w.rank() != 4 {
        let layout = if depthwise {
            "[kh,kw,cin,multiplier]"
        } else {
            "[kh,kw,cin,cout] (HWIO)"
        };
        return Err(format!(
            "filter must be rank 4 {layout}, got {w} (x is {x})"
        ));
    }
    let (h, wi, c) = a.data_format.hwc_axes();
    let cin = match (x.shape.dim(c), w.shape.dim(2)) {
        (Some(xc), Some(wc)) if depthwise && xc != wc => {
            return Err(format!(
                "input channels differ: x is {x} ({xc} channels), filter is {w} (expects {wc})"
            ));
        }
        (Some(xc), Some(wc)) if !depthwise => {
            conv_groups(xc, wc, w.shape.dim(3)).map_err(|why| {
                format!("input channels differ: x is {x} ({xc} channels), filter is {w} (expects {wc}{why})")
            })?;
            Some(xc)
        }
        (xc, wc) => xc.or(wc),
    };
    let mut spatial = [None; 2];
    for (axis, (&in_axis, k_axis)) in [h, wi].iter().zip([0, 1]).enumerate() {
        spatial[axis] = window_out(
            x.shape.dim(in_axis),
            w.shape.dim(k_axis),
            a.strides[axis],
            a.dilations[axis],
            a.padding,
            axis,
        )
        .map_err(|m| format!("{}: {m} (x is {x}, filter is {w})", AXIS_NAMES[axis]))?;
    }
    let cout = if depthwise {
        match (cin, w.shape.dim(3)) {
            (Some(c), Some(m)) => Some(c.checked_mul(m).ok_or_else(|| {
                format!("output channels {c} * {m} overflow usize (x is {x}, filter is {w})")
            })?),
            _ => None,
        }
    } else {
        w.shape.dim(3)
    };
    Ok(TensorType::f32(image_shape(
        a.data_format,
        x.shape.dim(0),
        spatial,
        cout,
    )))
}

/// The groups of a conv2d whose input has `xc` channels and whose filter reads `wc` per group
/// (TensorFlow 2): `xc / wc`, which must be a whole number that divides the filter's `cout`
/// (when known). The error is the tail of a message that starts "(expects {wc}".
fn conv_groups(xc: usize, wc: usize, cout: Dim) -> Result<usize, String> {
    if wc == 0 || xc == 0 {
        return if xc == wc { Ok(1) } else { Err(")".into()) };
    }
    if !xc.is_multiple_of(wc) {
        return Err(", or a multiple of it for a grouped convolution)".into());
    }
    let groups = xc / wc;
    match cout {
        Some(co) if !co.is_multiple_of(groups) => Err(format!(
            " per group: {groups} groups, whose {co} output channels do not split evenly)"
        )),
        _ => Ok(groups),
    }
}

/// `max_pool(x)` / `avg_pool(x)`: channels kept, spatial dims by [`window_dim`] (dilation 1).
/// Explicit padding must be smaller than the window on every side, so that every window holds
/// at least one input cell (an average over only padding would divide by zero).
pub(super) fn pool(a: &PoolAttrs, x: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    check_attr("ksize", a.ksize)?;
    check_attr("strides", a.strides)?;
    check_image_rank(a.data_format, x)?;
    if let Padding::Explicit(p) = a.padding {
        for axis in 0..2 {
            if p[axis].iter().any(|&n| n >= a.ksize[axis]) {
                return Err(format!(
                    "{} padding [{},{}] must be smaller than the window ({}) on each side",
                    AXIS_NAMES[axis], p[axis][0], p[axis][1], a.ksize[axis]
                ));
            }
        }
    }
    let (h, w, c) = a.data_format.hwc_axes();
    let mut spatial = [None; 2];
    for (axis, in_axis) in [h, w].into_iter().enumerate() {
        spatial[axis] = window_out(
            x.shape.dim(in_axis),
            Some(a.ksize[axis]),
            a.strides[axis],
            1,
            a.padding,
            axis,
        )
        .map_err(|m| {
            format!(
                "{}: {m} (x is {x}, ksize [{},{}])",
                AXIS_NAMES[axis], a.ksize[0], a.ksize[1]
            )
        })?;
    }
    Ok(TensorType::f32(image_shape(
        a.data_format,
        x.shape.dim(0),
        spatial,
        x.shape.dim(c),
    )))
}

fn check_image_rank(format: DataFormat, x: &TensorType) -> Result<(), String> {
    if x.rank() != 4 {
        let layout = match format {
            DataFormat::Nhwc => "[batch,height,width,channels] (NHWC)",
            DataFormat::Nchw => "[batch,channels,height,width] (NCHW)",
        };
        return Err(format!("x must be rank 4 {layout}, got {x}"));
    }
    Ok(())
}

fn image_shape(format: DataFormat, n: Dim, [h, w]: [Dim; 2], c: Dim) -> Shape {
    match format {
        DataFormat::Nhwc => Shape::of(&[n, h, w, c]),
        DataFormat::Nchw => Shape::of(&[n, c, h, w]),
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
