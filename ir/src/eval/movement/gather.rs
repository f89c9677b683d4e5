//! `gather` moves elements of any dtype; indices are i32 or i64, a negative index counts from
//! the end, and one outside `-n..n` is an error naming the index, its position and `n` (the
//! check happens before any element is read, so nothing is read out of bounds).

use super::super::{norm_axis, numel, prod};
use crate::shape::fmt_dims;
use crate::tensor::{Data, Tensor};

/// `gather(params, indices; axis)` (`tf.gather`, `batch_dims = 0`).
pub(crate) fn gather(params: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor, String> {
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
pub(super) fn resolve_indices(
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

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{i32s, ints, iota, t};
    use super::*;
    use crate::tensor::Data;

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
}
