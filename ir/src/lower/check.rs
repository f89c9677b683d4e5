//! [`Program::validate`]: checks every invariant of the program contract (see
//! [`crate::program`]) so that a backend, or a test, can trust a program before generating code
//! for it. The checks are independent of how `lower` built the program: buffer kinds against
//! the feed/variable/fetch lists, kernel order, operand counts, epilogue references and load
//! bounds, alignment, aliases, and that no two simultaneously-live temporaries share a byte
//! (an alias's readers keep its temporary live).

use super::{concat_part, normalize_main_op};
use crate::program::{ARENA_ALIGN, BufferId, BufferKind, Operand, Program, Step};
use crate::shape::fmt_dims;
use crate::{DType, Error, Result, Tensor};
use std::borrow::Borrow;
use std::collections::BTreeMap;

impl Program {
    /// Checks the program's invariants; the error says which buffer or kernel breaks which.
    pub fn validate(&self) -> Result<()> {
        self.check_structure()?;
        self.check_overlaps()
    }

    /// Checks a run's feeds and variables against the program's buffers: their counts, and each
    /// tensor's dtype and dims. Every backend calls this before touching a buffer, so a wrong
    /// feed is the same [`Error::Feed`] on each; a wrong variable is [`Error::Invalid`] naming
    /// it (a caller, not a user, hands variables in). Variables may be owned or borrowed.
    pub fn check_inputs<V: Borrow<Tensor>>(
        &self,
        feeds: &[&Tensor],
        variables: &[V],
    ) -> Result<()> {
        if feeds.len() != self.feeds.len() || variables.len() != self.variables.len() {
            return Err(Error::Invalid(format!(
                "the program takes {} feed(s) and {} variable(s), got {} and {}",
                self.feeds.len(),
                self.variables.len(),
                feeds.len(),
                variables.len()
            )));
        }
        let expected = |b: BufferId, t: &Tensor| {
            let buf = self.buffer(b);
            let fits = t.dtype() == buf.dtype && t.dims() == buf.dims.as_slice();
            (!fits).then(|| {
                let message = format!(
                    "expected {}{}, got {}",
                    buf.dtype,
                    fmt_dims(&buf.dims),
                    t.ty()
                );
                (buf.name.clone(), message)
            })
        };
        for (&t, &b) in feeds.iter().zip(&self.feeds) {
            if let Some((name, message)) = expected(b, t) {
                return Err(Error::Feed { name, message });
            }
        }
        for (t, &b) in variables.iter().zip(&self.variables) {
            if let Some((name, message)) = expected(b, t.borrow()) {
                return Err(Error::Invalid(format!("variable %{name}: {message}")));
            }
        }
        Ok(())
    }

    /// Every invariant except that simultaneously-live temporaries do not overlap: after this,
    /// every id, offset and load index of the program is in bounds.
    pub(crate) fn check_structure(&self) -> Result<()> {
        let err = |m: String| Err(Error::Invalid(format!("invalid program: {m}")));
        let n = self.buffers.len();
        let exists = |b: BufferId| b.index() < n;
        for (list, what) in [
            (&self.feeds, "feed"),
            (&self.variables, "variable"),
            (&self.fetches, "fetch"),
        ] {
            if let Some(b) = list.iter().find(|&&b| !exists(b)) {
                return err(format!("{what} buffer {b} does not exist"));
            }
        }
        for (i, buf) in self.buffers.iter().enumerate() {
            let id = BufferId(i as u32);
            let ok = match &buf.kind {
                BufferKind::Feed(j) => self.feeds.get(*j) == Some(&id),
                BufferKind::Variable(j) => self.variables.get(*j) == Some(&id),
                BufferKind::Output(j) => self.fetches.get(*j) == Some(&id),
                BufferKind::Constant(t) => {
                    t.dims() == buf.dims.as_slice() && t.dtype() == buf.dtype
                }
                BufferKind::Temporary { offset } => {
                    offset % ARENA_ALIGN == 0
                        && offset
                            .checked_add(buf.size_bytes())
                            .is_some_and(|e| e <= self.arena_bytes)
                }
                // A view of a read-only buffer's bytes, never fetched nor committed (a
                // temporary is dead after the last kernel).
                BufferKind::Alias { of } => {
                    self.buffers.get(of.index()).is_some_and(|src| {
                        matches!(
                            src.kind,
                            BufferKind::Temporary { .. }
                                | BufferKind::Feed(_)
                                | BufferKind::Variable(_)
                                | BufferKind::Constant(_)
                        ) && src.dtype == buf.dtype
                            && src.numel() == buf.numel()
                    }) && !self.fetches.contains(&id)
                        && !self.updates.iter().any(|u| u.value == id)
                }
                // Rows inside a concat output (its slot is checked with the concat below),
                // never fetched nor committed: only that concat reads it.
                BufferKind::Part {
                    of,
                    offset,
                    row,
                    stride,
                } => {
                    let rows = if *row == 0 { 0 } else { buf.numel() / row };
                    let extent = rows
                        .checked_sub(1)
                        .map_or(Some(0), |r| r.checked_mul(*stride)?.checked_add(*row))
                        .and_then(|e| e.checked_add(*offset));
                    self.buffers.get(of.index()).is_some_and(|dst| {
                        matches!(
                            dst.kind,
                            BufferKind::Temporary { .. } | BufferKind::Output(_)
                        ) && dst.dtype == buf.dtype
                            && extent.is_some_and(|e| e <= dst.numel())
                    }) && (buf.numel() == 0 || (*row > 0 && buf.numel() % row == 0))
                        && row <= stride
                        && !self.fetches.contains(&id)
                        && !self.updates.iter().any(|u| u.value == id)
                }
            };
            if !ok {
                return err(format!(
                    "buffer {id} (%{}) has an inconsistent kind {:?}",
                    buf.name, buf.kind
                ));
            }
        }
        for (list, kind) in [(&self.feeds, 0), (&self.variables, 1)] {
            for (j, &b) in list.iter().enumerate() {
                let ok = match self.buffer(b).kind {
                    BufferKind::Feed(i) => kind == 0 && i == j,
                    BufferKind::Variable(i) => kind == 1 && i == j,
                    _ => false,
                };
                if !ok {
                    return err(format!(
                        "buffer {b} is listed at position {j} but has kind {:?}",
                        self.buffer(b).kind
                    ));
                }
            }
        }

        let mut written = vec![false; n];
        for (k, kernel) in self.kernels.iter().enumerate() {
            let at = format!("kernel k{k} (%{})", kernel.name);
            let reads = kernel.reads();
            if let Some(b) = reads.iter().chain([&kernel.output]).find(|&&b| !exists(b)) {
                return err(format!("{at}: buffer {b} does not exist"));
            }
            for b in &reads {
                let ready = match self.buffer(*b).kind {
                    BufferKind::Feed(_) | BufferKind::Variable(_) | BufferKind::Constant(_) => true,
                    BufferKind::Temporary { .. } | BufferKind::Output(_) => written[b.index()],
                    // The source exists and is not an alias (checked above).
                    BufferKind::Alias { of } => match self.buffer(of).kind {
                        BufferKind::Temporary { .. } => written[of.index()],
                        _ => true,
                    },
                    BufferKind::Part { .. } => written[b.index()],
                };
                if !ready {
                    return err(format!("{at} reads {b} before any kernel writes it"));
                }
            }
            // A part is read only by the concat that writes its output, in its own slot.
            for b in &reads {
                if let BufferKind::Part { of, .. } = self.buffer(*b).kind {
                    let slots = kernel.inputs.iter().enumerate().filter(|&(_, x)| x == b);
                    let in_slot = of == kernel.output
                        && kernel.epilogue.is_identity()
                        && slots
                            .map(|(i, _)| concat_part(self, kernel, i))
                            .all(|slot| slot.as_ref() == Some(&self.buffer(*b).kind))
                        && kernel.inputs.contains(b);
                    if !in_slot {
                        return err(format!(
                            "{at} reads {b}, a part of {of}, outside that concat's slot for it"
                        ));
                    }
                }
            }
            let out = self.buffer(kernel.output);
            if !matches!(
                out.kind,
                BufferKind::Temporary { .. } | BufferKind::Output(_) | BufferKind::Part { .. }
            ) || written[kernel.output.index()]
            {
                return err(format!(
                    "{at} writes {} which is not a fresh temporary or output",
                    kernel.output
                ));
            }
            written[kernel.output.index()] = true;
            if let Some(op) = &kernel.main {
                if !op.is_kernel_main() || !op.arity().accepts(kernel.inputs.len()) {
                    return err(format!(
                        "{at}: {} cannot be a main op with {} operand(s)",
                        op.name(),
                        kernel.inputs.len()
                    ));
                }
                let rank = kernel
                    .inputs
                    .first()
                    .map_or(0, |&b| self.buffer(b).dims.len());
                if normalize_main_op(op, rank, &out.dims).as_ref() != Ok(op) {
                    return err(format!(
                        "{at}: {} is not in normal form (axes in 0..{rank}, sizes equal to \
                         the output's dims): {op:?}",
                        op.name()
                    ));
                }
            } else if !kernel.inputs.is_empty() {
                return err(format!(
                    "{at}: an elementwise kernel has {} main operand(s)",
                    kernel.inputs.len()
                ));
            }
            self.check_epilogue(k, &at)?;
        }
        for (i, buf) in self.buffers.iter().enumerate() {
            if matches!(buf.kind, BufferKind::Temporary { .. }) && !written[i] {
                return err(format!("temporary b{i} (%{}) is never written", buf.name));
            }
            // A part's bytes belong to its concat's output, so the concat must take it as an
            // operand (it then copies nothing for it) or the producer's values would be lost.
            if let BufferKind::Part { of, .. } = buf.kind {
                let id = BufferId(i as u32);
                let taken = self
                    .kernels
                    .iter()
                    .any(|k| k.output == of && k.inputs.contains(&id));
                if !written[i] || !taken {
                    return err(format!(
                        "part b{i} (%{}) of {of} is not written, or not an operand of the \
                         concat writing {of}",
                        buf.name
                    ));
                }
            }
        }
        for u in &self.updates {
            let var = self.variables.get(u.variable).map(|&b| self.buffer(b));
            let value = self.buffers.get(u.value.index());
            // The new value is the `numel` elements from `offset` (all of an assign's value).
            let fits = |v: &super::Buffer, x: &super::Buffer| {
                let whole = u.offset == 0 && v.dims == x.dims;
                let part = u
                    .offset
                    .checked_add(v.numel())
                    .is_some_and(|end| end <= x.numel())
                    && u.offset % v.numel().max(1) == 0;
                v.dtype == x.dtype && (whole || part)
            };
            match (var, value) {
                (Some(v), Some(x)) if fits(v, x) && written[u.value.index()] => {}
                _ => {
                    return err(format!(
                        "update %{} of variable {} from {} does not fit",
                        u.node, u.variable, u.value
                    ));
                }
            }
        }
        Ok(())
    }

    /// Epilogue references, load bounds and dtypes of kernel `k`.
    fn check_epilogue(&self, k: usize, at: &str) -> Result<()> {
        let err = |m: String| Err(Error::Invalid(format!("invalid program: {at}: {m}")));
        let kernel = &self.kernels[k];
        let e = &kernel.epilogue;
        let out = self.buffer(kernel.output);
        let has_main = kernel.main.is_some();
        if e.is_identity() {
            return if has_main {
                Ok(())
            } else {
                err("an elementwise kernel stores nothing".into())
            };
        }
        if !kernel.accepts_epilogue() {
            return err(format!("{} takes no epilogue", kernel.op_name()));
        }
        if out.dtype != DType::F32 {
            return err(format!(
                "the epilogue computes f32 but the output is {}",
                out.dtype
            ));
        }
        for (i, l) in e.loads.iter().enumerate() {
            let Some(src) = self.buffers.get(l.buffer.index()) else {
                return err(format!("load l{i} reads missing buffer {}", l.buffer));
            };
            let last = out
                .dims
                .iter()
                .zip(&l.strides)
                .try_fold(0usize, |acc, (&d, &s)| {
                    acc.checked_add(d.saturating_sub(1).checked_mul(s)?)
                });
            let in_bounds = out.numel() == 0 || last.is_some_and(|last| last < src.numel());
            if l.strides.len() != out.dims.len() || !in_bounds || src.dtype != DType::F32 {
                return err(format!(
                    "load l{i} of {} with strides {:?} does not fit output {:?}",
                    l.buffer, l.strides, out.dims
                ));
            }
        }
        let valid = |o: Operand, steps_before: usize| match o {
            Operand::Main => has_main,
            Operand::Load(i) => i < e.loads.len(),
            Operand::Step(i) => i < steps_before,
        };
        for (i, s) in e.steps.iter().enumerate() {
            let ok = match *s {
                Step::Unary(_, x) => valid(x, i),
                Step::Binary(_, a, b) => valid(a, i) && valid(b, i),
            };
            if !ok {
                return err(format!("step s{i} refers to a value it cannot see"));
            }
        }
        if !valid(e.result, e.steps.len()) {
            return err(format!("the stored value {} does not exist", e.result));
        }
        Ok(())
    }

    /// No two non-empty temporaries whose live ranges intersect share a byte.
    ///
    /// A sweep over kernel indices keeps the live temporaries ordered by offset; while no
    /// overlap has been found they are disjoint, so a new one need only be compared with its
    /// neighbours in that order: O(n log n), which matters for 100k-kernel programs.
    fn check_overlaps(&self) -> Result<()> {
        let ranges = self.live_ranges();
        // (first kernel, last kernel, offset, end, buffer index)
        let mut spans: Vec<(usize, usize, usize, usize, usize)> = self
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match (&b.kind, ranges[i]) {
                (BufferKind::Temporary { offset }, Some((first, last))) if b.size_bytes() > 0 => {
                    Some((first, last, *offset, offset + b.size_bytes(), i))
                }
                _ => None,
            })
            .collect();
        spans.sort_unstable();
        let mut by_last: Vec<usize> = (0..spans.len()).collect();
        by_last.sort_unstable_by_key(|&s| spans[s].1);
        let mut retired = 0;
        // offset -> span index, for the temporaries live at the current kernel.
        let mut live: BTreeMap<usize, usize> = BTreeMap::new();
        for (x, a) in spans.iter().enumerate() {
            while retired < by_last.len() && spans[by_last[retired]].1 < a.0 {
                let old = spans[by_last[retired]];
                if live.get(&old.2) == Some(&by_last[retired]) {
                    live.remove(&old.2);
                }
                retired += 1;
            }
            let before = live.range(..=a.2).next_back().map(|(_, &y)| y);
            let after = live.range(a.2..).next().map(|(_, &y)| y);
            for y in before.into_iter().chain(after) {
                let b = spans[y];
                if a.2 < b.3 && b.2 < a.3 {
                    return Err(Error::Invalid(format!(
                        "invalid program: temporaries b{} (bytes {}..{}, kernels {:?}) and b{} \
                         (bytes {}..{}, kernels {:?}) are live together and overlap",
                        b.4,
                        b.2,
                        b.3,
                        (b.0, b.1),
                        a.4,
                        a.2,
                        a.3,
                        (a.0, a.1)
                    )));
                }
            }
            live.insert(a.2, x);
        }
        Ok(())
    }
}
