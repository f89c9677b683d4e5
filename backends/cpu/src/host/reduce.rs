//! `argmax` on the host, with the reference evaluator's semantics: the first index of the
//! largest value (a NaN counts as the largest, the first one wins); and the softmax cross
//! entropies, one row of logits at a time: the maximum, then `lse = max + ln(sum(exp(x -
//! max)))` accumulated in f64 as the evaluator does, then the loss.

use super::{View, ViewMut};

/// `argmax(x)` along `axis` of `dims`, into an i32 or i64 output (the planner checked dims
/// and dtypes).
pub(super) fn argmax(
    x: View<'_>,
    dims: &[usize],
    axis: usize,
    out: ViewMut<'_>,
) -> Result<(), String> {
    let n = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut best = vec![0usize; out.len()];
    match x {
        View::F32(v) => scan(v, n, inner, &mut best, |c, b| {
            !b.is_nan() && (c.is_nan() || c > b)
        }),
        View::I32(v) => scan(v, n, inner, &mut best, |c, b| c > b),
        View::I64(v) => scan(v, n, inner, &mut best, |c, b| c > b),
        View::Bool(_) => return Err("argmax of a bool tensor".into()),
    }
    match out {
        ViewMut::I32(o) => {
            for (o, &b) in o.iter_mut().zip(&best) {
                *o = i32::try_from(b)
                    .map_err(|_| format!("index {b} along axis {axis} does not fit in i32"))?;
            }
        }
        ViewMut::I64(o) => {
            for (o, &b) in o.iter_mut().zip(&best) {
                // An index below an axis length that fits in memory fits in i64.
                *o = b as i64;
            }
        }
        _ => return Err("argmax output must be i32 or i64".into()),
    }
    Ok(())
}

/// For each output position `o = (outer, i)`, the first `k < n` whose element no later one
/// `beats`. Walks the input once in memory order, keeping the best value per inner position.
fn scan<T: Copy>(
    v: &[T],
    n: usize,
    inner: usize,
    best: &mut [usize],
    beats: impl Fn(T, T) -> bool,
) {
    if n == 0 || inner == 0 {
        return;
    }
    for (outer, out_row) in best.chunks_mut(inner).enumerate() {
        let block = &v[outer * n * inner..(outer + 1) * n * inner];
        let mut vals: Vec<T> = block[..inner].to_vec();
        for k in 1..n {
            let row = &block[k * inner..(k + 1) * inner];
            for ((b, val), &c) in out_row.iter_mut().zip(vals.iter_mut()).zip(row) {
                if beats(c, *val) {
                    *val = c;
                    *b = k;
                }
            }
        }
    }
}

/// `max + ln(sum(exp(row - max)))`, in f64; NaN in the row gives NaN.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| {
        if x.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(x)
        }
    }) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

/// `softmax_cross_entropy_with_logits`: `y[r] = sum(labels * (lse - logits))` over row `r`
/// (the planner checked that `x` and `labels` hold `y.len()` rows of at least one class).
pub(super) fn cross_entropy(x: &[f32], labels: &[f32], y: &mut [f32]) {
    let classes = x.len() / y.len().max(1);
    for ((row, l), out) in x.chunks(classes).zip(labels.chunks(classes)).zip(y) {
        let lse = log_sum_exp(row);
        let loss: f64 = row
            .iter()
            .zip(l)
            .map(|(&x, &l)| l as f64 * (lse - x as f64))
            .sum();
        *out = loss as f32;
    }
}

/// `sparse_softmax_cross_entropy_with_logits`: `y[r] = lse - logits[r, label[r]]`, NaN for a
/// label outside `0..classes`.
pub(super) fn sparse_cross_entropy(
    x: &[f32],
    labels: View<'_>,
    y: &mut [f32],
) -> Result<(), String> {
    let classes = x.len() / y.len().max(1);
    let label = |r: usize| -> i64 {
        match labels {
            View::I32(v) => i64::from(v[r]),
            View::I64(v) => v[r],
            _ => -1,
        }
    };
    if !matches!(labels, View::I32(_) | View::I64(_)) {
        return Err("cross entropy labels must be i32 or i64".into());
    }
    for (r, (row, out)) in x.chunks(classes).zip(y).enumerate() {
        *out = match usize::try_from(label(r)) {
            Ok(c) if c < classes => (log_sum_exp(row) - row[c] as f64) as f32,
            _ => f32::NAN,
        };
    }
    Ok(())
}
