//! The CLI side of the pass pipeline: `dump --optimize`, `dot --optimize` and `explain`, with
//! the input shapes to optimise for (`--batch`, `--shape`).

use clap::Args;
use kiln::ir::passes::manager::{PipelineReport, PrintAfter};
use kiln::{BackendKind, Graph, NodeId, Op, OptimizeOptions, Shape, optimize_graph};
use std::collections::HashMap;
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
    /// The value of every unknown dim (`?`) of the placeholders, as `kiln bench --batch` (some
    /// rewrites need it: what runs is compiled for the fed shapes).
    #[arg(long, value_parser = crate::at_least_one)]
    pub batch: Option<usize>,
    /// A placeholder's full shape, e.g. `x=8,3,224,224` (with or without %). Repeatable.
    #[arg(long = "shape", value_name = "NAME=d0,d1,...")]
    pub shapes: Vec<String>,
}

/// A graph ready to print, the pipeline's report, and a line saying which input shapes it was
/// optimised (or typed) for.
pub struct Loaded {
    pub graph: Graph,
    pub report: Option<PipelineReport>,
    pub shapes_note: String,
}

impl PassArgs {
    /// Whether the output depends on the input shapes chosen (optimised, or shapes given), so
    /// it says which were used.
    pub fn shapes_matter(&self) -> bool {
        self.optimize || self.batch.is_some() || !self.shapes.is_empty()
    }

    /// The pass flags given, for refusing them where no pipeline runs.
    fn pass_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--backend", self.backend.is_some()),
            ("--freeze", self.freeze),
            ("--disable", !self.disable.is_empty()),
            ("--print-after", self.print_after.is_some()),
            ("--print-after-all", self.print_after_all),
        ];
        given.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect()
    }
}

/// Loads `path`, gives its placeholders the `--batch`/`--shape` shapes and, when asked (or
/// `force`d, as by `explain`), optimises it. Pass flags without `--optimize` are refused rather
/// than ignored.
pub fn load_optimized(path: &Path, args: &PassArgs, force: bool) -> Result<Loaded, String> {
    let flags = args.pass_flags();
    let pipeline_runs = args.optimize || force;
    if !pipeline_runs && !flags.is_empty() {
        return Err(format!(
            "{} only applies to the pass pipeline: add --optimize",
            flags.join(", ")
        ));
    }
    let graph = crate::load(path)?;
    let (graph, shapes_note) = with_input_shapes(graph, args)?;
    if !pipeline_runs {
        return Ok(Loaded {
            graph,
            report: None,
            shapes_note,
        });
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
    Ok(Loaded {
        graph: Graph::from(ir),
        report,
        shapes_note,
    })
}

/// `graph` with its placeholders' shapes set from `--shape` and `--batch` (every node kept,
/// types re-inferred), and a line naming every placeholder's shape and where it came from.
pub fn with_input_shapes(graph: Graph, args: &PassArgs) -> Result<(Graph, String), String> {
    let mut given: HashMap<NodeId, Shape> = HashMap::new();
    for arg in &args.shapes {
        let (id, shape) = parse_shape(&graph, arg)?;
        if given.insert(id, shape).is_some() {
            return Err(format!(
                "--shape {arg}: %{} given twice",
                graph.node(id).name
            ));
        }
    }
    let mut shapes = given.clone();
    if let Some(batch) = args.batch {
        for id in graph.placeholders() {
            let Op::Input(ty) = &graph.node(id).op else {
                continue;
            };
            shapes.entry(id).or_insert_with(|| {
                let dims: Vec<usize> = ty.shape.dims().iter().map(|d| d.unwrap_or(batch)).collect();
                Shape::known(&dims)
            });
        }
    }
    let graph = if shapes.is_empty() {
        graph
    } else {
        let everything: Vec<NodeId> = graph.node_ids().collect();
        let (sub, _) = graph
            .extract(&everything, &shapes)
            .map_err(|e| format!("with the given input shapes: {e}"))?;
        Graph::from(sub)
    };
    let described: Vec<String> = graph
        .placeholders()
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let from = match (given.contains_key(&id), args.batch) {
                (true, _) => " (--shape)".to_string(),
                (false, Some(b)) if shapes.contains_key(&id) => format!(" (--batch {b})"),
                _ => String::new(),
            };
            format!("%{} {}{from}", node.name, node.ty)
        })
        .collect();
    let open = graph
        .placeholders()
        .iter()
        .any(|&id| match &graph.node(id).op {
            Op::Input(ty) => ty.shape.dims().iter().any(Option::is_none),
            _ => false,
        });
    let note = match (described.is_empty(), open) {
        (true, _) => "input shapes: none (the graph has no placeholders)".to_string(),
        (false, false) => format!("input shapes: {}", described.join(", ")),
        (false, true) => format!(
            "input shapes: {} (unknown dims left open; --batch N or --shape NAME=d0,d1,... \
             gives the shapes a run compiles for)",
            described.join(", ")
        ),
    };
    Ok((graph, note))
}

/// One `--shape NAME=d0,d1,...`: a placeholder of the graph and a shape of its rank that keeps
/// its known dims.
fn parse_shape(graph: &Graph, arg: &str) -> Result<(NodeId, Shape), String> {
    let (name, dims) = arg
        .split_once('=')
        .ok_or_else(|| format!("--shape {arg}: expected NAME=d0,d1,... (e.g. x=8,3,32,32)"))?;
    let name = crate::grad::bare(name.trim());
    let placeholders: Vec<String> = graph
        .placeholders()
        .iter()
        .map(|&p| format!("%{}", graph.node(p).name))
        .collect();
    let ty = match graph.find(name).map(|id| (id, &graph.node(id).op)) {
        Some((id, Op::Input(ty))) => (id, ty),
        _ => {
            return Err(format!(
                "--shape {arg}: the graph has no placeholder %{name} (placeholders: {})",
                if placeholders.is_empty() {
                    "none".to_string()
                } else {
                    placeholders.join(", ")
                }
            ));
        }
    };
    let (id, ty) = ty;
    let dims: Vec<usize> = dims
        .split(',')
        .map(|d| match d.trim().parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "--shape {arg}: `{}` is not a dim (expected whole numbers of at least 1)",
                d.trim()
            )),
            Ok(n) => Ok(n),
        })
        .collect::<Result<_, _>>()?;
    let declared = ty.shape.dims();
    let keeps_known = declared
        .iter()
        .zip(&dims)
        .all(|(d, &n)| d.is_none_or(|k| k == n));
    if declared.len() != dims.len() || !keeps_known {
        return Err(format!(
            "--shape {arg}: %{name} is declared {}; the shape must have its rank ({}) and its \
             known dims",
            ty,
            declared.len()
        ));
    }
    Ok((id, Shape::known(&dims)))
}
