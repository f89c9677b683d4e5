//! The CLI side of the pass pipeline: `dump --optimize`, `dot --optimize` and `explain`.

use clap::Args;
use kiln::ir::passes::manager::{PipelineReport, PrintAfter};
use kiln::{BackendKind, Graph, OptimizeOptions, optimize_graph};
use std::path::Path;

/// Options shared by the commands that optimise a graph.
#[derive(Args, Clone, Debug, Default)]
pub struct PassArgs {
    /// Run the backend's optimisation pipeline first.
    #[arg(long)]
    pub optimize: bool,
    /// Whose pipeline: reference, cpu or opencl (default: the default backend's).
    #[arg(long = "backend")]
    pub backend: Option<String>,
    /// Treat variables that no assign writes as constants.
    #[arg(long)]
    pub freeze: bool,
    /// Passes to skip, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub disable: Vec<String>,
    /// Print the graph after this pass.
    #[arg(long)]
    pub print_after: Option<String>,
    /// Print the graph after every pass.
    #[arg(long)]
    pub print_after_all: bool,
}

/// Loads `path` and, when asked, optimises it; returns the graph and the pipeline's report.
pub fn load_optimized(
    path: &Path,
    args: &PassArgs,
    force: bool,
) -> Result<(Graph, Option<PipelineReport>), String> {
    let graph = crate::load(path)?;
    if !(args.optimize || force) {
        return Ok((graph, None));
    }
    let backend = match &args.backend {
        Some(name) => BackendKind::from_name(name).map_err(|e| e.to_string())?,
        None => BackendKind::default_kind(),
    };
    let print_after = match (&args.print_after, args.print_after_all) {
        (_, true) => PrintAfter::All,
        (Some(p), false) => PrintAfter::Pass(p.clone()),
        (None, false) => PrintAfter::None,
    };
    let options = OptimizeOptions {
        enabled: true,
        disabled: args.disable.clone(),
        freeze_variables: args.freeze,
        print_after,
        ..OptimizeOptions::default()
    };
    let mut ir = graph.into_ir();
    let roots = ir.outputs().to_vec();
    let report = optimize_graph(&mut ir, &backend, &options, &roots, &|_| None)
        .map_err(|e| e.to_string())?;
    if let Some(report) = &report {
        for (pass, text) in &report.printed {
            eprintln!("# ---- after {pass}\n{text}");
        }
    }
    Ok((Graph::from(ir), report))
}
