//! `cast` converts between every pair of dtypes with Rust's `as` semantics, which are
//! TensorFlow's wherever TensorFlow's result is defined: float to integer truncates toward zero
//! and saturates (NaN becomes 0; TensorFlow 2.21 on x86 gives `i32::MIN` for NaN and for every
//! out-of-range value, a C++ undefined-behaviour artefact the catalogue does not copy), integer
//! narrowing wraps, to bool is `x != 0` (so NaN is true), and bool becomes 0 or 1.

use crate::DType;
use crate::tensor::{Data, Tensor};

/// `cast(x; to)`.
pub(crate) fn cast(x: &Tensor, to: DType) -> Result<Tensor, String> {
    // Each arm is the scalar conversion named in the module docs; `as` from float to int
    // saturates and maps NaN to 0, and between integers wraps.
    macro_rules! conv {
        ($v:expr, $f:expr) => {
            $v.iter().map($f).collect()
        };
    }
    let data = match (x.data(), to) {
        (Data::F32(v), DType::F32) => Data::F32(v.clone()),
        (Data::F32(v), DType::I32) => Data::I32(conv!(v, |&a| a as i32)),
        (Data::F32(v), DType::I64) => Data::I64(conv!(v, |&a| a as i64)),
        (Data::F32(v), DType::Bool) => Data::Bool(conv!(v, |&a| a != 0.0)),
        (Data::I32(v), DType::F32) => Data::F32(conv!(v, |&a| a as f32)),
        (Data::I32(v), DType::I32) => Data::I32(v.clone()),
        (Data::I32(v), DType::I64) => Data::I64(conv!(v, |&a| a as i64)),
        (Data::I32(v), DType::Bool) => Data::Bool(conv!(v, |&a| a != 0)),
        (Data::I64(v), DType::F32) => Data::F32(conv!(v, |&a| a as f32)),
        (Data::I64(v), DType::I32) => Data::I32(conv!(v, |&a| a as i32)),
        (Data::I64(v), DType::I64) => Data::I64(v.clone()),
        (Data::I64(v), DType::Bool) => Data::Bool(conv!(v, |&a| a != 0)),
        (Data::Bool(v), DType::F32) => Data::F32(conv!(v, |&a| f32::from(u8::from(a)))),
        (Data::Bool(v), DType::I32) => Data::I32(conv!(v, |&a| i32::from(a))),
        (Data::Bool(v), DType::I64) => Data::I64(conv!(v, |&a| i64::from(a))),
        (Data::Bool(v), DType::Bool) => Data::Bool(v.clone()),
    };
    Tensor::new(x.dims(), data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{i32s, ints, t};
    use super::*;
    use crate::tensor::Data;

    #[test]
    fn cast_rules() {
        let x = t(&[7], &[1.7, -1.7, 3e9, -3e9, f32::NAN, -0.0, 2.5]);
        assert_eq!(
            cast(&x, DType::I32).unwrap(),
            i32s(&[7], &[1, -1, i32::MAX, i32::MIN, 0, 0, 2])
        );
        assert_eq!(
            cast(&x, DType::I64).unwrap(),
            ints(&[7], &[1, -1, 3_000_000_000, -3_000_000_000, 0, 0, 2])
        );
        let b = cast(&x, DType::Bool).unwrap();
        let want = vec![true, true, true, true, true, false, true];
        assert_eq!(b, Tensor::new(&[7], Data::Bool(want)).unwrap());
        assert_eq!(cast(&b, DType::F32).unwrap().as_f32().unwrap()[5], 0.0);
        assert_eq!(
            cast(&b, DType::I64).unwrap(),
            ints(&[7], &[1, 1, 1, 1, 1, 0, 1])
        );
        // i64 -> i32 wraps; i32 -> f32 rounds to nearest.
        let big = ints(&[2], &[(1 << 32) + 5, -1]);
        assert_eq!(cast(&big, DType::I32).unwrap(), i32s(&[2], &[5, -1]));
        let r = cast(&i32s(&[1], &[16_777_217]), DType::F32).unwrap();
        assert_eq!(r.as_f32().unwrap(), [16_777_216.0]);
        // Round trip of small integral floats is exact; same-dtype casts copy.
        let x = t(&[3], &[-5.0, 0.0, 123.0]);
        let back = cast(&cast(&x, DType::I32).unwrap(), DType::F32).unwrap();
        assert_eq!(back, x);
        assert_eq!(cast(&x, DType::F32).unwrap(), x);
    }
}
