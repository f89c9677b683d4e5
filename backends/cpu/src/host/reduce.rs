//! `argmax` on the host, with the reference evaluator's semantics: the first index of the
//! largest value (a NaN counts as the largest, the first one wins).

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
