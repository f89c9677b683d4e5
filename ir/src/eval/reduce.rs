//! Reductions (`reduce_sum/mean/max/min`) over a set of axes, and `softmax` / `log_softmax`
//! along one axis.
//!
//! Sums accumulate in f64. Reductions over zero elements give TensorFlow's identities: sum 0,
//! mean NaN (0/0), max -inf, min +inf. Max and min propagate NaN. Softmax subtracts the
//! maximum before exponentiating, so large inputs do not overflow.

mod argmax;
mod cross_entropy;

pub(super) use argmax::argmax;
pub(super) use cross_entropy::{softmax_cross_entropy, sparse_softmax_cross_entropy};

use super::{f32_data, finish, nan_max, nan_min, norm_axis, numel, prod, strides};
use crate::op::ReduceOp;
use crate::tensor::Tensor;

/// `reduce_*(x; axes, keepdims)`: `axes = None` reduces every axis; negative axes count from
/// the end; an axis listed twice is reduced once; reduced axes are dropped unless `keepdims`.
pub(super) fn reduce(
    x: &Tensor,
    op: ReduceOp,
    axes: Option<&[i64]>,
    keepdims: bool,
) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let dims = x.dims();
    let mut reduced = vec![axes.is_none(); dims.len()];
    for &a in axes.unwrap_or(&[]) {
        let i = norm_axis(a, dims.len()).map_err(|e| format!("{e}; input {}", x.ty()))?;
        reduced[i] = true;
    }
    // Output index of every input element: reduced axes contribute coordinate 0.
    let kept: Vec<usize> = dims
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let kept_strides = strides(&kept);
    let in_strides = strides(dims);
    let n_out = numel(&kept)?;
    let reduced_dims: Vec<usize> = dims
        .iter()
        .zip(&reduced)
        .filter(|(_, r)| **r)
        .map(|(&d, _)| d)
        .collect();
    let count = prod(&reduced_dims);
    let init = match op {
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    // The output is never larger than the input (or 1 element), so plain allocation is fine.
    let mut acc = vec![init; n_out];
    for (flat, &v) in xs.iter().enumerate() {
        let o: usize = (0..dims.len())
            .filter(|&i| !reduced[i])
            .map(|i| flat / in_strides[i] % dims[i] * kept_strides[i])
            .sum();
        let a = &mut acc[o];
        *a = match op {
            ReduceOp::Sum | ReduceOp::Mean => *a + v as f64,
            ReduceOp::Max => nan_max(*a as f32, v) as f64,
            ReduceOp::Min => nan_min(*a as f32, v) as f64,
        };
    }
    let values = acc
        .into_iter()
        .map(|a| {
            (if op == ReduceOp::Mean {
                a / count as f64
            } else {
                a
            }) as f32
        })
        .collect();
    let out_dims: Vec<usize> = if keepdims {
        kept
    } else {
        dims.iter()
            .zip(&reduced)
            .filter(|(_, r)| !**r)
            .map(|(&d, _)| d)
            .collect()
    };
    finish(&out_dims, values)
}

/// `softmax(x; axis)` = exp(x - max) / sum(exp(x - max)), or with `log`,
/// `log_softmax(x; axis)` = x - max - ln(sum(exp(x - max))).
pub(super) fn softmax(x: &Tensor, axis: i64, log: bool) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let dims = x.dims();
    let axis = norm_axis(axis, dims.len()).map_err(|e| format!("{e}; input {}", x.ty()))?;
    if xs.is_empty() {
        return Ok(x.clone());
    }
    // Non-empty, so these products are exact.
    let len = dims[axis];
    let inner = prod(&dims[axis + 1..]);
    let outer = prod(&dims[..axis]);
    let mut out = vec![0.0f32; xs.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let max = (0..len).map(|j| xs[at(j)]).fold(f32::NEG_INFINITY, nan_max) as f64;
            let sum: f64 = (0..len).map(|j| (xs[at(j)] as f64 - max).exp()).sum();
            for j in 0..len {
                let shifted = xs[at(j)] as f64 - max;
                out[at(j)] = (if log {
                    shifted - sum.ln()
                } else {
                    shifted.exp() / sum
                }) as f32;
            }
        }
    }
    finish(dims, out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, iota, t};
    use super::*;
    use crate::tensor::Data;

    #[test]
    fn reduce_over_axis_lists() {
        // [[1,2,3],[4,5,6]]
        let x = iota(&[2, 3]);
        let r = reduce(&x, ReduceOp::Sum, Some(&[0]), false).unwrap();
        assert_close(&r, &[3], &[5.0, 7.0, 9.0], 0.0);
        let r = reduce(&x, ReduceOp::Sum, Some(&[-1]), false).unwrap();
        assert_close(&r, &[2], &[6.0, 15.0], 0.0);
        let r = reduce(&x, ReduceOp::Mean, Some(&[1]), true).unwrap();
        assert_close(&r, &[2, 1], &[2.0, 5.0], 0.0);
        let r = reduce(&x, ReduceOp::Max, None, false).unwrap();
        assert_close(&r, &[], &[6.0], 0.0);
        let r = reduce(&x, ReduceOp::Min, None, true).unwrap();
        assert_close(&r, &[1, 1], &[1.0], 0.0);
        let r = reduce(&x, ReduceOp::Mean, Some(&[0, 1]), false).unwrap();
        assert_close(&r, &[], &[3.5], 0.0);
        // Empty axis list: nothing reduced.
        assert_eq!(reduce(&x, ReduceOp::Sum, Some(&[]), false).unwrap(), x);
        // Duplicate axes (one spelled negative) reduce once.
        let r = reduce(&x, ReduceOp::Sum, Some(&[1, -1]), false).unwrap();
        assert_close(&r, &[2], &[6.0, 15.0], 0.0);
    }

    #[test]
    fn reduce_middle_and_outer_axes_of_rank3() {
        // x[i,j,k] = 12i + 4j + k + 1, shape [2,3,4]
        let x = iota(&[2, 3, 4]);
        let r = reduce(&x, ReduceOp::Sum, Some(&[1]), false).unwrap();
        let mut want = vec![];
        for i in 0..2 {
            for k in 0..4 {
                want.push((0..3).map(|j| (12 * i + 4 * j + k + 1) as f32).sum());
            }
        }
        assert_close(&r, &[2, 4], &want, 0.0);
        let r = reduce(&x, ReduceOp::Max, Some(&[0, 2]), true).unwrap();
        assert_close(&r, &[1, 3, 1], &[16.0, 20.0, 24.0], 0.0);
    }

    #[test]
    fn reduce_edge_cases() {
        let x = t(&[3], &[1.0, f32::NAN, 2.0]);
        assert!(
            reduce(&x, ReduceOp::Max, None, false)
                .unwrap()
                .as_f32()
                .unwrap()[0]
                .is_nan()
        );
        assert!(
            reduce(&x, ReduceOp::Min, None, false)
                .unwrap()
                .as_f32()
                .unwrap()[0]
                .is_nan()
        );
        let e = t(&[0, 2], &[]);
        assert_close(
            &reduce(&e, ReduceOp::Sum, Some(&[0]), false).unwrap(),
            &[2],
            &[0.0, 0.0],
            0.0,
        );
        assert_close(
            &reduce(&e, ReduceOp::Max, Some(&[0]), false).unwrap(),
            &[2],
            &[f32::NEG_INFINITY; 2],
            0.0,
        );
        assert_close(
            &reduce(&e, ReduceOp::Min, None, false).unwrap(),
            &[],
            &[f32::INFINITY],
            0.0,
        );
        assert!(
            reduce(&e, ReduceOp::Mean, None, false)
                .unwrap()
                .as_f32()
                .unwrap()[0]
                .is_nan()
        );
        // A scalar reduces to itself.
        let s = Tensor::scalar(4.0);
        assert_eq!(reduce(&s, ReduceOp::Mean, None, false).unwrap(), s);
        // f64 accumulation keeps the small terms.
        let big = t(&[3], &[1e8, 1.0, -1e8]);
        assert_close(
            &reduce(&big, ReduceOp::Sum, None, false).unwrap(),
            &[],
            &[1.0],
            0.0,
        );
        let err = reduce(&iota(&[2, 3]), ReduceOp::Sum, Some(&[2]), false).unwrap_err();
        assert!(err.contains("axis 2") && err.contains("f32[2,3]"), "{err}");
        let ints = Tensor::new(&[2], Data::I64(vec![1, 2])).unwrap();
        assert!(reduce(&ints, ReduceOp::Sum, None, false).is_err());
    }

    #[test]
    fn softmax_by_hand() {
        // softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6.
        let (l2, l3) = (2f32.ln(), 3f32.ln());
        let x = t(&[1, 3], &[0.0, l2, l3]);
        let r = softmax(&x, -1, false).unwrap();
        assert_close(&r, &[1, 3], &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0], 1e-6);
        let r = softmax(&x, 1, true).unwrap();
        let ln6 = 6f32.ln();
        assert_close(&r, &[1, 3], &[-ln6, l2 - ln6, l3 - ln6], 1e-6);
        // Max subtraction: huge inputs do not overflow.
        let r = softmax(&t(&[2], &[1000.0, 1000.0]), 0, false).unwrap();
        assert_close(&r, &[2], &[0.5, 0.5], 0.0);
        let r = softmax(&t(&[2], &[1000.0, 0.0]), 0, true).unwrap();
        assert_close(&r, &[2], &[0.0, -1000.0], 1e-6);
    }

    #[test]
    fn softmax_along_axis_0() {
        // Columns are independent distributions.
        let x = t(&[2, 2], &[0.0, 5.0, 0.0, 5.0 + 2f32.ln()]);
        let r = softmax(&x, 0, false).unwrap();
        assert_close(&r, &[2, 2], &[0.5, 1.0 / 3.0, 0.5, 2.0 / 3.0], 1e-6);
        assert!(softmax(&Tensor::scalar(1.0), -1, false).is_err());
        assert!(softmax(&x, 2, false).is_err());
    }
}
