//! `one_hot`: `tf.one_hot` with an f32 result; an index outside `0..depth` (negative ones
//! included) gives a row of `off_value`, as TensorFlow does.

use super::super::{norm_axis, numel, prod};
use crate::tensor::{Data, Tensor};

/// `one_hot(indices; depth, on_value, off_value, axis)`; `axis` counts in the result's rank.
pub(crate) fn one_hot(
    indices: &Tensor,
    depth: usize,
    on: f32,
    off: f32,
    axis: i64,
) -> Result<Tensor, String> {
    let idx: Vec<i64> = match indices.data() {
        Data::I32(v) => v.iter().map(|&i| i64::from(i)).collect(),
        Data::I64(v) => v.clone(),
        _ => return Err(format!("indices must be i32 or i64, got {}", indices.ty())),
    };
    let dims = indices.dims();
    let a = norm_axis(axis, dims.len() + 1)?;
    let mut out_dims = dims.to_vec();
    out_dims.insert(a, depth);
    let total = numel(&out_dims)?;
    let inner = prod(&dims[a..]);
    let mut out = Vec::new();
    out.try_reserve_exact(total)
        .map_err(|_| format!("cannot allocate {total} elements for the result"))?;
    // Result element (o, d, i) is on where indices element (o, i) equals d.
    out.extend((0..total).map(|t| {
        let i = t % inner.max(1);
        let d = (t / inner.max(1)) % depth.max(1);
        let o = t / (inner.max(1) * depth.max(1));
        if usize::try_from(idx[o * inner + i]) == Ok(d) {
            on
        } else {
            off
        }
    }));
    Tensor::from_vec(&out_dims, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{assert_close, i32s, ints};
    use super::*;

    #[test]
    fn axes_values_and_out_of_range_rows() {
        let r = one_hot(&i32s(&[3], &[0, 2, 5]), 3, 1.0, 0.0, -1).unwrap();
        assert_close(&r, &[3, 3], &[1., 0., 0., 0., 0., 1., 0., 0., 0.], 0.0);
        let r = one_hot(&ints(&[2], &[1, -1]), 3, 5.0, -1.0, 0).unwrap();
        assert_close(&r, &[3, 2], &[-1., -1., 5., -1., -1., -1.], 0.0);
        let r = one_hot(&ints(&[2, 2], &[0, 1, 1, 0]), 2, 1.0, 0.0, 1).unwrap();
        assert_close(&r, &[2, 2, 2], &[1., 0., 0., 1., 0., 1., 1., 0.], 0.0);
        assert_eq!(
            one_hot(&ints(&[0], &[]), 4, 1.0, 0.0, -1).unwrap().dims(),
            &[0, 4]
        );
        assert!(one_hot(&ints(&[2], &[0, 0]), 2, 1.0, 0.0, 2).is_err());
    }
}
