//! The window family: conv2d, depthwise_conv2d, max_pool and avg_pool, and the window geometry
//! (TensorFlow's SAME / VALID / explicit padding) they share. conv2d is an implicit GEMM on the
//! tiled kernel of `matmul.rs` (`M = n*oh*ow`, `N = cout / groups`, `K = kh*kw*cin_per_group`;
//! group `g` is the third grid dimension, like a batch; conv taps in the padding load zeros),
//! or, for contractions too thin to tile (e.g. one input and one output channel), a direct
//! convolution with one work-item per output element like the other window ops.
//!
//! Geometry comes from `kiln_ir::infer::window_dim`, the formula shape inference uses, so the
//! two cannot disagree. Window coordinates are computed in `long`: strides, dilations and
//! paddings are attributes and may exceed the `int` range even when the buffers do not. Padded
//! cells never take part: convolutions skip them (zero contribution), max_pool ignores them and
//! avg_pool divides by the number of real cells; a pool window made only of padding is the
//! reference's run-time error, decided here from the shapes.

mod backprop;

pub(super) use backprop::{conv2d_backprop_filter, conv2d_backprop_input, pool_grad};

use super::expr::coord;
use super::kernel::KernelSrc;
use super::matmul::{Gemm, tile_side, tiled};
use super::{Body, Limits, per_element};
use kiln_ir::DType;
use kiln_ir::image::Image;
use kiln_ir::infer::window_dim;
use kiln_ir::op::{ConvAttrs, DataFormat, Padding, PoolAttrs};
use kiln_ir::shape::fmt_dims;
use std::fmt::Write;

/// OpenCL C index expressions over an image ([`Image`] is kiln-ir's, shared with the
/// reference evaluator).
trait ImageSrc {
    /// The C flat index of element (n, y, x, c), given C expressions.
    fn c_at(&self, n: &str, y: &str, x: &str, c: &str) -> String;
    /// C statements defining `on`, `oy`, `ox`, `oc` from flat index `gid` over this image.
    fn unravel(&self, gid: &str, it: &str) -> String;
}

impl ImageSrc for Image {
    fn c_at(&self, n: &str, y: &str, x: &str, c: &str) -> String {
        let Image { h, w, c: cc, .. } = *self;
        match self.format {
            DataFormat::Nhwc => format!("((({n}) * {h} + ({y})) * {w} + ({x})) * {cc} + ({c})"),
            DataFormat::Nchw => format!("((({n}) * {cc} + ({c})) * {h} + ({y})) * {w} + ({x})"),
        }
    }

    fn unravel(&self, gid: &str, it: &str) -> String {
        let dims = [self.n, self.h, self.w, self.c];
        let laid: [usize; 4] = match self.format {
            DataFormat::Nhwc => dims,
            DataFormat::Nchw => [self.n, self.c, self.h, self.w],
        };
        let axis = |role: usize| match (self.format, role) {
            (DataFormat::Nhwc, r) => r,
            (DataFormat::Nchw, 0) => 0,
            (DataFormat::Nchw, 3) => 1,
            (DataFormat::Nchw, r) => r + 1,
        };
        let names = ["on", "oy", "ox", "oc"];
        names
            .iter()
            .enumerate()
            .map(|(r, v)| format!("    const {it} {v} = {};\n", coord(gid, &laid, axis(r))))
            .collect()
    }
}

/// One spatial axis: output extent, padding before, stride, dilation, kernel extent.
#[derive(Clone, Copy, Debug)]
struct Axis {
    pub input: usize,
    pub out: usize,
    pub before: usize,
    pub stride: usize,
    pub dilation: usize,
    pub k: usize,
}

/// Geometry of both spatial axes.
fn spatial(
    img: &Image,
    k: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    padding: Padding,
) -> Result<[Axis; 2], String> {
    let axis = |i: usize, input: usize| -> Result<Axis, String> {
        let d = window_dim(input, k[i], strides[i], dilations[i], padding, i)?;
        Ok(Axis {
            input,
            out: d.out,
            before: d.pad_before,
            stride: strides[i],
            dilation: dilations[i],
            k: k[i],
        })
    };
    Ok([axis(0, img.h)?, axis(1, img.w)?])
}

/// The image of the output: `c` channels, the axes' output extents.
fn out_image(img: &Image, ax: &[Axis; 2], c: usize) -> Image {
    Image {
        h: ax[0].out,
        w: ax[1].out,
        c,
        ..*img
    }
}

/// Checks that the output buffer has the dims the geometry gives.
fn check_out(src: &KernelSrc<'_>, want: &Image) -> Result<(), String> {
    let got = Image::of(&src.out().dims, want.format, "output")?;
    if (got.n, got.h, got.w, got.c) != (want.n, want.h, want.w, want.c) {
        return Err(format!(
            "output {} does not match the window geometry (n={}, h={}, w={}, c={})",
            fmt_dims(&src.out().dims),
            want.n,
            want.h,
            want.w,
            want.c
        ));
    }
    Ok(())
}

/// Validated shapes of a conv2d: input image, `[kh, kw, cin_per_group, cout]`, groups, axes.
struct ConvShape {
    pub img: Image,
    pub out: Image,
    pub kh: usize,
    pub kw: usize,
    pub cg: usize,
    pub cout: usize,
    pub groups: usize,
    pub ax: [Axis; 2],
}

/// Checks conv2d's operands (grouped when the image has `groups * cin` channels).
fn conv_shape(src: &KernelSrc<'_>, attrs: &ConvAttrs) -> Result<ConvShape, String> {
    let (x, w) = (src.input(0)?, src.input(1)?);
    if x.dtype != DType::F32 || w.dtype != DType::F32 {
        return Err(format!(
            "conv2d needs f32 operands, got {} and {}",
            x.dtype, w.dtype
        ));
    }
    let img = Image::of(&x.dims, attrs.data_format, "input")?;
    let &[kh, kw, cg, cout] = w.dims.as_slice() else {
        return Err(format!(
            "filter must be rank 4 (HWIO), got {}",
            fmt_dims(&w.dims)
        ));
    };
    let groups = img.c.checked_div(cg).unwrap_or(0);
    if cg == 0 || img.c % cg != 0 || groups == 0 || cout % groups != 0 {
        return Err(format!(
            "input {} has {} channels, which is not a multiple of filter {}'s {cg} input \
             channels dividing its {cout} output channels into groups",
            fmt_dims(&x.dims),
            img.c,
            fmt_dims(&w.dims)
        ));
    }
    let ax = spatial(
        &img,
        [kh, kw],
        attrs.strides,
        attrs.dilations,
        attrs.padding,
    )?;
    let out = out_image(&img, &ax, cout);
    check_out(src, &out)?;
    Ok(ConvShape {
        img,
        out,
        kh,
        kw,
        cg,
        cout,
        groups,
        ax,
    })
}

/// C statements accumulating `acc` over the taps of the window at (`oy`, `ox`), calling
/// `tap(iy, ix, ky, kx)` for the statements of each tap inside the input.
fn window_loops(ax: &[Axis; 2], tap: &str) -> String {
    let [y, x] = ax;
    format!(
        "    for (int ky = 0; ky < {kh}; ky++) {{
        const long iy = (long)oy * {sy}L + (long)ky * {dy}L - {py}L;
        if (iy < 0 || iy >= {h}) continue;
        for (int kx = 0; kx < {kw}; kx++) {{
            const long ix = (long)ox * {sx}L + (long)kx * {dx}L - {px}L;
            if (ix < 0 || ix >= {w}) continue;
{tap}        }}
    }}
",
        kh = y.k,
        sy = y.stride,
        dy = y.dilation,
        py = y.before,
        h = y.input,
        kw = x.k,
        sx = x.stride,
        dx = x.dilation,
        px = x.before,
        w = x.input,
    )
}

/// conv2d with one work-item per output element (grouped, any layout).
fn conv_direct(src: &mut KernelSrc<'_>, limits: &Limits, s: &ConvShape) -> Result<Body, String> {
    let x = src.input_name(0)?;
    let w = src.input_name(1)?;
    let cog = s.cout / s.groups;
    let mut main = s.out.unravel("gid", src.it);
    let _ = writeln!(main, "    const {} c0 = (oc / {cog}) * {};", src.it, s.cg);
    main.push_str("    float m = 0.0f;\n");
    let tap = format!(
        "            for (int c = 0; c < {cg}; c++)
                m = fma({x}[{xi}], {w}[((ky * {kw} + kx) * {cg} + c) * {cout} + oc], m);
",
        cg = s.cg,
        kw = s.kw,
        cout = s.cout,
        xi = s.img.c_at("on", "iy", "ix", "c0 + c"),
    );
    main.push_str(&window_loops(&s.ax, &tap));
    per_element(src, limits, &main)
}

/// Whether every coordinate the tiled conv computes in `int` fits: padded extents times
/// strides and dilations stay far below 2^31.
fn conv_fits_int(s: &ConvShape) -> bool {
    let limit = 1u128 << 30;
    s.ax.iter().all(|a| {
        let reach = (a.out as u128) * (a.stride as u128)
            + (a.k as u128) * (a.dilation as u128)
            + a.before as u128
            + a.input as u128;
        reach < limit
    })
}

/// `conv2d(x, w)`, grouped when x has `groups * cin` channels.
pub(super) fn conv2d(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    attrs: &ConvAttrs,
) -> Result<Body, String> {
    let s = conv_shape(src, attrs)?;
    let cog = s.cout / s.groups;
    let ohw = s.out.h * s.out.w;
    let g = Gemm {
        m: s.img.n * ohw,
        n: cog,
        k: s.kh * s.kw * s.cg,
        batch: s.groups,
        load_a: String::new(),
        load_b: String::new(),
        out_index: String::new(),
    };
    let t = match tile_side(&g, limits) {
        Some(t) if src.it == "int" && conv_fits_int(&s) => t,
        _ => return conv_direct(src, limits, &s),
    };
    let x = src.input_name(0)?;
    let w = src.input_name(1)?;
    let [ay, ax] = &s.ax;
    let load_a = format!(
        "    const int on = mi / {ohw}, r = mi % {ohw};
    const int oy = r / {ow}, ox = r % {ow};
    const int ky = ki / {kwcg}, kx = (ki / {cg}) % {kw}, c = ki % {cg};
    const int iy = oy * {sy} + ky * {dy} - {py};
    const int ix = ox * {sx} + kx * {dx} - {px};
    if (iy >= 0 && iy < {h} && ix >= 0 && ix < {wd}) av = {x}[{xi}];
",
        ow = s.out.w,
        kwcg = s.kw * s.cg,
        cg = s.cg,
        kw = s.kw,
        sy = ay.stride,
        dy = ay.dilation,
        py = ay.before,
        sx = ax.stride,
        dx = ax.dilation,
        px = ax.before,
        h = s.img.h,
        wd = s.img.w,
        xi = s.img.c_at("on", "iy", "ix", &format!("z * {} + c", s.cg)),
    );
    let load_b = format!("    bv = {w}[ki * {} + z * {cog} + ni];\n", s.cout);
    let out_index = match s.img.format {
        DataFormat::Nhwc => format!("mi * {} + z * {cog} + ni", s.cout),
        DataFormat::Nchw => format!(
            "(mi / {ohw}) * {} + (z * {cog} + ni) * {ohw} + mi % {ohw}",
            s.cout * ohw
        ),
    };
    let g = Gemm {
        load_a,
        load_b,
        out_index,
        ..g
    };
    tiled(src, &g, t)
}

/// depthwise_conv2d: output channel `c * mult + m` convolves input channel `c` with
/// filter `[.., .., c, m]`.
pub(super) fn depthwise(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    attrs: &ConvAttrs,
) -> Result<Body, String> {
    let (xb, wb) = (src.input(0)?, src.input(1)?);
    if xb.dtype != DType::F32 || wb.dtype != DType::F32 {
        return Err(format!(
            "depthwise_conv2d needs f32 operands, got {} and {}",
            xb.dtype, wb.dtype
        ));
    }
    let img = Image::of(&xb.dims, attrs.data_format, "input")?;
    let &[kh, kw, ci, mult] = wb.dims.as_slice() else {
        return Err(format!(
            "filter must be rank 4 [kh,kw,cin,mult], got {}",
            fmt_dims(&wb.dims)
        ));
    };
    if ci != img.c {
        return Err(format!(
            "input {} has {} channels but filter {} expects {ci}",
            fmt_dims(&xb.dims),
            img.c,
            fmt_dims(&wb.dims)
        ));
    }
    let ax = spatial(
        &img,
        [kh, kw],
        attrs.strides,
        attrs.dilations,
        attrs.padding,
    )?;
    let cout = ci.checked_mul(mult).ok_or("output channels overflow")?;
    let out = out_image(&img, &ax, cout);
    check_out(src, &out)?;
    let x = src.input_name(0)?;
    let w = src.input_name(1)?;
    let mut main = out.unravel("gid", src.it);
    main.push_str("    float m = 0.0f;\n");
    let tap = format!(
        "            m = fma({x}[{xi}], {w}[(ky * {kw} + kx) * {cout} + oc], m);\n",
        xi = img.c_at("on", "iy", "ix", &format!("oc / {mult}")),
    );
    main.push_str(&window_loops(&ax, &tap));
    per_element(src, limits, &main)
}

/// The first output position on `a` whose window covers only padding, if any.
fn empty_window(a: &Axis) -> Option<usize> {
    (0..a.out).find(|&o| {
        // Window [o*s - before, o*s - before + k) against [0, input), in i128 (no overflow).
        let start = (o as i128) * (a.stride as i128) - a.before as i128;
        let end = start + a.k as i128;
        end <= 0 || start >= a.input as i128
    })
}

/// max_pool / avg_pool: the max or mean of each window's real cells.
pub(super) fn pool(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    attrs: &PoolAttrs,
    average: bool,
) -> Result<Body, String> {
    let xb = src.input(0)?;
    if xb.dtype != DType::F32 {
        return Err(format!("pools need an f32 input, got {}", xb.dtype));
    }
    let img = Image::of(&xb.dims, attrs.data_format, "input")?;
    let ax = spatial(&img, attrs.ksize, attrs.strides, [1, 1], attrs.padding)?;
    let out = out_image(&img, &ax, img.c);
    check_out(src, &out)?;
    let failure = match (empty_window(&ax[0]), empty_window(&ax[1])) {
        (None, None) => None,
        (y, x) => Some(format!(
            "the pooling window at output (y={}, x={}) covers only padding (input {}x{}, \
             padding {:?})",
            y.unwrap_or(0),
            x.unwrap_or(0),
            img.h,
            img.w,
            attrs.padding
        )),
    };
    let x = src.input_name(0)?;
    let mut main = out.unravel("gid", src.it);
    let [ay, axx] = &ax;
    let _ = write!(
        main,
        "    const long ys = (long)oy * {sy}L - {py}L, xs = (long)ox * {sx}L - {px}L;
    const long y0 = max(ys, 0L), y1 = min(ys + {kh}L, {h}L);
    const long x0 = max(xs, 0L), x1 = min(xs + {kw}L, {w}L);
    float acc = {init};
    for (long iy = y0; iy < y1; iy++)
        for (long ix = x0; ix < x1; ix++) {{
            const float v = {x}[{xi}];
            acc = {combine};
        }}
    const float m = {result};
",
        sy = ay.stride,
        py = ay.before,
        sx = axx.stride,
        px = axx.before,
        kh = ay.k,
        kw = axx.k,
        h = ay.input,
        w = axx.input,
        init = if average { "0.0f" } else { "-INFINITY" },
        xi = img.c_at("on", "iy", "ix", "oc"),
        combine = if average { "acc + v" } else { "k_max(acc, v)" },
        result = if average {
            "acc / (float)((y1 - y0) * (x1 - x0))"
        } else {
            "acc"
        },
    );
    let mut body = per_element(src, limits, &main)?;
    body.failure = failure;
    Ok(body)
}
