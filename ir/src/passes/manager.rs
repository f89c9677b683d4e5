//! The pass manager: named pipelines of passes run to a fixed point.
//!
//! A [`Pipeline`] is an ordered list of passes. [`Pipeline::run`] runs the enabled passes in
//! order, round after round, until a whole round changes nothing; a pipeline that is still
//! changing the graph after [`MAX_ROUNDS`] rounds is an error (two rules undoing each other),
//! never an endless loop. After every pass the graph is verified when
//! [`PipelineOptions::verify`] is set (the default in debug and test builds), so a broken rewrite
//! is reported by the pass that made it. Errors from a pass are wrapped as
//! `pass <name>: <error>`. Every pass is timed, and the rewrite log, per-pass statistics and the
//! graph text after chosen passes are returned in a [`PipelineReport`] (what `kiln explain` and
//! `--print-after` show).

use super::compose_movement::ComposeMovement;
use super::eliminate_common_subexpressions::EliminateCommonSubexpressions;
use super::eliminate_dead_code::EliminateDeadCode;
use super::fold_batch_norm::FoldBatchNorm;
use super::fold_constants::FoldConstants;
use super::fold_scale_shift::FoldScaleShift;
use super::fuse_elementwise::FuseElementwise;
use super::fuse_epilogues::FuseEpilogues;
use super::select_layout::SelectLayout;
use super::simplify_algebra::SimplifyAlgebra;
use super::{Pass, PassContext, Rewrite};
use crate::graph::Graph;
use crate::op::DataFormat;
use crate::{Error, Result};
use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

/// The most rounds a pipeline runs before it is declared not to converge.
pub const MAX_ROUNDS: usize = 16;

/// A named, ordered list of passes.
pub struct Pipeline {
    name: &'static str,
    passes: Vec<Box<dyn Pass>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("passes", &self.passes())
            .finish()
    }
}

/// Which passes' results [`Pipeline::run`] prints into the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PrintAfter {
    /// None.
    #[default]
    None,
    /// The pass with this name.
    Pass(String),
    /// Every pass.
    All,
}

/// How [`Pipeline::run`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    /// Names of passes to skip; a name the pipeline does not have is an error.
    pub disabled: HashSet<String>,
    /// After which passes to record the graph text.
    pub print_after: PrintAfter,
    /// Whether to verify the graph after every pass (default: in debug builds).
    pub verify: bool,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            disabled: HashSet::new(),
            print_after: PrintAfter::None,
            verify: cfg!(debug_assertions),
        }
    }
}

/// What one pass did during a pipeline run.
#[derive(Clone, Debug, PartialEq)]
pub struct PassStats {
    /// The pass's name.
    pub name: &'static str,
    /// Whether it was switched off (then `runs` is 0).
    pub disabled: bool,
    /// How many times it ran (once a round).
    pub runs: usize,
    /// How many of those runs changed the graph.
    pub changes: usize,
    /// Total time spent in it (verification excluded).
    pub time: Duration,
}

/// The result of a pipeline run.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineReport {
    /// The pipeline's name.
    pub pipeline: &'static str,
    /// The rewrites made during this run, in order.
    pub log: Vec<Rewrite>,
    /// One entry per pass of the pipeline, in pipeline order.
    pub stats: Vec<PassStats>,
    /// `(pass name, graph text)` after each printed pass run, in order.
    pub printed: Vec<(String, String)>,
    /// Rounds run (the last one changed nothing).
    pub rounds: usize,
    /// Node count before the run.
    pub nodes_before: usize,
    /// Node count after the run.
    pub nodes_after: usize,
}

impl Pipeline {
    /// A pipeline of the given passes, run in this order.
    pub fn new(name: &'static str, passes: Vec<Box<dyn Pass>>) -> Pipeline {
        Pipeline { name, passes }
    }

    /// The passes every backend wants: algebraic clean-up, folding and dead-code removal.
    /// Batch norm folds first so its scale and shift become constants that fold further, then
    /// the constant factors and terms models put after it (`fold-scale-shift`); CSE runs
    /// before DCE so that the copies it makes unused are removed in the same round.
    fn generic(name: &'static str) -> Pipeline {
        Pipeline::new(
            name,
            vec![
                Box::new(FoldBatchNorm),
                Box::new(FoldScaleShift),
                Box::new(FoldConstants),
                Box::new(SimplifyAlgebra),
                Box::new(EliminateCommonSubexpressions),
                Box::new(EliminateDeadCode),
            ],
        )
    }

    /// A code-generating backend's pipeline: the generic passes, then layout selection for
    /// `prefer`, composition of the transpose chains it leaves (channel shuffles) and fusion
    /// (after folding, so they work on what is left to compute).
    pub fn codegen(name: &'static str, prefer: DataFormat) -> Pipeline {
        let mut p = Pipeline::generic(name);
        p.passes.push(Box::new(SelectLayout { prefer }));
        p.passes.push(Box::new(ComposeMovement));
        p.passes.push(Box::new(FuseEpilogues));
        p.passes.push(Box::new(FuseElementwise));
        p
    }

    /// The CPU backend's pipeline.
    pub fn cpu() -> Pipeline {
        // NHWC: channels contiguous for the GEMM micro-kernels and the vectorised window code.
        Pipeline::codegen("cpu", DataFormat::Nhwc)
    }

    /// The reference backend's pipeline (the backend-independent passes only).
    pub fn reference() -> Pipeline {
        Pipeline::generic("reference")
    }

    /// The pipeline's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The passes' names, in order.
    pub fn passes(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Checks that `name` is one of this pipeline's passes.
    fn check_name(&self, name: &str, what: &str) -> Result<()> {
        if self.passes.iter().any(|p| p.name() == name) {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{what}: pipeline {} has no pass {name:?}; its passes are: {}",
            self.name,
            self.passes().join(", ")
        )))
    }

    /// Runs the enabled passes in order until a whole round changes nothing, verifying the
    /// graph after each pass when `options.verify`. Rewrites are appended to `cx.log` and also
    /// returned in the report.
    pub fn run(
        &self,
        graph: &mut Graph,
        cx: &mut PassContext,
        options: &PipelineOptions,
    ) -> Result<PipelineReport> {
        let mut disabled: Vec<&String> = options.disabled.iter().collect();
        disabled.sort();
        for name in disabled {
            self.check_name(name, "--disable")?;
        }
        if let PrintAfter::Pass(name) = &options.print_after {
            self.check_name(name, "--print-after")?;
        }
        let log_start = cx.log.len();
        let nodes_before = graph.len();
        let mut stats: Vec<PassStats> = self
            .passes
            .iter()
            .map(|p| PassStats {
                name: p.name(),
                disabled: options.disabled.contains(p.name()),
                runs: 0,
                changes: 0,
                time: Duration::ZERO,
            })
            .collect();
        let mut printed = Vec::new();
        let mut rounds = 0;
        loop {
            if rounds == MAX_ROUNDS {
                let changing: Vec<&str> = stats
                    .iter()
                    .filter(|s| s.changes > 0)
                    .map(|s| s.name)
                    .collect();
                return Err(Error::Invalid(format!(
                    "pipeline {} did not reach a fixed point after {MAX_ROUNDS} rounds \
                     (passes still changing the graph: {})",
                    self.name,
                    changing.join(", ")
                )));
            }
            rounds += 1;
            let mut changed_this_round = false;
            for (pass, stat) in self.passes.iter().zip(&mut stats) {
                if stat.disabled {
                    continue;
                }
                let start = Instant::now();
                let changed = pass
                    .run(graph, cx)
                    .map_err(|e| Error::Invalid(format!("pass {}: {e}", pass.name())))?;
                stat.time += start.elapsed();
                stat.runs += 1;
                if changed {
                    stat.changes += 1;
                    changed_this_round = true;
                }
                if options.verify {
                    graph.verify().map_err(|e| {
                        Error::Invalid(format!("pass {}: left an invalid graph: {e}", pass.name()))
                    })?;
                }
                let selected = match &options.print_after {
                    PrintAfter::None => false,
                    PrintAfter::Pass(name) => name == pass.name(),
                    PrintAfter::All => true,
                };
                // Print after every change, and after the first run even without one, so a
                // selected pass always shows up; unchanged reruns would only repeat the text.
                if selected && (changed || stat.runs == 1) {
                    printed.push((pass.name().to_string(), crate::text::print(graph)));
                }
            }
            if !changed_this_round {
                break;
            }
        }
        Ok(PipelineReport {
            pipeline: self.name,
            log: cx.log[log_start..].to_vec(),
            stats,
            printed,
            rounds,
            nodes_before,
            nodes_after: graph.len(),
        })
    }
}

impl fmt::Display for PipelineReport {
    /// The rewrite log, then one line per pass: runs, changing runs and time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}: {} rewrite(s)",
            self.pipeline,
            self.log.len()
        )?;
        for r in &self.log {
            writeln!(f, "  [{}] {}", r.pass, r.message)?;
        }
        let width = self
            .stats
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max("pass".len());
        writeln!(
            f,
            "{:<width$}  {:>4}  {:>7}  {:>10}",
            "pass", "runs", "changes", "time"
        )?;
        for s in &self.stats {
            if s.disabled {
                writeln!(f, "{:<width$}  disabled", s.name)?;
            } else {
                let ms = s.time.as_secs_f64() * 1e3;
                writeln!(
                    f,
                    "{:<width$}  {:>4}  {:>7}  {:>7.3} ms",
                    s.name, s.runs, s.changes, ms
                )?;
            }
        }
        write!(
            f,
            "nodes: {} -> {} in {} round(s)",
            self.nodes_before, self.nodes_after, self.rounds
        )
    }
}
