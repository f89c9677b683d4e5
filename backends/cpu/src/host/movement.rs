//! `gather` and its adjoint `gather_grad` (a scatter-add) on the host, with the reference
//! evaluator's semantics: every index is checked (negative ones count from the end) before
//! anything is copied or added, and the first bad one is reported with its position and the
//! axis size; and `one_hot`, where an index outside `0..depth` gives a row of `off`.

use super::{View, ViewMut};
use kiln_ir::shape::fmt_dims;

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

/// `gather_grad(g, indices)` into `y` of dims `ydims` along `axis`: `y[o, idx[j], i] +=
/// g[o, j, i]`, summed in f64 in index order, as the evaluator does.
pub(super) fn gather_grad(
    g: &[f32],
    indices: View<'_>,
    ydims: &[usize],
    axis: usize,
    y: &mut [f32],
) -> Result<(), String> {
    let n = ydims[axis];
    let idx = resolve(indices, n, axis, ydims)?;
    let inner: usize = ydims[axis + 1..].iter().product();
    let mut acc = vec![0f64; y.len()];
    if inner > 0 && !idx.is_empty() {
        for (outer, g_block) in g.chunks(idx.len() * inner).enumerate() {
            let dst = &mut acc[outer * n * inner..(outer + 1) * n * inner];
            for (src, &k) in g_block.chunks(inner).zip(&idx) {
                for (d, &s) in dst[k * inner..(k + 1) * inner].iter_mut().zip(src) {
                    *d += s as f64;
                }
            }
        }
    }
    for (o, a) in y.iter_mut().zip(acc) {
        *o = a as f32;
    }
    Ok(())
}

/// `one_hot(indices)`: `y[o, d, i]` is `values[0]` (on) where `indices[o, i] == d`, else
/// `values[1]` (off); `idims` are the indices' dims and `axis` the new axis of `y`.
pub(super) fn one_hot(
    indices: View<'_>,
    idims: &[usize],
    depth: usize,
    [on, off]: [f32; 2],
    axis: usize,
    y: &mut [f32],
) -> Result<(), String> {
    let inner: usize = idims[axis..].iter().product();
    let at = |k: usize| -> i64 {
        match indices {
            View::I32(v) => i64::from(v[k]),
            View::I64(v) => v[k],
            _ => -1,
        }
    };
    if !matches!(indices, View::I32(_) | View::I64(_)) {
        return Err("one_hot indices must be i32 or i64".into());
    }
    if inner == 0 || depth == 0 {
        return Ok(());
    }
    for (t, out) in y.iter_mut().enumerate() {
        let i = t % inner;
        let d = (t / inner) % depth;
        let o = t / (inner * depth);
        *out = if usize::try_from(at(o * inner + i)) == Ok(d) {
            on
        } else {
            off
        };
    }
    Ok(())
}
