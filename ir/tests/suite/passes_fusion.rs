//! Tests of `fuse-epilogues`, `fuse-elementwise` and `select-layout`: golden before/after
//! files (ir/tests/passes/<pass>/*.kiln, `UPDATE_GOLDEN=1` refreshes them), printed results
//! that parse back to the same graph, the rewrite logs, and bit-identical reference results
//! before and after each pass on the golden inputs and on every conformance graph (fusion
//! evaluates the same ops in the same order; layout changes only move data).

use crate::passes_common;

use kiln_ir::passes::{
    FuseElementwise, FuseEpilogues, Pass, PassContext, Pipeline, PipelineOptions, SelectLayout,
};
use kiln_ir::{DataFormat, Graph, Op};
use passes_common::*;

/// Every golden file of `pass` through the pass alone: expected text, exact results, a second
/// run changes nothing, and the printed result parses back and prints identically.
fn golden_pass(pass: &dyn Pass, at_least: usize) {
    let files = golden_files(&pass_dir(pass.name()));
    assert!(files.len() >= at_least, "golden files for {}", pass.name());
    for path in files {
        check_golden_file(&path, 0.0, |g, cx| {
            pass.run(g, cx)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = pass.run(g, cx).expect("second run");
            assert!(!again, "{}: a second run changed the graph", path.display());
            let text = kiln_ir::text::print(g);
            let back = kiln_ir::text::parse(&text, path.parent()).unwrap_or_else(|e| {
                panic!(
                    "{}: printed result does not parse: {e}\n{text}",
                    path.display()
                )
            });
            assert_eq!(kiln_ir::text::print(&back), text, "{}", path.display());
        });
    }
}

#[test]
fn fuse_epilogues_golden() {
    golden_pass(&FuseEpilogues, 5);
}

#[test]
fn fuse_elementwise_golden() {
    golden_pass(&FuseElementwise, 5);
}

#[test]
fn select_layout_golden() {
    golden_pass(&SelectLayout::default(), 5);
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.node_ids().filter(|&i| pred(&g.node(i).op)).count()
}

fn is_transpose(op: &Op) -> bool {
    matches!(op, Op::Transpose { .. })
}

#[test]
fn an_nchw_network_keeps_transposes_only_at_its_boundary() {
    let golden = load_golden(&pass_dir("select-layout").join("nchw_conv_chain.kiln"));
    let mut g = golden.graph();
    let mut cx = PassContext::default();
    assert!(SelectLayout::default().run(&mut g, &mut cx).unwrap());
    assert_eq!(count(&g, is_transpose), 2, "{}", kiln_ir::text::print(&g));
    let nchw = |op: &Op| match op {
        Op::Conv2d(a) => a.data_format == DataFormat::Nchw,
        Op::BiasAdd { data_format } => *data_format == DataFormat::Nchw,
        _ => false,
    };
    assert_eq!(count(&g, nchw), 0);
    let log: Vec<&str> = cx.log.iter().map(|r| r.message.as_str()).collect();
    assert!(
        log.iter().any(|m| m.contains("%c1: conv2d NCHW -> NHWC")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|m| m.contains("cancelled opposite transposes"))
    );
    assert!(log.iter().any(|m| m.contains("moved a transpose below")));

    // The same pass preferring NCHW turns an NHWC graph around.
    let golden = load_golden(&pass_dir("select-layout").join("nhwc_unchanged.kiln"));
    let g0 = golden.graph();
    let feeds = make_feeds(&g0, 3);
    let g = check_semantics(&g0, &feeds, 0.0, "prefer NCHW", |g| {
        let pass = SelectLayout {
            prefer: DataFormat::Nchw,
        };
        assert!(pass.run(g, &mut PassContext::default()).unwrap());
    });
    let nhwc_conv = |op: &Op| matches!(op, Op::Conv2d(a) if a.data_format == DataFormat::Nhwc);
    assert_eq!(count(&g, nhwc_conv), 0);
    assert_eq!(count(&g, is_transpose), 2);
}

#[test]
fn fusion_logs_what_it_matched() {
    let golden = load_golden(&pass_dir("fuse-epilogues").join("conv_bias_relu.kiln"));
    let mut g = golden.graph();
    let mut cx = PassContext::default();
    FuseEpilogues.run(&mut g, &mut cx).unwrap();
    let log: Vec<&str> = cx.log.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(
        log,
        vec!["fused %conv + %biased + %y -> %y = fused_conv2d"],
        "{log:?}"
    );
    assert_eq!(g.len(), 4, "x, w, b and the fused node");
}

/// The fusion and layout passes keep every conformance graph's reference results bit for bit,
/// in either preferred layout, and the full CPU pipeline keeps them within 1e-5 (folding may
/// round differently).
#[test]
fn conformance_graphs_keep_their_values() {
    let cases = conformance_cases();
    assert!(cases.len() > 100, "found only {} cases", cases.len());
    let options = PipelineOptions::default();
    for (name, dir) in cases {
        let graph = kiln_ir::text::parse_file(&dir.join("graph.kiln"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let feeds = case_feeds(&dir, &graph);
        for prefer in [DataFormat::Nhwc, DataFormat::Nchw] {
            check_semantics(&graph, &feeds, 0.0, &format!("{name} {prefer:?}"), |g| {
                let passes: Vec<Box<dyn Pass>> = vec![
                    Box::new(SelectLayout { prefer }),
                    Box::new(FuseEpilogues),
                    Box::new(FuseElementwise),
                ];
                Pipeline::new("layout+fusion", passes)
                    .run(g, &mut PassContext::default(), &options)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            });
        }
        let after = check_semantics(&graph, &feeds, 1e-5, &name, |g| {
            Pipeline::cpu()
                .run(g, &mut PassContext::default(), &options)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        });
        let text = kiln_ir::text::print(&after);
        let back = kiln_ir::text::parse(&text, Some(&dir))
            .unwrap_or_else(|e| panic!("{name}: optimised graph does not parse: {e}\n{text}"));
        assert_eq!(kiln_ir::text::print(&back), text, "{name}");
    }
}

/// A 100,000-op unary chain (longer than one fused expression may be) goes through the whole
/// CPU pipeline: it used to take minutes (the passes were quadratic in chain length) and then
/// fail a valid graph with "a fused expression has 100001 nodes". Now fusion stops each group
/// at the limit and starts the next, and the results are bit-identical to the chain's.
#[test]
fn long_unary_chain_fuses_into_several_bounded_nodes() {
    use kiln_ir::op::UnaryOp;
    use kiln_ir::passes::MAX_GROUP_NODES;
    use kiln_ir::{Shape, TensorType};
    const LENGTH: usize = 100_000;
    let mut graph = Graph::new();
    let mut prev = graph
        .add("x", Op::Input(TensorType::f32(Shape::known(&[3]))), &[])
        .unwrap();
    let cycle = [UnaryOp::Tanh, UnaryOp::Neg, UnaryOp::Abs];
    for i in 0..LENGTH {
        let op = Op::Unary(cycle[i % cycle.len()]);
        prev = graph.add(format!("n{i}"), op, &[prev]).unwrap();
    }
    graph.add_output(prev);
    let feeds = make_feeds(&graph, 7);
    let after = check_semantics(&graph, &feeds, 0.0, "long chain", |g| {
        Pipeline::cpu()
            .run(g, &mut PassContext::default(), &PipelineOptions::default())
            .unwrap_or_else(|e| panic!("long chain: {e}"));
    });
    let sizes: Vec<usize> = after
        .node_ids()
        .filter_map(|id| match &after.node(id).op {
            Op::Fused(f) => Some(f.expr().nodes().len()),
            _ => None,
        })
        .collect();
    assert!(
        sizes.len() >= LENGTH / MAX_GROUP_NODES,
        "{} fused nodes for {LENGTH} ops",
        sizes.len()
    );
    assert!(sizes.iter().all(|&s| s <= MAX_GROUP_NODES), "{sizes:?}");
    assert_eq!(
        after.len(),
        sizes.len() + 1,
        "only x and fused nodes remain"
    );
}
