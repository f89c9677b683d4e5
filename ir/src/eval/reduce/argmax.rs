//! `argmax`: along the reduced axis the first index wins a tie and a NaN counts as larger than
//! any number (the first NaN wins), as the catalogue specifies (numpy's rule). Note:
//! TensorFlow 2.21's CPU kernel instead skips NaNs (`argmax([nan, 1])` is 1 there), so golden
//! data keeps NaN out of argmax inputs. Any numeric dtype is accepted.

use super::super::{norm_axis, numel, prod};
use crate::DType;
use crate::shape::fmt_dims;
use crate::tensor::{Data, Tensor};

/// `argmax(x; axis)`: the index of the largest element along `axis`, which is dropped;
/// `output_type` is i32 or i64.
pub(crate) fn argmax(x: &Tensor, axis: i64, output_type: DType) -> Result<Tensor, String> {
    if !matches!(output_type, DType::I32 | DType::I64) {
        return Err(format!("output_type must be i32 or i64, got {output_type}"));
    }
    let dims = x.dims();
    let a = norm_axis(axis, dims.len())?;
    let n = dims[a];
    let out_dims: Vec<usize> = dims
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != a)
        .map(|(_, &d)| d)
        .collect();
    let out_len = numel(&out_dims)?;
    if n == 0 && out_len > 0 {
        return Err(format!(
            "argmax over the empty axis {a} of x {}",
            fmt_dims(dims)
        ));
    }
    // Compared in their own type (i64 as f64 would tie distinct values beyond 2^53).
    let indices: Vec<usize> = match x.data() {
        Data::F32(v) => arg_best(v, dims, a, out_len, |c, b| {
            !b.is_nan() && (c.is_nan() || c > b)
        }),
        Data::I32(v) => arg_best(v, dims, a, out_len, |c, b| c > b),
        Data::I64(v) => arg_best(v, dims, a, out_len, |c, b| c > b),
        Data::Bool(_) => return Err(format!("x must be numeric, got {}", x.ty())),
    };
    let data = match output_type {
        // An index is below the axis length, which may exceed i32 only for absurd tensors.
        DType::I32 => Data::I32(
            indices
                .iter()
                .map(|&i| i32::try_from(i))
                .collect::<Result<_, _>>()
                .map_err(|_| format!("an index along axis {a} (size {n}) does not fit in i32"))?,
        ),
        _ => Data::I64(indices.iter().map(|&i| i as i64).collect()),
    };
    Tensor::new(&out_dims, data).map_err(|e| e.to_string())
}

/// For every (outer, inner) position, the first index `k` along the axis such that no later
/// element `beats` the best so far. `beats(candidate, best)` must be a strict order.
fn arg_best<T: Copy>(
    v: &[T],
    dims: &[usize],
    axis: usize,
    out_len: usize,
    beats: impl Fn(T, T) -> bool,
) -> Vec<usize> {
    let n = dims[axis];
    // Non-empty when used (out_len > 0 and n > 0), so the products are exact.
    let inner = prod(&dims[axis + 1..]);
    let mut out = Vec::with_capacity(out_len);
    for o in 0..out_len {
        let (outer, i) = (o / inner.max(1), o % inner.max(1));
        let base = outer * n * inner + i;
        let mut best = 0;
        for k in 1..n {
            if beats(v[base + k * inner], v[base + best * inner]) {
                best = k;
            }
        }
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{i32s, ints, iota, noise, t};
    use super::*;
    use crate::tensor::Data;

    #[test]
    fn argmax_middle_axis_ties_and_nan() {
        // x[2,3,2]; along axis 1 (size 3).
        let x = t(
            &[2, 3, 2],
            &[
                1.0,
                5.0, //
                3.0,
                5.0, // tie for column 1: first (k = 0) wins
                3.0,
                -1.0, // tie for column 0 at k = 1 and 2: k = 1 wins
                0.0,
                f32::NAN, //
                f32::NAN,
                7.0, // first NaN wins for column 0 (k = 1)
                f32::NAN,
                9.0,
            ],
        );
        let r = argmax(&x, 1, DType::I64).unwrap();
        assert_eq!(r, ints(&[2, 2], &[1, 0, 1, 0]));
        let r = argmax(&x, -2, DType::I32).unwrap();
        assert_eq!(r, i32s(&[2, 2], &[1, 0, 1, 0]));
        // Last axis.
        let r = argmax(&x, -1, DType::I64).unwrap();
        assert_eq!(r, ints(&[2, 3], &[1, 1, 0, 1, 0, 0]));
    }

    #[test]
    fn argmax_matches_a_naive_scan_and_int_inputs() {
        let x = noise(&[3, 4, 5], 11);
        let v = x.as_f32().unwrap();
        for axis in 0..3usize {
            let r = argmax(&x, axis as i64, DType::I64).unwrap();
            let dims = [3usize, 4, 5];
            let mut want = vec![];
            for i in 0..3 {
                for j in 0..4 {
                    for k in 0..5 {
                        let mut idx = [i, j, k];
                        if idx[axis] != 0 {
                            continue;
                        }
                        let mut best = (f32::NEG_INFINITY, 0);
                        for m in 0..dims[axis] {
                            idx[axis] = m;
                            let e = v[(idx[0] * 4 + idx[1]) * 5 + idx[2]];
                            if e > best.0 {
                                best = (e, m as i64);
                            }
                        }
                        want.push(best.1);
                    }
                }
            }
            assert_eq!(r.data().clone().into_i64(), want, "axis {axis}");
        }
        let xi = i32s(&[4], &[-3, 7, 7, -9]);
        assert_eq!(argmax(&xi, 0, DType::I32).unwrap(), i32s(&[], &[1]));
        let big = ints(&[2], &[(1 << 60) + 1, (1 << 60) + 2]);
        assert_eq!(argmax(&big, 0, DType::I64).unwrap(), ints(&[], &[1]));
    }

    #[test]
    fn argmax_errors() {
        let x = iota(&[2, 3]);
        assert!(
            argmax(&x, 2, DType::I64)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            argmax(&x, 0, DType::F32)
                .unwrap_err()
                .contains("i32 or i64")
        );
        let e = argmax(&t(&[2, 0], &[]), 1, DType::I64).unwrap_err();
        assert!(e.contains("empty axis 1") && e.contains("[2,0]"), "{e}");
        // Nothing to reduce and nothing to produce is fine.
        assert_eq!(argmax(&t(&[0, 0], &[]), 1, DType::I64).unwrap().dims(), [0]);
        let b = Tensor::new(&[2], Data::Bool(vec![true, false])).unwrap();
        assert!(argmax(&b, 0, DType::I64).unwrap_err().contains("numeric"));
    }

    trait IntoI64 {
        fn into_i64(self) -> Vec<i64>;
    }
    impl IntoI64 for Data {
        fn into_i64(self) -> Vec<i64> {
            match self {
                Data::I64(v) => v,
                other => panic!("expected i64 data, got {other:?}"),
            }
        }
    }
}
