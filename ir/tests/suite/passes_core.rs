//! Tests of the pass manager, `eliminate-dead-code` and `eliminate-common-subexpressions`:
//! golden before/after files, the manager's fixed point, switches, printing and error
//! wrapping, and bit-exact agreement of the reference backend before and after the passes on
//! every conformance graph.

use crate::passes_common;

use kiln_ir::passes::{
    ComposeMovement, EliminateCommonSubexpressions, EliminateDeadCode, Pass, PassContext, Pipeline,
    PipelineOptions, PrintAfter, manager::MAX_ROUNDS,
};
use kiln_ir::{Graph, Op, Result, UnaryOp};
use passes_common::*;
use std::cell::Cell;
use std::collections::HashSet;

/// Runs every golden file of `pass`'s folder through the pass alone, checks the expected
/// text and reference results, and that a second run changes nothing.
fn golden_pass(pass: &dyn Pass) {
    let files = golden_files(&pass_dir(pass.name()));
    assert!(
        files.len() >= 5,
        "expected golden files for {}",
        pass.name()
    );
    for path in files {
        check_golden_file(&path, 0.0, |g, cx| {
            pass.run(g, cx)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = pass.run(g, cx).expect("second run");
            assert!(!again, "{}: a second run changed the graph", path.display());
        });
    }
}

#[test]
fn eliminate_dead_code_golden() {
    golden_pass(&EliminateDeadCode);
}

#[test]
fn eliminate_common_subexpressions_golden() {
    golden_pass(&EliminateCommonSubexpressions);
}

#[test]
fn compose_movement_golden() {
    golden_pass(&ComposeMovement);
}

/// The log of one golden file's run through `pass`.
fn log_of(pass: &dyn Pass, file: &str) -> Vec<String> {
    let golden = load_golden(&pass_dir(pass.name()).join(file));
    let mut g = golden.graph();
    let mut cx = golden.context(&g);
    pass.run(&mut g, &mut cx).expect("pass");
    cx.log
        .iter()
        .map(|r| {
            assert_eq!(r.pass, pass.name());
            r.message.clone()
        })
        .collect()
}

#[test]
fn rewrites_are_logged_with_user_names() {
    assert_eq!(
        log_of(&EliminateCommonSubexpressions, "duplicate_subtree.kiln"),
        [
            "merged %a2 into %a1 (equal relu)",
            "merged %b2 into %b1 (equal exp)"
        ]
    );
    assert_eq!(
        log_of(&EliminateCommonSubexpressions, "output_keeps_name.kiln"),
        ["merged %a into %y (equal sigmoid)"]
    );
    assert_eq!(
        log_of(&EliminateDeadCode, "dead_branch.kiln"),
        [
            "removed %dead2 (add): unused",
            "removed %dead (exp): unused",
            "removed %c (const): unused constant",
        ]
    );
}

#[test]
fn dead_code_keeps_a_node_that_is_only_a_root() {
    let mut g = Graph::new();
    let x = g.add("x", Op::Input(f32_type(&[3])), &[]).unwrap();
    let r = g.add("r", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    let mut cx = PassContext::default();
    cx.roots.insert(r);
    assert!(!EliminateDeadCode.run(&mut g, &mut cx).unwrap());
    assert_eq!(g.len(), 2);
    cx.roots.clear();
    assert!(EliminateDeadCode.run(&mut g, &mut cx).unwrap());
    assert!(
        g.is_empty(),
        "no outputs, roots or assigns: everything is dead"
    );
}

fn f32_type(dims: &[usize]) -> kiln_ir::TensorType {
    kiln_ir::TensorType::f32(kiln_ir::Shape::known(dims))
}

/// A graph with a duplicate subtree and a dead branch, for the pipeline tests.
fn messy_graph() -> Graph {
    parse_text(
        "kiln 1
input %x : f32[2]
%a = relu(%x)
%b = relu(%x)
%s = add(%a, %b)
%dead = exp(%x)
output %s
",
    )
}

fn parse_text(text: &str) -> Graph {
    kiln_ir::text::parse(text, None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn options() -> PipelineOptions {
    PipelineOptions {
        verify: true,
        ..PipelineOptions::default()
    }
}

#[test]
fn pipeline_names_its_passes() {
    for p in [Pipeline::cpu(), Pipeline::reference()] {
        let names = p.passes();
        for want in [
            "fold-constants",
            "simplify-algebra",
            "fold-batch-norm",
            "fold-scale-shift",
            "eliminate-common-subexpressions",
            "eliminate-dead-code",
        ] {
            assert!(
                names.contains(&want),
                "{} lacks {want}: {names:?}",
                p.name()
            );
        }
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "duplicate pass names");
    }
    assert_eq!(Pipeline::cpu().name(), "cpu");
}

#[test]
fn pipeline_cleans_up_and_reports() {
    let mut g = messy_graph();
    let mut cx = PassContext::default();
    let report = Pipeline::reference()
        .run(&mut g, &mut cx, &options())
        .unwrap();
    assert_eq!(
        normalize(&kiln_ir::text::print(&g)),
        "kiln 1\ninput %x : f32[2]\n%a = relu(%x)\n%s = add(%a, %a)\noutput %s"
    );
    assert_eq!((report.nodes_before, report.nodes_after), (5, 3));
    // Round 1 changes the graph, round 2 confirms the fixed point.
    assert_eq!(report.rounds, 2);
    assert_eq!(report.log, cx.log);
    let stat = |name: &str| {
        report
            .stats
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no stats for {name}"))
            .clone()
    };
    let cse = stat("eliminate-common-subexpressions");
    assert_eq!((cse.runs, cse.changes, cse.disabled), (2, 1, false));
    let dce = stat("eliminate-dead-code");
    assert_eq!((dce.runs, dce.changes), (2, 1));
    let text = report.to_string();
    assert!(text.contains("[eliminate-common-subexpressions] merged %b into %a (equal relu)"));
    assert!(text.contains("[eliminate-dead-code] removed %dead (exp): unused"));
    assert!(text.contains("nodes: 5 -> 3 in 2 round(s)"), "{text}");
    assert!(report.printed.is_empty());
}

#[test]
fn passes_can_be_disabled_by_name() {
    let mut g = messy_graph();
    let mut cx = PassContext::default();
    let mut opts = options();
    opts.disabled.insert("eliminate-dead-code".into());
    let report = Pipeline::reference().run(&mut g, &mut cx, &opts).unwrap();
    assert!(
        g.find("dead").is_some(),
        "dead code survives when DCE is off"
    );
    assert!(g.find("b").is_none(), "CSE still ran");
    let dce = report
        .stats
        .iter()
        .find(|s| s.name == "eliminate-dead-code")
        .unwrap();
    assert!(dce.disabled);
    assert_eq!(dce.runs, 0);
    assert!(report.to_string().contains("eliminate-dead-code"));
    assert!(report.log.iter().all(|r| r.pass != "eliminate-dead-code"));
}

#[test]
fn unknown_pass_names_are_errors_listing_the_valid_ones() {
    let mut g = messy_graph();
    let mut opts = options();
    opts.disabled.insert("fold-everything".into());
    let err = Pipeline::reference()
        .run(&mut g, &mut PassContext::default(), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"fold-everything\""), "{err}");
    for name in Pipeline::reference().passes() {
        assert!(err.contains(name), "{err} should list {name}");
    }
    assert_eq!(g.len(), 5, "nothing runs after an option error");

    let mut opts = options();
    opts.print_after = PrintAfter::Pass("no-such-pass".into());
    let err = Pipeline::reference()
        .run(&mut g, &mut PassContext::default(), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"no-such-pass\""), "{err}");
}

#[test]
fn print_after_collects_graph_text() {
    let mut opts = options();
    opts.print_after = PrintAfter::Pass("eliminate-common-subexpressions".into());
    let mut g = messy_graph();
    let report = Pipeline::reference()
        .run(&mut g, &mut PassContext::default(), &opts)
        .unwrap();
    // Printed after its changing first run only (the second run changed nothing).
    assert_eq!(report.printed.len(), 1);
    let (pass, text) = &report.printed[0];
    assert_eq!(pass, "eliminate-common-subexpressions");
    assert!(text.contains("%s = add(%a, %a)"), "{text}");
    assert!(
        text.contains("%dead = exp(%x)"),
        "DCE has not run yet: {text}"
    );

    opts.print_after = PrintAfter::All;
    let mut g = messy_graph();
    let pipeline = Pipeline::reference();
    let report = pipeline
        .run(&mut g, &mut PassContext::default(), &opts)
        .unwrap();
    // Every pass prints once in round 1; round 2 changes nothing and prints nothing.
    let printed: Vec<&str> = report.printed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(printed, pipeline.passes());
    assert_eq!(report.printed.last().unwrap().1, kiln_ir::text::print(&g));
}

/// A pass that changes the graph (renames a node) its first `n` runs.
struct ChangesNTimes {
    left: Cell<usize>,
}

impl Pass for ChangesNTimes {
    fn name(&self) -> &'static str {
        "changes-n-times"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        if self.left.get() == 0 {
            return Ok(false);
        }
        self.left.set(self.left.get() - 1);
        let id = graph.lookup("a")?;
        graph.rename(id, "a")?;
        cx.record(self.name(), format!("run, {} left", self.left.get()));
        Ok(true)
    }
}

/// A pass that always fails.
struct Fails;

impl Pass for Fails {
    fn name(&self) -> &'static str {
        "fails"
    }

    fn run(&self, graph: &mut Graph, _cx: &mut PassContext) -> Result<bool> {
        graph.lookup("nope").map(|_| true)
    }
}

#[test]
fn pipeline_runs_to_a_fixed_point() {
    let pipeline = Pipeline::new(
        "test",
        vec![
            Box::new(ChangesNTimes { left: Cell::new(3) }),
            Box::new(EliminateDeadCode),
        ],
    );
    let mut g = messy_graph();
    let report = pipeline
        .run(&mut g, &mut PassContext::default(), &options())
        .unwrap();
    // Three changing rounds, then one that changes nothing.
    assert_eq!(report.rounds, 4);
    assert_eq!(report.stats[0].runs, 4);
    assert_eq!(report.stats[0].changes, 3);
    assert_eq!(
        report.stats[1].changes, 1,
        "DCE removed %dead in round 1 only"
    );
    assert_eq!(report.log.len(), 3 + 1);
}

#[test]
fn pipeline_that_never_settles_is_an_error() {
    let pipeline = Pipeline::new(
        "test",
        vec![Box::new(ChangesNTimes {
            left: Cell::new(usize::MAX),
        })],
    );
    let err = pipeline
        .run(&mut messy_graph(), &mut PassContext::default(), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("after {MAX_ROUNDS} rounds")), "{err}");
    assert!(err.contains("changes-n-times"), "{err}");

    // Exactly MAX_ROUNDS - 1 changing rounds still converge.
    let pipeline = Pipeline::new(
        "test",
        vec![Box::new(ChangesNTimes {
            left: Cell::new(MAX_ROUNDS - 1),
        })],
    );
    let report = pipeline
        .run(&mut messy_graph(), &mut PassContext::default(), &options())
        .unwrap();
    assert_eq!(report.rounds, MAX_ROUNDS);
}

#[test]
fn pass_errors_are_wrapped_with_the_pass_name() {
    let pipeline = Pipeline::new("test", vec![Box::new(EliminateDeadCode), Box::new(Fails)]);
    let err = pipeline
        .run(&mut messy_graph(), &mut PassContext::default(), &options())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "pass fails: unknown name %nope");
}

/// Every conformance graph gives bit-identical reference results after CSE + DCE, and within
/// 1e-5 after the whole reference pipeline (folding may round differently).
#[test]
fn conformance_graphs_keep_their_values() {
    let cases = conformance_cases();
    assert!(cases.len() > 100, "found only {} cases", cases.len());
    for (name, dir) in cases {
        let graph = kiln_ir::text::parse_file(&dir.join("graph.kiln"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let feeds = case_feeds(&dir, &graph);
        check_semantics(&graph, &feeds, 0.0, &name, |g| {
            let mut cx = PassContext::default();
            EliminateCommonSubexpressions.run(g, &mut cx).unwrap();
            EliminateDeadCode.run(g, &mut cx).unwrap();
        });
        check_semantics(&graph, &feeds, 1e-5, &name, |g| {
            Pipeline::reference()
                .run(g, &mut PassContext::default(), &options())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        });
    }
}

/// `unique_name` hands out the first free `base_k` also after removals and renames, while
/// naming a long run of same-based nodes costs constant time each (it used to rescan from
/// `base_1`, quadratic over a 100k-node chain built with the builder's generated names).
#[test]
fn unique_names_are_the_first_free_and_cheap() {
    let mut g = Graph::new();
    let mut prev = g.add("x", Op::Input(f32_type(&[2])), &[]).unwrap();
    g.add("relu", Op::Unary(UnaryOp::Relu), &[prev]).unwrap();
    let mut ids = Vec::new();
    for _ in 0..100_000 {
        let name = g.unique_name("relu");
        prev = g.add(name, Op::Unary(UnaryOp::Relu), &[prev]).unwrap();
        ids.push(prev);
    }
    assert_eq!(g.node(prev).name, "relu_100000");
    assert_eq!(g.unique_name("relu"), "relu_100001");
    // Removing the last node frees relu_100000; renaming the seventh frees relu_7.
    let last = ids.pop().unwrap();
    g.remove(last).unwrap();
    assert_eq!(g.unique_name("relu"), "relu_100000");
    g.rename(ids[6], "seventh").unwrap();
    assert_eq!(g.unique_name("relu"), "relu_7");
    g.rename(ids[6], "relu_7").unwrap();
    assert_eq!(g.unique_name("relu"), "relu_100000");
    g.verify().unwrap();
}
