//! `kiln view GRAPH [-o FILE.html] [--optimize] [--profile]`: writes the graph as one
//! self-contained interactive HTML page (see `kiln::view`). `--optimize` draws the graph after
//! the backend's passes with every rewrite linked to its nodes; `--profile` runs the graph
//! (placeholders not fed get seeded random data, as in `kiln bench`) and colours each node by
//! its kernel's share of the run time; a profiled view shows the optimised graph, the one
//! whose kernels ran.

use crate::{bench, feeds, passes, safe_write};
use kiln::view::{Extras, NodeTimes, page};
use kiln::{BackendKind, Graph, KernelTime, NodeId, OptimizeOptions, Session, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `kiln view` was asked to do.
pub struct ViewArgs<'a> {
    pub graph: &'a Path,
    pub output: Option<PathBuf>,
    pub passes: &'a passes::PassArgs,
    pub profile: bool,
    pub feeds: &'a [String],
    pub runs: usize,
}

pub fn view(args: ViewArgs<'_>) -> Result<(), String> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.graph.with_extension("html"));
    // `-o -`: the page goes to standard output, as every verb's `-o -` does.
    let to_stdout = output.as_os_str() == "-";
    if !to_stdout && safe_write::resolved(&output)? == safe_write::resolved(args.graph)? {
        return Err(format!(
            "-o {}: that is the graph itself; refusing to overwrite it",
            output.display()
        ));
    }
    // `--batch` and `--shape` fix the placeholders' shapes, as for `dump`; a profile runs at
    // them (unknown dims left run at 1).
    let (graph, _) = passes::with_input_shapes(crate::load(args.graph)?, args.passes)?;
    let backend = match &args.passes.backend {
        Some(name) => BackendKind::from_name(name).map_err(|e| e.to_string())?,
        None => BackendKind::default_kind(),
    };
    let title = args
        .graph
        .file_name()
        .map_or_else(|| "graph".to_string(), |n| n.to_string_lossy().into_owned());

    // A profiled view shows the graph as the session compiled it: placeholders at the fed
    // shapes, then optimised, so kernel names are the drawn nodes' names.
    let (times, to_show) = if args.profile {
        let (times, runs, ran) = profile(&graph, &args, backend.clone())?;
        (Some((times, runs)), Graph::from(ran))
    } else {
        (None, graph.clone())
    };
    let optimize = args.passes.optimize || args.profile;
    let (shown, report) = if optimize {
        let options = OptimizeOptions {
            enabled: true,
            disabled: args.passes.disable.clone(),
            freeze_variables: args.passes.freeze,
            ..OptimizeOptions::default()
        };
        let mut ir = to_show.into_ir();
        let roots = ir.outputs().to_vec();
        let report = kiln::optimize_graph(&mut ir, &backend, &options, &roots, &|_| None)
            .map_err(|e| e.to_string())?;
        (Graph::from(ir), report)
    } else {
        (to_show, None)
    };

    let mut notes = vec![format!("{} nodes", shown.len())];
    if let Some(report) = &report {
        notes.push(format!(
            "optimised for {backend}: {} -> {} nodes, {} rewrites",
            report.nodes_before,
            report.nodes_after,
            report.log.len()
        ));
    }
    let node_times = times.as_ref().map(|(kernels, runs)| {
        let t = NodeTimes::from_kernels(kernels, *runs);
        let unmatched = t
            .by_node
            .keys()
            .filter(|name| shown.find(name).is_none())
            .count();
        notes.push(format!(
            "profiled on {backend}: {:.3} ms per run over {runs} runs{}",
            t.total_ms,
            if unmatched > 0 {
                format!(" ({unmatched} kernels not drawn)")
            } else {
                String::new()
            }
        ));
        t
    });
    let extras = Extras {
        optimized_from: report.as_ref().map(|r| (graph.ir(), r.log.as_slice())),
        times: node_times,
        note: notes.join(" · "),
    };
    let start = Instant::now();
    let html = page(shown.ir(), &title, &extras);
    let took = start.elapsed();
    let summary = format!(
        "({} nodes, page and layout in {:.1} ms)",
        shown.len(),
        took.as_secs_f64() * 1e3
    );
    if to_stdout {
        print!("{html}");
        eprintln!("wrote the page to standard output {summary}");
    } else {
        safe_write::write_bytes(&output, html.as_bytes())?;
        println!("wrote {} {summary}", output.display());
    }
    Ok(())
}

/// Runs the graph's outputs `runs` times with profiling: the kernel times summed over runs,
/// the runs, and the graph that ran (the outputs' nodes at the fed shapes, not optimised).
fn profile(
    graph: &Graph,
    args: &ViewArgs<'_>,
    backend: BackendKind,
) -> Result<(Vec<KernelTime>, usize, kiln::ir::Graph), String> {
    let given = feeds::load(graph, args.feeds)?;
    let feeds = bench::complete_feeds(graph, given, 1)?;
    let feed_ids: Vec<(NodeId, &Tensor)> = feeds
        .iter()
        .map(|(n, t)| graph.lookup(n).map(|id| (id, t)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let fetches = graph.outputs().to_vec();
    if fetches.is_empty() {
        return Err("--profile: the graph declares no outputs to run".into());
    }
    let options = OptimizeOptions {
        disabled: args.passes.disable.clone(),
        freeze_variables: args.passes.freeze,
        ..OptimizeOptions::default()
    };
    let session = Session::with_options(graph, backend, options).map_err(|e| e.to_string())?;
    // The first run compiles; it is not timed.
    session
        .run(&feed_ids, &fetches)
        .map_err(|e| e.to_string())?;
    let total = bench::profiled_runs(&session, &feed_ids, &fetches, &[], args.runs, &|| {})?;
    if total.is_empty() {
        return Err(format!(
            "--profile: the {} backend does not time kernels",
            session.backend()
        ));
    }
    let shapes: HashMap<NodeId, kiln::Shape> =
        feed_ids.iter().map(|(id, t)| (*id, t.shape())).collect();
    let (ran, _) = graph
        .extract(&fetches, &shapes)
        .map_err(|e| e.to_string())?;
    Ok((total, args.runs, ran))
}
