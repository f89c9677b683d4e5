//! Elementwise ops: unary, binary (numpy broadcasting), bias_add (per channel) and cast.
//!
//! Broadcasting aligns shapes from the right. With unknown dims it keeps what is certain: a
//! known `d > 1` against `?` gives `d` (the `?` must be 1 or `d` at run time), `1` against `?`
//! gives `?`, and `?` against `?` gives `?`. Per-channel ops return `x`'s type unchanged (even
//! when the rank-1 operand knows a channel count `x` leaves as `?`), so that a pass fusing them
//! into their producer keeps every downstream type as it was.

use super::{normalize_axis, require_f32};
use crate::DType;
use crate::op::{CompareOp, DataFormat};
use crate::shape::{Dim, Shape, TensorType};

/// Unary elementwise ops: f32 in, same type out.
pub(super) fn unary(x: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    Ok(x.clone())
}

/// Binary elementwise ops: both f32, shapes broadcast numpy-style.
pub(super) fn binary(a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    require_f32("a", a)?;
    require_f32("b", b)?;
    Ok(TensorType::f32(broadcast(a, b)?))
}

/// The numpy broadcast of two shapes (any ranks), with unknown dims as described above.
pub(super) fn broadcast(a: &TensorType, b: &TensorType) -> Result<Shape, String> {
    let (ra, rb) = (a.rank(), b.rank());
    let rank = ra.max(rb);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        // i counts from the left of the output; operands are aligned on the right.
        let da = (i + ra)
            .checked_sub(rank)
            .map(|j| a.shape.dim(j))
            .unwrap_or(Some(1));
        let db = (i + rb)
            .checked_sub(rank)
            .map(|j| b.shape.dim(j))
            .unwrap_or(Some(1));
        let d = match (da, db) {
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(1), other) | (other, Some(1)) => other,
            (Some(x), Some(y)) => {
                return Err(format!(
                    "shapes do not broadcast: a is {a}, b is {b} (axis {} from the end: {x} vs {y}; \
                     dims must be equal or one of them 1)",
                    rank - i
                ));
            }
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        };
        out.push(d);
    }
    Ok(Shape::of(&out))
}

/// The channel axis of `x` for a per-channel op, checking the rank the format needs.
pub(super) fn channel_axis(
    format: DataFormat,
    x: &TensorType,
    min_nchw_rank: usize,
) -> Result<usize, String> {
    match format {
        DataFormat::Nhwc if x.rank() >= 2 => Ok(x.rank() - 1),
        DataFormat::Nhwc => Err(format!(
            "x must have rank >= 2 (channels on the last axis for NHWC), got {x}"
        )),
        DataFormat::Nchw if x.rank() >= min_nchw_rank => normalize_axis(1, x.rank(), "x", x),
        DataFormat::Nchw => Err(format!(
            "x must have rank {} with NCHW (channels on axis 1), got {x}",
            if min_nchw_rank == 4 {
                "4".to_string()
            } else {
                format!(">= {min_nchw_rank}")
            }
        )),
    }
}

/// Checks a rank-1 per-channel operand (`role` = "b", "scale", ...) against `x`'s channels.
pub(super) fn check_per_channel(
    role: &str,
    v: &TensorType,
    x: &TensorType,
    channels: Dim,
) -> Result<(), String> {
    require_f32(role, v)?;
    if v.rank() != 1 {
        return Err(format!(
            "{role} must be rank 1 (one value per channel), got {role} = {v} for x = {x}"
        ));
    }
    if let (Some(c), Some(n)) = (channels, v.shape.dim(0))
        && c != n
    {
        return Err(format!(
            "channel counts differ: x is {x} ({c} channels), {role} is {v} ({n} values)"
        ));
    }
    Ok(())
}

/// `bias_add(x, b)`: x rank >= 2 (>= 3 for NCHW), b rank 1 of x's channel count.
pub(super) fn bias_add(
    format: DataFormat,
    x: &TensorType,
    b: &TensorType,
) -> Result<TensorType, String> {
    require_f32("x", x)?;
    let c = channel_axis(format, x, 3)?;
    check_per_channel("b", b, x, x.shape.dim(c))?;
    Ok(x.clone())
}

/// `broadcast_like(x, like)`: x (f32) must broadcast to like's shape, which is the result's.
pub(super) fn broadcast_like(x: &TensorType, like: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    let out = TensorType::f32(like.shape.clone());
    if x.rank() > like.rank() || broadcast(x, &out)? != like.shape {
        return Err(format!(
            "x does not broadcast to like's shape: x is {x}, like is {like}"
        ));
    }
    Ok(out)
}

/// `cast(x; to)`: same shape, dtype `to`.
pub(super) fn cast(to: DType, x: &TensorType) -> Result<TensorType, String> {
    Ok(TensorType::new(to, x.shape.clone()))
}

/// `equal(a, b)`, `less(a, b)`, ...: one dtype on both sides (f32, i32, i64; bool only for
/// `equal` and `not_equal`), shapes broadcast, a bool result.
pub(super) fn compare(op: CompareOp, a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    if a.dtype != b.dtype {
        return Err(format!(
            "the operands must have one dtype, got a = {a} (dtype {}) and b = {b} (dtype {})",
            a.dtype, b.dtype
        ));
    }
    if a.dtype == DType::Bool && op.is_ordering() {
        return Err(format!(
            "{} orders numbers: a and b must be f32, i32 or i64, got a = {a} and b = {b}",
            op.name()
        ));
    }
    Ok(TensorType::new(DType::Bool, broadcast(a, b)?))
}

/// Errors unless `t` is bool; `role` names the operand.
fn require_bool(role: &str, t: &TensorType) -> Result<(), String> {
    if t.dtype == DType::Bool {
        Ok(())
    } else {
        Err(format!("{role} must be bool, got {t} (dtype {})", t.dtype))
    }
}

/// `logical_and(a, b)` / `logical_or(a, b)`: both bool, shapes broadcast.
pub(super) fn logical(a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    if a.dtype != DType::Bool || b.dtype != DType::Bool {
        return Err(format!(
            "a and b must be bool, got a = {a} (dtype {}) and b = {b} (dtype {})",
            a.dtype, b.dtype
        ));
    }
    Ok(TensorType::new(DType::Bool, broadcast(a, b)?))
}

/// `logical_not(x)`: bool in, same type out.
pub(super) fn logical_not(x: &TensorType) -> Result<TensorType, String> {
    require_bool("x", x)?;
    Ok(x.clone())
}

/// `select(cond, a, b)`: cond bool, a and b one dtype, all three broadcast together.
pub(super) fn select(
    cond: &TensorType,
    a: &TensorType,
    b: &TensorType,
) -> Result<TensorType, String> {
    require_bool("cond", cond)?;
    if a.dtype != b.dtype {
        return Err(format!(
            "a and b must have one dtype, got a = {a} (dtype {}) and b = {b} (dtype {})",
            a.dtype, b.dtype
        ));
    }
    let values = TensorType::new(a.dtype, broadcast(a, b)?);
    let shape = broadcast(cond, &values)
        .map_err(|_| format!("cond = {cond} does not broadcast with a = {a} and b = {b}"))?;
    Ok(TensorType::new(a.dtype, shape))
}

#[cfg(test)]
mod tests {
    use super::super::{assert_err, run, ty};
    use crate::op::{BinaryOp, CompareOp, DataFormat, LogicalOp, Op, UnaryOp};

    const ADD: Op = Op::Binary(BinaryOp::Add);

    #[test]
    fn unary_keeps_type_and_needs_f32() {
        for u in UnaryOp::ALL {
            assert_eq!(run(&Op::Unary(u), &["f32[?,3]"]).unwrap(), ty("f32[?,3]"));
            assert_err(
                &Op::Unary(u),
                &["i32[2]"],
                &["x must be f32", "i32[2]", "dtype i32"],
            );
        }
        assert_eq!(
            run(&Op::Unary(UnaryOp::Relu), &["f32[]"]).unwrap(),
            ty("f32[]")
        );
    }

    #[test]
    fn binary_broadcasts_any_ranks() {
        let cases = [
            ("f32[2,3]", "f32[2,3]", "f32[2,3]"),
            ("f32[2,3]", "f32[3]", "f32[2,3]"),
            ("f32[4,1,3]", "f32[5,1]", "f32[4,5,3]"),
            ("f32[]", "f32[7,2]", "f32[7,2]"),
            ("f32[1]", "f32[]", "f32[1]"),
            ("f32[0,3]", "f32[1,3]", "f32[0,3]"),
            ("f32[2,1,1,6]", "f32[3,1]", "f32[2,1,3,6]"),
        ];
        for b in BinaryOp::ALL {
            for (x, y, want) in cases {
                assert_eq!(run(&Op::Binary(b), &[x, y]).unwrap(), ty(want), "{x} {y}");
                assert_eq!(run(&Op::Binary(b), &[y, x]).unwrap(), ty(want), "{y} {x}");
            }
        }
    }

    #[test]
    fn broadcast_with_unknown_dims() {
        assert_eq!(
            run(&ADD, &["f32[?,3]", "f32[5,3]"]).unwrap(),
            ty("f32[5,3]")
        );
        assert_eq!(
            run(&ADD, &["f32[?,3]", "f32[1,3]"]).unwrap(),
            ty("f32[?,3]")
        );
        assert_eq!(
            run(&ADD, &["f32[?,3]", "f32[?,1]"]).unwrap(),
            ty("f32[?,3]")
        );
        assert_eq!(run(&ADD, &["f32[?]", "f32[2,?]"]).unwrap(), ty("f32[2,?]"));
        assert_eq!(run(&ADD, &["f32[?,?]", "f32[3]"]).unwrap(), ty("f32[?,3]"));
    }

    #[test]
    fn broadcast_incompatible_names_both_types() {
        assert_err(
            &ADD,
            &["f32[2,3]", "f32[4]"],
            &[
                "a is f32[2,3]",
                "b is f32[4]",
                "3 vs 4",
                "axis 1 from the end",
            ],
        );
        assert_err(
            &ADD,
            &["f32[2,3]", "f32[3,3]"],
            &["2 vs 3", "axis 2 from the end"],
        );
    }

    #[test]
    fn binary_needs_f32() {
        assert_err(&ADD, &["f32[2]", "i64[2]"], &["b must be f32", "i64[2]"]);
        assert_err(&ADD, &["bool[2]", "f32[2]"], &["a must be f32", "bool[2]"]);
    }

    #[test]
    fn bias_add_channels() {
        let nhwc = Op::BiasAdd {
            data_format: DataFormat::Nhwc,
        };
        let nchw = Op::BiasAdd {
            data_format: DataFormat::Nchw,
        };
        assert_eq!(
            run(&nhwc, &["f32[?,5,5,8]", "f32[8]"]).unwrap(),
            ty("f32[?,5,5,8]")
        );
        assert_eq!(run(&nhwc, &["f32[4,8]", "f32[8]"]).unwrap(), ty("f32[4,8]"));
        assert_eq!(run(&nhwc, &["f32[4,?]", "f32[8]"]).unwrap(), ty("f32[4,?]"));
        assert_eq!(
            run(&nchw, &["f32[1,8,5,5]", "f32[8]"]).unwrap(),
            ty("f32[1,8,5,5]")
        );
        assert_eq!(
            run(&nchw, &["f32[1,8,5]", "f32[?]"]).unwrap(),
            ty("f32[1,8,5]")
        );
        assert_err(
            &nhwc,
            &["f32[1,5,5,8]", "f32[5]"],
            &["x is f32[1,5,5,8] (8 channels)", "b is f32[5] (5 values)"],
        );
        assert_err(&nchw, &["f32[1,8,5,5]", "f32[5]"], &["(8 channels)"]);
        assert_err(&nhwc, &["f32[8]", "f32[8]"], &["rank >= 2", "f32[8]"]);
        assert_err(&nchw, &["f32[2,8]", "f32[8]"], &["rank >= 3", "NCHW"]);
        assert_err(
            &nhwc,
            &["f32[2,8]", "f32[1,8]"],
            &["b must be rank 1", "f32[1,8]"],
        );
        assert_err(&nhwc, &["f32[2,8]", "i32[8]"], &["b must be f32"]);
    }

    #[test]
    fn compare_needs_one_dtype_and_gives_bool() {
        for c in CompareOp::ALL {
            let op = Op::Compare(c);
            for dt in ["f32", "i32", "i64"] {
                let (a, b) = (format!("{dt}[2,1]"), format!("{dt}[3]"));
                assert_eq!(run(&op, &[&a, &b]).unwrap(), ty("bool[2,3]"));
            }
            assert_err(
                &op,
                &["f32[2]", "i32[2]"],
                &["one dtype", "a = f32[2]", "b = i32[2]"],
            );
            assert_err(&op, &["f32[2]", "f32[3]"], &["do not broadcast"]);
            let bools = run(&op, &["bool[?,2]", "bool[2]"]);
            if c.is_ordering() {
                assert!(bools.unwrap_err().contains("orders numbers"));
            } else {
                assert_eq!(bools.unwrap(), ty("bool[?,2]"));
            }
        }
    }

    #[test]
    fn logical_ops_need_bool() {
        for l in LogicalOp::ALL {
            let op = Op::Logical(l);
            assert_eq!(
                run(&op, &["bool[4,1]", "bool[3]"]).unwrap(),
                ty("bool[4,3]")
            );
            assert_err(
                &op,
                &["f32[2]", "bool[2]"],
                &["must be bool", "a = f32[2]", "b = bool[2]"],
            );
        }
        assert_eq!(run(&Op::LogicalNot, &["bool[?]"]).unwrap(), ty("bool[?]"));
        assert_err(&Op::LogicalNot, &["i32[2]"], &["x must be bool", "i32[2]"]);
    }

    #[test]
    fn select_broadcasts_three_ways() {
        let s = Op::Select;
        assert_eq!(
            run(&s, &["bool[2,1,1]", "f32[3,1]", "f32[4]"]).unwrap(),
            ty("f32[2,3,4]")
        );
        assert_eq!(
            run(&s, &["bool[]", "i64[?,2]", "i64[2]"]).unwrap(),
            ty("i64[?,2]")
        );
        assert_err(
            &s,
            &["f32[2]", "f32[2]", "f32[2]"],
            &["cond must be bool", "f32[2]"],
        );
        assert_err(
            &s,
            &["bool[2]", "f32[2]", "i32[2]"],
            &["one dtype", "a = f32[2]", "b = i32[2]"],
        );
        assert_err(
            &s,
            &["bool[3]", "f32[2]", "f32[2]"],
            &["cond = bool[3] does not broadcast", "a = f32[2]"],
        );
    }

    #[test]
    fn stop_gradient_keeps_any_type() {
        assert_eq!(
            run(&Op::StopGradient, &["i32[?,3]"]).unwrap(),
            ty("i32[?,3]")
        );
    }
}
