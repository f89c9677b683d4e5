//! The elementwise family, one work-item per output element: pure elementwise clusters (the
//! kernel's epilogue alone) and `cast`, with `tf.cast`'s rules.

use super::expr::ctype;
use super::kernel::KernelSrc;
use super::{Body, Limits, per_element};
use kiln_ir::DType;
use kiln_ir::shape::fmt_dims;

/// A pure elementwise cluster: the epilogue alone.
pub(super) fn elementwise(src: &mut KernelSrc<'_>, limits: &Limits) -> Result<Body, String> {
    per_element(src, limits, "")
}

/// `cast(x)` to the output's dtype, with `tf.cast`'s rules.
pub(super) fn cast(src: &mut KernelSrc<'_>, limits: &Limits) -> Result<Body, String> {
    let from = src.input(0)?.dtype;
    let to = src.out().dtype;
    if src.input(0)?.dims != src.out().dims {
        return Err(format!(
            "input {} and output {} differ",
            fmt_dims(&src.input(0)?.dims),
            fmt_dims(&src.out().dims)
        ));
    }
    let x = src.input_name(0)?;
    let v = format!("{x}[gid]");
    let value = match (from, to) {
        (a, b) if a == b => v,
        // Truncation toward zero, saturating; NaN is 0 (tf.cast / Rust `as`).
        (DType::F32, DType::I32) => format!("(isnan({v}) ? 0 : convert_int_sat_rtz({v}))"),
        (DType::F32, DType::I64) => format!("(isnan({v}) ? 0L : convert_long_sat_rtz({v}))"),
        (_, DType::Bool) => format!("(uchar)({v} != 0)"),
        (_, DType::F32) => format!("convert_float({v})"),
        // Integer narrowing keeps the low bits (two's complement), like Rust `as`.
        (_, t) => format!("({})({v})", ctype(t)),
    };
    per_element(
        src,
        limits,
        &format!("    const {} m = {value};\n", ctype(to)),
    )
}
