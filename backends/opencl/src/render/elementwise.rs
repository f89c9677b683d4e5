//! The elementwise family, one work-item per output element: pure elementwise clusters (the
//! kernel's epilogue alone), `cast`, with `tf.cast`'s rules, and the ops over bool or integer
//! values with numpy broadcasting: the comparisons (C's comparisons are IEEE's, so NaN compares
//! false except under `!=`), the logical ops and `select`. Bool buffers are `uchar`.

use super::expr::{ctype, row_major, strided_offset};
use super::kernel::KernelSrc;
use super::{Body, Limits, per_element};
use kiln_ir::DType;
use kiln_ir::op::{CompareOp, LogicalOp};
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

/// The C expression reading main operand `i` at the element of output index `gid` it
/// broadcasts to (numpy rules), or an error when its dims do not broadcast to the output's.
fn broadcast_load(src: &mut KernelSrc<'_>, i: usize) -> Result<String, String> {
    let dims = src.input(i)?.dims.to_vec();
    let out = src.out().dims.to_vec();
    let fits = dims.len() <= out.len()
        && dims
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&d, &o)| d == o || d == 1);
    if !fits {
        return Err(format!(
            "operand {i} {} does not broadcast to the output {}",
            fmt_dims(&dims),
            fmt_dims(&out)
        ));
    }
    // The operand's row-major strides on its own axes, 0 along broadcast ones.
    let own = row_major(&dims);
    let offset = out.len() - dims.len();
    let strides: Vec<usize> = (0..out.len())
        .map(|k| match k.checked_sub(offset) {
            Some(j) if dims[j] != 1 => own[j],
            _ => 0,
        })
        .collect();
    let name = src.input_name(i)?;
    Ok(format!("{name}[{}]", strided_offset("gid", &out, &strides)))
}

/// Errors unless main operand `i` has dtype `want`.
fn require(src: &KernelSrc<'_>, i: usize, want: &[DType]) -> Result<DType, String> {
    let d = src.input(i)?.dtype;
    if want.contains(&d) {
        Ok(d)
    } else {
        Err(format!("operand {i} is {d}, expected one of {want:?}"))
    }
}

/// `equal(a, b)`, `less(a, b)`, ...: one dtype in, a bool (`uchar`) out.
pub(super) fn compare(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    op: CompareOp,
) -> Result<Body, String> {
    let dtype = require(src, 0, &[DType::F32, DType::I32, DType::I64, DType::Bool])?;
    require(src, 1, &[dtype])?;
    if src.out().dtype != DType::Bool || (dtype == DType::Bool && op.is_ordering()) {
        return Err(format!(
            "{} of {dtype} operands into {}",
            op.name(),
            src.out().dtype
        ));
    }
    let (mut a, mut b) = (broadcast_load(src, 0)?, broadcast_load(src, 1)?);
    if dtype == DType::Bool {
        // Any nonzero byte is true.
        (a, b) = (format!("({a} != 0)"), format!("({b} != 0)"));
    }
    let c = match op {
        CompareOp::Equal => "==",
        CompareOp::NotEqual => "!=",
        CompareOp::Less => "<",
        CompareOp::LessEqual => "<=",
        CompareOp::Greater => ">",
        CompareOp::GreaterEqual => ">=",
    };
    per_element(
        src,
        limits,
        &format!("    const uchar m = ({a} {c} {b}) ? 1 : 0;\n"),
    )
}

/// `logical_and(a, b)` / `logical_or(a, b)` on bool operands.
pub(super) fn logical(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    op: LogicalOp,
) -> Result<Body, String> {
    require(src, 0, &[DType::Bool])?;
    require(src, 1, &[DType::Bool])?;
    let (a, b) = (broadcast_load(src, 0)?, broadcast_load(src, 1)?);
    let c = match op {
        LogicalOp::And => "&&",
        LogicalOp::Or => "||",
    };
    per_element(
        src,
        limits,
        &format!("    const uchar m = (({a} != 0) {c} ({b} != 0)) ? 1 : 0;\n"),
    )
}

/// `logical_not(x)` on a bool operand.
pub(super) fn logical_not(src: &mut KernelSrc<'_>, limits: &Limits) -> Result<Body, String> {
    require(src, 0, &[DType::Bool])?;
    let x = broadcast_load(src, 0)?;
    per_element(
        src,
        limits,
        &format!("    const uchar m = ({x} == 0) ? 1 : 0;\n"),
    )
}

/// `select(cond, a, b)`: the three broadcast to the output; `a`, `b` and the output share a dtype.
pub(super) fn select(src: &mut KernelSrc<'_>, limits: &Limits) -> Result<Body, String> {
    require(src, 0, &[DType::Bool])?;
    let dtype = src.out().dtype;
    require(src, 1, &[dtype])?;
    require(src, 2, &[dtype])?;
    let c = broadcast_load(src, 0)?;
    let (a, b) = (broadcast_load(src, 1)?, broadcast_load(src, 2)?);
    per_element(
        src,
        limits,
        &format!("    const {} m = ({c} != 0) ? {a} : {b};\n", ctype(dtype)),
    )
}
