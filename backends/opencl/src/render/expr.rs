//! Scalar pieces of OpenCL C: literals, element types, index arithmetic over concrete dims, the
//! unary and binary functions, and a kernel's fused epilogue ([`Expr`]).
//!
//! Invariant: every function here matches the reference semantics of `kiln_ir::eval` (NaN
//! propagation of maximum/minimum, relu passing NaN through, leaky_relu's `x >= 0` rule) in f32;
//! the only differences allowed are the last-ulp errors of OpenCL's built-in transcendentals
//! (`exp` 3 ulp, `tanh` 5 ulp, `pow` 16 ulp in the full profile), well inside the tests'
//! 1e-4 tolerance. Index arithmetic is emitted with every dim and stride as a literal, so the
//! OpenCL compiler turns divisions by constants into multiplies.

use super::kernel::KernelSrc;
use kiln_ir::DType;
use kiln_ir::op::{BinaryOp, UnaryOp};
use kiln_ir::program::{Expr, Operand, Step};
use std::fmt::Write;

/// Helper functions every program starts with (NaN-propagating max/min, activations).
///
/// `FP_CONTRACT OFF` keeps `a * b + c` from being fused into an fma in elementwise chains, so an
/// epilogue rounds exactly like the op-by-op reference; contractions call `fma` explicitly.
pub(crate) const PRELUDE: &str = "\
#pragma OPENCL FP_CONTRACT OFF
float k_max(float a, float b) { return (isnan(a) || isnan(b)) ? NAN : fmax(a, b); }
float k_min(float a, float b) { return (isnan(a) || isnan(b)) ? NAN : fmin(a, b); }
float k_relu(float x) { return x < 0.0f ? 0.0f : x; }
float k_relu6(float x) { return x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x); }
float k_sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }
float k_sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (isnan(x) ? x : 0.0f)); }
";

/// An f32 constant as OpenCL C that parses back to the same bits (Rust's shortest round-trip
/// form; named constants for infinities and NaN).
pub(crate) fn lit(v: f32) -> String {
    if v.is_nan() {
        "NAN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "INFINITY" } else { "(-INFINITY)" }.into()
    } else {
        // `{:?}` always has a `.` or an exponent, so the `f` suffix makes a float literal.
        let s = format!("{v:?}");
        if s.starts_with('-') {
            format!("({s}f)")
        } else {
            format!("{s}f")
        }
    }
}

/// The OpenCL C type of a buffer element (bool is one byte holding 0 or 1).
pub(crate) fn ctype(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::I32 => "int",
        DType::I64 => "long",
        DType::Bool => "uchar",
    }
}

/// Row-major strides of `dims`, in elements (saturating; only used for non-empty buffers, whose
/// partial products are exact).
pub(crate) fn row_major(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(dims[i + 1]);
    }
    s
}

/// Coordinate `axis` of the flat row-major index `var` of a tensor with `dims`, as C.
pub(crate) fn coord(var: &str, dims: &[usize], axis: usize) -> String {
    let stride: usize = dims[axis + 1..].iter().product();
    let div = if stride == 1 {
        var.to_string()
    } else {
        format!("({var} / {stride})")
    };
    // The first axis needs no modulo: the flat index is below the element count.
    if axis == 0 {
        div
    } else {
        format!("({div} % {})", dims[axis])
    }
}

/// The element offset `sum(coord_k * strides[k])` of the flat index `var` over `dims`, as C.
/// Contiguous reads (strides equal to the row-major ones on every axis longer than 1) are just
/// `var`; size-1 and stride-0 axes contribute nothing.
pub(crate) fn strided_offset(var: &str, dims: &[usize], strides: &[usize]) -> String {
    let rm = row_major(dims);
    let contiguous = dims
        .iter()
        .zip(strides.iter().zip(&rm))
        .all(|(&d, (&s, &r))| d == 1 || s == r);
    if contiguous {
        return var.to_string();
    }
    let terms: Vec<String> = (0..dims.len())
        .filter(|&k| dims[k] != 1 && strides[k] != 0)
        .map(|k| {
            let c = coord(var, dims, k);
            if strides[k] == 1 {
                c
            } else {
                format!("{c} * {}", strides[k])
            }
        })
        .collect();
    if terms.is_empty() {
        "0".into()
    } else {
        format!("({})", terms.join(" + "))
    }
}

/// `op(x)` in C.
pub(crate) fn unary(op: UnaryOp, x: &str) -> String {
    match op {
        UnaryOp::Neg => format!("(-{x})"),
        UnaryOp::Abs => format!("fabs({x})"),
        UnaryOp::Relu => format!("k_relu({x})"),
        UnaryOp::Relu6 => format!("k_relu6({x})"),
        // x if x >= 0 else alpha * x (NaN takes the second branch and stays NaN).
        UnaryOp::LeakyRelu { alpha } => format!("({x} >= 0.0f ? {x} : {} * {x})", lit(alpha.0)),
        UnaryOp::Sigmoid => format!("k_sigmoid({x})"),
        UnaryOp::Tanh => format!("tanh({x})"),
        UnaryOp::Exp => format!("exp({x})"),
        UnaryOp::Log => format!("log({x})"),
        UnaryOp::Sqrt => format!("sqrt({x})"),
        UnaryOp::Rsqrt => format!("rsqrt({x})"),
        UnaryOp::Square => format!("({x} * {x})"),
        // Not OpenCL's `sign`, which gives 0 for NaN and keeps -0.
        UnaryOp::Sign => format!("k_sign({x})"),
    }
}

/// `op(a, b)` in C.
pub(crate) fn binary(op: BinaryOp, a: &str, b: &str) -> String {
    match op {
        BinaryOp::Add => format!("({a} + {b})"),
        BinaryOp::Sub => format!("({a} - {b})"),
        BinaryOp::Mul => format!("({a} * {b})"),
        BinaryOp::Div => format!("({a} / {b})"),
        BinaryOp::Maximum => format!("k_max({a}, {b})"),
        BinaryOp::Minimum => format!("k_min({a}, {b})"),
        // C99 pow: negative bases with integral exponents work, like f64::powf.
        BinaryOp::Pow => format!("pow({a}, {b})"),
    }
}

/// Emits the kernel's epilogue for output element `gid` (flat, over the output dims) into
/// `code`, with `main` the main result's C expression (`None` in an elementwise kernel), and
/// returns the C expression of the value to store. Loads read their buffers through `src`.
pub(crate) fn epilogue(
    src: &mut KernelSrc<'_>,
    code: &mut String,
    gid: &str,
    main: Option<&str>,
) -> Result<String, String> {
    let e: &Expr = &src.kernel.epilogue;
    let out_dims = src.out().dims.clone();
    let mut loads = Vec::with_capacity(e.loads.len());
    for (i, l) in e.loads.iter().enumerate() {
        let buf = src.program.buffer(l.buffer);
        if buf.dtype != DType::F32 {
            return Err(format!(
                "epilogue load l{i} reads buffer %{} of type {}, expected f32",
                buf.name, buf.dtype
            ));
        }
        if l.strides.len() != out_dims.len() {
            return Err(format!(
                "epilogue load l{i} has {} strides for a rank-{} output",
                l.strides.len(),
                out_dims.len()
            ));
        }
        let name = src.buf(l.buffer);
        let off = strided_offset(gid, &out_dims, &l.strides);
        let var = format!("l{i}");
        let _ = writeln!(code, "    const float {var} = {name}[{off}];");
        loads.push(var);
    }
    let operand = |o: Operand, steps: usize| -> Result<String, String> {
        match o {
            Operand::Main => main
                .map(str::to_string)
                .ok_or_else(|| "the epilogue reads `main` in a kernel without a main op".into()),
            Operand::Load(i) => loads
                .get(i)
                .cloned()
                .ok_or_else(|| format!("the epilogue reads load l{i}, which does not exist")),
            Operand::Step(i) if i < steps => Ok(format!("s{i}")),
            Operand::Step(i) => Err(format!(
                "the epilogue reads step s{i} before it is computed"
            )),
        }
    };
    for (i, s) in e.steps.iter().enumerate() {
        let v = match *s {
            Step::Unary(op, x) => unary(op, &operand(x, i)?),
            Step::Binary(op, a, b) => binary(op, &operand(a, i)?, &operand(b, i)?),
        };
        let _ = writeln!(code, "    const float s{i} = {v};");
    }
    operand(e.result, e.steps.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip() {
        assert_eq!(lit(0.2), "0.2f");
        assert_eq!(lit(1.0), "1.0f");
        assert_eq!(lit(-1.5), "(-1.5f)");
        assert_eq!(lit(1e-7), "1e-7f");
        assert_eq!(lit(f32::NAN), "NAN");
        assert_eq!(lit(f32::NEG_INFINITY), "(-INFINITY)");
        for v in [0.1f32, f32::MAX, f32::MIN_POSITIVE, 123456.79] {
            let s = lit(v);
            let back: f32 = s.trim_end_matches('f').parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{s}");
        }
    }

    #[test]
    fn offsets_simplify() {
        // Contiguous: the flat index itself.
        assert_eq!(strided_offset("g", &[2, 3, 4], &[12, 4, 1]), "g");
        // A bias over the last axis of [2, 3, 4].
        assert_eq!(strided_offset("g", &[2, 3, 4], &[0, 0, 1]), "((g % 4))");
        // A broadcast row: axis 0 only, stride 1.
        assert_eq!(strided_offset("g", &[5, 7], &[1, 0]), "((g / 7))");
        // Scalar broadcast.
        assert_eq!(strided_offset("g", &[5, 7], &[0, 0]), "0");
        // Size-1 axes are skipped even with odd strides.
        assert_eq!(strided_offset("g", &[1, 6], &[99, 1]), "g");
        assert_eq!(coord("g", &[2, 3, 4], 1), "((g / 4) % 3)");
        assert_eq!(coord("g", &[2, 3, 4], 0), "(g / 12)");
        assert_eq!(coord("g", &[2, 3, 4], 2), "(g % 4)");
    }

    #[test]
    fn functions_spell_reference_semantics() {
        assert_eq!(unary(UnaryOp::Square, "x"), "(x * x)");
        assert_eq!(binary(BinaryOp::Maximum, "a", "b"), "k_max(a, b)");
        let lr = unary(
            UnaryOp::LeakyRelu {
                alpha: kiln_ir::Float(0.2),
            },
            "x",
        );
        assert_eq!(lr, "(x >= 0.0f ? x : 0.2f * x)");
    }
}
