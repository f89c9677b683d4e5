//! Elementwise ops on the host: `cast`, every dtype pair, with the reference evaluator's
//! scalar rules (Rust's `as`: float to integer truncates toward zero and saturates, NaN becomes
//! 0; integer narrowing wraps; to bool is `x != 0`; bool is 0 or 1), and the ops with bool or
//! integer operands or results, numpy broadcasting included: the comparisons, the logical ops
//! and `select`. Bool buffers are bytes.

use super::{View, ViewMut};
use kiln_ir::op::{CompareOp, LogicalOp};

/// Converts `x` into `out` (same element count, checked by the planner).
pub(super) fn cast(x: View<'_>, out: ViewMut<'_>) -> Result<(), String> {
    fn each<A: Copy, B>(src: &[A], dst: &mut [B], f: impl Fn(A) -> B) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f(s);
        }
    }
    if x.len() != out.len() {
        return Err(format!("cast of {} elements into {}", x.len(), out.len()));
    }
    match (x, out) {
        (View::F32(s), ViewMut::F32(d)) => d.copy_from_slice(s),
        (View::F32(s), ViewMut::I32(d)) => each(s, d, |a| a as i32),
        (View::F32(s), ViewMut::I64(d)) => each(s, d, |a| a as i64),
        (View::F32(s), ViewMut::Bool(d)) => each(s, d, |a| u8::from(a != 0.0)),
        (View::I32(s), ViewMut::F32(d)) => each(s, d, |a| a as f32),
        (View::I32(s), ViewMut::I32(d)) => d.copy_from_slice(s),
        (View::I32(s), ViewMut::I64(d)) => each(s, d, i64::from),
        (View::I32(s), ViewMut::Bool(d)) => each(s, d, |a| u8::from(a != 0)),
        (View::I64(s), ViewMut::F32(d)) => each(s, d, |a| a as f32),
        (View::I64(s), ViewMut::I32(d)) => each(s, d, |a| a as i32),
        (View::I64(s), ViewMut::I64(d)) => d.copy_from_slice(s),
        (View::I64(s), ViewMut::Bool(d)) => each(s, d, |a| u8::from(a != 0)),
        // Any nonzero byte reads as true (see the module docs of `host`).
        (View::Bool(s), ViewMut::F32(d)) => each(s, d, |a| f32::from(u8::from(a != 0))),
        (View::Bool(s), ViewMut::I32(d)) => each(s, d, |a| i32::from(a != 0)),
        (View::Bool(s), ViewMut::I64(d)) => each(s, d, |a| i64::from(a != 0)),
        (View::Bool(s), ViewMut::Bool(d)) => each(s, d, |a| u8::from(a != 0)),
    }
    Ok(())
}

/// Row-major strides of an operand of `dims` read broadcast to `out` (numpy rules, checked by
/// the planner): 0 along the axes it is broadcast on.
fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - dims.len();
    let mut strides = vec![0; out.len()];
    let mut step = 1;
    for (j, &d) in dims.iter().enumerate().rev() {
        if d != 1 {
            strides[j + offset] = step;
        }
        step *= d;
    }
    strides
}

/// Calls `f` with the flat index of each operand's element for every output element, in
/// row-major order (an odometer over the output's coordinates).
fn each_broadcast<const N: usize>(
    dims: [&[usize]; N],
    out: &[usize],
    mut f: impl FnMut(usize, [usize; N]),
) {
    let strides = dims.map(|d| broadcast_strides(d, out));
    let numel: usize = out.iter().product();
    let mut coords = vec![0usize; out.len()];
    let mut at = [0usize; N];
    for flat in 0..numel {
        f(flat, at);
        for axis in (0..out.len()).rev() {
            coords[axis] += 1;
            for (i, s) in strides.iter().enumerate() {
                at[i] += s[axis];
            }
            if coords[axis] < out[axis] {
                break;
            }
            for (i, s) in strides.iter().enumerate() {
                at[i] -= s[axis] * out[axis];
            }
            coords[axis] = 0;
        }
    }
}

/// `f` on each pair of broadcast elements of `x` and `y`, stored as bool bytes.
fn zip_to_bool<A: Copy, B: Copy>(
    (x, xd): (&[A], &[usize]),
    (y, yd): (&[B], &[usize]),
    (out, od): (&mut [u8], &[usize]),
    f: impl Fn(A, B) -> bool,
) {
    each_broadcast([xd, yd], od, |k, [i, j]| out[k] = u8::from(f(x[i], y[j])));
}

/// `equal(a, b)`, `less(a, b)`, ... into a bool output (dtypes and dims checked by the planner).
pub(super) fn compare(
    op: CompareOp,
    (a, ad): (View<'_>, &[usize]),
    (b, bd): (View<'_>, &[usize]),
    (out, od): (ViewMut<'_>, &[usize]),
) -> Result<(), String> {
    let ViewMut::Bool(o) = out else {
        return Err("comparison into a non-bool output".into());
    };
    let f = |p, q| op.holds(p, q);
    match (a, b) {
        (View::F32(x), View::F32(y)) => zip_to_bool((x, ad), (y, bd), (o, od), f),
        (View::I32(x), View::I32(y)) => {
            zip_to_bool((x, ad), (y, bd), (o, od), |p, q| op.holds(p, q))
        }
        (View::I64(x), View::I64(y)) => {
            zip_to_bool((x, ad), (y, bd), (o, od), |p, q| op.holds(p, q))
        }
        // Any nonzero byte reads as true (see the module docs of `host`).
        (View::Bool(x), View::Bool(y)) => {
            zip_to_bool((x, ad), (y, bd), (o, od), |p, q| op.holds(p != 0, q != 0))
        }
        _ => return Err("comparison of operands of different dtypes".into()),
    }
    Ok(())
}

/// `logical_and(a, b)` / `logical_or(a, b)` on bool bytes.
pub(super) fn logical(
    op: LogicalOp,
    (a, ad): (View<'_>, &[usize]),
    (b, bd): (View<'_>, &[usize]),
    (out, od): (ViewMut<'_>, &[usize]),
) -> Result<(), String> {
    let (View::Bool(x), View::Bool(y), ViewMut::Bool(o)) = (a, b, out) else {
        return Err("logical op on non-bool buffers".into());
    };
    zip_to_bool((x, ad), (y, bd), (o, od), |p, q| op.apply(p != 0, q != 0));
    Ok(())
}

/// `logical_not(x)` on bool bytes.
pub(super) fn logical_not(x: View<'_>, out: ViewMut<'_>) -> Result<(), String> {
    let (View::Bool(x), ViewMut::Bool(o)) = (x, out) else {
        return Err("logical_not on non-bool buffers".into());
    };
    for (d, &s) in o.iter_mut().zip(x) {
        *d = u8::from(s == 0);
    }
    Ok(())
}

/// `select(cond, a, b)`: `a` where `cond`, else `b`, the three broadcast to the output.
pub(super) fn select(
    (cond, cd): (View<'_>, &[usize]),
    (a, ad): (View<'_>, &[usize]),
    (b, bd): (View<'_>, &[usize]),
    (out, od): (ViewMut<'_>, &[usize]),
) -> Result<(), String> {
    fn pick<T: Copy>(c: &[u8], x: &[T], y: &[T], o: &mut [T], dims: [&[usize]; 4]) {
        let [cd, ad, bd, od] = dims;
        each_broadcast([cd, ad, bd], od, |k, [h, i, j]| {
            o[k] = if c[h] != 0 { x[i] } else { y[j] }
        });
    }
    let View::Bool(c) = cond else {
        return Err("select with a non-bool cond".into());
    };
    let dims = [cd, ad, bd, od];
    match (a, b, out) {
        (View::F32(x), View::F32(y), ViewMut::F32(o)) => pick(c, x, y, o, dims),
        (View::I32(x), View::I32(y), ViewMut::I32(o)) => pick(c, x, y, o, dims),
        (View::I64(x), View::I64(y), ViewMut::I64(o)) => pick(c, x, y, o, dims),
        // Bytes are copied as they are: the operands hold only 0 and 1 (kernels store no other).
        (View::Bool(x), View::Bool(y), ViewMut::Bool(o)) => pick(c, x, y, o, dims),
        _ => return Err("select of operands of different dtypes".into()),
    }
    Ok(())
}
