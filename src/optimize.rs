//! Running a backend's pass pipeline on a graph: inside a session before every compilation,
//! and on its own for `kiln dump --optimize` and `kiln explain`.

use crate::BackendKind;
use kiln_ir::passes::PassContext;
use kiln_ir::passes::manager::{Pipeline, PipelineOptions, PipelineReport, PrintAfter};
use kiln_ir::{Graph, Initializer, NodeId, Op, Result, Source, Tensor};
use std::collections::HashSet;
use std::sync::Arc;

/// How a graph is optimised.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizeOptions {
    /// Run the pipeline at all (`false`: compile the graph as written).
    pub enabled: bool,
    /// Passes to skip, by name (`kiln explain` lists them).
    pub disabled: Vec<String>,
    /// Treat variables that no assign writes as constants (setting one then recompiles).
    pub freeze_variables: bool,
    /// Record the graph text after these passes.
    pub print_after: PrintAfter,
    /// Most bytes one run may allocate (its arena plus its outputs); a compilation that needs
    /// more is an error stating both numbers. `None`: no limit beyond what the system can
    /// give (an allocation the system refuses is an error too, never an abort).
    pub memory_limit_bytes: Option<usize>,
}

impl Default for OptimizeOptions {
    fn default() -> OptimizeOptions {
        OptimizeOptions {
            enabled: true,
            disabled: Vec::new(),
            freeze_variables: false,
            print_after: PrintAfter::None,
            memory_limit_bytes: None,
        }
    }
}

impl BackendKind {
    /// The pass pipeline this backend compiles with.
    pub fn pipeline(&self) -> Pipeline {
        match self {
            BackendKind::Reference => Pipeline::reference(),
            BackendKind::Cpu | BackendKind::OpenCl { .. } => Pipeline::cpu(),
        }
    }
}

/// Optimises `graph` in place for `backend`, keeping `roots` (fetches, targets) and the
/// graph's outputs; with `freeze_variables`, unassigned variables first become constants of
/// the value `value_of` gives (the session's current value, or the initialiser). A session
/// runs this before every compilation with its [`SessionOptions::optimize`](crate::SessionOptions).
///
/// ```
/// use kiln::{BackendKind, Graph, OptimizeOptions, optimize_graph};
///
/// let text = "kiln 1
/// input %x : f32[?,3]
/// const %w : f32[3,2] = [[1, 0], [0, 1], [1, 1]]
/// const %b : f32[2] = [0.5, -0.5]
/// %y = matmul(%x, %w)
/// %z = bias_add(%y, %b)
/// %r = relu(%z)
/// output %r
/// ";
/// let mut ir = Graph::parse(text)?.into_ir();
/// let roots = ir.outputs().to_vec();
/// // The CPU pipeline fuses the bias and the relu into the matmul: one node instead of three.
/// let report = optimize_graph(&mut ir, &BackendKind::Cpu, &OptimizeOptions::default(), &roots, &|_| None)?
///     .expect("the pipeline ran");
/// assert_eq!((report.nodes_before, report.nodes_after), (6, 4));
/// assert!(Graph::from(ir).to_text().contains("%r = fused_matmul(%x, %w, %b"));
///
/// // Passes can be skipped by name (`kiln explain` lists them), or the pipeline left out.
/// let mut ir = Graph::parse(text)?.into_ir();
/// let options = OptimizeOptions { disabled: vec!["fuse-epilogues".into()], ..OptimizeOptions::default() };
/// optimize_graph(&mut ir, &BackendKind::Cpu, &options, &roots, &|_| None)?;
/// assert!(!Graph::from(ir).to_text().contains("fused_matmul"));
/// let off = OptimizeOptions { enabled: false, ..OptimizeOptions::default() };
/// assert!(optimize_graph(&mut Graph::parse(text)?.into_ir(), &BackendKind::Cpu, &off, &roots, &|_| None)?.is_none());
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn optimize_graph(
    graph: &mut Graph,
    backend: &BackendKind,
    options: &OptimizeOptions,
    roots: &[NodeId],
    value_of: &dyn Fn(NodeId) -> Option<Tensor>,
) -> Result<Option<PipelineReport>> {
    if options.freeze_variables {
        freeze_variables(graph, value_of)?;
    }
    if !options.enabled {
        return Ok(None);
    }
    let mut cx = PassContext {
        freeze_variables: options.freeze_variables,
        ..PassContext::default()
    };
    cx.roots = roots
        .iter()
        .copied()
        .filter(|&r| graph.get(r).is_some())
        .collect();
    let pipeline_options = PipelineOptions {
        disabled: options.disabled.iter().cloned().collect::<HashSet<_>>(),
        print_after: options.print_after.clone(),
        ..PipelineOptions::default()
    };
    backend
        .pipeline()
        .run(graph, &mut cx, &pipeline_options)
        .map(Some)
}

/// Replaces every variable that no assign writes by a constant with the same name.
fn freeze_variables(graph: &mut Graph, value_of: &dyn Fn(NodeId) -> Option<Tensor>) -> Result<()> {
    let assigned: HashSet<NodeId> = graph
        .node_ids()
        .flat_map(|id| {
            let k = graph.node(id).op.updated_variables();
            graph.inputs(id).into_iter().take(k)
        })
        .collect();
    for var in graph.variables() {
        if assigned.contains(&var) {
            continue;
        }
        let node = graph.node(var);
        let Op::Var(src) = &node.op else { continue };
        let init = match value_of(var) {
            Some(value) => Initializer::Literal(Arc::new(value)),
            None => src.init.clone(),
        };
        let (name, ty) = (node.name.clone(), src.ty.clone());
        let constant = graph.add(
            graph.unique_name(&format!("{name}.frozen")),
            Op::Const(Source { ty, init }),
            &[],
        )?;
        graph.replace_uses(var, constant)?;
        graph.remove(var)?;
        graph.rename(constant, name)?;
    }
    Ok(())
}
