//! [`Program::validate`]: checks every invariant of the program contract (see
//! [`crate::program`]) so that a backend, or a test, can trust a program before generating code
//! for it. The checks are independent of how `lower` built the program: buffer kinds against
//! the feed/variable/fetch lists, kernel order, operand counts, epilogue references and load
//! bounds, alignment, and that no two simultaneously-live temporaries share a byte.

use crate::program::{ARENA_ALIGN, BufferId, BufferKind, KernelOp, Operand, Program, Step};
use crate::{DType, Error, Result};

impl Program {
    /// Checks the program's invariants; the error says which buffer or kernel breaks which.
    pub fn validate(&self) -> Result<()> {
        self.check_structure()?;
        self.check_overlaps()
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
                };
                if !ready {
                    return err(format!("{at} reads {b} before any kernel writes it"));
                }
            }
            let out = self.buffer(kernel.output);
            if !matches!(
                out.kind,
                BufferKind::Temporary { .. } | BufferKind::Output(_)
            ) || written[kernel.output.index()]
            {
                return err(format!(
                    "{at} writes {} which is not a fresh temporary or output",
                    kernel.output
                ));
            }
            written[kernel.output.index()] = true;
            let arity_ok = match &kernel.main {
                KernelOp::Elementwise => kernel.inputs.is_empty(),
                KernelOp::Concat { .. } => !kernel.inputs.is_empty(),
                KernelOp::BatchNorm { .. } => kernel.inputs.len() == 5,
                KernelOp::MatMul { .. }
                | KernelOp::Conv2d(_)
                | KernelOp::DepthwiseConv2d(_)
                | KernelOp::Gather { .. }
                | KernelOp::Assign(_) => kernel.inputs.len() == 2,
                _ => kernel.inputs.len() == 1,
            };
            if !arity_ok {
                return err(format!(
                    "{at}: {} cannot take {} operand(s)",
                    kernel.main.name(),
                    kernel.inputs.len()
                ));
            }
            self.check_epilogue(k, &at)?;
        }
        for (i, buf) in self.buffers.iter().enumerate() {
            if matches!(buf.kind, BufferKind::Temporary { .. }) && !written[i] {
                return err(format!("temporary b{i} (%{}) is never written", buf.name));
            }
        }
        for u in &self.updates {
            let var = self.variables.get(u.variable).map(|&b| self.buffer(b));
            let value = self.buffers.get(u.value.index());
            match (var, value) {
                (Some(v), Some(x))
                    if v.dims == x.dims && v.dtype == x.dtype && written[u.value.index()] => {}
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
        let has_main = kernel.main != KernelOp::Elementwise;
        if e.is_identity() {
            return if has_main {
                Ok(())
            } else {
                err("an elementwise kernel stores nothing".into())
            };
        }
        if !kernel.main.accepts_epilogue() {
            return err(format!("{} takes no epilogue", kernel.main.name()));
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
    fn check_overlaps(&self) -> Result<()> {
        let ranges = self.live_ranges();
        let spans: Vec<(usize, usize, usize, (usize, usize))> = self
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match (&b.kind, ranges[i]) {
                (BufferKind::Temporary { offset }, Some(r)) if b.size_bytes() > 0 => {
                    Some((i, *offset, offset + b.size_bytes(), r))
                }
                _ => None,
            })
            .collect();
        for (x, a) in spans.iter().enumerate() {
            for b in &spans[x + 1..] {
                let live_together = a.3.0 <= b.3.1 && b.3.0 <= a.3.1;
                let share_bytes = a.1 < b.2 && b.1 < a.2;
                if live_together && share_bytes {
                    return Err(Error::Invalid(format!(
                        "invalid program: temporaries b{} (bytes {}..{}, kernels {:?}) and b{} \
                         (bytes {}..{}, kernels {:?}) are live together and overlap",
                        a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3
                    )));
                }
            }
        }
        Ok(())
    }
}
