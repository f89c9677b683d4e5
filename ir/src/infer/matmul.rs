//! `matmul`: rank-2 `[m,k] x [k,n]` and rank-3 batched `[B,m,k] x [B,k,n]`, with either
//! operand's last two axes optionally transposed. Batch dims must be equal or one of them 1
//! (broadcast); inner dims must agree where known.

use super::require_f32;
use crate::shape::{Dim, Shape, TensorType};

/// Infers `matmul(a, b)`.
pub(super) fn matmul(
    ta: bool,
    tb: bool,
    a: &TensorType,
    b: &TensorType,
) -> Result<TensorType, String> {
    require_f32("a", a)?;
    require_f32("b", b)?;
    let rank = a.rank();
    if !(rank == 2 || rank == 3) || b.rank() != rank {
        return Err(format!(
            "operands must both be rank 2 ([m,k] x [k,n]) or both rank 3 ([B,m,k] x [B,k,n]), got a = {a}, b = {b}"
        ));
    }
    let last2 = |t: &TensorType, transposed: bool| -> (Dim, Dim) {
        let (r, c) = (t.shape.dim(rank - 2), t.shape.dim(rank - 1));
        if transposed { (c, r) } else { (r, c) }
    };
    let (m, ka) = last2(a, ta);
    let (kb, n) = last2(b, tb);
    if let (Some(x), Some(y)) = (ka, kb)
        && x != y
    {
        let note = |t: bool, name: &str| {
            if t {
                format!(" (transpose_{name})")
            } else {
                String::new()
            }
        };
        return Err(format!(
            "inner dimensions differ: a is {a}{} (k = {x}), b is {b}{} (k = {y})",
            note(ta, "a"),
            note(tb, "b")
        ));
    }
    let mut dims = Vec::with_capacity(rank);
    if rank == 3 {
        let batch = match (a.shape.dim(0), b.shape.dim(0)) {
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(1), other) | (other, Some(1)) => other,
            (Some(x), Some(y)) => {
                return Err(format!(
                    "batch dims differ: a is {a} (batch {x}), b is {b} (batch {y}); they must be equal or one of them 1"
                ));
            }
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        };
        dims.push(batch);
    }
    dims.extend([m, n]);
    Ok(TensorType::f32(Shape::of(&dims)))
}

#[cfg(test)]
mod tests {
    use super::super::{assert_err, run, ty};
    use crate::op::Op;

    fn mm(transpose_a: bool, transpose_b: bool) -> Op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        }
    }

    #[test]
    fn rank2_with_transposes() {
        assert_eq!(
            run(&mm(false, false), &["f32[2,3]", "f32[3,4]"]).unwrap(),
            ty("f32[2,4]")
        );
        assert_eq!(
            run(&mm(true, false), &["f32[3,2]", "f32[3,4]"]).unwrap(),
            ty("f32[2,4]")
        );
        assert_eq!(
            run(&mm(false, true), &["f32[2,3]", "f32[4,3]"]).unwrap(),
            ty("f32[2,4]")
        );
        assert_eq!(
            run(&mm(true, true), &["f32[3,2]", "f32[4,3]"]).unwrap(),
            ty("f32[2,4]")
        );
        assert_eq!(
            run(&mm(false, false), &["f32[?,3]", "f32[?,4]"]).unwrap(),
            ty("f32[?,4]")
        );
        assert_eq!(
            run(&mm(false, false), &["f32[2,0]", "f32[0,4]"]).unwrap(),
            ty("f32[2,4]")
        );
    }

    #[test]
    fn rank3_batched_and_broadcast() {
        let m = mm(false, false);
        assert_eq!(
            run(&m, &["f32[5,2,3]", "f32[5,3,4]"]).unwrap(),
            ty("f32[5,2,4]")
        );
        assert_eq!(
            run(&m, &["f32[1,2,3]", "f32[5,3,4]"]).unwrap(),
            ty("f32[5,2,4]")
        );
        assert_eq!(
            run(&m, &["f32[5,2,3]", "f32[1,3,4]"]).unwrap(),
            ty("f32[5,2,4]")
        );
        assert_eq!(
            run(&m, &["f32[?,2,3]", "f32[5,3,4]"]).unwrap(),
            ty("f32[5,2,4]")
        );
        assert_eq!(
            run(&m, &["f32[?,2,3]", "f32[1,3,4]"]).unwrap(),
            ty("f32[?,2,4]")
        );
        assert_eq!(
            run(&mm(true, true), &["f32[5,3,2]", "f32[5,4,3]"]).unwrap(),
            ty("f32[5,2,4]")
        );
        assert_err(
            &m,
            &["f32[5,2,3]", "f32[4,3,4]"],
            &[
                "batch dims differ",
                "a is f32[5,2,3] (batch 5)",
                "b is f32[4,3,4] (batch 4)",
            ],
        );
    }

    #[test]
    fn inner_dims_must_agree() {
        assert_err(
            &mm(false, false),
            &["f32[2,3]", "f32[4,5]"],
            &["inner dimensions differ: a is f32[2,3] (k = 3), b is f32[4,5] (k = 4)"],
        );
        assert_err(
            &mm(true, false),
            &["f32[2,3]", "f32[3,5]"],
            &["a is f32[2,3] (transpose_a) (k = 2)"],
        );
        assert_err(
            &mm(false, true),
            &["f32[2,3]", "f32[3,5]"],
            &["b is f32[3,5] (transpose_b) (k = 5)"],
        );
    }

    #[test]
    fn ranks_and_dtypes() {
        let m = mm(false, false);
        assert_err(
            &m,
            &["f32[2,3,4]", "f32[4,5]"],
            &["both be rank 2", "a = f32[2,3,4]", "b = f32[4,5]"],
        );
        assert_err(&m, &["f32[3]", "f32[3]"], &["both be rank 2"]);
        assert_err(&m, &["f32[1,2,3,4]", "f32[1,2,4,3]"], &["rank 3"]);
        assert_err(&m, &["f32[2,3]", "i32[3,4]"], &["b must be f32"]);
    }
}
