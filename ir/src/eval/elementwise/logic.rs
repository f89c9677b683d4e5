//! Comparisons, logical ops and `select`: elementwise ops over any dtype with numpy
//! broadcasting. Comparisons follow IEEE (a NaN operand compares false, except under
//! `not_equal`), as `tf.math.less` and friends do.

use super::super::{numel, strides};
use super::{broadcast_dims, broadcast_strides};
use crate::op::{CompareOp, LogicalOp};
use crate::tensor::{Data, Tensor};

/// For every element of the broadcast `out` dims, in row-major order, the flat index of the
/// element each operand (of `dims`) contributes.
fn indices<const N: usize>(dims: [&[usize]; N], out: &[usize]) -> Result<Vec<[usize; N]>, String> {
    let n = numel(out)?;
    let so = strides(out);
    let operand_strides = dims.map(|d| broadcast_strides(d, out));
    let mut all = Vec::new();
    all.try_reserve_exact(n)
        .map_err(|_| format!("cannot allocate {n} indices for the result"))?;
    for flat in 0..n {
        let mut at = [0usize; N];
        for axis in 0..out.len() {
            let coord = flat / so[axis] % out[axis];
            for (i, s) in operand_strides.iter().enumerate() {
                at[i] += coord * s[axis];
            }
        }
        all.push(at);
    }
    Ok(all)
}

/// `f` on each pair of broadcast elements of `a` (dims `ad`) and `b` (dims `bd`).
fn zip<A: Copy, B: Copy, O>(
    (a, ad): (&[A], &[usize]),
    (b, bd): (&[B], &[usize]),
    f: impl Fn(A, B) -> O,
) -> Result<(Vec<usize>, Vec<O>), String> {
    let out = broadcast_dims(ad, bd)?;
    let values = indices([ad, bd], &out)?
        .into_iter()
        .map(|[i, j]| f(a[i], b[j]))
        .collect();
    Ok((out, values))
}

fn bools(dims: Vec<usize>, values: Vec<bool>) -> Result<Tensor, String> {
    Tensor::new(&dims, Data::Bool(values)).map_err(|e| e.to_string())
}

/// `equal(a, b)`, `less(a, b)`, ...: same dtype on both sides, bool result.
pub(in crate::eval) fn compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let (ad, bd) = (a.dims(), b.dims());
    let (dims, values) = match (a.data(), b.data()) {
        (Data::F32(x), Data::F32(y)) => zip((x, ad), (y, bd), |p, q| op.holds(p, q))?,
        (Data::I32(x), Data::I32(y)) => zip((x, ad), (y, bd), |p, q| op.holds(p, q))?,
        (Data::I64(x), Data::I64(y)) => zip((x, ad), (y, bd), |p, q| op.holds(p, q))?,
        (Data::Bool(x), Data::Bool(y)) if !op.is_ordering() => {
            zip((x, ad), (y, bd), |p, q| op.holds(p, q))?
        }
        _ => {
            return Err(format!(
                "{} needs two operands of one dtype (f32, i32 or i64; bool for equal and \
                 not_equal), got {} and {}",
                op.name(),
                a.ty(),
                b.ty()
            ));
        }
    };
    bools(dims, values)
}

/// `logical_and(a, b)` / `logical_or(a, b)` on bool operands.
pub(in crate::eval) fn logical(op: LogicalOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let (Data::Bool(x), Data::Bool(y)) = (a.data(), b.data()) else {
        return Err(format!(
            "{} needs bool operands, got {} and {}",
            op.name(),
            a.ty(),
            b.ty()
        ));
    };
    let (dims, values) = zip((x, a.dims()), (y, b.dims()), |p, q| op.apply(p, q))?;
    bools(dims, values)
}

/// `logical_not(x)` on a bool operand.
pub(in crate::eval) fn logical_not(x: &Tensor) -> Result<Tensor, String> {
    let Data::Bool(v) = x.data() else {
        return Err(format!("logical_not needs a bool operand, got {}", x.ty()));
    };
    bools(x.dims().to_vec(), v.iter().map(|&p| !p).collect())
}

/// `select(cond, a, b)`: `a` where `cond`, else `b`; the three broadcast together.
pub(in crate::eval) fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let Data::Bool(c) = cond.data() else {
        return Err(format!("select's cond must be bool, got {}", cond.ty()));
    };
    let out = broadcast_dims(cond.dims(), &broadcast_dims(a.dims(), b.dims())?)?;
    let at = indices([cond.dims(), a.dims(), b.dims()], &out)?;
    fn pick<T: Copy>(c: &[bool], x: &[T], y: &[T], at: &[[usize; 3]]) -> Vec<T> {
        at.iter()
            .map(|&[k, i, j]| if c[k] { x[i] } else { y[j] })
            .collect()
    }
    let data = match (a.data(), b.data()) {
        (Data::F32(x), Data::F32(y)) => Data::F32(pick(c, x, y, &at)),
        (Data::I32(x), Data::I32(y)) => Data::I32(pick(c, x, y, &at)),
        (Data::I64(x), Data::I64(y)) => Data::I64(pick(c, x, y, &at)),
        (Data::Bool(x), Data::Bool(y)) => Data::Bool(pick(c, x, y, &at)),
        _ => {
            return Err(format!(
                "select's a and b must have one dtype, got {} and {}",
                a.ty(),
                b.ty()
            ));
        }
    };
    Tensor::new(&out, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{i32s, ints, t};
    use super::*;

    fn b(dims: &[usize], v: &[bool]) -> Tensor {
        Tensor::new(dims, Data::Bool(v.to_vec())).unwrap()
    }

    #[test]
    fn comparisons_with_nan_and_signed_zero() {
        let nan = f32::NAN;
        let x = t(&[5], &[1.0, 2.0, nan, nan, -0.0]);
        let y = t(&[5], &[2.0, 2.0, 1.0, nan, 0.0]);
        let want = [
            (CompareOp::Equal, [false, true, false, false, true]),
            (CompareOp::NotEqual, [true, false, true, true, false]),
            (CompareOp::Less, [true, false, false, false, false]),
            (CompareOp::LessEqual, [true, true, false, false, true]),
            (CompareOp::Greater, [false, false, false, false, false]),
            (CompareOp::GreaterEqual, [false, true, false, false, true]),
        ];
        for (op, w) in want {
            assert_eq!(compare(op, &x, &y).unwrap(), b(&[5], &w), "{op:?}");
        }
    }

    #[test]
    fn comparisons_broadcast_integers() {
        // [2,1] against [3]: out[i][j] = x[i] < y[j].
        let x = i32s(&[2, 1], &[0, 5]);
        let y = i32s(&[3], &[-1, 3, 7]);
        let r = compare(CompareOp::Less, &x, &y).unwrap();
        assert_eq!(r, b(&[2, 3], &[false, true, true, false, false, true]));
        let big = ints(&[2], &[i64::MAX, i64::MIN]);
        let r = compare(CompareOp::GreaterEqual, &big, &ints(&[], &[0])).unwrap();
        assert_eq!(r, b(&[2], &[true, false]));
        let p = b(&[2], &[true, false]);
        let r = compare(CompareOp::Equal, &p, &b(&[2, 1], &[true, false])).unwrap();
        assert_eq!(r, b(&[2, 2], &[true, false, false, true]));
    }

    #[test]
    fn comparisons_reject_mixed_dtypes_and_ordered_bools() {
        let err = compare(CompareOp::Less, &t(&[2], &[0.0; 2]), &i32s(&[2], &[0; 2])).unwrap_err();
        assert!(err.contains("f32[2]") && err.contains("i32[2]"), "{err}");
        let p = b(&[1], &[true]);
        assert!(compare(CompareOp::Less, &p, &p).is_err());
        let err = compare(CompareOp::Equal, &t(&[2], &[0.0; 2]), &t(&[3], &[0.0; 3]));
        assert!(err.unwrap_err().contains("do not broadcast"));
    }

    #[test]
    fn logical_ops_broadcast() {
        let x = b(&[2, 1], &[true, false]);
        let y = b(&[2], &[true, false]);
        let and = logical(LogicalOp::And, &x, &y).unwrap();
        assert_eq!(and, b(&[2, 2], &[true, false, false, false]));
        let or = logical(LogicalOp::Or, &x, &y).unwrap();
        assert_eq!(or, b(&[2, 2], &[true, true, true, false]));
        assert_eq!(logical_not(&y).unwrap(), b(&[2], &[false, true]));
        let err = logical(LogicalOp::And, &t(&[1], &[1.0]), &y).unwrap_err();
        assert!(err.contains("f32[1]") && err.contains("bool[2]"), "{err}");
        assert!(logical_not(&t(&[1], &[1.0])).is_err());
    }

    #[test]
    fn select_broadcasts_cond_a_and_b() {
        // cond [2,1], a [3], b scalar: rows pick a or b.
        let cond = b(&[2, 1], &[true, false]);
        let a = t(&[3], &[1.0, f32::NAN, 3.0]);
        let r = select(&cond, &a, &t(&[], &[-1.0])).unwrap();
        let got = r.as_f32().unwrap();
        assert_eq!(r.dims(), [2, 3]);
        assert_eq!(got[0], 1.0);
        assert!(got[1].is_nan());
        assert_eq!(&got[2..], [3.0, -1.0, -1.0, -1.0]);
        let r = select(
            &b(&[2], &[false, true]),
            &ints(&[2], &[1, 2]),
            &ints(&[2], &[3, 4]),
        );
        assert_eq!(r.unwrap(), ints(&[2], &[3, 2]));
        let err = select(&t(&[2], &[1.0, 0.0]), &a, &a).unwrap_err();
        assert!(err.contains("cond must be bool"), "{err}");
        let err = select(&cond, &a, &i32s(&[3], &[0; 3])).unwrap_err();
        assert!(err.contains("f32[3]") && err.contains("i32[3]"), "{err}");
        assert!(select(&b(&[4], &[true; 4]), &a, &a).is_err());
    }
}
