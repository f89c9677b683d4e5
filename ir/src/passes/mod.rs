//! Graph rewrites, one file per pass, and the manager that runs them.
//!
//! A pass is small and local and never makes the graph worse: it either changes nothing or
//! replaces a subgraph with one that computes the same values (bit-exact on the reference
//! evaluator for pure rewrites, within tolerance for folding and fusion). Every change is
//! logged in the [`PassContext`] so `kiln explain` can show it. Graph outputs keep their names:
//! rewrites go through [`crate::Graph::substitute`].

pub mod compose_movement;
pub mod eliminate_common_subexpressions;
pub mod eliminate_dead_code;
pub mod fold_batch_norm;
pub mod fold_constants;
pub mod fold_scale_shift;
pub mod fuse_elementwise;
pub mod fuse_epilogues;
mod fusion;
pub mod manager;
mod rewrite;
pub mod select_layout;
pub mod simplify_algebra;

pub use compose_movement::ComposeMovement;
pub use eliminate_common_subexpressions::EliminateCommonSubexpressions;
pub use eliminate_dead_code::EliminateDeadCode;
pub use fuse_elementwise::FuseElementwise;
pub use fuse_epilogues::FuseEpilogues;
pub use fusion::MAX_GROUP_NODES;
pub use manager::{PassStats, Pipeline, PipelineOptions, PipelineReport, PrintAfter};
pub use select_layout::SelectLayout;

use crate::Result;
use crate::graph::{Graph, NodeId};
use std::collections::HashSet;

/// One graph rewrite.
pub trait Pass {
    /// The pass's name, as `--disable` and `--print-after` spell it (e.g. `fold-constants`).
    fn name(&self) -> &'static str;

    /// Rewrites `graph`; returns whether anything changed.
    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool>;
}

/// One logged change.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    /// The pass that made it.
    pub pass: &'static str,
    /// What was matched and what replaced it, e.g. `fused %conv1 + %bias1 + %relu1 -> %relu1`.
    pub message: String,
}

/// State shared by the passes of one pipeline run.
#[derive(Clone, Debug)]
pub struct PassContext {
    /// Every change, in order.
    pub log: Vec<Rewrite>,
    /// Nodes a run needs by id (fetches and targets) besides the graph's outputs: never
    /// removed, and replaced only through `substitute`, which keeps their names.
    pub roots: HashSet<NodeId>,
    /// Constant folding never creates a constant larger than this many bytes.
    pub fold_budget_bytes: usize,
    /// Whether variables that no assign touches may be treated as constants.
    pub freeze_variables: bool,
}

impl Default for PassContext {
    fn default() -> PassContext {
        PassContext {
            log: Vec::new(),
            roots: HashSet::new(),
            fold_budget_bytes: 1 << 20,
            freeze_variables: false,
        }
    }
}

impl PassContext {
    /// Records a change made by `pass`.
    pub fn record(&mut self, pass: &'static str, message: impl Into<String>) {
        self.log.push(Rewrite {
            pass,
            message: message.into(),
        });
    }
}

/// Runs only the fusion passes (`fuse-epilogues`, then `fuse-elementwise`) to a fixed point,
/// keeping `roots` as values of their own (and the graph's outputs, as always). For tests and
/// tools that lower a graph without the whole pipeline; fused nodes keep the names of the nodes
/// they replace, so look roots up again by name afterwards.
pub fn fuse(graph: &mut Graph, roots: &[NodeId]) -> Result<()> {
    let mut cx = PassContext {
        roots: roots.iter().copied().collect(),
        ..PassContext::default()
    };
    let pipeline = Pipeline::new(
        "fusion",
        vec![Box::new(FuseEpilogues), Box::new(FuseElementwise)],
    );
    pipeline.run(graph, &mut cx, &PipelineOptions::default())?;
    Ok(())
}
