//! The contract between the session and the code generators.
//!
//! The session prunes the graph to what a run needs, fixes every placeholder's shape from the
//! feeds, and hands the result to [`Backend::compile`]. The [`Executable`] it returns is run many
//! times with feeds of those shapes; it is `Sync` so one compiled graph serves many threads.
//! A backend that cannot handle a node returns [`crate::Error::Unsupported`] naming it;
//! nothing silently falls back to another backend.

use crate::graph::{Graph, NodeId};
use crate::{Result, Tensor};
use std::time::{Duration, Instant};

/// What to compile: a graph whose placeholders all have concrete shapes, and the roles of its
/// nodes in a run.
#[derive(Debug, Clone)]
pub struct CompileRequest<'a> {
    /// The graph; every placeholder's shape is concrete, every node is needed by the run.
    pub graph: &'a Graph,
    /// Placeholders in the order their tensors are passed to [`Executable::run`].
    pub feeds: Vec<NodeId>,
    /// Variables in the order their tensors are passed to [`Executable::run`].
    pub variables: Vec<NodeId>,
    /// Nodes whose values the run returns, in order (may repeat).
    pub fetches: Vec<NodeId>,
    /// Side-effect nodes (assigns) the run executes without returning their values.
    pub targets: Vec<NodeId>,
}

/// A code generator: turns a [`CompileRequest`] into something that runs.
pub trait Backend: Send + Sync {
    /// The backend's name as the CLI spells it (`reference`, `cpu`, `opencl`).
    fn name(&self) -> &str;

    /// Compiles the request.
    fn compile(&self, request: &CompileRequest<'_>) -> Result<Box<dyn Executable>>;
}

/// A compiled graph.
///
/// Variable semantics within one run: every read of a variable sees its value at the start of
/// the run; assigns compute their new value from that, and are committed to `variables` at the
/// end of the run in topological order (so of two assigns to one variable, the later wins).
pub trait Executable: Send + Sync {
    /// Runs once. `feeds` and `variables` follow the request's orders and have the request's
    /// shapes; returns one tensor per fetch.
    fn run(&self, feeds: &[&Tensor], variables: &mut [Tensor]) -> Result<Vec<Tensor>>;

    /// Like [`Executable::run`], and also how long each kernel took. Backends that cannot time
    /// kernels return an empty profile.
    fn run_profiled(
        &self,
        feeds: &[&Tensor],
        variables: &mut [Tensor],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        Ok((self.run(feeds, variables)?, Vec::new()))
    }

    /// A run of a program that updates no variable, with the variables only borrowed, so
    /// that concurrent runs can share one set of values; `profile` asks for kernel times as
    /// [`Executable::run_profiled`] gives them. The default copies the variables and calls
    /// [`Executable::run`] or [`Executable::run_profiled`]; a backend whose kernels only read
    /// variables overrides it to skip the copy.
    fn run_reading(
        &self,
        feeds: &[&Tensor],
        variables: &[&Tensor],
        profile: bool,
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        let mut copies: Vec<Tensor> = variables.iter().map(|t| (*t).clone()).collect();
        if profile {
            self.run_profiled(feeds, &mut copies)
        } else {
            Ok((self.run(feeds, &mut copies)?, Vec::new()))
        }
    }

    /// Whether a run may split work across threads. A session runs a program that does not
    /// on the calling thread rather than handing it to its thread pool: the hand-over and the
    /// wake-up cost more than a small graph's whole run (one add: under 1 us inline, over 20 us
    /// through the pool).
    fn uses_threads(&self) -> bool {
        true
    }

    /// Facts about the compiled code, for `kiln bench` and profiles.
    fn info(&self) -> ExecutableInfo {
        ExecutableInfo::default()
    }
}

/// How long one kernel of a run took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelTime {
    /// The kernel's name (the last graph node fused into it).
    pub kernel: String,
    /// The graph nodes fused into it.
    pub nodes: Vec<String>,
    /// The ops it runs: its main op, then each epilogue step (`conv2d`, `add`, `relu`).
    pub ops: Vec<String>,
    /// Floating-point operations per run ([`crate::cost::kernel_flops`]); `None` if unknown.
    pub flops: Option<u64>,
    /// Its output type, e.g. `f32[1,56,56,64]`.
    pub output: String,
    /// Wall-clock time in nanoseconds.
    pub nanos: u64,
    /// Each time it ran, in order (a kernel may run in several stages): for timelines.
    pub spans: Vec<KernelSpan>,
}

impl KernelTime {
    /// Its ops joined by `+` (`conv2d+add+relu`), or `elementwise` for a pure elementwise
    /// kernel, for profiles and traces.
    pub fn ops_text(&self) -> String {
        if self.ops.is_empty() {
            "elementwise".to_string()
        } else {
            self.ops.join("+")
        }
    }

    /// Adds `other`'s time and spans to this entry (the same kernel in another run, or a
    /// kernel that ran inside this one's stage).
    pub fn add(&mut self, other: KernelTime) {
        self.nanos += other.nanos;
        self.spans.extend(other.spans);
    }

    /// Adds each entry of one run's profile to `total`'s (the first run's profile becomes
    /// `total`): per-kernel sums over runs.
    pub fn accumulate(total: &mut Vec<KernelTime>, run: Vec<KernelTime>) {
        if total.is_empty() {
            *total = run;
        } else {
            for (t, r) in total.iter_mut().zip(run) {
                t.add(r);
            }
        }
    }

    /// Adds one run of the kernel that began at `start` and ends now, on this thread.
    pub fn record(&mut self, start: Instant) {
        let nanos = start.elapsed().as_nanos() as u64;
        self.nanos += nanos;
        self.spans.push(KernelSpan {
            start,
            nanos,
            thread: thread_index(),
        });
    }
}

/// One run of a kernel: when it began, how long it took, and on which thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelSpan {
    /// When it began.
    pub start: Instant,
    /// Wall-clock time in nanoseconds.
    pub nanos: u64,
    /// The thread it ran on, numbered from 1 in the order threads first recorded a span.
    pub thread: u64,
}

/// A small, stable number for the calling thread (std's `ThreadId` has no stable integer).
pub fn thread_index() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static INDEX: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

/// Facts about a compiled executable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutableInfo {
    /// Number of kernels run per execution.
    pub kernels: usize,
    /// Bytes of the temporary arena each run uses.
    pub arena_bytes: usize,
    /// What the temporaries would take without sharing memory.
    pub sum_temporary_bytes: usize,
    /// Kernels that do fewer multiplications than their ops' FLOP count (a Winograd
    /// convolution): a run's GFLOP/s, counted from the graph, can pass the machine's peak.
    pub fast_algorithm_kernels: usize,
    /// Where the compilation's time went (zero for the phases a backend does not time).
    pub compile_times: CompileTimes,
}

/// Wall time of a compilation's phases, for `kiln bench`. The session times the graph passes;
/// the backend times the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompileTimes {
    /// The optimisation pipeline on the graph.
    pub passes: Duration,
    /// Lowering the graph to a [`crate::program::Program`] and validating it.
    pub lowering: Duration,
    /// Packing constant weights into the layouts the kernels read.
    pub packing: Duration,
    /// Planning the kernels and generating (JIT-compiling) their code, packing excluded.
    pub codegen: Duration,
}
