//! The movement family, one work-item per output element: reshape, transpose, concat, slice,
//! pad, gather, its adjoint gather_grad and one_hot.
//!
//! Each computes, for flat output index `gid`, which input element it takes (or the fill value)
//! with the dims baked in, then applies the epilogue. Movement ops accept any dtype (the element
//! type of the C pointers follows the buffers). Gather checks every index at run time: an index
//! outside `-n..n` sets the error flag (first failure wins, through `atomic_cmpxchg`) and the
//! element gets 0, so no read ever leaves `params`.

use super::expr::{coord, ctype, lit, row_major, strided_offset};
use super::kernel::KernelSrc;
use super::{Body, Limits, per_element};
use kiln_ir::DType;
use kiln_ir::shape::fmt_dims;
use std::fmt::Write;

/// Checks that operand `i` has the output's dtype and returns its C type.
pub(super) fn same_dtype(src: &KernelSrc<'_>, i: usize) -> Result<&'static str, String> {
    let (x, out) = (src.input(i)?, src.out());
    if x.dtype != out.dtype {
        return Err(format!(
            "operand %{} is {} but the result is {}",
            x.name, x.dtype, out.dtype
        ));
    }
    Ok(ctype(out.dtype))
}

/// `reshape`: the same elements in the same order.
pub(super) fn reshape(src: &mut KernelSrc<'_>, limits: &Limits) -> Result<Body, String> {
    let ty = same_dtype(src, 0)?;
    if src.input(0)?.numel() != src.out().numel() {
        return Err(format!(
            "reshape of {} elements to {}",
            src.input(0)?.numel(),
            fmt_dims(&src.out().dims)
        ));
    }
    let x = src.input_name(0)?;
    per_element(src, limits, &format!("    const {ty} m = {x}[gid];\n"))
}

/// `transpose`: output axis `i` is input axis `perm[i]`.
pub(super) fn transpose(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    perm: &[usize],
) -> Result<Body, String> {
    let ty = same_dtype(src, 0)?;
    let in_dims = src.input(0)?.dims.clone();
    let out_dims = src.out().dims.clone();
    let ok = perm.len() == in_dims.len()
        && perm.len() == out_dims.len()
        && perm
            .iter()
            .enumerate()
            .all(|(i, &p)| in_dims.get(p) == Some(&out_dims[i]));
    if !ok {
        return Err(format!(
            "perm {perm:?} does not map input {} to output {}",
            fmt_dims(&in_dims),
            fmt_dims(&out_dims)
        ));
    }
    let in_strides = row_major(&in_dims);
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let x = src.input_name(0)?;
    let off = strided_offset("gid", &out_dims, &strides);
    per_element(src, limits, &format!("    const {ty} m = {x}[{off}];\n"))
}

/// `slice`: the box of the output's dims starting at `begin`.
pub(super) fn slice(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    begin: &[usize],
) -> Result<Body, String> {
    let ty = same_dtype(src, 0)?;
    let in_dims = src.input(0)?.dims.clone();
    let out_dims = src.out().dims.clone();
    let fits = begin.len() == in_dims.len()
        && out_dims.len() == in_dims.len()
        && (0..begin.len()).all(|k| {
            begin[k]
                .checked_add(out_dims[k])
                .is_some_and(|e| e <= in_dims[k])
        });
    if !fits {
        return Err(format!(
            "a slice of size {} at {begin:?} does not fit input {}",
            fmt_dims(&out_dims),
            fmt_dims(&in_dims)
        ));
    }
    let in_strides = row_major(&in_dims);
    let base: usize = begin.iter().zip(&in_strides).map(|(b, s)| b * s).sum();
    let x = src.input_name(0)?;
    let off = strided_offset("gid", &out_dims, &in_strides);
    per_element(
        src,
        limits,
        &format!("    const {ty} m = {x}[{base} + {off}];\n"),
    )
}

/// The C literal of `fill` converted to `dtype` the way the reference converts pad values
/// (Rust `as`: saturating, NaN to 0; bool is `fill != 0`).
fn fill_literal(fill: f32, dtype: DType) -> String {
    match dtype {
        DType::F32 => lit(fill),
        DType::I32 => format!("({})", fill as i32),
        // i64::MIN has no literal form in C (the minus applies to an out-of-range constant).
        DType::I64 => match fill as i64 {
            i64::MIN => "(-9223372036854775807L - 1)".into(),
            v => format!("({v}L)"),
        },
        DType::Bool => if fill != 0.0 { "1" } else { "0" }.into(),
    }
}

/// `pad`: output coordinate `c` reads input coordinate `c - before` when it is inside.
pub(super) fn pad(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    paddings: &[[usize; 2]],
    fill: f32,
) -> Result<Body, String> {
    let ty = same_dtype(src, 0)?;
    let in_dims = src.input(0)?.dims.clone();
    let out_dims = src.out().dims.clone();
    let fits = paddings.len() == in_dims.len()
        && out_dims.len() == in_dims.len()
        && (0..in_dims.len()).all(|k| {
            in_dims[k]
                .checked_add(paddings[k][0])
                .and_then(|s| s.checked_add(paddings[k][1]))
                == Some(out_dims[k])
        });
    if !fits {
        return Err(format!(
            "paddings {paddings:?} do not take input {} to output {}",
            fmt_dims(&in_dims),
            fmt_dims(&out_dims)
        ));
    }
    let in_strides = row_major(&in_dims);
    let x = src.input_name(0)?;
    let mut main = String::new();
    let (mut inside, mut terms) = (Vec::new(), Vec::new());
    for k in 0..in_dims.len() {
        let [before, after] = paddings[k];
        // Long: a padding can be larger than the int index range of the output's coordinates.
        let _ = writeln!(
            main,
            "    const long c{k} = (long){} - {before}L;",
            coord("gid", &out_dims, k)
        );
        if before > 0 {
            inside.push(format!("c{k} >= 0"));
        }
        if after > 0 {
            inside.push(format!("c{k} < {}", in_dims[k]));
        }
        if in_dims[k] != 1 {
            terms.push(format!("c{k} * {}", in_strides[k]));
        }
    }
    let off = if terms.is_empty() {
        "0".to_string()
    } else {
        terms.join(" + ")
    };
    let cond = if inside.is_empty() {
        "1".to_string()
    } else {
        inside.join(" && ")
    };
    let _ = writeln!(
        main,
        "    const {ty} m = ({cond}) ? {x}[{off}] : {};",
        fill_literal(fill, src.out().dtype)
    );
    per_element(src, limits, &main)
}

/// `concat` along `axis`: an if-chain over the operands' extents on that axis.
pub(super) fn concat(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    axis: usize,
) -> Result<Body, String> {
    let out_dims = src.out().dims.clone();
    if axis >= out_dims.len() {
        return Err(format!(
            "axis {axis} is out of range for output {}",
            fmt_dims(&out_dims)
        ));
    }
    let inner: usize = out_dims[axis + 1..].iter().product();
    let total = out_dims[axis];
    let mut start = 0usize;
    let mut main = String::new();
    let ty = ctype(src.out().dtype);
    let _ = writeln!(
        main,
        "    const {} ca = {};",
        src.it,
        coord("gid", &out_dims, axis)
    );
    let _ = writeln!(main, "    const {} co = gid / {};", src.it, total * inner);
    let _ = writeln!(main, "    const {} ci = gid % {inner};", src.it);
    let _ = writeln!(main, "    {ty} m;");
    let mut first = true;
    for i in 0..src.kernel.inputs.len() {
        same_dtype(src, i)?;
        let dims = src.input(i)?.dims.clone();
        let matches = dims.len() == out_dims.len()
            && (0..dims.len()).all(|k| k == axis || dims[k] == out_dims[k]);
        if !matches {
            return Err(format!(
                "operand {i} {} does not fit output {} along axis {axis}",
                fmt_dims(&dims),
                fmt_dims(&out_dims)
            ));
        }
        let e = dims[axis];
        if e == 0 {
            continue;
        }
        let x = src.input_name(i)?;
        let _ = writeln!(
            main,
            "    {}if (ca < {}) m = {x}[(co * {e} + (ca - {start})) * {inner} + ci];",
            if first { "" } else { "else " },
            start + e
        );
        first = false;
        start += e;
    }
    if start != total {
        return Err(format!(
            "operand extents along axis {axis} sum to {start}, the output has {total}"
        ));
    }
    per_element(src, limits, &main)
}

/// `gather(params, indices)` along `axis`, with the run-time index check.
pub(super) fn gather(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    axis: usize,
) -> Result<Body, String> {
    let ty = same_dtype(src, 0)?;
    let p = src.input(0)?.dims.clone();
    let idx = src.input(1)?;
    if !matches!(idx.dtype, DType::I32 | DType::I64) {
        return Err(format!(
            "indices %{} are {}, expected i32 or i64",
            idx.name, idx.dtype
        ));
    }
    let idx_dims = idx.dims.clone();
    if axis >= p.len() {
        return Err(format!(
            "axis {axis} is out of range for params {}",
            fmt_dims(&p)
        ));
    }
    let want: Vec<usize> = p[..axis]
        .iter()
        .chain(&idx_dims)
        .chain(&p[axis + 1..])
        .copied()
        .collect();
    if want != src.out().dims.as_slice() {
        return Err(format!(
            "output {} is not {}",
            fmt_dims(&src.out().dims),
            fmt_dims(&want)
        ));
    }
    let n = p[axis];
    let inner: usize = p[axis + 1..].iter().product();
    let ni: usize = idx_dims.iter().product();
    let it = src.it;
    let params = src.input_name(0)?;
    let indices = src.input_name(1)?;
    let flag = src.error_flag();
    let main = format!(
        "    const {it} go = gid / {outer_step};
    const {it} gj = (gid / {inner}) % {ni};
    const {it} gi = gid % {inner};
    const long raw = (long){indices}[gj];
    const long at = raw < 0 ? raw + {n}L : raw;
    {ty} m = 0;
    if (at < 0 || at >= {n}L) {{
        if (atomic_cmpxchg(&{flag}[0], 0, {code}) == 0) {{
            {flag}[1] = (int)(raw & 0xffffffffL);
            {flag}[2] = (int)(raw >> 32);
            {flag}[3] = (int)gj;
        }}
    }} else {{
        m = {params}[(go * {n} + ({it})at) * {inner} + gi];
    }}
",
        outer_step = ni * inner,
        code = src.index + 1,
    );
    per_element(src, limits, &main)
}

/// `one_hot(indices)` with the new axis at `axis` of the output.
pub(super) fn one_hot(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    depth: usize,
    [on, off]: [f32; 2],
    axis: usize,
) -> Result<Body, String> {
    let idx = src.input(0)?;
    let mut want = idx.dims.to_vec();
    if axis > want.len() || !matches!(idx.dtype, DType::I32 | DType::I64) {
        return Err(format!(
            "indices {}{} with axis {axis}",
            idx.dtype,
            fmt_dims(&idx.dims)
        ));
    }
    want.insert(axis, depth);
    if want != src.out().dims.as_slice() || src.out().dtype != DType::F32 {
        return Err(format!(
            "output {} is not f32{}",
            fmt_dims(&src.out().dims),
            fmt_dims(&want)
        ));
    }
    let inner: usize = idx.dims[axis..].iter().product();
    let it = src.it;
    let indices = src.input_name(0)?;
    let main = format!(
        "    const {it} gi = gid % {inner};
    const {it} gd = (gid / {inner}) % {depth};
    const {it} go = gid / {outer_step};
    const float m = ((long){indices}[go * {inner} + gi] == (long)gd) ? {on} : {off};
",
        outer_step = inner * depth,
        on = lit(on),
        off = lit(off),
    );
    per_element(src, limits, &main)
}

/// `gather_grad(grad, indices)` along `axis` of the output: each output element sums, in
/// index order, the gradient blocks whose index names it; an index outside `-n..n` sets the
/// error flag as gather's does.
pub(super) fn gather_grad(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    axis: usize,
) -> Result<Body, String> {
    let (g, idx, out) = (src.input(0)?, src.input(1)?, src.out());
    let o = out.dims.to_vec();
    if axis >= o.len() || !matches!(idx.dtype, DType::I32 | DType::I64) {
        return Err(format!(
            "indices {}{} with axis {axis}",
            idx.dtype,
            fmt_dims(&idx.dims)
        ));
    }
    let mut want = o.clone();
    want.splice(axis..axis + 1, idx.dims.iter().copied());
    if want != g.dims.as_slice() || g.dtype != DType::F32 || out.dtype != DType::F32 {
        return Err(format!(
            "grad {}{} is not f32{}",
            g.dtype,
            fmt_dims(&g.dims),
            fmt_dims(&want)
        ));
    }
    let n = o[axis];
    let inner: usize = o[axis + 1..].iter().product();
    let ni: usize = idx.dims.iter().product();
    let it = src.it;
    let grad = src.input_name(0)?;
    let indices = src.input_name(1)?;
    let flag = src.error_flag();
    let main = format!(
        "    const {it} gi = gid % {inner};
    const {it} gk = (gid / {inner}) % {n};
    const {it} go = gid / {outer_step};
    float m = 0.0f;
    for ({it} j = 0; j < {ni}; j++) {{
        const long raw = (long){indices}[j];
        const long at = raw < 0 ? raw + {n}L : raw;
        if (at < 0 || at >= {n}L) {{
            if (atomic_cmpxchg(&{flag}[0], 0, {code}) == 0) {{
                {flag}[1] = (int)(raw & 0xffffffffL);
                {flag}[2] = (int)(raw >> 32);
                {flag}[3] = (int)j;
            }}
        }} else if (at == (long)gk) {{
            m += {grad}[(go * {ni} + j) * {inner} + gi];
        }}
    }}
",
        outer_step = n * inner,
        code = src.index + 1,
    );
    per_element(src, limits, &main)
}
