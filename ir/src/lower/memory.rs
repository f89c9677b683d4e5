//! Arena planning: every temporary gets a byte offset in one arena by liveness.
//!
//! The live range of a temporary runs from the kernel that writes it through the last kernel
//! that reads it (to the end of the run when it holds a variable's new value), see
//! [`Program::live_ranges`]; a read of an alias (a reshape viewing a temporary's bytes) counts
//! as a read of its temporary, so those bytes stay put until the alias's last reader. Aliases
//! take no arena bytes of their own. A kernel's inputs and its output are live at the same kernel, so a
//! kernel never writes over what it reads. Placement is greedy by size, the scheme of TFLite's
//! greedy memory planner and XLA's heap simulator: temporaries are taken largest first, and
//! each goes to the lowest offset (a multiple of [`ARENA_ALIGN`]) where it overlaps no
//! already-placed temporary whose live range intersects its own. Large buffers placed first
//! pack the bottom of the arena; small ones fill the gaps their lifetimes leave.
//!
//! Invariants of the result: offsets are aligned; two temporaries with intersecting live
//! ranges occupy disjoint byte ranges; `arena_bytes` (aligned) covers every temporary and is at
//! most `sum_temporary_bytes`, the sum of the temporaries' aligned sizes.

use crate::program::{ARENA_ALIGN, BufferId, BufferKind, Program};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Live ranges longer than this many kernels are kept in a list scanned on every query;
/// shorter ones are found through their first kernel, so a long chain of short-lived
/// temporaries is planned in near-linear time.
const SHORT_RANGE: usize = 64;

/// A live range: first and last kernel (inclusive).
type Kernels = (usize, usize);
/// A placed temporary's bytes in the arena: offset and end.
type Bytes = (usize, usize);

/// Placed temporaries by live range: their byte ranges, found by the live ranges they
/// intersect.
#[derive(Default)]
struct PlacedIndex {
    /// Ranges of at most [`SHORT_RANGE`] kernels, by first kernel: (last kernel, bytes).
    short: BTreeMap<usize, Vec<(usize, Bytes)>>,
    /// Longer ranges.
    long: Vec<(Kernels, Bytes)>,
}

impl PlacedIndex {
    fn insert(&mut self, range: Kernels, bytes: Bytes) {
        if range.1 - range.0 <= SHORT_RANGE {
            self.short
                .entry(range.0)
                .or_default()
                .push((range.1, bytes));
        } else {
            self.long.push((range, bytes));
        }
    }

    /// The byte ranges of every placed temporary whose live range intersects `range`.
    fn overlapping(&self, range: Kernels) -> Vec<Bytes> {
        let intersects = |r: Kernels| r.0 <= range.1 && range.0 <= r.1;
        // A short range intersecting `range` starts at most SHORT_RANGE before it.
        let from = range.0.saturating_sub(SHORT_RANGE);
        let short = self.short.range(from..=range.1).flat_map(|(&first, v)| {
            v.iter()
                .filter(move |&&(last, _)| intersects((first, last)))
                .map(|&(_, bytes)| bytes)
        });
        let long = self
            .long
            .iter()
            .filter(|&&(r, _)| intersects(r))
            .map(|&(_, bytes)| bytes);
        short.chain(long).collect()
    }
}

/// `n` rounded up to a multiple of [`ARENA_ALIGN`], or `None` on overflow.
pub(super) fn align_up(n: usize) -> Option<usize> {
    n.checked_next_multiple_of(ARENA_ALIGN)
}

/// Assigns every temporary of `program` its offset and sets `arena_bytes` and
/// `sum_temporary_bytes`.
pub(super) fn plan(program: &mut Program) -> Result<()> {
    plan_keeping(program, &[])
}

/// Plans the arena again, keeping each `(buffer, kernel)`'s bytes (its storage's, for a view)
/// live through kernel `kernel` at least.
///
/// A backend that runs two kernels as one stage, reading the first's input while it writes
/// the second's output, asks for this: planned by the kernels alone, the second's output may
/// take the bytes of the first's input (dead once the first kernel is done), and the merged
/// stage would overwrite input rows it has still to read. Keeping the input live costs arena
/// bytes, never correctness; a kernel index past the last keeps it to the end of the run (as
/// a variable's new value is kept).
pub fn plan_keeping(program: &mut Program, keep: &[(BufferId, usize)]) -> Result<()> {
    let overflow = || Error::Invalid("lowering: the arena size overflows usize".into());
    let mut ranges = program.live_ranges();
    for &(buffer, kernel) in keep {
        if let Some(Some((_, last))) = ranges.get_mut(program.storage(buffer).index()) {
            *last = (*last).max(kernel);
        }
    }
    // (buffer index, size in bytes, live range) of every temporary some kernel writes.
    let mut temps: Vec<(usize, usize, (usize, usize))> = Vec::new();
    let mut sum = 0usize;
    for (i, b) in program.buffers.iter().enumerate() {
        if !matches!(b.kind, BufferKind::Temporary { .. }) {
            continue;
        }
        let size = b
            .numel()
            .checked_mul(b.dtype.size_bytes())
            .ok_or_else(overflow)?;
        sum = sum
            .checked_add(align_up(size).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        // A temporary that no kernel writes (impossible from `lower`) keeps offset 0 and is
        // reported by `validate`.
        if let Some(range) = ranges[i] {
            temps.push((i, size, range));
        }
    }
    // Largest first; ties by first use, then by id, so the plan is deterministic.
    temps.sort_by_key(|&(i, size, (first, _))| (std::cmp::Reverse(size), first, i));

    let mut placed = PlacedIndex::default();
    let mut arena = 0usize;
    for (i, size, range) in temps {
        let mut conflicts = placed.overlapping(range);
        conflicts.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in conflicts {
            if start == end {
                continue; // empty buffers occupy no bytes
            }
            if offset.checked_add(size).ok_or_else(overflow)? <= start {
                break; // fits in the gap below `start`; later conflicts start higher still
            }
            offset = offset.max(align_up(end).ok_or_else(overflow)?);
        }
        let end = offset.checked_add(size).ok_or_else(overflow)?;
        arena = arena.max(end);
        placed.insert(range, (offset, end));
        program.buffers[i].kind = BufferKind::Temporary { offset };
    }
    program.arena_bytes = align_up(arena).ok_or_else(overflow)?;
    program.sum_temporary_bytes = sum;
    Ok(())
}
