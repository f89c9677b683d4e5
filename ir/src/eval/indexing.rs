//! Index-producing and index-consuming ops and the dtype conversion: `argmax`, `gather` and
//! `cast`, following TensorFlow.
//!
//! - `argmax` takes any numeric dtype; along the reduced axis the first index wins a tie and a
//!   NaN counts as larger than any number (the first NaN wins), as the catalogue specifies
//!   (numpy's rule). Note: TensorFlow 2.21's CPU kernel instead skips NaNs (`argmax([nan, 1])`
//!   is 1 there), so golden data keeps NaN out of argmax inputs.
//! - `gather` moves elements of any dtype; indices are i32 or i64, a negative index counts from
//!   the end, and one outside `-n..n` is an error naming the index, its position and `n` (the
//!   check happens before any element is read, so nothing is read out of bounds).
//! - `cast` converts between every pair of dtypes with Rust's `as` semantics, which are
//!   TensorFlow's wherever TensorFlow's result is defined: float to integer truncates toward
//!   zero and saturates (NaN becomes 0; TensorFlow 2.21 on x86 gives `i32::MIN` for NaN and
//!   for every out-of-range value, a C++ undefined-behaviour artefact the catalogue does not
//!   copy), integer narrowing wraps, to bool is `x != 0` (so NaN is true), and bool becomes 0
//!   or 1.

use super::{norm_axis, numel, prod};
use crate::DType;
use crate::shape::fmt_dims;
use crate::tensor::{Data, Tensor};

/// `argmax(x; axis)`: the index of the largest element along `axis`, which is dropped;
/// `output_type` is i32 or i64.
pub(super) fn argmax(x: &Tensor, axis: i64, output_type: DType) -> Result<Tensor, String> {
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

/// `gather(params, indices; axis)` (`tf.gather`, `batch_dims = 0`).
pub(super) fn gather(params: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor, String> {
    let pd = params.dims();
    if pd.is_empty() {
        return Err(format!("params must have rank >= 1, got {}", params.ty()));
    }
    let a = norm_axis(axis, pd.len())?;
    let n = pd[a];
    let idx = resolve_indices(indices, n, a, pd)?;
    let mut out_dims: Vec<usize> = pd[..a].to_vec();
    out_dims.extend_from_slice(indices.dims());
    out_dims.extend_from_slice(&pd[a + 1..]);
    let total = numel(&out_dims)?;
    let (outer, inner) = (prod(&pd[..a]), prod(&pd[a + 1..]));
    // Output element (o, j, i) takes params element (o, idx[j], i).
    let src = |t: usize| -> usize {
        let i = t % inner;
        let j = (t / inner) % idx.len();
        let o = t / (inner * idx.len());
        (o * n + idx[j]) * inner + i
    };
    if total == 0 {
        return Tensor::new(&out_dims, empty_like(params.data())).map_err(|e| e.to_string());
    }
    debug_assert_eq!(total, outer * idx.len() * inner);
    let data = match params.data() {
        Data::F32(v) => Data::F32(pick(v, total, src)?),
        Data::I32(v) => Data::I32(pick(v, total, src)?),
        Data::I64(v) => Data::I64(pick(v, total, src)?),
        Data::Bool(v) => Data::Bool(pick(v, total, src)?),
    };
    Tensor::new(&out_dims, data).map_err(|e| e.to_string())
}

/// The indices as positions in `0..n`: negative ones count from the end; any outside `-n..n`
/// is an error naming it, its position among the indices and the axis size.
fn resolve_indices(
    indices: &Tensor,
    n: usize,
    axis: usize,
    pd: &[usize],
) -> Result<Vec<usize>, String> {
    let raw: Vec<i64> = match indices.data() {
        Data::I32(v) => v.iter().map(|&i| i as i64).collect(),
        Data::I64(v) => v.clone(),
        _ => return Err(format!("indices must be i32 or i64, got {}", indices.ty())),
    };
    // n fits in i64 for any tensor that exists in memory; saturate for absurd hand-built dims.
    let size = i64::try_from(n).unwrap_or(i64::MAX);
    raw.iter()
        .enumerate()
        .map(|(pos, &i)| {
            let r = if i < 0 { i.checked_add(size) } else { Some(i) };
            match r {
                Some(r) if (0..size).contains(&r) => Ok(r as usize),
                _ => Err(format!(
                    "index {i} (at flat position {pos} of indices {}) is out of range for axis \
                     {axis} of size {n} of params {} (valid: -{n}..{n})",
                    fmt_dims(indices.dims()),
                    fmt_dims(pd)
                )),
            }
        })
        .collect()
}

/// `total` elements, element `t` being `v[src(t)]`; an allocation failure is an error.
fn pick<T: Copy>(v: &[T], total: usize, src: impl Fn(usize) -> usize) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    out.try_reserve_exact(total)
        .map_err(|_| format!("cannot allocate {total} elements for the result"))?;
    out.extend((0..total).map(|t| v[src(t)]));
    Ok(out)
}

/// Empty storage of the same dtype.
fn empty_like(d: &Data) -> Data {
    match d {
        Data::F32(_) => Data::F32(Vec::new()),
        Data::I32(_) => Data::I32(Vec::new()),
        Data::I64(_) => Data::I64(Vec::new()),
        Data::Bool(_) => Data::Bool(Vec::new()),
    }
}

/// `cast(x; to)`.
pub(super) fn cast(x: &Tensor, to: DType) -> Result<Tensor, String> {
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
    use super::super::testutil::{iota, noise, t};
    use super::*;

    fn ints(dims: &[usize], v: &[i64]) -> Tensor {
        Tensor::new(dims, Data::I64(v.to_vec())).unwrap()
    }

    fn i32s(dims: &[usize], v: &[i32]) -> Tensor {
        Tensor::new(dims, Data::I32(v.to_vec())).unwrap()
    }

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

    #[test]
    fn gather_axis0_axis1_negative_and_index_shapes() {
        let p = iota(&[3, 4]); // rows [1..4], [5..8], [9..12]
        let r = gather(&p, &i32s(&[2], &[2, -3]), 0).unwrap();
        assert_eq!(r, t(&[2, 4], &[9., 10., 11., 12., 1., 2., 3., 4.]));
        let r = gather(&p, &ints(&[2, 2], &[3, 0, -1, 1]), 1).unwrap();
        let want = [4., 1., 4., 2., 8., 5., 8., 6., 12., 9., 12., 10.];
        assert_eq!(r, t(&[3, 2, 2], &want));
        // Scalar index drops the axis.
        let r = gather(&p, &ints(&[], &[1]), -1).unwrap();
        assert_eq!(r, t(&[3], &[2., 6., 10.]));
        // Empty indices give an empty result.
        let r = gather(&p, &ints(&[0], &[]), 0).unwrap();
        assert_eq!(r.dims(), [0, 4]);
        // Any dtype of params.
        let pb = Tensor::new(&[3], Data::Bool(vec![true, false, true])).unwrap();
        let r = gather(&pb, &i32s(&[2], &[1, 2]), 0).unwrap();
        assert_eq!(r, Tensor::new(&[2], Data::Bool(vec![false, true])).unwrap());
    }

    #[test]
    fn gather_out_of_range_names_index_and_size() {
        let p = iota(&[3, 4]);
        let e = gather(&p, &i32s(&[3], &[0, 1, 4]), 1).unwrap_err();
        assert!(
            e.contains("index 4") && e.contains("size 4") && e.contains("position 2"),
            "{e}"
        );
        let e = gather(&p, &ints(&[1], &[-4]), 0).unwrap_err();
        assert!(e.contains("index -4") && e.contains("size 3"), "{e}");
        let e = gather(&p, &ints(&[1], &[i64::MIN]), 0).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(
            gather(&p, &iota(&[1]), 0)
                .unwrap_err()
                .contains("i32 or i64")
        );
        assert!(gather(&Tensor::scalar(1.0), &ints(&[1], &[0]), 0).is_err());
        assert!(gather(&p, &ints(&[1], &[0]), 2).is_err());
        // An empty axis rejects every index.
        assert!(gather(&t(&[0, 2], &[]), &ints(&[1], &[0]), 0).is_err());
    }

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

    /// The new ops (and grouped conv) on many operand combinations: Ok or Err, never a panic.
    #[test]
    fn no_panic_on_any_operands() {
        use crate::op::{ConvAttrs, Float, Op};
        let pool = vec![
            Tensor::scalar(1.0),
            t(&[0], &[]),
            noise(&[3], 1),
            noise(&[2, 3], 2),
            noise(&[1, 3, 3, 4], 4),
            t(&[0, 2, 0, 3], &[]),
            i32s(&[2], &[1, -2]),
            ints(&[2, 1], &[0, 7]),
            ints(&[], &[-1]),
            Tensor::new(&[2, 2], Data::Bool(vec![true; 4])).unwrap(),
            noise(&[1, 1, 2, 4], 5),
        ];
        let ops = [
            Op::Lrn {
                depth_radius: 2,
                bias: Float(1.0),
                alpha: Float(1e-4),
                beta: Float(0.75),
            },
            Op::ArgMax {
                axis: -1,
                output_type: DType::I32,
            },
            Op::ArgMax {
                axis: 0,
                output_type: DType::I64,
            },
            Op::Gather { axis: 0 },
            Op::Gather { axis: -1 },
            Op::Cast { to: DType::I32 },
            Op::Cast { to: DType::Bool },
            Op::Conv2d(ConvAttrs::same().strides(2, 1)),
        ];
        let mut ok = 0;
        for op in &ops {
            for a in &pool {
                ok += usize::from(super::super::eval_op(op, &[a]).is_ok());
                for b in &pool {
                    ok += usize::from(super::super::eval_op(op, &[a, b]).is_ok());
                }
            }
        }
        assert!(ok > 40, "only {ok} successful evaluations");
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
