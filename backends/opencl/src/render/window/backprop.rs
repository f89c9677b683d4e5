//! The backward window ops as gather kernels, one work-item per output element:
//! - `conv2d_backprop_input`: input cell `(n, iy, ix, g*cg + c)` sums `dy[n, oy, ox, o] *
//!   w[ky, kx, c, o]` over the taps whose forward window put it at `(oy, ox)` (`oy*s + ky*d -
//!   pad = iy` with `oy` in range) and the output channels `o` of group `g`;
//! - `conv2d_backprop_filter`: filter cell `(ky, kx, c, o)` sums `x * dy` over the batch and
//!   the output pixels whose tap lands inside the input;
//! - `max_pool_grad` / `avg_pool_grad`: input cell `(n, iy, ix, c)` visits the windows that
//!   contain it; a max window adds its gradient when its first maximum (strictly greater
//!   wins, TensorFlow's rule) is this cell, an average window adds gradient / real cells.
//!
//! Shapes are checked by rerunning kiln-ir's inference on the buffers; the geometry is the
//! forward op's ([`spatial`], i.e. `window_dim`).

use super::super::kernel::KernelSrc;
use super::super::{Body, Limits, per_element};
use super::{Axis, ImageSrc, spatial};
use kiln_ir::image::Image;
use kiln_ir::op::{ConvAttrs, PoolAttrs};
use kiln_ir::shape::{Shape, TensorType};
use std::fmt::Write;

/// Errors unless kiln-ir's inference of the kernel's main op on its operand buffers gives the
/// output buffer's type.
fn check_inferred(src: &KernelSrc<'_>) -> Result<(), String> {
    let main = src
        .kernel
        .main
        .as_ref()
        .ok_or("a backward window kernel needs a main op")?;
    let ty = |b: &kiln_ir::program::Buffer| TensorType::new(b.dtype, Shape::known(&b.dims));
    let types = (0..src.kernel.inputs.len())
        .map(|i| src.input(i).map(ty))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&TensorType> = types.iter().collect();
    let want = kiln_ir::infer::infer(main, &refs)?;
    let got = ty(src.out());
    if want != got {
        return Err(format!(
            "{} gives {want}, but the output buffer is {got}",
            main.name()
        ));
    }
    Ok(())
}

/// C statements that set `o{v}0..o{v}1` to the outputs whose window (tap `k{v}`) reads input
/// coordinate `i{v}`: `o*s + k*d - before = i`. Opens a loop over `k{v}`, which the caller
/// closes, with `o{v}` defined inside.
fn taps_onto(v: &str, a: &Axis) -> String {
    format!(
        "    for (long k{v} = 0; k{v} < {k}L; k{v}++) {{
        const long t{v} = i{v} + {before}L - k{v} * {d}L;
        if (t{v} < 0 || t{v} % {s}L != 0) continue;
        const long o{v} = t{v} / {s}L;
        if (o{v} >= {out}L) continue;
",
        k = a.k,
        before = a.before,
        d = a.dilation,
        s = a.stride,
        out = a.out,
    )
}

/// A filter's `[kh, kw, cin_per_group, cout]`; a depthwise `[kh, kw, cin, mult]` is the
/// grouped conv2d filter `[kh, kw, 1, cin * mult]` (same flat layout, one group per channel).
fn filter_dims(dims: &[usize], depthwise: bool) -> Result<[usize; 4], String> {
    match *dims {
        [kh, kw, ci, mult] if depthwise => Ok([kh, kw, 1, ci.saturating_mul(mult)]),
        [kh, kw, cg, cout] => Ok([kh, kw, cg, cout]),
        _ => Err("the filter must be rank 4".into()),
    }
}

/// `conv2d_backprop_input(w, dy)`, or with `depthwise` `depthwise_conv2d_backprop_input`.
pub(in crate::render) fn conv2d_backprop_input(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    attrs: &ConvAttrs,
    depthwise: bool,
) -> Result<Body, String> {
    check_inferred(src)?;
    let img = Image::of(&src.out().dims, attrs.data_format, "dx")?;
    let [kh, kw, cg, cout] = filter_dims(&src.input(0)?.dims, depthwise)?;
    let ax = spatial(
        &img,
        [kh, kw],
        attrs.strides,
        attrs.dilations,
        attrs.padding,
    )?;
    let dy_img = super::out_image(&img, &ax, cout);
    let per = cout / (img.c / cg.max(1)).max(1);
    let (w, dy) = (src.input_name(0)?, src.input_name(1)?);
    let mut main = img.unravel("gid", src.it);
    let _ = write!(
        main,
        "    const long iy = oy, ix = ox, g = oc / {cg}, c = oc % {cg};
    float m = 0.0f;
{ty}{tx}            for (long o = g * {per}; o < (g + 1) * {per}; o++)
                m = fma({dy}[{dyi}], {w}[((ky * {kw} + kx) * {cg} + c) * {cout} + o], m);
        }}
    }}
",
        ty = taps_onto("y", &ax[0]),
        tx = taps_onto("x", &ax[1]),
        dyi = dy_img.c_at("on", "oy", "ox", "o"),
    );
    per_element(src, limits, &main)
}

/// `conv2d_backprop_filter(x, dy)`, or with `depthwise` `depthwise_conv2d_backprop_filter`.
pub(in crate::render) fn conv2d_backprop_filter(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    attrs: &ConvAttrs,
    depthwise: bool,
) -> Result<Body, String> {
    check_inferred(src)?;
    let img = Image::of(&src.input(0)?.dims, attrs.data_format, "x")?;
    let [kh, kw, cg, cout] = filter_dims(&src.out().dims, depthwise)?;
    let ax = spatial(
        &img,
        [kh, kw],
        attrs.strides,
        attrs.dilations,
        attrs.padding,
    )?;
    let dy_img = super::out_image(&img, &ax, cout);
    let per = cout / (img.c / cg.max(1)).max(1);
    let (x, dy) = (src.input_name(0)?, src.input_name(1)?);
    let [ay, axx] = &ax;
    let it = src.it;
    let mut main = String::new();
    let dims = [kh, kw, cg, cout];
    for (i, v) in ["ky", "kx", "c", "o"].iter().enumerate() {
        let _ = writeln!(
            main,
            "    const {it} {v} = {};",
            super::super::expr::coord("gid", &dims, i)
        );
    }
    let _ = write!(
        main,
        "    const long g = o / {per};
    float m = 0.0f;
    for (long on = 0; on < {n}L; on++)
    for (long oy = 0; oy < {oh}L; oy++) {{
        const long iy = oy * {sy}L + (long)ky * {dy_}L - {py}L;
        if (iy < 0 || iy >= {h}L) continue;
        for (long ox = 0; ox < {ow}L; ox++) {{
            const long ix = ox * {sx}L + (long)kx * {dx_}L - {px}L;
            if (ix < 0 || ix >= {wd}L) continue;
            m = fma({x}[{xi}], {dy}[{dyi}], m);
        }}
    }}
",
        n = img.n,
        oh = ay.out,
        ow = axx.out,
        sy = ay.stride,
        dy_ = ay.dilation,
        py = ay.before,
        h = img.h,
        sx = axx.stride,
        dx_ = axx.dilation,
        px = axx.before,
        wd = img.w,
        xi = img.c_at("on", "iy", "ix", &format!("g * {cg} + c")),
        dyi = dy_img.c_at("on", "oy", "ox", "o"),
    );
    per_element(src, limits, &main)
}

/// `max_pool_grad(orig_input, orig_output, grad)` (`max`) or `avg_pool_grad(grad)`.
pub(in crate::render) fn pool_grad(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    attrs: &PoolAttrs,
    max: bool,
) -> Result<Body, String> {
    check_inferred(src)?;
    let img = Image::of(&src.out().dims, attrs.data_format, "dx")?;
    let ax = spatial(&img, attrs.ksize, attrs.strides, [1, 1], attrs.padding)?;
    let out = super::out_image(&img, &ax, img.c);
    let grad = src.input_name(if max { 2 } else { 0 })?;
    let x = if max {
        src.input_name(0)?
    } else {
        String::new()
    };
    let [ay, axx] = &ax;
    let mut main = img.unravel("gid", src.it);
    // The windows containing (iy, ix): starts `o*s - before` in `(i - k, i]`.
    let _ = write!(
        main,
        "    const long iy = oy, ix = ox;
    float m = 0.0f;
    const long wy0 = max(iy + {py}L - {kh}L + {sy}L, 0L) / {sy}L, wy1 = min((iy + {py}L) / {sy}L + 1L, {oh}L);
    const long wx0 = max(ix + {px}L - {kw}L + {sx}L, 0L) / {sx}L, wx1 = min((ix + {px}L) / {sx}L + 1L, {ow}L);
    for (long wy = wy0; wy < wy1; wy++)
    for (long wx = wx0; wx < wx1; wx++) {{
        const long ys = wy * {sy}L - {py}L, xs = wx * {sx}L - {px}L;
        const long y0 = max(ys, 0L), y1 = min(ys + {kh}L, {h}L);
        const long x0 = max(xs, 0L), x1 = min(xs + {kw}L, {w}L);
        if (iy < y0 || iy >= y1 || ix < x0 || ix >= x1) continue;
        const float gv = {grad}[{gi}];
",
        py = ay.before,
        sy = ay.stride,
        kh = ay.k,
        oh = ay.out,
        px = axx.before,
        sx = axx.stride,
        kw = axx.k,
        ow = axx.out,
        h = img.h,
        w = img.w,
        gi = out.c_at("on", "wy", "wx", "oc"),
    );
    if max {
        let _ = write!(
            main,
            "        long by = -1, bx = -1;
        float best = 0.0f;
        for (long yy = y0; yy < y1; yy++)
            for (long xx = x0; xx < x1; xx++) {{
                const float v = {x}[{xi}];
                if (by < 0 || v > best) {{ best = v; by = yy; bx = xx; }}
            }}
        if (by == iy && bx == ix) m += gv;
    }}
",
            xi = img.c_at("on", "yy", "xx", "oc"),
        );
    } else {
        main.push_str("        m += gv / (float)((y1 - y0) * (x1 - x0));\n    }\n");
    }
    per_element(src, limits, &main)
}
