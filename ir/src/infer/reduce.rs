//! Reductions (`reduce_*`) and the softmax family: f32 operands, axes validated against the
//! rank (negative axes count from the end, duplicates after normalising are an error).

use super::{normalize_axis, require_f32};
use crate::DType;
use crate::shape::{Shape, TensorType};

/// `reduce_*(x; axes, keepdims)`: `None` reduces every axis.
pub(super) fn reduce(
    axes: Option<&[i64]>,
    keepdims: bool,
    x: &TensorType,
) -> Result<TensorType, String> {
    require_f32("x", x)?;
    let rank = x.rank();
    let mut reduced = vec![false; rank];
    match axes {
        None => reduced.iter_mut().for_each(|r| *r = true),
        Some(axes) => {
            for &a in axes {
                let i = normalize_axis(a, rank, "x", x)?;
                if reduced[i] {
                    return Err(format!(
                        "axis {a} (axis {i}) appears more than once in axes {axes:?} for x = {x}"
                    ));
                }
                reduced[i] = true;
            }
        }
    }
    let dims: Vec<_> = x
        .shape
        .dims()
        .iter()
        .zip(&reduced)
        .filter_map(|(&d, &r)| match (r, keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(Some(1)),
            (true, false) => None,
        })
        .collect();
    Ok(TensorType::f32(Shape::of(&dims)))
}

/// `softmax` / `log_softmax(x; axis)`: rank >= 1, axis in range; the type is unchanged.
pub(super) fn softmax(axis: i64, x: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    if x.rank() == 0 {
        return Err(format!("x must have rank >= 1, got the scalar {x}"));
    }
    normalize_axis(axis, x.rank(), "x", x)?;
    Ok(x.clone())
}

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

/// The logits' dims without the class axis, checked: rank >= 1 and at least one class.
fn logit_rows(logits: &TensorType) -> Result<Vec<Option<usize>>, String> {
    require_f32("logits", logits)?;
    let Some((&classes, rows)) = logits.shape.dims().split_last() else {
        return Err(format!(
            "logits must have rank >= 1 ([batch, classes]), got the scalar {logits}"
        ));
    };
    if classes == Some(0) {
        return Err(format!(
            "logits {logits} have no classes (last axis of size 0)"
        ));
    }
    Ok(rows.to_vec())
}

/// Two dim lists that must agree where both are known; the known one where one is `?`.
fn merge_dims(
    a: &[Option<usize>],
    b: &[Option<usize>],
    what: impl Fn() -> String,
) -> Result<Vec<Option<usize>>, String> {
    if a.len() != b.len() {
        return Err(what());
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            (Some(x), Some(y)) if x != y => Err(what()),
            (x, y) => Ok(x.or(y)),
        })
        .collect()
}

/// `softmax_cross_entropy_with_logits(logits, labels)`: same shapes, the last axis dropped.
pub(super) fn cross_entropy(
    logits: &TensorType,
    labels: &TensorType,
) -> Result<TensorType, String> {
    let rows = logit_rows(logits)?;
    require_f32("labels", labels)?;
    let mismatch = || format!("labels {labels} must have the shape of logits {logits}");
    let dims = merge_dims(logits.shape.dims(), labels.shape.dims(), mismatch)?;
    Ok(TensorType::f32(Shape::of(&dims[..rows.len()])))
}

/// `sparse_softmax_cross_entropy_with_logits(logits, labels)`: integer labels of the logits'
/// shape without the class axis, which is also the result's.
pub(super) fn sparse_cross_entropy(
    logits: &TensorType,
    labels: &TensorType,
) -> Result<TensorType, String> {
    let rows = logit_rows(logits)?;
    if !matches!(labels.dtype, DType::I32 | DType::I64) {
        return Err(format!(
            "labels must be i32 or i64 class indices, got {labels}"
        ));
    }
    let mismatch =
        || format!("labels {labels} must have the shape of logits {logits} without its last axis");
    let dims = merge_dims(&rows, labels.shape.dims(), mismatch)?;
    Ok(TensorType::f32(Shape::of(&dims)))
}

#[cfg(test)]
mod tests {
    use super::super::{assert_err, run, ty};
    use crate::op::{Op, ReduceOp};

    fn red(axes: Option<Vec<i64>>, keepdims: bool) -> Vec<Op> {
        ReduceOp::ALL
            .iter()
            .map(|&op| Op::Reduce {
                op,
                axes: axes.clone(),
                keepdims,
            })
            .collect()
    }

    #[test]
    fn reduce_shapes() {
        let cases: [(Option<Vec<i64>>, bool, &str); 8] = [
            (None, false, "f32[]"),
            (None, true, "f32[1,1,1]"),
            (Some(vec![1]), false, "f32[2,4]"),
            (Some(vec![-1, 0]), false, "f32[?]"),
            (Some(vec![-1, 0]), true, "f32[1,?,1]"),
            (Some(vec![]), false, "f32[2,?,4]"),
            (Some(vec![1]), true, "f32[2,1,4]"),
            (Some(vec![0, 1, 2]), false, "f32[]"),
        ];
        for (axes, keep, want) in cases {
            for op in red(axes.clone(), keep) {
                assert_eq!(run(&op, &["f32[2,?,4]"]).unwrap(), ty(want), "{op:?}");
            }
        }
        for op in red(None, false) {
            assert_eq!(run(&op, &["f32[]"]).unwrap(), ty("f32[]"));
        }
    }

    #[test]
    fn reduce_errors() {
        for op in red(Some(vec![3]), false) {
            assert_err(
                &op,
                &["f32[2,3,4]"],
                &["axis 3 is out of range", "f32[2,3,4]", "-3..2"],
            );
        }
        for op in red(Some(vec![-4]), false) {
            assert_err(&op, &["f32[2,3,4]"], &["axis -4 is out of range"]);
        }
        for op in red(Some(vec![1, -2]), true) {
            assert_err(
                &op,
                &["f32[2,3,4]"],
                &["axis -2 (axis 1) appears more than once", "f32[2,3,4]"],
            );
        }
        for op in red(Some(vec![0]), false) {
            assert_err(&op, &["f32[]"], &["out of range"]);
            assert_err(&op, &["i32[3]"], &["x must be f32"]);
        }
    }

    #[test]
    fn cross_entropies() {
        let xent = Op::SoftmaxCrossEntropyWithLogits;
        let sparse = Op::SparseSoftmaxCrossEntropyWithLogits;
        assert_eq!(
            run(&xent, &["f32[?,10]", "f32[4,10]"]).unwrap(),
            ty("f32[4]")
        );
        assert_eq!(run(&xent, &["f32[3]", "f32[3]"]).unwrap(), ty("f32[]"));
        assert_eq!(
            run(&xent, &["f32[2,5,3]", "f32[2,5,3]"]).unwrap(),
            ty("f32[2,5]")
        );
        assert_err(
            &xent,
            &["f32[4,10]", "f32[4,9]"],
            &["labels f32[4,9]", "f32[4,10]"],
        );
        assert_err(&xent, &["f32[4,10]", "f32[10]"], &["must have the shape"]);
        assert_err(&xent, &["f32[]", "f32[]"], &["rank >= 1"]);
        assert_err(&xent, &["f32[4,0]", "f32[4,0]"], &["no classes"]);
        assert_err(&xent, &["f32[4,3]", "i32[4,3]"], &["labels must be f32"]);
        assert_eq!(
            run(&sparse, &["f32[?,10]", "i32[4]"]).unwrap(),
            ty("f32[4]")
        );
        assert_eq!(run(&sparse, &["f32[10]", "i64[]"]).unwrap(), ty("f32[]"));
        assert_err(&sparse, &["f32[4,10]", "f32[4]"], &["i32 or i64", "f32[4]"]);
        assert_err(
            &sparse,
            &["f32[4,10]", "i32[5]"],
            &["without its last axis"],
        );
        assert_err(
            &sparse,
            &["f32[4,10]", "i32[4,10]"],
            &["without its last axis"],
        );
    }

    #[test]
    fn softmax_family() {
        for mk in [|axis| Op::Softmax { axis }, |axis| Op::LogSoftmax { axis }] {
            assert_eq!(run(&mk(-1), &["f32[?,10]"]).unwrap(), ty("f32[?,10]"));
            assert_eq!(run(&mk(0), &["f32[5]"]).unwrap(), ty("f32[5]"));
            assert_err(
                &mk(2),
                &["f32[2,3]"],
                &["axis 2 is out of range", "f32[2,3]"],
            );
            assert_err(&mk(-3), &["f32[2,3]"], &["out of range"]);
            assert_err(&mk(-1), &["f32[]"], &["rank >= 1", "f32[]"]);
            assert_err(&mk(-1), &["i32[3]"], &["x must be f32"]);
        }
    }
}
