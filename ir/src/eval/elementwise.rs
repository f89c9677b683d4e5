//! Elementwise ops: unary functions, binary functions with numpy broadcasting, bias_add, and
//! `cast` (in `elementwise/cast.rs`).
//!
//! Transcendentals are evaluated in f64 and rounded once to f32, so they are correctly rounded
//! in all but rare cases; +, -, *, / and sqrt are exact-rounded in f32 already.

mod cast;
mod logic;

pub(super) use cast::cast;
pub(super) use logic::{compare, logical, logical_not, select};

use super::{alloc, channel_axis, f32_data, finish, nan_max, nan_min, numel, prod, strides};
use crate::op::{BinaryOp, DataFormat, UnaryOp};
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// Applies a unary function to every element.
pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    let xs = f32_data(x, "operand")?;
    let f = |v: f32| -> f32 {
        let d = v as f64;
        match op {
            UnaryOp::Neg => -v,
            UnaryOp::Abs => v.abs(),
            // `x < 0` is false for NaN, so NaN passes through (as in TensorFlow).
            UnaryOp::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            // clamp passes NaN through as well.
            UnaryOp::Relu6 => v.clamp(0.0, 6.0),
            UnaryOp::LeakyRelu { alpha } => {
                if v >= 0.0 {
                    v
                } else {
                    alpha.0 * v
                }
            }
            UnaryOp::Sigmoid => (1.0 / (1.0 + (-d).exp())) as f32,
            UnaryOp::Tanh => d.tanh() as f32,
            UnaryOp::Exp => d.exp() as f32,
            UnaryOp::Log => d.ln() as f32,
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Rsqrt => (1.0 / d.sqrt()) as f32,
            UnaryOp::Square => v * v,
            // NaN and ±0 come back as they are (tf.sign gives 0 for -0, written +0 here).
            UnaryOp::Sign => {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else if v.is_nan() {
                    v
                } else {
                    0.0
                }
            }
        }
    };
    finish(x.dims(), xs.iter().map(|&v| f(v)).collect())
}

/// The numpy broadcast of two shapes: align trailing dims; each pair must be equal or one 1.
pub(super) fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |d: &[usize], i: usize| {
        // Axis i of the output aligns with axis i - (rank - d.len()) of d, or is missing (1).
        (i + d.len()).checked_sub(rank).map_or(1, |j| d[j])
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!(
                "shapes {} and {} do not broadcast (axis {i} from the front of the result)",
                fmt_dims(a),
                fmt_dims(b)
            )),
        })
        .collect()
}

/// Strides for reading a tensor of `dims` broadcast to `out` dims: the row-major stride
/// along real axes and 0 along broadcast (size-1 or missing) axes.
fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let in_strides = strides(dims);
    let offset = out.len() - dims.len();
    (0..out.len())
        .map(|i| match i.checked_sub(offset) {
            Some(j) if dims[j] != 1 => in_strides[j],
            _ => 0,
        })
        .collect()
}

/// `broadcast_like(x, like)`: x's values broadcast to `out` (like's dims).
pub(super) fn broadcast_like(x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let xs = f32_data(x, "x")?;
    if x.rank() > out.len() || broadcast_dims(x.dims(), out)? != out {
        return Err(format!(
            "x {} does not broadcast to {}",
            fmt_dims(x.dims()),
            fmt_dims(out)
        ));
    }
    let sx = broadcast_strides(x.dims(), out);
    let so = strides(out);
    let mut values = alloc(numel(out)?, 0.0)?;
    for (flat, v) in values.iter_mut().enumerate() {
        let i: usize = (0..out.len()).map(|a| flat / so[a] % out[a] * sx[a]).sum();
        *v = xs[i];
    }
    finish(out, values)
}

/// Applies a binary function elementwise with numpy broadcasting.
pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let xs = f32_data(a, "left operand")?;
    let ys = f32_data(b, "right operand")?;
    let out = broadcast_dims(a.dims(), b.dims())?;
    let sa = broadcast_strides(a.dims(), &out);
    let sb = broadcast_strides(b.dims(), &out);
    let so = strides(&out);
    let f = |x: f32, y: f32| -> f32 {
        match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Maximum => nan_max(x, y),
            BinaryOp::Minimum => nan_min(x, y),
            BinaryOp::Pow => (x as f64).powf(y as f64) as f32,
        }
    };
    // Fallible allocation: broadcasting can make the result much larger than either operand.
    let mut values = alloc(numel(&out)?, 0.0)?;
    for (flat, v) in values.iter_mut().enumerate() {
        let (mut i, mut j) = (0, 0);
        for axis in 0..out.len() {
            let coord = flat / so[axis] % out[axis];
            i += coord * sa[axis];
            j += coord * sb[axis];
        }
        *v = f(xs[i], ys[j]);
    }
    finish(&out, values)
}

/// `bias_add(x, b)`: adds the rank-1 `b` along x's channel axis.
pub(super) fn bias_add(x: &Tensor, b: &Tensor, format: DataFormat) -> Result<Tensor, String> {
    let xs = f32_data(x, "input")?;
    let bs = f32_data(b, "bias")?;
    let axis = channel_axis(x.dims(), format, "input")?;
    let c = x.dims()[axis];
    if b.dims() != [c] {
        return Err(format!(
            "bias must be [{c}] to match the channel axis {axis} of input {} ({}), got {}",
            fmt_dims(x.dims()),
            format.name(),
            fmt_dims(b.dims())
        ));
    }
    let inner = prod(&x.dims()[axis + 1..]);
    let values = xs
        .iter()
        .enumerate()
        .map(|(i, &v)| v + bs[(i / inner) % c])
        .collect();
    finish(x.dims(), values)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, t};
    use super::*;
    use crate::op::Float;
    use crate::tensor::Data;

    fn un(op: UnaryOp, v: &[f32]) -> Vec<f32> {
        unary(op, &t(&[v.len()], v)).unwrap().into_f32().unwrap()
    }

    #[test]
    fn unary_functions() {
        let x = [-2.0, -0.5, 0.0, 3.0, 7.0];
        assert_eq!(un(UnaryOp::Neg, &x), [2.0, 0.5, -0.0, -3.0, -7.0]);
        assert_eq!(un(UnaryOp::Abs, &x), [2.0, 0.5, 0.0, 3.0, 7.0]);
        assert_eq!(un(UnaryOp::Relu, &x), [0.0, 0.0, 0.0, 3.0, 7.0]);
        assert_eq!(un(UnaryOp::Relu6, &x), [0.0, 0.0, 0.0, 3.0, 6.0]);
        let lr = UnaryOp::LeakyRelu { alpha: Float(0.2) };
        assert_close(
            &unary(lr, &t(&[5], &x)).unwrap(),
            &[5],
            &[-0.4, -0.1, 0.0, 3.0, 7.0],
            0.0,
        );
        // alpha > 1 shows the rule is "x if x >= 0 else alpha*x", not max(x, alpha*x).
        let lr3 = UnaryOp::LeakyRelu { alpha: Float(3.0) };
        assert_eq!(un(lr3, &[-1.0, 2.0]), [-3.0, 2.0]);
        assert_eq!(un(UnaryOp::Square, &x), [4.0, 0.25, 0.0, 9.0, 49.0]);
        let y = t(&[3], &[0.0, 1.0, -1.0]);
        assert_close(
            &unary(UnaryOp::Sigmoid, &y).unwrap(),
            &[3],
            &[0.5, 0.731_058_6, 0.268_941_43],
            1e-7,
        );
        assert_close(
            &unary(UnaryOp::Tanh, &y).unwrap(),
            &[3],
            &[0.0, 0.761_594_2, -0.761_594_2],
            1e-7,
        );
        assert_close(
            &unary(UnaryOp::Exp, &y).unwrap(),
            &[3],
            &[1.0, std::f32::consts::E, 0.367_879_45],
            1e-7,
        );
        let z = t(&[4], &[4.0, 1.0, 0.25, 0.0]);
        assert_close(
            &unary(UnaryOp::Sqrt, &z).unwrap(),
            &[4],
            &[2.0, 1.0, 0.5, 0.0],
            0.0,
        );
        assert_close(
            &unary(UnaryOp::Rsqrt, &z).unwrap(),
            &[4],
            &[0.5, 1.0, 2.0, f32::INFINITY],
            0.0,
        );
        let l = un(UnaryOp::Log, &[1.0, 0.0, -1.0, std::f32::consts::E]);
        assert_eq!(l[..2], [0.0, f32::NEG_INFINITY]);
        assert!(l[2].is_nan());
        assert!((l[3] - 1.0).abs() < 1e-7);
        // NaN passes through the clamps.
        assert!(un(UnaryOp::Relu, &[f32::NAN])[0].is_nan());
        assert!(un(UnaryOp::Relu6, &[f32::NAN])[0].is_nan());
        // Large inputs saturate rather than overflow.
        assert_eq!(un(UnaryOp::Sigmoid, &[-200.0, 200.0]), [0.0, 1.0]);
        assert_eq!(un(UnaryOp::Exp, &[100.0]), [f32::INFINITY]);
        let s = un(
            UnaryOp::Sign,
            &[-3.5, -0.0, 0.0, 1e-30, f32::NEG_INFINITY, f32::NAN],
        );
        assert_eq!(s[..5], [-1.0, 0.0, 0.0, 1.0, -1.0]);
        assert_eq!(s[1].to_bits(), 0.0f32.to_bits(), "sign(-0) is +0");
        assert!(s[5].is_nan());
    }

    #[test]
    fn unary_rejects_non_f32() {
        let x = Tensor::new(&[2], Data::I32(vec![1, 2])).unwrap();
        let err = unary(UnaryOp::Neg, &x).unwrap_err();
        assert!(err.contains("i32[2]"), "{err}");
    }

    #[test]
    fn binary_same_shape() {
        let a = t(&[3], &[1.0, -2.0, 8.0]);
        let b = t(&[3], &[4.0, 3.0, 2.0]);
        let run = |op| binary(op, &a, &b).unwrap().into_f32().unwrap();
        assert_eq!(run(BinaryOp::Add), [5.0, 1.0, 10.0]);
        assert_eq!(run(BinaryOp::Sub), [-3.0, -5.0, 6.0]);
        assert_eq!(run(BinaryOp::Mul), [4.0, -6.0, 16.0]);
        assert_eq!(run(BinaryOp::Div), [0.25, -2.0 / 3.0, 4.0]);
        assert_eq!(run(BinaryOp::Maximum), [4.0, 3.0, 8.0]);
        assert_eq!(run(BinaryOp::Minimum), [1.0, -2.0, 2.0]);
        assert_eq!(run(BinaryOp::Pow), [1.0, -8.0, 64.0]);
    }

    #[test]
    fn maximum_minimum_propagate_nan() {
        let a = t(&[2], &[f32::NAN, 1.0]);
        let b = t(&[2], &[1.0, f32::NAN]);
        for op in [BinaryOp::Maximum, BinaryOp::Minimum] {
            let r = binary(op, &a, &b).unwrap().into_f32().unwrap();
            assert!(r.iter().all(|v| v.is_nan()), "{op:?}: {r:?}");
        }
        let d = binary(BinaryOp::Div, &t(&[2], &[1.0, 0.0]), &t(&[1], &[0.0])).unwrap();
        let d = d.into_f32().unwrap();
        assert_eq!(d[0], f32::INFINITY);
        assert!(d[1].is_nan());
    }

    #[test]
    fn broadcasting_2x1x3_with_4x1() {
        // a[i, 0, k] = 100*i + k, b[j, 0] = 10*j; out[i, j, k] = a + b.
        let a = t(&[2, 1, 3], &[0.0, 1.0, 2.0, 100.0, 101.0, 102.0]);
        let b = t(&[4, 1], &[0.0, 10.0, 20.0, 30.0]);
        let r = binary(BinaryOp::Add, &a, &b).unwrap();
        let mut want = vec![];
        for i in 0..2 {
            for j in 0..4 {
                for k in 0..3 {
                    want.push((100 * i + 10 * j + k) as f32);
                }
            }
        }
        assert_close(&r, &[2, 4, 3], &want, 0.0);
        // Operand order matters for sub, and the result is the same broadcast shape.
        let r = binary(BinaryOp::Sub, &b, &a).unwrap();
        let neg: Vec<f32> = want
            .iter()
            .enumerate()
            .map(|(idx, _)| {
                let (i, j, k) = (idx / 12, (idx / 3) % 4, idx % 3);
                (10 * j) as f32 - (100 * i + k) as f32
            })
            .collect();
        assert_close(&r, &[2, 4, 3], &neg, 0.0);
    }

    #[test]
    fn broadcasting_scalars_and_errors() {
        let s = Tensor::scalar(2.0);
        let m = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        assert_close(
            &binary(BinaryOp::Mul, &s, &m).unwrap(),
            &[2, 2],
            &[2.0, 4.0, 6.0, 8.0],
            0.0,
        );
        assert_close(&binary(BinaryOp::Add, &s, &s).unwrap(), &[], &[4.0], 0.0);
        // Size 0 broadcasts against 1.
        let e = binary(
            BinaryOp::Add,
            &t(&[0, 1], &[]),
            &t(&[1, 3], &[1.0, 2.0, 3.0]),
        )
        .unwrap();
        assert_eq!(e.dims(), [0, 3]);
        let err = binary(BinaryOp::Add, &t(&[2, 3], &[0.0; 6]), &t(&[2], &[0.0; 2])).unwrap_err();
        assert!(err.contains("[2,3]") && err.contains("[2]"), "{err}");
        assert_eq!(broadcast_dims(&[5, 1, 4], &[3, 1]), Ok(vec![5, 3, 4]));
    }

    #[test]
    fn bias_add_both_layouts() {
        let x = t(&[1, 2, 2, 2], &[0.0; 8]);
        let b = t(&[2], &[1.0, 2.0]);
        let r = bias_add(&x, &b, DataFormat::Nhwc).unwrap();
        assert_close(
            &r,
            &[1, 2, 2, 2],
            &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
            0.0,
        );
        let r = bias_add(&x, &b, DataFormat::Nchw).unwrap();
        assert_close(
            &r,
            &[1, 2, 2, 2],
            &[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
            0.0,
        );
        // Rank 2 (matmul output): channels last.
        let r = bias_add(&t(&[2, 2], &[1.0, 1.0, 1.0, 1.0]), &b, DataFormat::Nhwc).unwrap();
        assert_close(&r, &[2, 2], &[2.0, 3.0, 2.0, 3.0], 0.0);
        let err = bias_add(&x, &t(&[3], &[0.0; 3]), DataFormat::Nhwc).unwrap_err();
        assert!(err.contains("[3]") && err.contains("[1,2,2,2]"), "{err}");
        assert!(bias_add(&Tensor::scalar(1.0), &b, DataFormat::Nhwc).is_err());
    }
}
