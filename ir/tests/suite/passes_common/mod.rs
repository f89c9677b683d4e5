//! Helpers shared by the pass tests: golden before/after .kiln files, deterministic feeds, and
//! running the reference backend on every output of a graph before and after a rewrite.
//!
//! A golden file holds the input graph, a line `# ---- expected`, and the graph the pass must
//! produce. Lines `# roots: %a %b` in the input half name extra roots for the
//! [`PassContext`]. Graphs are compared as printed text with comments and blank lines dropped
//! (the printer adds each value's type as a comment). `UPDATE_GOLDEN=1` rewrites the expected
//! half with the actual output instead of comparing.

#![allow(dead_code)] // each test file uses a different subset

use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::compare::Tolerance;
use kiln_ir::eval::source_value;
use kiln_ir::passes::PassContext;
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{Graph, NodeId, Op, Result, Shape, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The line that separates a golden file's input from its expected output.
pub const EXPECTED_MARKER: &str = "# ---- expected";

/// A golden file split in two.
#[derive(Clone, Debug)]
pub struct Golden {
    /// The file.
    pub path: PathBuf,
    /// The input graph's text (everything before the marker).
    pub input: String,
    /// The expected graph's text (after the marker); `None` when the file has no marker yet.
    pub expected: Option<String>,
}

impl Golden {
    /// Parses the input half; `npy(...)` paths resolve against the file's folder.
    pub fn graph(&self) -> Graph {
        kiln_ir::text::parse(&self.input, self.path.parent())
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }

    /// A context whose roots are the nodes named by `# roots:` lines of the input half.
    pub fn context(&self, graph: &Graph) -> PassContext {
        let mut cx = PassContext::default();
        for line in self.input.lines() {
            if let Some(rest) = line.trim().strip_prefix("# roots:") {
                for name in rest.split([',', ' ']).filter(|s| !s.is_empty()) {
                    let name = name.trim_start_matches('%');
                    cx.roots.insert(graph.find(name).unwrap_or_else(|| {
                        panic!("{}: root %{name} not in graph", self.path.display())
                    }));
                }
            }
        }
        cx
    }
}

/// Reads a golden file and splits it at [`EXPECTED_MARKER`].
pub fn load_golden(path: &Path) -> Golden {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (input, expected) = match text.split_once(EXPECTED_MARKER) {
        Some((a, b)) => (a.to_string(), Some(b.trim_start_matches('\n').to_string())),
        None => (text, None),
    };
    Golden {
        path: path.to_path_buf(),
        input,
        expected,
    }
}

/// The `.kiln` files of a folder, sorted by name.
pub fn golden_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "kiln"))
        .collect();
    files.sort();
    files
}

/// `ir/tests/passes/<pass>`.
pub fn pass_dir(pass: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/passes")
        .join(pass)
}

/// Graph text with comments, trailing spaces and blank lines dropped (for comparisons).
pub fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim_end())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `UPDATE_GOLDEN` is set to something other than `0`.
pub fn updating() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v != "0" && !v.is_empty())
}

/// Compares `actual` (printed graph text) with the golden file's expected half, or rewrites
/// that half when [`updating`]. Panics with both texts on a difference.
pub fn compare_golden(golden: &Golden, actual: &str) {
    if updating() {
        let text = format!("{}{EXPECTED_MARKER}\n{actual}", golden.input);
        std::fs::write(&golden.path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", golden.path.display()));
        return;
    }
    let expected = golden.expected.as_deref().unwrap_or_else(|| {
        panic!(
            "{} has no `{EXPECTED_MARKER}` section; run with UPDATE_GOLDEN=1 to add one",
            golden.path.display()
        )
    });
    assert_eq!(
        normalize(actual),
        normalize(expected),
        "\n{}: graph after the pass differs from the expected half\n--- actual:\n{actual}\n--- expected:\n{expected}",
        golden.path.display()
    );
}

/// Deterministic values in [-2, 2) for every placeholder, by name; unknown dims (`?`) become 2.
pub fn make_feeds(graph: &Graph, seed: u64) -> HashMap<String, Tensor> {
    graph
        .placeholders()
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let node = graph.node(id);
            let dims: Vec<usize> = node
                .ty
                .shape
                .dims()
                .iter()
                .map(|d| d.unwrap_or(2))
                .collect();
            let t = Tensor::uniform(&dims, -2.0, 2.0, seed * 1000 + i as u64);
            (node.name.clone(), t)
        })
        .collect()
}

/// The feeds of a conformance case: `inputs/<name>.npy` for each placeholder.
pub fn case_feeds(case_dir: &Path, graph: &Graph) -> HashMap<String, Tensor> {
    graph
        .placeholders()
        .into_iter()
        .map(|id| {
            let name = graph.node(id).name.clone();
            let file = case_dir.join("inputs").join(format!("{name}.npy"));
            let t = kiln_ir::npy::read(&file)
                .unwrap_or_else(|e| panic!("feed %{name}: {e}"))
                .tensor;
            (name, t)
        })
        .collect()
}

/// The conformance cases: `(case name, folder)` for each `tests/golden/cases/*/graph.kiln`.
pub fn conformance_cases() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/cases");
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("graph.kiln").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    cases.sort();
    cases
}

/// What a run of the reference backend produced: every output's value and every variable's
/// value after the run (assigns committed), both by name.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// `(output name, value)` in output order.
    pub outputs: Vec<(String, Tensor)>,
    /// `(variable name, value after the run)` in insertion order.
    pub variables: Vec<(String, Tensor)>,
}

/// Runs the reference backend on all of `graph`'s outputs and assigns, feeding placeholders by
/// name from `feeds` and starting variables at their initial values. Placeholder shapes are
/// taken from the feeds (so `?` dims work).
pub fn run_reference(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<RunResult> {
    let assigns: Vec<NodeId> = graph
        .node_ids()
        .filter(|&i| graph.node(i).op.has_side_effect())
        .collect();
    let roots: Vec<NodeId> = graph.outputs().iter().chain(&assigns).copied().collect();
    let shapes: HashMap<NodeId, Shape> = graph
        .placeholders()
        .into_iter()
        .filter_map(|id| Some((id, feeds.get(&graph.node(id).name)?.shape())))
        .collect();
    let (sub, map) = graph.extract(&roots, &shapes)?;
    let feed_ids = sub.placeholders();
    let feed_values: Vec<&Tensor> = feed_ids
        .iter()
        .map(|&id| {
            let name = &sub.node(id).name;
            feeds
                .get(name)
                .ok_or_else(|| kiln_ir::Error::Invalid(format!("no feed for %{name}")))
        })
        .collect::<Result<_>>()?;
    let var_ids = sub.variables();
    let mut vars: Vec<Tensor> = var_ids
        .iter()
        .map(|&id| match &sub.node(id).op {
            Op::Var(src) => source_value(src).map_err(kiln_ir::Error::Invalid),
            _ => unreachable!("variables() lists only variables"),
        })
        .collect::<Result<_>>()?;
    let request = CompileRequest {
        graph: &sub,
        feeds: feed_ids,
        variables: var_ids.clone(),
        fetches: graph.outputs().iter().map(|o| map[o]).collect(),
        targets: assigns.iter().map(|a| map[a]).collect(),
    };
    let values = ReferenceBackend
        .compile(&request)?
        .run(&feed_values, &mut vars)?;
    let outputs = graph
        .outputs()
        .iter()
        .map(|&o| graph.node(o).name.clone())
        .zip(values)
        .collect();
    let variables = var_ids
        .iter()
        .map(|&v| sub.node(v).name.clone())
        .zip(vars)
        .collect();
    Ok(RunResult { outputs, variables })
}

/// Asserts that two runs agree: same output names in order with bit-identical values
/// (`rel_tol == 0.0`) or values within `rel_tol` relative error (absolute near zero), and
/// every variable present in both with the same value.
pub fn assert_same_results(before: &RunResult, after: &RunResult, rel_tol: f32, what: &str) {
    let names = |r: &RunResult| r.outputs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "{what}: output names changed");
    for ((name, b), (_, a)) in before.outputs.iter().zip(&after.outputs) {
        assert_close(b, a, rel_tol, &format!("{what}: output %{name}"));
    }
    for (name, b) in &before.variables {
        if let Some((_, a)) = after.variables.iter().find(|(n, _)| n == name) {
            assert_close(b, a, rel_tol, &format!("{what}: variable %{name}"));
        }
    }
}

/// Asserts `actual` equals `expected` bit for bit (`rel_tol == 0.0`) or within
/// `rel_tol + rel_tol * |expected|` ([`kiln_ir::compare`]: dtypes equal, integer and bool
/// tensors exact, NaN and infinities in the same places).
#[track_caller]
pub fn assert_close(expected: &Tensor, actual: &Tensor, rel_tol: f32, what: &str) {
    let tol = Tolerance::abs_rel(f64::from(rel_tol));
    kiln_ir::compare::assert_close(actual, expected, tol, what);
}

/// Runs `rewrite` on a copy of `graph` and checks the reference backend gives the same
/// results before and after (see [`assert_same_results`]); returns the rewritten graph.
pub fn check_semantics(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    rel_tol: f32,
    what: &str,
    rewrite: impl FnOnce(&mut Graph),
) -> Graph {
    let before = run_reference(graph, feeds).unwrap_or_else(|e| panic!("{what}: before: {e}"));
    let mut after_graph = graph.clone();
    rewrite(&mut after_graph);
    after_graph
        .verify()
        .unwrap_or_else(|e| panic!("{what}: invalid graph after the rewrite: {e}"));
    let after = run_reference(&after_graph, feeds).unwrap_or_else(|e| panic!("{what}: after: {e}"));
    assert_same_results(&before, &after, rel_tol, what);
    after_graph
}

/// The full golden check of one file: parses the input, runs `rewrite` (with the file's
/// context), compares the printed result with the expected half (or rewrites it), and checks
/// the reference backend agrees before and after on deterministic feeds. Returns the context
/// so callers can inspect the log.
pub fn check_golden_file(
    path: &Path,
    rel_tol: f32,
    rewrite: impl Fn(&mut Graph, &mut PassContext),
) -> PassContext {
    let golden = load_golden(path);
    let graph = golden.graph();
    let mut cx = golden.context(&graph);
    let what = path.display().to_string();
    let after = check_semantics(&graph, &make_feeds(&graph, 7), rel_tol, &what, |g| {
        rewrite(g, &mut cx)
    });
    compare_golden(&golden, &kiln_ir::text::print(&after));
    cx
}
