//! `cast` on the host: every dtype pair, with the reference evaluator's scalar rules (Rust's
//! `as`: float to integer truncates toward zero and saturates, NaN becomes 0; integer
//! narrowing wraps; to bool is `x != 0`; bool is 0 or 1). Bool buffers are bytes.

use super::{View, ViewMut};

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
