//! Reduction and softmax kernels (codegen/reduce.rs) against `eval_op`: reductions over one,
//! several and all axes, keepdims, negative axes, odd and empty sizes, NaN and infinities;
//! softmax and log_softmax along first, middle and last axes. Canaries around every buffer (see
//! codegen_data_util).
//!
//! Tolerance: the kernels sum in f32 (16 partial sums, fixed order) and the reference in f64,
//! so sums are compared within 1e-5 relative to the sum of absolute values (+1e-6); max/min
//! are exact; softmax within 1e-5 relative + 1e-6 absolute.

use crate::codegen_data_util;

use codegen_data_util::{Outcome, assert_close, run_op};
use kiln_cpu::codegen::reduce::define_reduce;
use kiln_ir::{Op, ReduceOp, Tensor};

const OPS: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min];

fn reduce(x: &Tensor, op: ReduceOp, axes: Option<Vec<i64>>, keepdims: bool) -> Outcome {
    let o = run_op(
        Op::Reduce {
            op,
            axes: axes.clone(),
            keepdims,
        },
        std::slice::from_ref(x),
        define_reduce,
    );
    // The sum of |x| over the same axes bounds the f32 rounding error of a sum.
    if matches!(op, ReduceOp::Sum | ReduceOp::Mean) {
        let abs: Vec<f32> = x.as_f32().unwrap().iter().map(|v| v.abs()).collect();
        let absx = Tensor::from_vec(x.dims(), abs).unwrap();
        let scale = run_op(
            Op::Reduce {
                op,
                axes: axes.clone(),
                keepdims,
            },
            &[absx],
            define_reduce,
        )
        .want;
        let (g, w, s) = (
            o.got.as_f32().unwrap(),
            o.want.as_f32().unwrap(),
            scale.as_f32().unwrap(),
        );
        assert_eq!(o.got.dims(), o.want.dims());
        for i in 0..w.len() {
            let ok = if w[i].is_nan() {
                g[i].is_nan()
            } else if w[i].is_infinite() || s[i].is_infinite() {
                g[i] == w[i]
            } else {
                (g[i] - w[i]).abs() <= 1e-5 * s[i] + 1e-6
            };
            assert!(
                ok,
                "{op:?} {axes:?} of {:?}: element {i}: got {} want {}",
                x.dims(),
                g[i],
                w[i]
            );
        }
    } else {
        assert_close(&o, 0.0, 0.0, &format!("{op:?} {axes:?} of {:?}", x.dims()));
    }
    o
}

#[test]
fn reduce_single_axes_of_odd_shapes() {
    for dims in [
        vec![7usize],
        vec![3, 13],
        vec![13, 3],
        vec![5, 7, 3],
        vec![2, 1, 37, 5],
    ] {
        let x = Tensor::uniform(&dims, -3.0, 3.0, dims.len() as u64);
        for axis in 0..dims.len() {
            for op in OPS {
                for keepdims in [false, true] {
                    reduce(&x, op, Some(vec![axis as i64]), keepdims);
                }
            }
        }
    }
}

#[test]
fn reduce_several_and_all_axes() {
    let x = Tensor::uniform(&[3, 5, 7, 13], -2.0, 2.0, 9);
    let lists: [Option<Vec<i64>>; 7] = [
        Some(vec![0, 2]),
        Some(vec![1, 3]),
        Some(vec![0, 1]),
        Some(vec![2, 3]),
        Some(vec![0, 3]),
        Some(vec![1, 2, 3]),
        None,
    ];
    for axes in lists {
        for op in OPS {
            for keepdims in [false, true] {
                reduce(&x, op, axes.clone(), keepdims);
            }
        }
    }
    // Long contiguous rows exercise the 16-wide main loop and every tail.
    for n in [1usize, 4, 15, 16, 17, 33, 1000, 4099] {
        let x = Tensor::uniform(&[2, n], 0.5, 1.5, n as u64);
        for op in OPS {
            reduce(&x, op, Some(vec![1]), false);
            reduce(&x, op, Some(vec![0]), false);
        }
    }
}

#[test]
fn negative_axes_are_lowered_to_non_negative() {
    let x = Tensor::uniform(&[4, 3, 7], -1.0, 1.0, 5);
    let o = reduce(&x, ReduceOp::Sum, Some(vec![-1, -3]), true);
    match o.main {
        Some(Op::Reduce { axes, keepdims, .. }) => {
            assert_eq!(axes, Some(vec![0, 2]));
            assert!(keepdims);
        }
        other => panic!("unexpected main {other:?}"),
    }
    reduce(&x, ReduceOp::Max, Some(vec![-2]), false);
    reduce(&x, ReduceOp::Mean, Some(vec![0, -1]), false);
}

#[test]
fn nan_and_infinities() {
    let mut v: Vec<f32> = Tensor::uniform(&[6, 21], -1.0, 1.0, 3).into_f32().unwrap();
    v[5] = f32::NAN; // row 0, lane of the vector loop
    v[21 + 20] = f32::NAN; // row 1, scalar tail
    v[2 * 21 + 3] = f32::INFINITY;
    v[3 * 21 + 18] = f32::NEG_INFINITY;
    v[4 * 21 + 7] = f32::INFINITY;
    v[4 * 21 + 8] = f32::NEG_INFINITY;
    let x = Tensor::from_vec(&[6, 21], v).unwrap();
    for op in OPS {
        for axes in [vec![1i64], vec![0], vec![0, 1]] {
            let o = reduce(&x, op, Some(axes), false);
            let g = o.got.as_f32().unwrap();
            if axes_is_rows(&o) && op != ReduceOp::Sum && op != ReduceOp::Mean {
                assert!(g[0].is_nan() && g[1].is_nan(), "{op:?}: NaN rows");
            }
        }
    }
    fn axes_is_rows(o: &Outcome) -> bool {
        o.got.dims() == [6]
    }
}

#[test]
fn empty_reductions_give_identities() {
    let x = Tensor::from_vec(&[0, 3], Vec::new()).unwrap();
    for (op, want) in [
        (ReduceOp::Sum, 0.0),
        (ReduceOp::Max, f32::NEG_INFINITY),
        (ReduceOp::Min, f32::INFINITY),
        (ReduceOp::Mean, f32::NAN),
    ] {
        let o = reduce(&x, op, Some(vec![0]), false);
        let g = o.got.as_f32().unwrap();
        assert_eq!(g.len(), 3);
        assert!(
            g.iter()
                .all(|&v| v.to_bits() == want.to_bits() || (want.is_nan() && v.is_nan()))
        );
        // Keeping the empty axis gives an empty output; nothing is written.
        let o = reduce(&x, op, Some(vec![1]), true);
        assert_eq!(o.got.dims(), [0, 1]);
    }
    // A scalar and size-1 axes reduce to the element itself.
    let s = Tensor::scalar(-2.5);
    for op in OPS {
        let o = reduce(&s, op, None, false);
        assert_eq!(o.got.as_f32().unwrap(), [-2.5]);
        let o = reduce(
            &Tensor::from_vec(&[1, 1], vec![4.0]).unwrap(),
            op,
            Some(vec![0]),
            false,
        );
        assert_eq!(o.got.as_f32().unwrap(), [4.0]);
    }
}

fn softmax(x: &Tensor, axis: i64, log: bool) -> Outcome {
    let op = if log {
        Op::LogSoftmax { axis }
    } else {
        Op::Softmax { axis }
    };
    let o = run_op(op, std::slice::from_ref(x), define_reduce);
    assert_close(
        &o,
        1e-5,
        1e-6,
        &format!("softmax(log={log}) axis {axis} of {:?}", x.dims()),
    );
    o
}

#[test]
fn softmax_along_first_middle_and_last_axes() {
    for dims in [
        vec![7usize],
        vec![3, 13],
        vec![13, 5],
        vec![2, 7, 3],
        vec![3, 5, 17],
        vec![2, 3, 4, 33],
    ] {
        let x = Tensor::uniform(&dims, -8.0, 8.0, dims.iter().sum::<usize>() as u64);
        for axis in 0..dims.len() as i64 {
            for log in [false, true] {
                softmax(&x, axis, log);
            }
        }
        for log in [false, true] {
            softmax(&x, -1, log);
        }
    }
}

#[test]
fn softmax_special_values() {
    // Large values do not overflow (max subtraction); a NaN poisons its row only; a row of
    // -inf is NaN like the reference.
    let mut v: Vec<f32> = Tensor::uniform(&[5, 19], -3.0, 3.0, 8).into_f32().unwrap();
    for x in &mut v[..19] {
        *x += 1000.0;
    }
    v[19 + 4] = f32::NAN;
    for x in &mut v[2 * 19..3 * 19] {
        *x = f32::NEG_INFINITY;
    }
    v[3 * 19 + 11] = f32::INFINITY;
    let x = Tensor::from_vec(&[5, 19], v).unwrap();
    for log in [false, true] {
        let o = softmax(&x, 1, log);
        let g = o.got.as_f32().unwrap();
        assert!(g[19..2 * 19].iter().all(|v| v.is_nan()));
        assert!(g[4 * 19..].iter().all(|v| v.is_finite()));
        softmax(&x, 0, log);
    }
    // Empty tensors: nothing to do.
    let e = Tensor::from_vec(&[0, 4], Vec::new()).unwrap();
    softmax(&e, 1, false);
    softmax(&e, 0, true);
}
