//! The reduce family: reduce_sum/mean/max/min over any axis set, softmax and log_softmax along
//! one axis, and argmax.
//!
//! A reduction with few outputs or long rows gets one work-group per output: each work-item
//! folds a strided share of the row, then a fixed tree in local memory combines the shares. Many
//! short rows get one work-item per output with a sequential loop. Both orders are fixed, so a
//! program gives the same bits on every run. Max and min propagate NaN (`k_max`/`k_min`), empty
//! reductions give TensorFlow's identities (sum 0, mean NaN, max -inf, min +inf), softmax
//! subtracts the row maximum first, and argmax takes the first maximum, a NaN counting as the
//! largest. The softmax cross entropies take one work-item per row of logits (max, the
//! log-sum-exp with the max subtracted, then the loss), a label out of range giving NaN.

use super::expr::{ctype, lit, row_major, strided_offset};
use super::kernel::KernelSrc;
use super::{Body, Limits, per_element, store_f32};
use kiln_ir::DType;
use kiln_ir::op::ReduceOp;
use kiln_ir::shape::fmt_dims;
use std::fmt::Write;

/// Whether `outputs` rows of `len` elements deserve a work-group each: rows long enough to
/// split, and either too few rows to fill a device one work-item each, or rows so long that a
/// sequential loop dominates.
fn use_groups(outputs: usize, len: usize) -> bool {
    (len >= 32 && outputs < 16384) || len >= 1024
}

/// Work-items per reduction group: the largest power of two up to 256 the device allows.
fn group_size(limits: &Limits) -> usize {
    let mut l = 1;
    while l * 2 <= limits.max_work_group.min(256) {
        l *= 2;
    }
    l
}

/// The input, checked to be f32.
pub(super) fn f32_input(src: &KernelSrc<'_>) -> Result<Vec<usize>, String> {
    let x = src.input(0)?;
    if x.dtype != DType::F32 {
        return Err(format!(
            "{} needs an f32 input, got {}",
            src.kernel.op_name(),
            x.dtype
        ));
    }
    Ok(x.dims.to_vec())
}

/// C statements that fold `v` (defined by `load`, using loop variable `r`) over
/// `r in 0..len` into `acc`, either sequentially or split across a work-group and combined
/// by a tree, leaving the result in `acc` (in every work-item of the group).
fn fold(
    grouped: bool,
    l: usize,
    it: &str,
    len: usize,
    load: &str,
    init: &str,
    step: fn(&str, &str) -> String,
) -> String {
    if !grouped {
        return format!(
            "    float acc = {init};
    for ({it} r = 0; r < {len}; r++) {{
        const float v = {load};
        acc = {c};
    }}
",
            c = step("acc", "v")
        );
    }
    format!(
        "    float acc = {init};
    for ({it} r = lid; r < {len}; r += {l}) {{
        const float v = {load};
        acc = {c};
    }}
    part[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = {half}; s > 0; s >>= 1) {{
        if (lid < s) part[lid] = {t};
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    acc = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
",
        c = step("acc", "v"),
        half = l / 2,
        t = step("part[lid]", "part[lid + s]"),
    )
}

/// `a + b`, the sum step.
fn add(a: &str, b: &str) -> String {
    format!("{a} + {b}")
}

/// The NaN-propagating max step.
fn max(a: &str, b: &str) -> String {
    format!("k_max({a}, {b})")
}

/// The NaN-propagating min step.
fn min(a: &str, b: &str) -> String {
    format!("k_min({a}, {b})")
}

/// The prologue of a kernel over `outputs` rows: the row index `row`, and for groups `lid` and
/// the `part` scratch array.
fn rows(grouped: bool, l: usize, it: &str, outputs: usize) -> String {
    if grouped {
        format!(
            "    __local float part[{l}];
    const int lid = get_local_id(0);
    const {it} row = ({it})get_group_id(0);
"
        )
    } else {
        format!(
            "    const {it} row = ({it})get_global_id(0);
    if (row >= {outputs}) return;
"
        )
    }
}

/// The body around `code` for `outputs` rows.
fn row_body(grouped: bool, l: usize, limits: &Limits, outputs: usize, code: String) -> Body {
    let (global, local) = if grouped {
        (outputs * l, l)
    } else {
        let l = limits.max_work_group.clamp(1, 64);
        (outputs.div_ceil(l) * l, l)
    };
    Body {
        attrs: String::new(),
        code,
        global: vec![global],
        local: vec![local],
        failure: None,
    }
}

/// `reduce_*(x)` over `axes`.
pub(super) fn reduce(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    op: ReduceOp,
    axes: &[usize],
    keepdims: bool,
) -> Result<Body, String> {
    let dims = f32_input(src)?;
    if axes.iter().any(|&a| a >= dims.len()) {
        return Err(format!(
            "axes {axes:?} are out of range for input {}",
            fmt_dims(&dims)
        ));
    }
    let strides = row_major(&dims);
    let reduced = |i: usize| axes.contains(&i);
    let pick = |keep: bool, v: &[usize]| -> Vec<usize> {
        (0..dims.len())
            .filter(|&i| reduced(i) != keep)
            .map(|i| v[i])
            .collect()
    };
    let (kept, kept_strides) = (pick(true, &dims), pick(true, &strides));
    let (red, red_strides) = (pick(false, &dims), pick(false, &strides));
    let want: Vec<usize> = if keepdims {
        (0..dims.len())
            .map(|i| if reduced(i) { 1 } else { dims[i] })
            .collect()
    } else {
        kept.clone()
    };
    if want != src.out().dims.as_slice() {
        return Err(format!(
            "output {} is not {}",
            fmt_dims(&src.out().dims),
            fmt_dims(&want)
        ));
    }
    let outputs: usize = kept.iter().product();
    let len: usize = red.iter().product();
    let grouped = use_groups(outputs, len);
    let l = group_size(limits);
    let it = src.it;
    let x = src.input_name(0)?;
    let (init, combine): (&str, fn(&str, &str) -> String) = match op {
        ReduceOp::Sum | ReduceOp::Mean => ("0.0f", add),
        ReduceOp::Max => ("(-INFINITY)", max),
        ReduceOp::Min => ("INFINITY", min),
    };
    let mut code = rows(grouped, l, it, outputs);
    let _ = writeln!(
        code,
        "    const {it} base = {};",
        strided_offset("row", &kept, &kept_strides)
    );
    let load = format!("{x}[base + {}]", strided_offset("r", &red, &red_strides));
    code.push_str(&fold(grouped, l, it, len, &load, init, combine));
    let result = if op == ReduceOp::Mean {
        format!("acc / {}", lit(len as f32))
    } else {
        "acc".into()
    };
    let store = store_f32(src, "row", &result)?;
    if grouped {
        let _ = write!(code, "    if (lid == 0) {{\n{store}    }}\n");
    } else {
        code.push_str(&store);
    }
    Ok(row_body(grouped, l, limits, outputs, code))
}

/// (outer, len, inner) of `dims` around `axis`.
fn around(dims: &[usize], axis: usize) -> Result<(usize, usize, usize), String> {
    if axis >= dims.len() {
        return Err(format!(
            "axis {axis} is out of range for input {}",
            fmt_dims(dims)
        ));
    }
    Ok((
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    ))
}

/// `softmax` / `log_softmax` along `axis`.
pub(super) fn softmax(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    axis: usize,
    log: bool,
) -> Result<Body, String> {
    let dims = f32_input(src)?;
    if dims != src.out().dims.as_slice() {
        return Err(format!(
            "output {} differs from input {}",
            fmt_dims(&src.out().dims),
            fmt_dims(&dims)
        ));
    }
    let (outer, len, inner) = around(&dims, axis)?;
    let outputs = outer * inner;
    let grouped = use_groups(outputs, len);
    let l = group_size(limits);
    let it = src.it;
    let x = src.input_name(0)?;
    let mut code = rows(grouped, l, it, outputs);
    let _ = writeln!(
        code,
        "    const {it} base = (row / {inner}) * {} + row % {inner};",
        len * inner
    );
    let load = format!("{x}[base + r * {inner}]");
    code.push_str(&fold(grouped, l, it, len, &load, "(-INFINITY)", max));
    code.push_str("    const float mx = acc;\n");
    let exp = format!("exp({x}[base + r * {inner}] - mx)");
    // `acc` is declared again by the second fold, so it lives in its own block.
    code.push_str("    float sum;\n    {\n");
    code.push_str(&fold(grouped, l, it, len, &exp, "0.0f", add));
    code.push_str("    sum = acc;\n    }\n");
    let (start, step) = if grouped { ("lid", l) } else { ("0", 1) };
    let value = if log {
        format!("({x}[e] - mx) - log(sum)")
    } else {
        format!("exp({x}[e] - mx) / sum")
    };
    let store = store_f32(src, "e", "m")?;
    let _ = write!(
        code,
        "    for ({it} r = {start}; r < {len}; r += {step}) {{
        const {it} e = base + r * {inner};
        const float m = {value};
{store}    }}
"
    );
    Ok(row_body(grouped, l, limits, outputs, code))
}

/// `argmax(x)` along `axis`, as i32 or i64; x is f32, i32 or i64 (compared in its own type).
pub(super) fn argmax(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    axis: usize,
) -> Result<Body, String> {
    let x = src.input(0)?;
    let (dims, xty) = (x.dims.to_vec(), x.dtype);
    let better = match xty {
        DType::F32 => "!isnan(best) && (isnan(v) || v > best)",
        DType::I32 | DType::I64 => "v > best",
        DType::Bool => return Err(format!("argmax needs a numeric input, got {xty}")),
    };
    let (_, len, inner) = around(&dims, axis)?;
    let out = src.out();
    let want: Vec<usize> = dims
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &d)| d)
        .collect();
    if want != out.dims.as_slice() || !matches!(out.dtype, DType::I32 | DType::I64) {
        return Err(format!(
            "output {}{} is not i32/i64{}",
            out.dtype,
            fmt_dims(&out.dims),
            fmt_dims(&want)
        ));
    }
    let (ty, xt) = (ctype(out.dtype), ctype(xty));
    let it = src.it;
    let x = src.input_name(0)?;
    let main = format!(
        "    const {it} base = (gid / {inner}) * {} + gid % {inner};
    {xt} best = {x}[base];
    {it} bi = 0;
    for ({it} j = 1; j < {len}; j++) {{
        const {xt} v = {x}[base + j * {inner}];
        if ({better}) {{ best = v; bi = j; }}
    }}
    const {ty} m = ({ty})bi;
",
        len * inner
    );
    let mut body = per_element(src, limits, &main)?;
    if len == 0 {
        body.failure = Some(format!(
            "argmax over the empty axis {axis} of x {}",
            fmt_dims(&dims)
        ));
    }
    Ok(body)
}

/// `softmax_cross_entropy_with_logits` (dense f32 labels) or, with `sparse`, its sparse form
/// (i32/i64 labels): one work-item per row of the logits.
pub(super) fn cross_entropy(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    sparse: bool,
) -> Result<Body, String> {
    let (x, labels, out) = (src.input(0)?, src.input(1)?, src.out());
    let Some((&classes, rows)) = x.dims.split_last() else {
        return Err(format!("logits {} have no class axis", fmt_dims(&x.dims)));
    };
    let labels_fit = if sparse {
        matches!(labels.dtype, DType::I32 | DType::I64) && labels.dims.as_slice() == rows
    } else {
        labels.dtype == DType::F32 && labels.dims == x.dims
    };
    if x.dtype != DType::F32 || classes == 0 || !labels_fit || out.dims.as_slice() != rows {
        return Err(format!(
            "logits {}{} and labels {}{} do not give {}{}",
            x.dtype,
            fmt_dims(&x.dims),
            labels.dtype,
            fmt_dims(&labels.dims),
            out.dtype,
            fmt_dims(&out.dims)
        ));
    }
    let it = src.it;
    let xs = src.input_name(0)?;
    let ls = src.input_name(1)?;
    let loss = if sparse {
        format!(
            "    const long c = (long){ls}[gid];
    const float m = (c >= 0 && c < {classes}L) ? lse - row[c] : NAN;
"
        )
    } else {
        format!(
            "    float acc = 0.0f;
    for ({it} j = 0; j < {classes}; j++) acc += {ls}[gid * {classes} + j] * (lse - row[j]);
    const float m = acc;
"
        )
    };
    let main = format!(
        "    __global const float* row = {xs} + gid * {classes};
    float mx = row[0];
    for ({it} j = 1; j < {classes}; j++) mx = k_max(mx, row[j]);
    float sum = 0.0f;
    for ({it} j = 0; j < {classes}; j++) sum += exp(row[j] - mx);
    const float lse = mx + log(sum);
{loss}"
    );
    per_element(src, limits, &main)
}
