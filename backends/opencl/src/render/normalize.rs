//! The normalize family, one work-item per output element: `batch_norm` (inference form, per
//! channel) and `lrn` (a window over the last axis). Both are f32.

use super::expr::{coord, lit};
use super::kernel::KernelSrc;
use super::reduce::f32_input;
use super::{Body, Limits, per_element};
use kiln_ir::DType;
use kiln_ir::op::DataFormat;
use kiln_ir::shape::fmt_dims;

/// `batch_norm(x, scale, offset, mean, variance)`: per channel `(x - mean) * scale /
/// sqrt(variance + epsilon) + offset`.
pub(super) fn batch_norm(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    epsilon: f32,
    format: DataFormat,
) -> Result<Body, String> {
    let dims = src.input(0)?.dims.clone();
    let axis = match format {
        DataFormat::Nhwc if !dims.is_empty() => dims.len() - 1,
        DataFormat::Nchw if dims.len() >= 2 => 1,
        _ => {
            return Err(format!(
                "input {} has no channel axis for {}",
                fmt_dims(&dims),
                format.name()
            ));
        }
    };
    for i in 0..5 {
        let b = src.input(i)?;
        let want: &[usize] = if i == 0 { &dims } else { &dims[axis..=axis] };
        if b.dtype != DType::F32 || b.dims.as_slice() != want {
            return Err(format!(
                "operand {i} is {}{}, expected f32{}",
                b.dtype,
                fmt_dims(&b.dims),
                fmt_dims(want)
            ));
        }
    }
    let [x, scale, offset, mean, var] = [0, 1, 2, 3, 4].map(|i| src.buf(src.kernel.inputs[i]));
    let main = format!(
        "    const {it} ch = {c};\n    const float m = ({x}[gid] - {mean}[ch]) * {scale}[ch] * \
         (1.0f / sqrt({var}[ch] + {eps})) + {offset}[ch];\n",
        it = src.it,
        c = coord("gid", &dims, axis),
        eps = lit(epsilon),
    );
    per_element(src, limits, &main)
}

/// `lrn(x)`: `x / (bias + alpha * sum(x[c-r..=c+r]^2)) ^ beta` over the last axis.
pub(super) fn lrn(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    radius: usize,
    [bias, alpha, beta]: [f32; 3],
) -> Result<Body, String> {
    let dims = f32_input(src)?;
    if dims != src.out().dims.as_slice() || dims.is_empty() {
        return Err(format!(
            "lrn of input {} to output {}",
            fmt_dims(&dims),
            fmt_dims(&src.out().dims)
        ));
    }
    let c = dims[dims.len() - 1];
    // A radius beyond the axis length covers the whole axis either way.
    let r = radius.min(c);
    let it = src.it;
    let x = src.input_name(0)?;
    let main = format!(
        "    const {it} ch = gid % {c};
    const {it} lo = max(ch - {r}, ({it})0), hi = min(ch + {r}, ({it}){cm1});
    float sq = 0.0f;
    for ({it} j = lo; j <= hi; j++) {{
        const float v = {x}[gid - ch + j];
        sq += v * v;
    }}
    const float m = {x}[gid] / pow({b} + {a} * sq, {be});
",
        cm1 = c - 1,
        b = lit(bias),
        a = lit(alpha),
        be = lit(beta),
    );
    per_element(src, limits, &main)
}
