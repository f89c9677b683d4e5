//! Inference for index-producing and index-consuming ops (`argmax`, `gather`), `cast` and
//! `lrn`.

use super::{normalize_axis, require_f32};
use crate::DType;
use crate::shape::{Shape, TensorType};

/// `argmax(x; axis)`: x's shape without `axis`, dtype `output_type` (i32 or i64).
pub(super) fn argmax(axis: i64, output_type: DType, x: &TensorType) -> Result<TensorType, String> {
    if !matches!(output_type, DType::I32 | DType::I64) {
        return Err(format!("output_type must be i32 or i64, got {output_type}"));
    }
    if x.dtype == DType::Bool {
        return Err(format!("x must be numeric, got {x}"));
    }
    let a = normalize_axis(axis, x.rank(), "x", x)?;
    if x.shape.dim(a) == Some(0) {
        return Err(format!("argmax over an empty axis {a} of x = {x}"));
    }
    let dims: Vec<_> = x
        .shape
        .dims()
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != a)
        .map(|(_, &d)| d)
        .collect();
    Ok(TensorType::new(output_type, Shape::of(&dims)))
}

/// `gather(params, indices; axis)`: `params[..axis] ++ indices ++ params[axis+1..]`.
pub(super) fn gather(
    axis: i64,
    params: &TensorType,
    indices: &TensorType,
) -> Result<TensorType, String> {
    if !matches!(indices.dtype, DType::I32 | DType::I64) {
        return Err(format!("indices must be i32 or i64, got {indices}"));
    }
    if params.rank() == 0 {
        return Err(format!("params must have rank >= 1, got {params}"));
    }
    let a = normalize_axis(axis, params.rank(), "params", params)?;
    let p = params.shape.dims();
    let mut dims = p[..a].to_vec();
    dims.extend_from_slice(indices.shape.dims());
    dims.extend_from_slice(&p[a + 1..]);
    Ok(TensorType::new(params.dtype, Shape::of(&dims)))
}

/// `cast(x; to)`: same shape, dtype `to`.
pub(super) fn cast(to: DType, x: &TensorType) -> Result<TensorType, String> {
    Ok(TensorType::new(to, x.shape.clone()))
}

/// `lrn(x)`: f32 of rank 4 (NHWC, the window runs over the last axis); same type.
pub(super) fn lrn(beta: f32, x: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    if x.rank() != 4 {
        return Err(format!("x must have rank 4 (NHWC), got {x}"));
    }
    if !beta.is_finite() {
        return Err(format!("beta must be finite, got {beta}"));
    }
    Ok(x.clone())
}
