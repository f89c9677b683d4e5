//! The loop plan of an epilogue kernel: the checked, collapsed iteration space.
//!
//! The output is walked row-major. Size-1 axes are dropped (their index is always 0, so their
//! strides never matter) and adjacent axes `k, k+1` are merged whenever every load satisfies
//! `stride[k] == stride[k+1] * dims[k+1]` (the output, being row-major, always does), so a
//! contiguous tensor plus a per-channel bias becomes `[rows, channels]` with bias strides `[0, 1]`
//! and a plain elementwise cluster becomes a single axis. Invariants of a [`Plan`]:
//! - `dims` has at least one axis; an empty output is `dims == [0]`, a scalar one `[1]`.
//! - every load's element range was checked against its buffer, so the generated code never
//!   reads outside a buffer when driven over `0..dims[0]` (or any sub-range of it).
//! - every operand refers to an existing load or an earlier step, and `Main` is not used by an
//!   `Elementwise` kernel.

use kiln_ir::DType;
use kiln_ir::program::{BufferKind, Kernel, Operand, Program, Step};
use kiln_ir::shape::fmt_dims;

/// A checked and collapsed epilogue iteration space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// Collapsed output dims (row-major; at least one axis).
    pub dims: Vec<usize>,
    /// Per load, one stride (in elements) per collapsed axis.
    pub strides: Vec<Vec<usize>>,
    /// The output's stride (in elements) per collapsed axis: row-major, except for a concat
    /// slot written in place ([`BufferKind::Part`]), whose rows lie further apart.
    pub out_strides: Vec<usize>,
    /// Whether every load's innermost stride is 0 or 1, so the inner loop can use `f32x4`.
    pub vector: bool,
    /// Per load: constant along the innermost axis (stride 0), so it is read once per row.
    pub load_invariant: Vec<bool>,
    /// Per step: all of its operands are row-invariant, so it is computed once per row.
    pub step_invariant: Vec<bool>,
    /// Whether any operand reads the main result.
    pub uses_main: bool,
}

impl Plan {
    /// Checks `kernel.epilogue` against the program's buffers and builds its loop plan.
    pub fn new(program: &Program, kernel: &Kernel) -> Result<Plan, String> {
        let e = &kernel.epilogue;
        let what = || format!("kernel '{}' ({} epilogue)", kernel.name, kernel.op_name());
        let out = buffer(program, kernel.output.index())
            .ok_or_else(|| format!("{}: output {} does not exist", what(), kernel.output))?;
        if out.dtype != DType::F32 {
            return Err(format!(
                "{}: output %{} is {}, only f32 epilogues are generated",
                what(),
                out.name,
                out.dtype
            ));
        }
        let dims: Vec<usize> = out.dims.to_vec();
        let numel = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let numel =
            numel.ok_or_else(|| format!("{}: output dims {} overflow", what(), fmt_dims(&dims)))?;
        for (j, load) in e.loads.iter().enumerate() {
            let buf = buffer(program, load.buffer.index()).ok_or_else(|| {
                format!(
                    "{}: load {j} reads {}, which does not exist",
                    what(),
                    load.buffer
                )
            })?;
            if buf.dtype != DType::F32 {
                return Err(format!(
                    "{}: load {j} reads %{} of type {}, expected f32",
                    what(),
                    buf.name,
                    buf.dtype
                ));
            }
            if load.strides.len() != dims.len() {
                return Err(format!(
                    "{}: load {j} of %{} has strides {} for output dims {} (expected one stride \
                     per output axis)",
                    what(),
                    buf.name,
                    fmt_dims(&load.strides),
                    fmt_dims(&dims)
                ));
            }
            // The largest element index read, checked so the code can never leave the buffer.
            let reach = dims
                .iter()
                .zip(&load.strides)
                .try_fold(0usize, |acc, (&d, &s)| {
                    acc.checked_add(d.saturating_sub(1).checked_mul(s)?)
                });
            let in_bounds = reach
                .and_then(|r| i64::try_from(r).ok())
                .is_some_and(|r| (r as usize) < buf.numel());
            if numel > 0 && !in_bounds {
                return Err(format!(
                    "{}: load {j} reads %{} {} with strides {} over output dims {}, past its end",
                    what(),
                    buf.name,
                    fmt_dims(&buf.dims),
                    fmt_dims(&load.strides),
                    fmt_dims(&dims)
                ));
            }
        }
        let uses_main = check_operands(kernel, &what())?;
        if uses_main && kernel.main.is_none() {
            return Err(format!(
                "{}: the epilogue reads the main result, but an elementwise kernel has none",
                what()
            ));
        }
        if i64::try_from(numel).is_err() {
            return Err(format!("{}: {numel} elements is too many", what()));
        }
        let mut strides: Vec<Vec<usize>> = e.loads.iter().map(|l| l.strides.clone()).collect();
        // The output walks the same collapsed axes as the loads, so it is collapsed with them.
        strides
            .push(output_strides(program, kernel, &dims).map_err(|m| format!("{}: {m}", what()))?);
        let (dims, mut strides) = collapse(&dims, &strides);
        let out_strides = strides.pop().unwrap_or_default();
        let inner = |s: &Vec<usize>| s.last().copied().unwrap_or(0);
        let vector = strides.iter().all(|s| inner(s) <= 1) && inner(&out_strides) <= 1;
        let load_invariant: Vec<bool> = strides.iter().map(|s| inner(s) == 0).collect();
        let mut step_invariant: Vec<bool> = Vec::with_capacity(e.steps.len());
        for step in &e.steps {
            let inv = |o: &Operand| match *o {
                Operand::Main => false,
                Operand::Load(j) => load_invariant[j],
                Operand::Step(i) => step_invariant[i],
            };
            let v = match step {
                Step::Unary(_, x) => inv(x),
                Step::Binary(_, x, y) => inv(x) && inv(y),
            };
            step_invariant.push(v);
        }
        Ok(Plan {
            dims,
            strides,
            out_strides,
            vector,
            load_invariant,
            step_invariant,
            uses_main,
        })
    }

    /// Extent of the outermost collapsed axis (the axis split between threads).
    pub fn outer(&self) -> usize {
        self.dims[0]
    }
}

/// The element stride of each output axis: row-major, or for a part (rows of `row` elements
/// `stride` apart) row-major inside a row and `stride` per row, which needs `row` to be the
/// product of some trailing dims (a concat slot always is).
fn output_strides(
    program: &Program,
    kernel: &Kernel,
    dims: &[usize],
) -> Result<Vec<usize>, String> {
    let mut strides = vec![1usize; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1].saturating_mul(dims[k + 1]);
    }
    let Some(BufferKind::Part { row, stride, .. }) =
        buffer(program, kernel.output.index()).map(|b| &b.kind)
    else {
        return Ok(strides);
    };
    let numel = dims.iter().product::<usize>();
    if kiln_ir::lower::part_is_contiguous(numel, *row, *stride) {
        return Ok(strides);
    }
    // Axis `j` starts a row: dims[j..] hold exactly `row` elements.
    let j = (0..=dims.len())
        .find(|&j| dims[j..].iter().product::<usize>() == *row)
        .ok_or_else(|| {
            format!(
                "output rows of {row} elements do not end at an axis of {}",
                fmt_dims(dims)
            )
        })?;
    for k in (0..j).rev() {
        strides[k] = if k + 1 == j {
            *stride
        } else {
            strides[k + 1].saturating_mul(dims[k + 1])
        };
    }
    Ok(strides)
}

fn buffer(program: &Program, index: usize) -> Option<&kiln_ir::program::Buffer> {
    program.buffers.get(index)
}

/// Checks that every operand names an existing load or an earlier step; returns whether `Main`
/// is used.
fn check_operands(kernel: &Kernel, what: &str) -> Result<bool, String> {
    let e = &kernel.epilogue;
    let mut uses_main = false;
    let mut check = |o: Operand, defined_steps: usize, at: &str| -> Result<(), String> {
        match o {
            Operand::Main => uses_main = true,
            Operand::Load(j) if j >= e.loads.len() => {
                return Err(format!(
                    "{what}: {at} reads load {j} but there are {} loads",
                    e.loads.len()
                ));
            }
            Operand::Step(i) if i >= defined_steps => {
                return Err(format!(
                    "{what}: {at} reads step {i}, which is not computed before it"
                ));
            }
            _ => {}
        }
        Ok(())
    };
    for (i, step) in e.steps.iter().enumerate() {
        let at = format!("step {i}");
        match *step {
            Step::Unary(_, x) => check(x, i, &at)?,
            Step::Binary(_, x, y) => {
                check(x, i, &at)?;
                check(y, i, &at)?;
            }
        }
    }
    check(e.result, e.steps.len(), "the result")?;
    Ok(uses_main)
}

/// Drops size-1 axes and merges adjacent axes that every load walks contiguously.
///
/// Returns at least one axis: `[0]` (strides 0) for an empty output, `[1]` for a scalar one.
pub(super) fn collapse(dims: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    if dims.contains(&0) {
        return (vec![0], vec![vec![0]; strides.len()]);
    }
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (k, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        // Merge axis k into the previous kept axis p when, for every load, stepping p once
        // equals stepping k through its whole extent (stride[p] == stride[k] * d).
        let mergeable = !out_dims.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| o.last().copied() == s[k].checked_mul(d));
        if mergeable {
            if let Some(last) = out_dims.last_mut() {
                *last *= d;
            }
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                if let Some(last) = o.last_mut() {
                    *last = s[k];
                }
            }
        } else {
            out_dims.push(d);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[k]);
            }
        }
    }
    if out_dims.is_empty() {
        return (vec![1], vec![vec![0]; strides.len()]);
    }
    (out_dims, out_strides)
}

#[cfg(test)]
mod tests {
    use super::collapse;

    #[test]
    fn collapse_merges_contiguous_runs_and_keeps_broadcasts() {
        // x + bias over NHWC: [2,3,5,7] with x contiguous and bias [0,0,0,1].
        let (d, s) = collapse(&[2, 3, 5, 7], &[vec![105, 35, 7, 1], vec![0, 0, 0, 1]]);
        assert_eq!(d, vec![30, 7]);
        assert_eq!(s, vec![vec![7, 1], vec![0, 1]]);
        // Plain elementwise: one axis.
        let (d, s) = collapse(&[2, 3, 5], &[vec![15, 5, 1]]);
        assert_eq!((d, s), (vec![30], vec![vec![1]]));
        // Size-1 axes vanish even with odd strides; a column broadcast stays 2-D.
        let (d, s) = collapse(&[4, 1, 6], &[vec![1, 99, 0]]);
        assert_eq!((d, s), (vec![4, 6], vec![vec![1, 0]]));
        // Scalars and empty outputs.
        assert_eq!(collapse(&[], &[vec![]]), (vec![1], vec![vec![0]]));
        assert_eq!(collapse(&[1, 1], &[vec![3, 4]]), (vec![1], vec![vec![0]]));
        assert_eq!(collapse(&[3, 0], &[vec![1, 1]]), (vec![0], vec![vec![0]]));
        // Fully broadcast loads merge too (0 == 0 * d).
        let (d, s) = collapse(&[3, 4], &[vec![0, 0], vec![4, 1]]);
        assert_eq!((d, s), (vec![12], vec![vec![0], vec![1]]));
    }
}
