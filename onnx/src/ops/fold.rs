//! Folding of integer shape computations at import.
//!
//! [`fold`] evaluates `Gather`, `Concat`, `Slice`, integer `Add`/`Sub`/`Mul`/`Div` and the
//! rank changes `Squeeze`/`Unsqueeze`/`Reshape`/`Cast`/`Identity` on [`Sym`] values (integer
//! scalars and vectors whose entries may be unknown), so `Shape -> Gather -> Unsqueeze ->
//! Concat -> Reshape` chains become a reshape attribute. Unknown entries propagate through
//! arithmetic; indexing needs known indices.

use super::math::ints_input;
use crate::attrs::Ctx;
use crate::error::Result;
use crate::importer::Importer;
use crate::value::{Sym, Value};

/// Folds integer shape computations; `None` when the node is not one (import it normally).
pub fn fold(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Option<Vec<Value>>> {
    let vals: Vec<Option<Value>> = (0..cx.node.input.len()).map(|i| imp.value(cx, i)).collect();
    let first_sym = match vals.first() {
        Some(Some(Value::Sym(s))) => Some(s.clone()),
        _ => None,
    };
    let all_sym = !vals.is_empty() && vals.iter().flatten().all(|v| v.as_sym().is_some());
    let sym = |i: usize| vals.get(i).cloned().flatten().and_then(|v| v.as_sym());
    let out = match cx.op {
        "Identity" => match first_sym {
            Some(s) => s,
            None => return Ok(None),
        },
        "Cast" | "Squeeze" | "Unsqueeze" | "Reshape" => {
            let Some(s) = first_sym else { return Ok(None) };
            let scalar = match cx.op {
                "Cast" => {
                    let to = cx.int("to", 0)?;
                    if !matches!(to, 6 | 7) {
                        return Err(cx.err(format!(
                            "cannot cast the run-time shape value {:?} to a non-integer type",
                            s.vals
                        )));
                    }
                    s.scalar
                }
                "Squeeze" => true,
                "Unsqueeze" => false,
                _ => {
                    let target = ints_input(imp, cx, 1)?;
                    target.is_empty()
                }
            };
            if cx.op != "Cast"
                && (scalar && s.vals.len() != 1 || !scalar && cx.op == "Unsqueeze" && !s.scalar)
            {
                return Err(cx.err(format!("cannot {} the shape value {:?}", cx.op, s.vals)));
            }
            Sym {
                scalar,
                vals: s.vals,
            }
        }
        "Gather" if all_sym => {
            let (Some(data), Some(idx)) = (sym(0), sym(1)) else {
                return Ok(None);
            };
            if data.scalar || cx.int("axis", 0)? != 0 {
                return Ok(None);
            }
            let n = data.vals.len() as i64;
            let vals = idx
                .vals
                .iter()
                .map(|i| {
                    let i = i.ok_or_else(|| cx.err("gather indices must be known"))?;
                    let j = if i < 0 { i + n } else { i };
                    data.vals
                        .get(usize::try_from(j).unwrap_or(usize::MAX))
                        .copied()
                        .ok_or_else(|| {
                            cx.err(format!(
                                "index {i} is out of range for a shape of {n} entries"
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            Sym {
                scalar: idx.scalar,
                vals,
            }
        }
        "Concat" if all_sym => {
            let vals = vals
                .iter()
                .flatten()
                .filter_map(|v| v.as_sym())
                .flat_map(|s| s.vals)
                .collect();
            Sym::vector(vals)
        }
        "Slice" if all_sym => {
            let Some(data) = sym(0) else { return Ok(None) };
            let (starts, ends, steps) = if cx.opset < 10 {
                let s = cx.ints_opt("starts")?.unwrap_or_default();
                let e = cx.ints_opt("ends")?.unwrap_or_default();
                (s, e, vec![1])
            } else {
                let steps = if imp.value(cx, 4).is_some() {
                    ints_input(imp, cx, 4)?
                } else {
                    vec![1]
                };
                (ints_input(imp, cx, 1)?, ints_input(imp, cx, 2)?, steps)
            };
            let ([start], [end], [step]) = (&starts[..], &ends[..], &steps[..]) else {
                return Err(cx.err("slicing a shape value takes one start, end and step"));
            };
            let n = data.vals.len() as i64;
            if *step == 0 {
                return Err(cx.err("step must not be 0"));
            }
            let clamp = |v: i64, lo: i64, hi: i64| (if v < 0 { v + n } else { v }).clamp(lo, hi);
            let mut out = Vec::new();
            if *step > 0 {
                let (mut i, e) = (clamp(*start, 0, n), clamp(*end, 0, n));
                while i < e {
                    out.push(data.vals[i as usize]);
                    i += step;
                }
            } else {
                let (mut i, e) = (clamp(*start, -1, n - 1), clamp(*end, -1, n - 1));
                while i > e {
                    out.push(data.vals[i as usize]);
                    i += step;
                }
            }
            Sym::vector(out)
        }
        "Add" | "Sub" | "Mul" | "Div" if all_sym => {
            let (Some(a), Some(b)) = (sym(0), sym(1)) else {
                return Ok(None);
            };
            let n = a.vals.len().max(b.vals.len());
            if a.vals.len() != n && a.vals.len() != 1 || b.vals.len() != n && b.vals.len() != 1 {
                return Err(cx.err(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    a.vals, b.vals
                )));
            }
            let get = |s: &Sym, i: usize| {
                if s.vals.len() == 1 {
                    s.vals[0]
                } else {
                    s.vals[i]
                }
            };
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                let v = match (get(&a, i), get(&b, i)) {
                    (Some(x), Some(y)) => Some(
                        match cx.op {
                            "Add" => x.checked_add(y),
                            "Sub" => x.checked_sub(y),
                            "Mul" => x.checked_mul(y),
                            _ => x.checked_div(y),
                        }
                        .ok_or_else(|| {
                            cx.err(format!(
                                "integer {} of {x} and {y} overflows or divides by 0",
                                cx.op
                            ))
                        })?,
                    ),
                    _ => None,
                };
                vals.push(v);
            }
            Sym {
                scalar: a.scalar && b.scalar,
                vals,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(vec![out.into_value()]))
}
