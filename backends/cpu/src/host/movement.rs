//! `gather` on the host, with the reference evaluator's semantics: every index is checked
//! (negative ones count from the end) before anything is copied, and the first bad one is
//! reported with its position and the axis size.

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
