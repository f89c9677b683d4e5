//! The backward window ops (`conv2d_backprop_input`, `conv2d_backprop_filter`,
//! `max_pool_grad`, `avg_pool_grad`): each is checked by inferring its forward op from the
//! shapes it is given and requiring the incoming gradient to have exactly the forward output's
//! shape, so the padding, stride and grouping rules are the forward op's, written once.

use super::super::require_f32;
use super::{conv2d, pool};
use crate::op::{ConvAttrs, DataFormat, PoolAttrs};
use crate::shape::{Dim, Shape, TensorType};

/// The batch axis of an image in either layout.
const BATCH: usize = 0;

/// An image shape attribute (`input_shape`, `orig_input_shape`) as a type: every entry
/// non-negative except a batch of `-1`, which takes `grad`'s batch.
fn image_from_attr(name: &str, dims: [i64; 4], grad: &TensorType) -> Result<TensorType, String> {
    let mut out: Vec<Dim> = Vec::with_capacity(4);
    for (axis, &d) in dims.iter().enumerate() {
        out.push(match d {
            -1 if axis == BATCH => grad.shape.dim(BATCH),
            d if d >= 0 => Some(usize::try_from(d).map_err(|_| format!("{name} {d} overflows"))?),
            _ => {
                return Err(format!(
                    "{name} {dims:?}: every dim must be >= 0, except a batch of -1 (the \
                     gradient's batch); got {d} at axis {axis}"
                ));
            }
        });
    }
    Ok(TensorType::f32(Shape::of(&out)))
}

/// Errors unless `got` (the gradient operand) has the forward op's output shape `want`,
/// comparing the dims known in both.
fn same_as_forward(
    role: &str,
    got: &TensorType,
    want: &TensorType,
    forward: &str,
) -> Result<(), String> {
    let agree = got.rank() == want.rank()
        && (0..got.rank()).all(|i| match (got.shape.dim(i), want.shape.dim(i)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        });
    if agree {
        Ok(())
    } else {
        Err(format!("{role} is {got}, but {forward} gives {want}"))
    }
}

fn rank4(role: &str, t: &TensorType, format: DataFormat) -> Result<(), String> {
    require_f32(role, t)?;
    if t.rank() != 4 {
        return Err(format!(
            "{role} must be rank 4 ({}), got {t}",
            format.name()
        ));
    }
    Ok(())
}

/// `conv2d_backprop_input(w, dy; input_shape)`: x's type, with dy checked against
/// `conv2d(x, w)`.
pub(in crate::infer) fn conv2d_backprop_input(
    a: &ConvAttrs,
    input_shape: [i64; 4],
    w: &TensorType,
    dy: &TensorType,
) -> Result<TensorType, String> {
    backprop_input(a, input_shape, w, dy, false)
}

/// `depthwise_conv2d_backprop_input(w, dy; input_shape)`: as [`conv2d_backprop_input`] for
/// `depthwise_conv2d`.
pub(in crate::infer) fn depthwise_backprop_input(
    a: &ConvAttrs,
    input_shape: [i64; 4],
    w: &TensorType,
    dy: &TensorType,
) -> Result<TensorType, String> {
    backprop_input(a, input_shape, w, dy, true)
}

/// `conv2d_backprop_filter(x, dy; filter_shape)`: the filter's type, with dy checked against
/// `conv2d(x, w)`.
pub(in crate::infer) fn conv2d_backprop_filter(
    a: &ConvAttrs,
    filter_shape: [usize; 4],
    x: &TensorType,
    dy: &TensorType,
) -> Result<TensorType, String> {
    backprop_filter(a, filter_shape, x, dy, false)
}

/// `depthwise_conv2d_backprop_filter(x, dy; filter_shape)`: as [`conv2d_backprop_filter`] for
/// `depthwise_conv2d`.
pub(in crate::infer) fn depthwise_backprop_filter(
    a: &ConvAttrs,
    filter_shape: [usize; 4],
    x: &TensorType,
    dy: &TensorType,
) -> Result<TensorType, String> {
    backprop_filter(a, filter_shape, x, dy, true)
}

fn forward_name(depthwise: bool) -> &'static str {
    if depthwise {
        "depthwise_conv2d"
    } else {
        "conv2d"
    }
}

fn backprop_input(
    a: &ConvAttrs,
    input_shape: [i64; 4],
    w: &TensorType,
    dy: &TensorType,
    depthwise: bool,
) -> Result<TensorType, String> {
    rank4("dy", dy, a.data_format)?;
    let x = image_from_attr("input_shape", input_shape, dy)?;
    let y = conv2d(a, &x, w, depthwise).map_err(|m| format!("input_shape {input_shape:?}: {m}"))?;
    same_as_forward(
        "dy",
        dy,
        &y,
        &format!("{} of an input {x} and filter {w}", forward_name(depthwise)),
    )?;
    Ok(x)
}

fn backprop_filter(
    a: &ConvAttrs,
    filter_shape: [usize; 4],
    x: &TensorType,
    dy: &TensorType,
    depthwise: bool,
) -> Result<TensorType, String> {
    rank4("dy", dy, a.data_format)?;
    let w = TensorType::f32(Shape::known(&filter_shape));
    let y =
        conv2d(a, x, &w, depthwise).map_err(|m| format!("filter_shape {filter_shape:?}: {m}"))?;
    let forward = format!("{} of x {x} and a filter {w}", forward_name(depthwise));
    same_as_forward("dy", dy, &y, &forward)?;
    Ok(w)
}

/// `max_pool_grad(orig_input, orig_output, grad)`: orig_input's type, with orig_output and
/// grad checked against `max_pool(orig_input)`.
pub(in crate::infer) fn max_pool_grad(
    a: &PoolAttrs,
    x: &TensorType,
    y: &TensorType,
    grad: &TensorType,
) -> Result<TensorType, String> {
    let want = pool(a, x)?;
    let forward = format!("max_pool of orig_input {x}");
    rank4("orig_output", y, a.data_format)?;
    same_as_forward("orig_output", y, &want, &forward)?;
    rank4("grad", grad, a.data_format)?;
    same_as_forward("grad", grad, &want, &forward)?;
    Ok(x.clone())
}

/// `avg_pool_grad(grad; orig_input_shape)`: the forward input's type, with grad checked
/// against `avg_pool` of it.
pub(in crate::infer) fn avg_pool_grad(
    a: &PoolAttrs,
    orig_input_shape: [i64; 4],
    grad: &TensorType,
) -> Result<TensorType, String> {
    rank4("grad", grad, a.data_format)?;
    let x = image_from_attr("orig_input_shape", orig_input_shape, grad)?;
    let want = pool(a, &x).map_err(|m| format!("orig_input_shape {orig_input_shape:?}: {m}"))?;
    same_as_forward("grad", grad, &want, &format!("avg_pool of an input {x}"))?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Padding;

    fn f32(dims: &[Dim]) -> TensorType {
        TensorType::f32(Shape::of(dims))
    }

    #[test]
    fn backprop_input_takes_the_batch_from_dy() {
        let a = ConvAttrs::same().strides(2, 2);
        let w = f32(&[Some(3), Some(3), Some(2), Some(4)]);
        let dy = f32(&[None, Some(4), Some(4), Some(4)]);
        let x = conv2d_backprop_input(&a, [-1, 7, 7, 2], &w, &dy).unwrap();
        assert_eq!(x, f32(&[None, Some(7), Some(7), Some(2)]));
        // Grouped: 4 input channels from a filter reading 2 per group.
        let x = conv2d_backprop_input(&a, [3, 8, 8, 4], &w, &dy).unwrap();
        assert_eq!(x, f32(&[Some(3), Some(8), Some(8), Some(4)]));
    }

    #[test]
    fn inconsistent_shapes_name_every_shape() {
        let a = ConvAttrs::valid();
        let w = f32(&[Some(3), Some(3), Some(2), Some(4)]);
        let dy = f32(&[Some(2), Some(5), Some(5), Some(4)]);
        let e = conv2d_backprop_input(&a, [2, 6, 6, 2], &w, &dy).unwrap_err();
        assert_eq!(
            e,
            "dy is f32[2,5,5,4], but conv2d of an input f32[2,6,6,2] and filter f32[3,3,2,4] \
             gives f32[2,4,4,4]"
        );
        let e = conv2d_backprop_input(&a, [3, 7, 7, 2], &w, &dy).unwrap_err();
        assert!(
            e.contains("dy is f32[2,5,5,4]") && e.contains("f32[3,5,5,4]"),
            "{e}"
        );
        let e = conv2d_backprop_input(&a, [2, 7, -7, 2], &w, &dy).unwrap_err();
        assert!(e.contains("except a batch of -1"), "{e}");
        let x = f32(&[Some(2), Some(7), Some(7), Some(3)]);
        let e = conv2d_backprop_filter(&a, [3, 3, 2, 4], &x, &dy).unwrap_err();
        assert!(
            e.starts_with("filter_shape [3, 3, 2, 4]: input channels differ"),
            "{e}"
        );
        let p = PoolAttrs::new(2, 2, Padding::Valid);
        let e = avg_pool_grad(&p, [2, 8, 8, 4], &dy).unwrap_err();
        assert!(e.contains("gives f32[2,4,4,4]"), "{e}");
        let e = max_pool_grad(&p, &x, &dy, &dy).unwrap_err();
        assert!(e.starts_with("orig_output is f32[2,5,5,4]"), "{e}");
    }
}
