//! `argmax` and `gather` on the host, with the reference evaluator's semantics: argmax takes
//! the first index of the largest value (a NaN counts as the largest, the first one wins);
//! gather checks every index (negative ones count from the end) before copying anything, and
//! reports the first bad one with its position and the axis size.

use super::{View, ViewMut};
use kiln_ir::shape::fmt_dims;

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
    let mut best = vec![0usize; out_len(&out)];
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

fn out_len(out: &ViewMut<'_>) -> usize {
    match out {
        ViewMut::F32(v) => v.len(),
        ViewMut::I32(v) => v.len(),
        ViewMut::I64(v) => v.len(),
        ViewMut::Bool(v) => v.len(),
    }
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

/// `gather(params, indices)` along `axis` of `pdims` (the planner checked that the output
/// has params' dtype and dims `pdims[..axis] ++ indices ++ pdims[axis+1..]`).
pub(super) fn gather(
    params: View<'_>,
    pdims: &[usize],
    indices: View<'_>,
    axis: usize,
    out: ViewMut<'_>,
) -> Result<(), String> {
    let n = pdims[axis];
    let idx = resolve(indices, n, axis, pdims)?;
    let inner: usize = pdims[axis + 1..].iter().product();
    match (params, out) {
        (View::F32(p), ViewMut::F32(o)) => copy_rows(p, o, &idx, n, inner),
        (View::I32(p), ViewMut::I32(o)) => copy_rows(p, o, &idx, n, inner),
        (View::I64(p), ViewMut::I64(o)) => copy_rows(p, o, &idx, n, inner),
        (View::Bool(p), ViewMut::Bool(o)) => copy_rows(p, o, &idx, n, inner),
        _ => return Err("gather output dtype differs from params".into()),
    }
    Ok(())
}

/// The indices as positions in `0..n`, or an error naming the first one outside `-n..n`.
fn resolve(
    indices: View<'_>,
    n: usize,
    axis: usize,
    pdims: &[usize],
) -> Result<Vec<usize>, String> {
    let size = i64::try_from(n).unwrap_or(i64::MAX);
    let one = |pos: usize, i: i64| -> Result<usize, String> {
        let r = if i < 0 { i.checked_add(size) } else { Some(i) };
        match r {
            Some(r) if (0..size).contains(&r) => Ok(r as usize),
            _ => Err(format!(
                "index {i} (at flat position {pos} of the indices) is out of range for axis \
                 {axis} of size {n} of params {} (valid: -{n}..{n})",
                fmt_dims(pdims)
            )),
        }
    };
    match indices {
        View::I32(v) => v
            .iter()
            .enumerate()
            .map(|(p, &i)| one(p, i64::from(i)))
            .collect(),
        View::I64(v) => v.iter().enumerate().map(|(p, &i)| one(p, i)).collect(),
        _ => Err("gather indices must be i32 or i64".into()),
    }
}

/// Output block `(outer, j)` is params block `(outer, idx[j])`, each block `inner` values.
fn copy_rows<T: Copy>(p: &[T], o: &mut [T], idx: &[usize], n: usize, inner: usize) {
    if inner == 0 || idx.is_empty() {
        return;
    }
    for (outer, out_block) in o.chunks_mut(idx.len() * inner).enumerate() {
        let src = &p[outer * n * inner..(outer + 1) * n * inner];
        for (dst, &i) in out_block.chunks_mut(inner).zip(idx) {
            dst.copy_from_slice(&src[i * inner..(i + 1) * inner]);
        }
    }
}
