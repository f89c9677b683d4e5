//! `gather_grad`: the adjoint of `gather`, a scatter-add. Each gradient block goes to the
//! params position its index names (negative indices count from the end, as in gather), and
//! blocks of repeated indices add, in f64. Every index is checked before anything is added.

use super::super::{f32_data, finish, norm_axis, numel, prod};
use super::gather::resolve_indices;
use crate::shape::fmt_dims;
use crate::tensor::Tensor;

/// `gather_grad(grad, indices; axis, size)`.
pub(crate) fn gather_grad(
    grad: &Tensor,
    indices: &Tensor,
    axis: i64,
    size: usize,
) -> Result<Tensor, String> {
    let gs = f32_data(grad, "grad")?;
    let (gd, id) = (grad.dims(), indices.dims());
    let rank = (gd.len() + 1)
        .checked_sub(id.len())
        .filter(|&r| r >= 1)
        .ok_or_else(|| format!("grad {} has a lower rank than indices", grad.ty()))?;
    let a = norm_axis(axis, rank)?;
    if gd[a..a + id.len()] != *id {
        return Err(format!(
            "grad {} must have indices' shape {} at axes {a}..{}",
            fmt_dims(gd),
            fmt_dims(id),
            a + id.len()
        ));
    }
    let mut out_dims = gd[..a].to_vec();
    out_dims.push(size);
    out_dims.extend_from_slice(&gd[a + id.len()..]);
    let idx = resolve_indices(indices, size, a, &out_dims)?;
    let (outer, inner) = (prod(&gd[..a]), prod(&gd[a + id.len()..]));
    let mut acc = vec![0f64; numel(&out_dims)?];
    if !acc.is_empty() {
        for o in 0..outer {
            for (j, &k) in idx.iter().enumerate() {
                for i in 0..inner {
                    acc[(o * size + k) * inner + i] += gs[(o * idx.len() + j) * inner + i] as f64;
                }
            }
        }
    }
    finish(&out_dims, acc.into_iter().map(|v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{assert_close, i32s, ints, t};
    use super::*;

    #[test]
    fn repeated_and_negative_indices_add() {
        let g = t(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
        let r = gather_grad(&g, &i32s(&[3], &[1, 1, -4]), 0, 4).unwrap();
        assert_close(&r, &[4, 2], &[5., 6., 4., 6., 0., 0., 0., 0.], 0.0);
        // Axis 1 with 2-D indices: grad [2, (2, 1)] -> [2, 3].
        let g = t(&[2, 2, 1], &[1., 2., 3., 4.]);
        let r = gather_grad(&g, &ints(&[2, 1], &[2, 2]), 1, 3).unwrap();
        assert_close(&r, &[2, 3], &[0., 0., 3., 0., 0., 7.], 0.0);
    }

    #[test]
    fn bad_index_and_shape_are_errors() {
        let g = t(&[2], &[1., 2.]);
        let e = gather_grad(&g, &i32s(&[2], &[0, 3]), 0, 3).unwrap_err();
        assert!(
            e.contains("index 3 (at flat position 1") && e.contains("size 3"),
            "{e}"
        );
        let e = gather_grad(&g, &i32s(&[3], &[0, 1, 2]), 0, 3).unwrap_err();
        assert!(e.contains("indices' shape [3]"), "{e}");
    }
}
