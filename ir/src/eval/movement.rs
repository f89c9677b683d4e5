//! Data movement: reshape, transpose, concat, slice and pad. These only move elements, so
//! they accept every dtype; each computes, for every output element, which input element (or
//! which padding value) it takes, and then gathers.

mod gather;
mod gather_grad;
mod one_hot;

pub(super) use gather::gather;
pub(super) use gather_grad::gather_grad;
pub(super) use one_hot::one_hot;

use super::{norm_axis, numel, prod, strides};
use crate::shape::fmt_dims;
use crate::tensor::{Data, Tensor};

/// Output element `i` takes input element `src[i]` (`None`: the fill value).
/// Indices are in range by construction of each caller.
fn take_elements(data: &Data, src: &[Option<usize>], fill: f32) -> Data {
    fn pick<T: Copy>(v: &[T], src: &[Option<usize>], fill: T) -> Vec<T> {
        src.iter().map(|i| i.map_or(fill, |i| v[i])).collect()
    }
    match data {
        Data::F32(v) => Data::F32(pick(v, src, fill)),
        // The fill value converts like a numpy cast (saturating; NaN to 0), and to true when nonzero.
        Data::I32(v) => Data::I32(pick(v, src, fill as i32)),
        Data::I64(v) => Data::I64(pick(v, src, fill as i64)),
        Data::Bool(v) => Data::Bool(pick(v, src, fill != 0.0)),
    }
}

/// A result tensor; the element count matches by construction (checked anyway).
fn finish(dims: &[usize], data: Data) -> Result<Tensor, String> {
    Tensor::new(dims, data).map_err(|e| e.to_string())
}

/// Unravels flat index `flat` of a tensor with `dims` / `dims_strides` into coordinates.
fn coords(flat: usize, dims: &[usize], dims_strides: &[usize]) -> Vec<usize> {
    dims.iter()
        .zip(dims_strides)
        .map(|(&d, &s)| flat / s % d)
        .collect()
}

/// `reshape(x; shape)`: same row-major elements; one `-1` takes the remaining size.
pub(super) fn reshape(x: &Tensor, shape: &[i64]) -> Result<Tensor, String> {
    let what = || format!("cannot reshape {} to {shape:?}", x.ty());
    let mut known = 1usize;
    let mut infer_at = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if infer_at.is_none() => infer_at = Some(i),
            -1 => return Err(format!("{}: at most one -1 is allowed", what())),
            d if d < 0 => return Err(format!("{}: dim {d} is negative", what())),
            d => {
                let d =
                    usize::try_from(d).map_err(|_| format!("{}: dim {d} is too large", what()))?;
                known = known
                    .checked_mul(d)
                    .ok_or_else(|| format!("{}: too many elements", what()))?;
            }
        }
    }
    let n = x.numel();
    let mut dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer_at {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!(
                "{}: the {n} elements do not divide into the known dims (product {known})",
                what()
            ));
        }
        dims[i] = n / known;
    } else if known != n {
        return Err(format!("{}: {n} elements vs {known}", what()));
    }
    x.clone().reshaped(&dims).map_err(|e| e.to_string())
}

/// `transpose(x; perm)`: output axis `i` is input axis `perm[i]`.
pub(super) fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let dims = x.dims();
    let mut seen = vec![false; dims.len()];
    let valid = perm.len() == dims.len()
        && perm
            .iter()
            .all(|&p| p < dims.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(format!(
            "perm {perm:?} is not a permutation of the axes of {}",
            x.ty()
        ));
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let in_strides = strides(dims);
    let out_strides = strides(&out_dims);
    let src: Vec<Option<usize>> = (0..x.numel())
        .map(|flat| {
            let c = coords(flat, &out_dims, &out_strides);
            Some(c.iter().zip(perm).map(|(&ci, &p)| ci * in_strides[p]).sum())
        })
        .collect();
    finish(&out_dims, take_elements(x.data(), &src, 0.0))
}

/// Appends the elements of `parts` (all of one dtype) into one buffer.
fn join(parts: &[&Tensor]) -> Data {
    fn cat<T: Copy>(parts: &[&Tensor], get: impl Fn(&Data) -> Option<&[T]>) -> Vec<T> {
        parts
            .iter()
            .filter_map(|p| get(p.data()))
            .flatten()
            .copied()
            .collect()
    }
    match parts.first().map(|p| p.data()) {
        Some(Data::I32(_)) => Data::I32(cat(parts, |d| {
            if let Data::I32(v) = d { Some(v) } else { None }
        })),
        Some(Data::I64(_)) => Data::I64(cat(parts, |d| {
            if let Data::I64(v) = d { Some(v) } else { None }
        })),
        Some(Data::Bool(_)) => Data::Bool(cat(parts, |d| {
            if let Data::Bool(v) = d { Some(v) } else { None }
        })),
        _ => Data::F32(cat(parts, |d| {
            if let Data::F32(v) = d { Some(v) } else { None }
        })),
    }
}

/// `concat(a, b, ...; axis)`: joins operands along `axis`; other dims and dtypes must agree.
pub(super) fn concat(parts: &[&Tensor], axis: i64) -> Result<Tensor, String> {
    let shapes = || {
        parts
            .iter()
            .map(|p| p.ty().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let first = parts.first().ok_or("concat needs at least one operand")?;
    let rank = first.rank();
    let axis = norm_axis(axis, rank).map_err(|e| format!("{e}; operands {}", shapes()))?;
    let mut out_dims = first.dims().to_vec();
    out_dims[axis] = 0;
    for p in parts {
        let same_others =
            p.rank() == rank && (0..rank).all(|i| i == axis || p.dims()[i] == first.dims()[i]);
        if p.dtype() != first.dtype() || !same_others {
            return Err(format!(
                "operands must share dtype and all dims but axis {axis}: {}",
                shapes()
            ));
        }
        out_dims[axis] = out_dims[axis]
            .checked_add(p.dims()[axis])
            .ok_or_else(|| format!("concatenated size overflows: {}", shapes()))?;
    }
    let n = numel(&out_dims)?;
    // In the joined buffer, operand k starts at starts[k]; each holds `outer` blocks of
    // dims[axis] * inner elements, and the output interleaves those blocks operand by operand.
    let inner = prod(&first.dims()[axis + 1..]);
    let mut starts = Vec::with_capacity(parts.len());
    let mut total = 0;
    for p in parts {
        starts.push(total);
        total += p.numel();
    }
    let mut src = Vec::with_capacity(n);
    // With n > 0 the products are exact; with n == 0 there is nothing to copy.
    let outer = if n == 0 {
        0
    } else {
        prod(&first.dims()[..axis])
    };
    for o in 0..outer {
        for (k, p) in parts.iter().enumerate() {
            let block = p.dims()[axis] * inner;
            src.extend((0..block).map(|i| Some(starts[k] + o * block + i)));
        }
    }
    finish(&out_dims, take_elements(&join(parts), &src, 0.0))
}

/// `slice(x; begin, size)`: the box `begin[i] .. begin[i] + size[i]`; size -1 runs to the end.
pub(super) fn slice(x: &Tensor, begin: &[usize], size: &[i64]) -> Result<Tensor, String> {
    let dims = x.dims();
    let what = || format!("slice begin {begin:?} size {size:?} of {}", x.ty());
    if begin.len() != dims.len() || size.len() != dims.len() {
        return Err(format!(
            "{}: begin and size need one entry per axis",
            what()
        ));
    }
    let mut out_dims = Vec::with_capacity(dims.len());
    for i in 0..dims.len() {
        let (b, d) = (begin[i], dims[i]);
        let s = match size[i] {
            -1 if b <= d => d - b,
            s if s >= 0 && b <= d && (s as u64) <= (d - b) as u64 => s as usize,
            _ => return Err(format!("{}: axis {i} (size {d}) is out of bounds", what())),
        };
        out_dims.push(s);
    }
    let in_strides = strides(dims);
    let out_strides = strides(&out_dims);
    let src: Vec<Option<usize>> = (0..numel(&out_dims)?)
        .map(|flat| {
            let c = coords(flat, &out_dims, &out_strides);
            Some(
                (0..dims.len())
                    .map(|i| (begin[i] + c[i]) * in_strides[i])
                    .sum(),
            )
        })
        .collect();
    finish(&out_dims, take_elements(x.data(), &src, 0.0))
}

/// `pad(x; paddings, value)`: `paddings[i] = [before, after]` cells of `value` on axis `i`.
pub(super) fn pad(x: &Tensor, paddings: &[[usize; 2]], value: f32) -> Result<Tensor, String> {
    let dims = x.dims();
    if paddings.len() != dims.len() {
        return Err(format!(
            "paddings {paddings:?} need one [before, after] pair per axis of {}",
            x.ty()
        ));
    }
    let out_dims = dims
        .iter()
        .zip(paddings)
        .map(|(&d, &[b, a])| d.checked_add(b).and_then(|v| v.checked_add(a)))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("padding {} by {paddings:?} overflows", fmt_dims(dims)))?;
    let n = numel(&out_dims)?;
    let mut src = Vec::new();
    src.try_reserve_exact(n)
        .map_err(|_| format!("cannot allocate {n} elements for the padded result"))?;
    let in_strides = strides(dims);
    let out_strides = strides(&out_dims);
    src.extend((0..n).map(|flat| {
        let c = coords(flat, &out_dims, &out_strides);
        let mut at = 0;
        for i in 0..dims.len() {
            let inside = c[i]
                .checked_sub(paddings[i][0])
                .filter(|&ci| ci < dims[i])?;
            at += inside * in_strides[i];
        }
        Some(at)
    }));
    finish(&out_dims, take_elements(x.data(), &src, value))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, iota, t};
    use super::*;

    #[test]
    fn reshape_with_minus_one() {
        let x = iota(&[2, 3]);
        let r = reshape(&x, &[3, -1]).unwrap();
        assert_close(&r, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0.0);
        assert_eq!(reshape(&x, &[-1]).unwrap().dims(), [6]);
        assert_eq!(
            reshape(&Tensor::scalar(1.0), &[1, 1]).unwrap().dims(),
            [1, 1]
        );
        assert_eq!(reshape(&iota(&[1]), &[]).unwrap().dims(), [0usize; 0]);
        assert!(reshape(&x, &[4, -1]).is_err());
        assert!(reshape(&x, &[-1, -1]).is_err());
        assert!(reshape(&x, &[7]).is_err());
        assert!(reshape(&x, &[-2, -3]).is_err());
        assert!(reshape(&t(&[0, 3], &[]), &[0, -1]).is_err());
        assert!(reshape(&x, &[i64::MAX, i64::MAX]).is_err());
    }

    #[test]
    fn transpose_by_hand() {
        // [[1,2,3],[4,5,6]]^T
        let r = transpose(&iota(&[2, 3]), &[1, 0]).unwrap();
        assert_close(&r, &[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0], 0.0);
        // Rank 3: out[k, i, j] = x[i, j, k] with x = iota([2,2,2]).
        let r = transpose(&iota(&[2, 2, 2]), &[2, 0, 1]).unwrap();
        assert_close(
            &r,
            &[2, 2, 2],
            &[1.0, 3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 8.0],
            0.0,
        );
        assert!(transpose(&iota(&[2, 3]), &[0, 0]).is_err());
        assert!(transpose(&iota(&[2, 3]), &[0]).is_err());
        assert!(transpose(&iota(&[2, 3]), &[0, 2]).is_err());
        let ints = Tensor::new(&[2, 1], Data::I64(vec![7, 8])).unwrap();
        assert_eq!(
            transpose(&ints, &[1, 0]).unwrap(),
            Tensor::new(&[1, 2], Data::I64(vec![7, 8])).unwrap()
        );
    }

    #[test]
    fn concat_along_axes() {
        let a = iota(&[2, 2]);
        let b = t(&[2, 1], &[9.0, 10.0]);
        let r = concat(&[&a, &b], 1).unwrap();
        assert_close(&r, &[2, 3], &[1.0, 2.0, 9.0, 3.0, 4.0, 10.0], 0.0);
        let r = concat(&[&a, &b], -1).unwrap();
        assert_eq!(r.dims(), [2, 3]);
        let c = t(&[1, 2], &[7.0, 8.0]);
        let r = concat(&[&a, &c, &a], 0).unwrap();
        assert_close(
            &r,
            &[5, 2],
            &[1.0, 2.0, 3.0, 4.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0],
            0.0,
        );
        assert_eq!(concat(&[&a], 0).unwrap(), a);
        let err = concat(&[&a, &b], 0).unwrap_err();
        assert!(
            err.contains("f32[2,2]") && err.contains("f32[2,1]"),
            "{err}"
        );
        let ints = Tensor::new(&[2, 2], Data::I32(vec![1, 2, 3, 4])).unwrap();
        assert!(concat(&[&a, &ints], 0).is_err());
        assert!(concat(&[&Tensor::scalar(1.0)], 0).is_err());
        assert!(concat(&[&a, &b], 2).is_err());
        let r = concat(&[&ints, &ints], 1).unwrap();
        assert_eq!(
            r,
            Tensor::new(&[2, 4], Data::I32(vec![1, 2, 1, 2, 3, 4, 3, 4])).unwrap()
        );
    }

    #[test]
    fn slice_with_minus_one() {
        // x = iota([3,4])
        let x = iota(&[3, 4]);
        let r = slice(&x, &[1, 1], &[2, -1]).unwrap();
        assert_close(&r, &[2, 3], &[6.0, 7.0, 8.0, 10.0, 11.0, 12.0], 0.0);
        let r = slice(&x, &[0, 2], &[-1, 1]).unwrap();
        assert_close(&r, &[3, 1], &[3.0, 7.0, 11.0], 0.0);
        assert_eq!(slice(&x, &[3, 0], &[0, 4]).unwrap().dims(), [0, 4]);
        assert!(slice(&x, &[2, 0], &[2, 1]).is_err());
        assert!(slice(&x, &[4, 0], &[-1, 1]).is_err());
        assert!(slice(&x, &[0, 0], &[-2, 1]).is_err());
        assert!(slice(&x, &[0], &[1]).is_err());
    }

    #[test]
    fn pad_with_constant() {
        let x = iota(&[2, 2]);
        let r = pad(&x, &[[1, 0], [0, 2]], -1.0).unwrap();
        let want = [
            -1.0, -1.0, -1.0, -1.0, 1.0, 2.0, -1.0, -1.0, 3.0, 4.0, -1.0, -1.0,
        ];
        assert_close(&r, &[3, 4], &want, 0.0);
        assert!(pad(&x, &[[1, 0]], 0.0).is_err());
        assert!(pad(&x, &[[usize::MAX, 1], [0, 0]], 0.0).is_err());
        let ints = Tensor::new(&[1], Data::I32(vec![5])).unwrap();
        assert_eq!(
            pad(&ints, &[[1, 1]], 2.0).unwrap(),
            Tensor::new(&[3], Data::I32(vec![2, 5, 2])).unwrap()
        );
        assert_eq!(
            pad(&Tensor::scalar(3.0), &[], 0.0).unwrap(),
            Tensor::scalar(3.0)
        );
    }
}
