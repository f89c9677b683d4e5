//! The softmax cross entropies along the last axis, per row of `classes` logits:
//! `lse = max + ln(sum(exp(logits - max)))` in f64 (the maximum subtracted, so large logits do
//! not overflow), then `sum(labels * (lse - logits))` for dense labels or `lse - logits[label]`
//! for a class index. A class index outside `0..classes` gives NaN for its row.

use super::super::{f32_data, finish, nan_max};
use crate::shape::fmt_dims;
use crate::tensor::{Data, Tensor};

/// The logits as rows of `classes` and the result's dims (the class axis dropped).
fn rows(logits: &Tensor) -> Result<(&[f32], usize, Vec<usize>), String> {
    let xs = f32_data(logits, "logits")?;
    let Some((&classes, rows)) = logits.dims().split_last() else {
        return Err(format!("logits must have rank >= 1, got {}", logits.ty()));
    };
    if classes == 0 {
        return Err(format!("logits {} have no classes", logits.ty()));
    }
    Ok((xs, classes, rows.to_vec()))
}

/// `max + ln(sum(exp(row - max)))` in f64; NaN in the row gives NaN.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, nan_max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

/// `softmax_cross_entropy_with_logits(logits, labels)` (labels of logits' shape).
pub(crate) fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, String> {
    let (xs, classes, out_dims) = rows(logits)?;
    let ls = f32_data(labels, "labels")?;
    if labels.dims() != logits.dims() {
        return Err(format!(
            "labels {} must have the shape of logits {}",
            fmt_dims(labels.dims()),
            fmt_dims(logits.dims())
        ));
    }
    let out = xs
        .chunks(classes)
        .zip(ls.chunks(classes))
        .map(|(x, l)| {
            let lse = log_sum_exp(x);
            let loss: f64 = x
                .iter()
                .zip(l)
                .map(|(&x, &l)| l as f64 * (lse - x as f64))
                .sum();
            loss as f32
        })
        .collect();
    finish(&out_dims, out)
}

/// `sparse_softmax_cross_entropy_with_logits(logits, labels)` (i32/i64 class indices of
/// logits' shape without the class axis).
pub(crate) fn sparse_softmax_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
) -> Result<Tensor, String> {
    let (xs, classes, out_dims) = rows(logits)?;
    if labels.dims() != out_dims.as_slice() {
        return Err(format!(
            "labels {} must have the shape of logits {} without its last axis",
            fmt_dims(labels.dims()),
            fmt_dims(logits.dims())
        ));
    }
    let label = |r: usize| -> i64 {
        match labels.data() {
            Data::I32(v) => i64::from(v[r]),
            Data::I64(v) => v[r],
            // Checked below before any row is read.
            _ => -1,
        }
    };
    if !matches!(labels.data(), Data::I32(_) | Data::I64(_)) {
        return Err(format!("labels must be i32 or i64, got {}", labels.ty()));
    }
    let out = xs
        .chunks(classes)
        .enumerate()
        .map(|(r, x)| match usize::try_from(label(r)) {
            Ok(c) if c < classes => (log_sum_exp(x) - x[c] as f64) as f32,
            _ => f32::NAN,
        })
        .collect();
    finish(&out_dims, out)
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::{assert_close, i32s, ints, t};
    use super::*;

    #[test]
    fn dense_matches_the_formula_and_survives_large_logits() {
        // Row 0: log-softmax of [1, 2, 3] is [-2.4076, -1.4076, -0.4076].
        let logits = t(&[2, 3], &[1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0]);
        let labels = t(&[2, 3], &[0.25, 0.25, 0.5, 1.0, 0.0, 0.0]);
        let r = softmax_cross_entropy(&logits, &labels).unwrap();
        let want0 = 0.25 * 2.407_606 + 0.25 * 1.407_606 + 0.5 * 0.407_606;
        assert_close(&r, &[2], &[want0, 0.0], 1e-5);
        let e = softmax_cross_entropy(&logits, &t(&[3, 2], &[0.0; 6])).unwrap_err();
        assert!(
            e.contains("labels [3,2] must have the shape of logits [2,3]"),
            "{e}"
        );
        assert!(softmax_cross_entropy(&t(&[2, 0], &[]), &t(&[2, 0], &[])).is_err());
    }

    #[test]
    fn sparse_picks_the_label_and_gives_nan_out_of_range() {
        let logits = t(&[3, 3], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let r = sparse_softmax_cross_entropy(&logits, &i32s(&[3], &[2, 0, 3])).unwrap();
        let v = r.as_f32().unwrap();
        assert!((v[0] - 0.407_606).abs() < 1e-5 && (v[1] - 2.407_606).abs() < 1e-5);
        assert!(
            v[2].is_nan(),
            "label 3 of 3 classes gives NaN, got {}",
            v[2]
        );
        let r = sparse_softmax_cross_entropy(&logits, &ints(&[3], &[-1, 1, 1])).unwrap();
        assert!(r.as_f32().unwrap()[0].is_nan());
        let e = sparse_softmax_cross_entropy(&logits, &ints(&[2], &[0, 0])).unwrap_err();
        assert!(e.contains("without its last axis"), "{e}");
        let e = sparse_softmax_cross_entropy(&logits, &t(&[3], &[0.0; 3])).unwrap_err();
        assert!(e.contains("i32 or i64"), "{e}");
    }
}
