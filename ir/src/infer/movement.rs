//! Data-movement ops: reshape, transpose, concat, slice, pad, gather, one_hot, gather_grad.
//!
//! reshape, transpose, concat and slice move elements of any dtype; pad is f32 only because its
//! fill value is an f32. Every dims product or sum is checked, so an absurd attribute is an
//! error rather than an overflow.

use super::{normalize_axis, require_f32};
use crate::DType;
use crate::shape::{Dim, Shape, TensorType};

/// `reshape(x; shape)`: at most one `-1`, other entries >= 0, element counts equal.
pub(super) fn reshape(target: &[i64], x: &TensorType) -> Result<TensorType, String> {
    let shown = format!("{target:?}").replace(' ', "");
    let mut infer_at = None;
    let mut known = 1usize; // product of the entries other than -1
    for (i, &d) in target.iter().enumerate() {
        if d == -1 {
            if infer_at.replace(i).is_some() {
                return Err(format!("shape {shown} has more than one -1"));
            }
            continue;
        }
        let d = usize::try_from(d).map_err(|_| {
            format!("shape {shown} has {d} at axis {i}; entries must be >= 0 or a single -1")
        })?;
        known = known.checked_mul(d).ok_or_else(|| {
            format!("shape {shown} has too many elements (the product overflows usize)")
        })?;
    }
    let mut dims: Vec<Dim> = target.iter().map(|&d| usize::try_from(d).ok()).collect();
    let numel = known_product(x)?;
    match (infer_at, numel) {
        (Some(_), _) if known == 0 => {
            return Err(format!(
                "cannot infer the -1 in shape {shown}: another entry is 0, so any size would fit (x is {x})"
            ));
        }
        (Some(i), Product::Known(n)) => {
            if !n.is_multiple_of(known) {
                return Err(format!(
                    "cannot reshape x = {x} ({n} elements) to {shown}: {n} is not a multiple of {known}"
                ));
            }
            dims[i] = Some(n / known);
        }
        (Some(i), Product::Partial(_)) => dims[i] = None,
        (None, Product::Known(n)) if n != known => {
            return Err(format!(
                "cannot reshape x = {x} ({n} elements) to {shown} ({known} elements)"
            ));
        }
        // Unknown input dims: the known ones must still divide the target's element count.
        (None, Product::Partial(p))
            if (p == 0 && known != 0) || (p != 0 && !known.is_multiple_of(p)) =>
        {
            return Err(format!(
                "cannot reshape x = {x} to {shown} ({known} elements): the known dims of x \
                 multiply to {p}, which does not divide {known}"
            ));
        }
        (None, _) => {}
    }
    Ok(TensorType::new(x.dtype, Shape::of(&dims)))
}

/// The element count of `x` when every dim is known, else the product of its known dims.
enum Product {
    Known(usize),
    Partial(usize),
}

fn known_product(x: &TensorType) -> Result<Product, String> {
    let dims = x.shape.dims();
    let p = if dims.contains(&Some(0)) {
        0
    } else {
        dims.iter()
            .flatten()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("x = {x} has too many elements (the product overflows usize)"))?
    };
    Ok(if x.shape.is_concrete() {
        Product::Known(p)
    } else {
        Product::Partial(p)
    })
}

/// `transpose(x; perm)`: `perm` is a permutation of `0..rank`; output axis i is input axis perm[i].
pub(super) fn transpose(perm: &[usize], x: &TensorType) -> Result<TensorType, String> {
    let rank = x.rank();
    let bad = || format!("perm {perm:?} is not a permutation of 0..{rank} (x is {x})");
    if perm.len() != rank {
        return Err(bad());
    }
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(bad());
        }
    }
    let dims: Vec<Dim> = perm.iter().map(|&p| x.shape.dim(p)).collect();
    Ok(TensorType::new(x.dtype, Shape::of(&dims)))
}

/// `concat(a, b, ...; axis)`: same rank (>= 1) and dtype; dims other than `axis` agree where
/// known (the output takes the known one); the output `axis` dim is the sum, `?` if any is `?`.
pub(super) fn concat(axis: i64, xs: &[&TensorType]) -> Result<TensorType, String> {
    let first = *xs.first().ok_or("concat needs at least one operand")?;
    if first.rank() == 0 {
        return Err(format!(
            "operands must have rank >= 1, got the scalar {first}"
        ));
    }
    let ax = normalize_axis(axis, first.rank(), "operand 0", first)?;
    let mut dims: Vec<Dim> = first.shape.dims().to_vec();
    for (k, x) in xs.iter().enumerate().skip(1) {
        if x.dtype != first.dtype || x.rank() != first.rank() {
            return Err(format!(
                "operands must have the same dtype and rank: operand 0 is {first}, operand {k} is {x}"
            ));
        }
        for (i, (d, &e)) in dims.iter_mut().zip(x.shape.dims()).enumerate() {
            if i == ax {
                *d = match (*d, e) {
                    (Some(a), Some(b)) => Some(a.checked_add(b).ok_or_else(|| {
                        format!("the concatenated axis {ax} overflows usize (operand {k} is {x})")
                    })?),
                    _ => None,
                };
            } else {
                match (*d, e) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(format!(
                            "dims other than the concat axis {ax} must agree: operand 0 is {first}, \
                             operand {k} is {x} (axis {i}: {a} vs {b})"
                        ));
                    }
                    (a, b) => *d = a.or(b),
                }
            }
        }
    }
    Ok(TensorType::new(first.dtype, Shape::of(&dims)))
}

/// `slice(x; begin, size)`: one entry per axis; size -1 runs to the end; the box must fit.
pub(super) fn slice(begin: &[usize], size: &[i64], x: &TensorType) -> Result<TensorType, String> {
    let rank = x.rank();
    if begin.len() != rank || size.len() != rank {
        return Err(format!(
            "begin and size need one entry per axis of x = {x} (rank {rank}), got begin {begin:?}, size {size:?}"
        ));
    }
    let mut dims = Vec::with_capacity(rank);
    for (i, ((&b, &s), &d)) in begin.iter().zip(size).zip(x.shape.dims()).enumerate() {
        let out = match (s, d) {
            (-1, Some(d)) => Some(d.checked_sub(b).ok_or_else(|| {
                format!("axis {i}: begin {b} is past the end of x = {x} (dim {d})")
            })?),
            (-1, None) => None,
            (s, d) => {
                let s = usize::try_from(s).map_err(|_| {
                    format!(
                        "axis {i}: size {s} is invalid; sizes are >= 0, or -1 for \"to the end\""
                    )
                })?;
                let end = b
                    .checked_add(s)
                    .ok_or_else(|| format!("axis {i}: begin {b} + size {s} overflows usize"))?;
                if let Some(d) = d
                    && end > d
                {
                    return Err(format!(
                        "axis {i}: begin {b} + size {s} = {end} runs past the end of x = {x} (dim {d})"
                    ));
                }
                Some(s)
            }
        };
        dims.push(out);
    }
    Ok(TensorType::new(x.dtype, Shape::of(&dims)))
}

/// `pad(x; paddings)`: one `[before, after]` per axis; f32 only (the fill value is f32).
pub(super) fn pad(paddings: &[[usize; 2]], x: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    if paddings.len() != x.rank() {
        return Err(format!(
            "paddings need one [before, after] per axis of x = {x} (rank {}), got {} entries",
            x.rank(),
            paddings.len()
        ));
    }
    let mut dims = Vec::with_capacity(x.rank());
    for (i, (&[b, a], &d)) in paddings.iter().zip(x.shape.dims()).enumerate() {
        dims.push(match d {
            None => None,
            Some(d) => Some(
                d.checked_add(b)
                    .and_then(|n| n.checked_add(a))
                    .ok_or_else(|| {
                        format!("axis {i}: {d} + {b} + {a} overflows usize (x is {x})")
                    })?,
            ),
        });
    }
    Ok(TensorType::f32(Shape::of(&dims)))
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

/// `one_hot(indices; depth, axis)`: indices' shape with `depth` inserted at `axis`, f32.
pub(super) fn one_hot(depth: usize, axis: i64, indices: &TensorType) -> Result<TensorType, String> {
    if !matches!(indices.dtype, DType::I32 | DType::I64) {
        return Err(format!("indices must be i32 or i64, got {indices}"));
    }
    // The axis counts in the result, one rank more than indices.
    let a = normalize_axis(
        axis,
        indices.rank() + 1,
        "the result of one_hot of indices",
        indices,
    )?;
    let mut dims = indices.shape.dims().to_vec();
    dims.insert(a, Some(depth));
    Ok(TensorType::f32(Shape::of(&dims)))
}

/// `gather_grad(grad, indices; axis, size)`: grad's axes `axis .. axis + rank(indices)` (which
/// must be indices' shape) become one axis of `size`.
pub(super) fn gather_grad(
    axis: i64,
    size: usize,
    grad: &TensorType,
    indices: &TensorType,
) -> Result<TensorType, String> {
    require_f32("grad", grad)?;
    if !matches!(indices.dtype, DType::I32 | DType::I64) {
        return Err(format!("indices must be i32 or i64, got {indices}"));
    }
    let Some(rank) = (grad.rank() + 1)
        .checked_sub(indices.rank())
        .filter(|&r| r >= 1)
    else {
        return Err(format!(
            "grad {grad} must have at least the rank of indices {indices} (the gather's output              is params' shape with indices' shape at axis)"
        ));
    };
    let a = normalize_axis(
        axis,
        rank,
        "the result (params) of gather_grad of grad",
        grad,
    )?;
    let g = grad.shape.dims();
    let ir = indices.rank();
    let fits = g[a..a + ir]
        .iter()
        .zip(indices.shape.dims())
        .all(|(x, y)| x.is_none() || y.is_none() || x == y);
    if !fits {
        return Err(format!(
            "grad {grad} must have indices' shape {indices} at axes {a}..{}",
            a + ir
        ));
    }
    let mut dims = g[..a].to_vec();
    dims.push(Some(size));
    dims.extend_from_slice(&g[a + ir..]);
    Ok(TensorType::f32(Shape::of(&dims)))
}

#[cfg(test)]
#[path = "movement_tests.rs"]
mod tests;
