//! The lowered program: the backend-neutral contract between [`crate::lower`] and every backend.
//!
//! A [`Program`] is plain data. It lists [`Buffer`]s (feeds, variables, constants, outputs and
//! temporaries with a byte offset into one arena) and [`Kernel`]s in execution order. A kernel
//! is an optional main op (an [`Op`] of the catalogue: a contraction, window, reduction,
//! movement op, batch_norm, assign, ...; none for a pure elementwise cluster) followed by an
//! elementwise epilogue ([`Expr`]) that reads the main result and extra buffers at each output
//! index through explicit strides, so a backend generates the loops without re-deriving any
//! shape. The main op is the graph's own [`Op`] with its attributes normalised (see
//! [`crate::lower::normalize_main_op`]), so the catalogue has one definition of each op and a
//! backend's exhaustive `match` on [`Op`] is checked by the compiler.
//!
//! Invariants (checked by [`Program::validate`]):
//! - Every dim is concrete; buffer `i` of [`Program::buffers`] has id `BufferId(i)`.
//! - A kernel's main op is a kernel op ([`Op::is_kernel_main`]) in normal form: every axis
//!   attribute is in `0..rank`, a reduction lists its axes sorted and distinct, and reshape's
//!   shape and slice's size are the output buffer's dims; its operand count fits its arity.
//! - Kernels are in a valid execution order: a kernel reads only sources and buffers written by
//!   earlier kernels, and every kernel writes exactly one buffer (a temporary or an output) that
//!   no other kernel writes.
//! - Temporaries start at multiples of [`ARENA_ALIGN`] and end within [`Program::arena_bytes`];
//!   two temporaries that are live at the same kernel never share a byte. A temporary is live
//!   from the kernel that writes it through the last kernel that reads it, and to the end of the
//!   run when it holds a variable's new value.
//! - Aliases: a buffer of kind [`BufferKind::Alias`] is another view (same dtype, same number
//!   of elements, new dims) of the bytes of buffer `of`: a temporary, feed, variable or
//!   constant, never an alias or an output. `lower` makes one for a reshape of such a buffer
//!   instead of a copying kernel. No kernel writes an alias; reading it requires `of` to be
//!   ready, and every read of an alias counts as a read of `of` in `of`'s live range, so the
//!   arena keeps a temporary's bytes until the alias's last reader. An alias is never fetched
//!   nor a variable update's value (those are read after the last kernel).
//! - Parts: a buffer of kind [`BufferKind::Part`] is a concat operand written in place: rows
//!   of its elements inside the concat's output `of` (a temporary or an output), exactly the
//!   slot the concat gives that operand ([`crate::lower::concat_part`]). One kernel writes it
//!   before the concat runs; only that concat reads it (and copies nothing for it, so a
//!   backend may skip a concat whose operands are all parts); it is never fetched nor a
//!   variable update's value. Writing a part counts as writing `of` in `of`'s live range,
//!   which so starts at the first producer. `lower` makes none; a backend that can store
//!   there asks for them with [`crate::lower::write_concat_operands_in_place`].
//! - Outputs: fetch `j` is written straight into output tensor `j` when its buffer has kind
//!   `Output(j)`. Otherwise (a feed, variable or constant is fetched, or a value is fetched twice)
//!   the runtime copies the fetched buffer into result `j` after the last kernel and before
//!   committing variable updates, so a fetched variable shows its start-of-run value.
//! - Variables: kernels only read variables, always seeing start-of-run values. An `assign*`
//!   kernel writes the variable's new value to its own buffer, an optimizer update
//!   (`apply_*`) the new values of its variables one after another ([`VariableUpdate::offset`]);
//!   the runtime commits [`Program::updates`] in order after every kernel has run (a later
//!   update of the same variable wins), which is the semantic of
//!   [`crate::backend::Executable`]. `lower` keeps
//!   only the last update of each variable; the earlier assign kernels still run (their
//!   values may be fetched or used) but commit nothing.

use crate::backend::{ExecutableInfo, KernelTime};
use crate::cost::kernel_flops;
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::shape::{Dims, fmt_dims};
use crate::{DType, Tensor};
use std::fmt;
use std::sync::Arc;

/// Alignment in bytes of every temporary's offset in the arena (one cache line, and enough for
/// any SIMD load a backend emits).
pub const ARENA_ALIGN: usize = 64;

/// A buffer's handle: its index in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

impl BufferId {
    /// The index in [`Program::buffers`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// The run's feed number `i` (position in the request's feeds); read-only.
    Feed(usize),
    /// The run's variable number `i` (position in the request's variables); read-only while
    /// kernels run, updated only by [`Program::updates`] at the end.
    Variable(usize),
    /// A value known at compile time; read-only.
    Constant(Arc<Tensor>),
    /// A kernel result that lives in the arena.
    Temporary {
        /// Bytes from the start of the arena; a multiple of [`ARENA_ALIGN`].
        offset: usize,
    },
    /// A kernel result written straight into the run's result tensor `i` (a fetch position).
    Output(usize),
    /// The bytes of buffer `of` (a temporary, feed, variable or constant) seen with this
    /// buffer's dims: a reshape that copies nothing. Read-only; no kernel writes it.
    Alias {
        /// The buffer whose bytes this is (never an alias or an output).
        of: BufferId,
    },
    /// A concat operand written in place: its elements are rows of `row` elements, row `r`
    /// at element `offset + r * stride` of buffer `of`, the concat's output (a temporary or
    /// an output). One kernel writes it; only the concat that writes `of` reads it, and that
    /// concat copies nothing for it. See [`crate::lower::write_concat_operands_in_place`].
    Part {
        /// The concat's output.
        of: BufferId,
        /// Element offset of the first row in `of`.
        offset: usize,
        /// Contiguous elements per row (the operand's block along the concat axis).
        row: usize,
        /// Elements from one row's start to the next (the output's block along the axis).
        stride: usize,
    },
}

/// One tensor the program reads or writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The graph node whose value this is (without `%`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Concrete dims; elements are row-major and contiguous.
    pub dims: Dims,
    /// Where the memory comes from.
    pub kind: BufferKind,
}

impl Buffer {
    /// Number of elements (saturating, so a hand-built absurd buffer cannot panic here; for a
    /// lowered program inference guarantees it is exact).
    pub fn numel(&self) -> usize {
        self.dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// Size in bytes (saturating like [`Buffer::numel`]).
    pub fn size_bytes(&self) -> usize {
        self.numel().saturating_mul(self.dtype.size_bytes())
    }
}

/// A scalar value inside an epilogue, at the current output index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// The main op's result (invalid in a kernel without a main op).
    Main,
    /// The value read by [`Expr::loads`]`[i]`.
    Load(usize),
    /// The value computed by [`Expr::steps`]`[i]` (always an earlier step).
    Step(usize),
}

/// A read of an f32 buffer at the current output index.
///
/// The element read for output coordinates `(i_0, ..., i_{r-1})` (row-major over the kernel's
/// output dims) is `buffer[sum(i_k * strides[k])]`. Broadcast axes have stride 0, so a bias
/// over channels of an NHWC output reads with strides `[0, 0, 0, 1]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Load {
    /// The buffer read.
    pub buffer: BufferId,
    /// One stride (in elements) per output axis.
    pub strides: Vec<usize>,
}

/// One elementwise operation of an epilogue (f32 in, f32 out, the reference semantics of
/// [`UnaryOp`] and [`BinaryOp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// `op(x)`.
    Unary(UnaryOp, Operand),
    /// `op(a, b)`; broadcasting is already resolved into the loads' strides.
    Binary(BinaryOp, Operand, Operand),
}

/// The elementwise part of a kernel: straight-line scalar code evaluated once per output
/// element, whose `result` is stored at that element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Expr {
    /// Buffer reads (deduplicated by buffer and strides).
    pub loads: Vec<Load>,
    /// Operations in evaluation order; each refers only to loads, `Main` and earlier steps.
    pub steps: Vec<Step>,
    /// The value stored.
    pub result: Operand,
}

impl Expr {
    /// The empty epilogue: store the main result unchanged.
    pub fn identity() -> Expr {
        Expr {
            loads: Vec::new(),
            steps: Vec::new(),
            result: Operand::Main,
        }
    }

    /// Whether this is the empty epilogue.
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty() && self.result == Operand::Main
    }
}

/// One unit of generated code: a main op plus a fused elementwise epilogue.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// A name for profiles and errors: the last fused node's name (the one whose value is
    /// stored).
    pub name: String,
    /// The graph nodes fused in, in topological order (for profiles and `explain`).
    pub nodes: Vec<String>,
    /// The main op, attributes normalised; `None` for a pure elementwise kernel.
    pub main: Option<Op>,
    /// The main op's operands, in the op's order (empty without a main op).
    pub inputs: Vec<BufferId>,
    /// Applied to the main result at every output element ([`Expr::identity`] for none).
    pub epilogue: Expr,
    /// The buffer written; its dims are the kernel's output index space.
    pub output: BufferId,
}

impl Kernel {
    /// The main op's .kiln keyword, or `elementwise` for a pure elementwise kernel.
    pub fn op_name(&self) -> &'static str {
        self.main.as_ref().map_or("elementwise", Op::name)
    }

    /// The ops the kernel runs, for profiles: the main op's keyword (none for a pure
    /// elementwise kernel), then each epilogue step's, e.g. `conv2d`, `add`, `relu`.
    pub fn op_names(&self) -> Vec<String> {
        let steps = self.epilogue.steps.iter().map(|s| match s {
            Step::Unary(op, _) => op.name(),
            Step::Binary(op, _, _) => op.name(),
        });
        self.main
            .as_ref()
            .map(Op::name)
            .into_iter()
            .chain(steps)
            .map(str::to_string)
            .collect()
    }

    /// Whether elementwise consumers may be fused after the main op: f32 results other than
    /// assign's, whose output must stay the variable's new value.
    pub fn accepts_epilogue(&self) -> bool {
        !matches!(
            self.main,
            Some(
                Op::Assign(_)
                    | Op::ArgMax { .. }
                    | Op::Gather { .. }
                    | Op::Cast { .. }
                    | Op::ApplyGradientDescent
                    | Op::ApplyMomentum { .. }
                    | Op::ApplyAdam
            )
        )
    }

    /// Every buffer the kernel reads (main operands, then epilogue loads), without repeats.
    pub fn reads(&self) -> Vec<BufferId> {
        let mut out: Vec<BufferId> = Vec::new();
        for b in self
            .inputs
            .iter()
            .copied()
            .chain(self.epilogue.loads.iter().map(|l| l.buffer))
        {
            if !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }
}

/// A variable update committed at the end of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct VariableUpdate {
    /// The variable's position in the request's variables.
    pub variable: usize,
    /// The buffer holding the new value (written by an assign or optimizer update kernel).
    pub value: BufferId,
    /// The assign node's name.
    pub node: String,
    /// Where the new value starts in `value`, in elements: 0 for an assign; an optimizer
    /// update (`apply_*`) writes the new values of its `k` variables one after another, so
    /// the `i`-th variable's starts at `i * numel`.
    pub offset: usize,
}

/// The lowered form of a compile request. See the module documentation for its invariants.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Every buffer; `BufferId(i)` is `buffers[i]`.
    pub buffers: Vec<Buffer>,
    /// Kernels in execution order.
    pub kernels: Vec<Kernel>,
    /// Buffer of each feed, in the request's feed order (kind `Feed(i)`).
    pub feeds: Vec<BufferId>,
    /// Buffer of each variable, in the request's variable order (kind `Variable(i)`).
    pub variables: Vec<BufferId>,
    /// Buffer holding each fetch's value, in the request's fetch order.
    pub fetches: Vec<BufferId>,
    /// Variable updates to commit after the last kernel, in order (a temporary holding one
    /// stays live until the commit).
    pub updates: Vec<VariableUpdate>,
    /// Bytes of arena the temporaries need (a multiple of [`ARENA_ALIGN`]).
    pub arena_bytes: usize,
    /// What the temporaries would need without sharing: the sum of their sizes, each rounded
    /// up to [`ARENA_ALIGN`]. Always at least `arena_bytes`.
    pub sum_temporary_bytes: usize,
}

impl Program {
    /// The buffer with id `id` (panics if out of range, like slice indexing; ids come from
    /// this program).
    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.index()]
    }

    /// The buffer whose memory `id` uses: the viewed buffer for an [`BufferKind::Alias`],
    /// the concat output for a [`BufferKind::Part`], else `id` itself (also for an id out of
    /// range, which `validate` reports).
    pub fn storage(&self, id: BufferId) -> BufferId {
        match self.buffers.get(id.index()).map(|b| &b.kind) {
            Some(&BufferKind::Alias { of } | &BufferKind::Part { of, .. }) => of,
            _ => id,
        }
    }

    /// The arena offset of a temporary, or of the temporary an alias views; `None` for other
    /// buffers (and for an alias of a non-temporary, which `validate` rejects, and for a part,
    /// whose first element is at its `offset` inside its concat's output).
    pub fn arena_offset(&self, id: BufferId) -> Option<usize> {
        if matches!(self.buffers.get(id.index())?.kind, BufferKind::Part { .. }) {
            return None;
        }
        match self.buffers.get(self.storage(id).index())?.kind {
            BufferKind::Temporary { offset } => Some(offset),
            _ => None,
        }
    }

    /// Live range `(first, last)` of every temporary, in kernel indices, `None` for other
    /// buffers (aliases included: a read of an alias counts as a read of its temporary).
    /// `last` is `kernels.len()` for a temporary holding a variable update (it must survive
    /// until the commit). A temporary no kernel writes gets `None`. A concat output whose
    /// operands are written in place ([`BufferKind::Part`]) is live from the first kernel
    /// that writes one of them.
    pub fn live_ranges(&self) -> Vec<Option<(usize, usize)>> {
        let mut ranges: Vec<Option<(usize, usize)>> = vec![None; self.buffers.len()];
        let is_temp = |b: BufferId| {
            self.buffers
                .get(b.index())
                .is_some_and(|b| matches!(b.kind, BufferKind::Temporary { .. }))
        };
        for (k, kernel) in self.kernels.iter().enumerate() {
            for b in kernel.reads() {
                if let Some(Some((_, last))) = ranges.get_mut(self.storage(b).index()) {
                    *last = (*last).max(k);
                }
            }
            let written = self.storage(kernel.output);
            if is_temp(written) && ranges[written.index()].is_none() {
                ranges[written.index()] = Some((k, k));
            }
        }
        for u in &self.updates {
            if let Some(Some((_, last))) = ranges.get_mut(u.value.index()) {
                *last = self.kernels.len();
            }
        }
        ranges
    }

    /// One zeroed [`KernelTime`] per kernel, in order: what a backend's `run_profiled` fills.
    pub fn zeroed_kernel_times(&self) -> Vec<KernelTime> {
        self.kernels
            .iter()
            .map(|k| {
                let out = self.buffer(k.output);
                KernelTime {
                    kernel: k.name.clone(),
                    nodes: k.nodes.clone(),
                    ops: k.op_names(),
                    flops: kernel_flops(self, k),
                    output: format!("{}{}", out.dtype, fmt_dims(&out.dims)),
                    nanos: 0,
                    spans: Vec::new(),
                }
            })
            .collect()
    }

    /// The facts every backend reports about an executable compiled from this program.
    pub fn executable_info(&self) -> ExecutableInfo {
        ExecutableInfo {
            kernels: self.kernels.len(),
            arena_bytes: self.arena_bytes,
            sum_temporary_bytes: self.sum_temporary_bytes,
            fast_algorithm_kernels: 0,
            compile_times: Default::default(),
        }
    }

    /// A readable listing: buffers with kinds and arena offsets, kernels with the fused node
    /// names, epilogues, and variable updates. Same as the `Display` output.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Main => f.write_str("main"),
            Operand::Load(i) => write!(f, "l{i}"),
            Operand::Step(i) => write!(f, "s{i}"),
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "program: {} kernels, {} buffers, arena {} bytes (temporaries sum to {} bytes)",
            self.kernels.len(),
            self.buffers.len(),
            self.arena_bytes,
            self.sum_temporary_bytes
        )?;
        for (i, b) in self.buffers.iter().enumerate() {
            let kind = match &b.kind {
                BufferKind::Feed(j) => format!("feed {j}"),
                BufferKind::Variable(j) => format!("variable {j}"),
                BufferKind::Constant(_) => "constant".to_string(),
                BufferKind::Temporary { offset } => {
                    format!("temp @{offset}..{}", offset.saturating_add(b.size_bytes()))
                }
                BufferKind::Output(j) => format!("output {j}"),
                BufferKind::Alias { of } => format!("alias of {of}"),
                BufferKind::Part {
                    of,
                    offset,
                    row,
                    stride,
                } => format!("part of {of} @{offset} rows of {row} every {stride}"),
            };
            writeln!(
                f,
                "  b{i} %{} {}{} {kind}",
                b.name,
                b.dtype,
                fmt_dims(&b.dims)
            )?;
        }
        for (k, kernel) in self.kernels.iter().enumerate() {
            let inputs: Vec<String> = kernel.inputs.iter().map(|b| b.to_string()).collect();
            let nodes: Vec<String> = kernel.nodes.iter().map(|n| format!("%{n}")).collect();
            writeln!(
                f,
                "  k{k} {} {}({}) -> {}  [{}]",
                kernel.name,
                kernel.op_name(),
                inputs.join(", "),
                kernel.output,
                nodes.join(" ")
            )?;
            let e = &kernel.epilogue;
            if e.is_identity() {
                continue;
            }
            for (i, l) in e.loads.iter().enumerate() {
                writeln!(
                    f,
                    "      l{i} = load {} strides {}",
                    l.buffer,
                    fmt_dims(&l.strides)
                )?;
            }
            for (i, s) in e.steps.iter().enumerate() {
                match s {
                    Step::Unary(op, x) => writeln!(f, "      s{i} = {}({x})", op.name())?,
                    Step::Binary(op, a, b) => writeln!(f, "      s{i} = {}({a}, {b})", op.name())?,
                }
            }
            writeln!(f, "      store {}", e.result)?;
        }
        for u in &self.updates {
            writeln!(
                f,
                "  update variable {} <- {}{} (%{})",
                u.variable,
                u.value,
                if u.offset == 0 {
                    String::new()
                } else {
                    format!(" at element {}", u.offset)
                },
                u.node
            )?;
        }
        Ok(())
    }
}
