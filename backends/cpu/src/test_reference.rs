//! What the plan-level tests (tests_*.rs) share: graphs parsed from a shared header, requests
//! that feed every placeholder, the program and plan as the CPU backend makes them, and the
//! oracle, a request's results on the CPU backend against the reference evaluator's.

use crate::CpuBackend;
use crate::backend::lower_for_cpu;
use crate::plan::{Plan, plan};
use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::compare::{Tolerance, assert_close};
use kiln_ir::program::Program;
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{Graph, Tensor};

/// The graph of `header` (the `kiln 2` line, inputs and constants) followed by `body`;
/// panics with the text on a parse error.
pub(crate) fn parse_graph(header: &str, body: &str) -> Graph {
    let text = format!("{header}{body}");
    kiln_ir::text::parse(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A request for the nodes named `fetches`, feeding every placeholder.
pub(crate) fn request<'g>(g: &'g Graph, fetches: &[&str]) -> CompileRequest<'g> {
    CompileRequest {
        graph: g,
        feeds: g.placeholders(),
        variables: vec![],
        fetches: fetches.iter().map(|f| g.find(f).unwrap()).collect(),
        targets: vec![],
    }
}

/// The program and plan the CPU backend makes for `fetches` (concat operands placed as it
/// places them).
pub(crate) fn lower_and_plan(g: &Graph, fetches: &[&str]) -> (Program, Plan) {
    let program = lower_for_cpu(&request(g, fetches)).unwrap();
    let plan = plan(&program).unwrap();
    (program, plan)
}

/// Asserts that every fetch of `request` run on `feeds` matches the reference within the
/// kernel tolerance; `names` label the fetches in a failure.
pub(crate) fn assert_matches_reference(
    request: &CompileRequest<'_>,
    feeds: &[&Tensor],
    names: &[&str],
) {
    let run = |backend: &dyn Backend| {
        backend
            .compile(request)
            .unwrap()
            .run(feeds, &mut [])
            .unwrap()
    };
    let (got, want) = (run(&CpuBackend), run(&ReferenceBackend));
    assert_eq!(got.len(), want.len());
    for ((g, w), name) in got.iter().zip(&want).zip(names) {
        assert_close(g, w, Tolerance::KERNEL, name);
    }
}

/// [`assert_matches_reference`] for `fetches` of `g` (named by them), every placeholder fed
/// from `feeds` in order.
pub(crate) fn assert_fetches_match_reference(g: &Graph, fetches: &[&str], feeds: &[Tensor]) {
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    assert_matches_reference(&request(g, fetches), &feeds, fetches);
}

/// Asserts that the profile of `fetch` on `feeds` lists the kernel whose first op is `inner`
/// only inside the entry of the kernel whose first op is `outer` (a pair run as one stage):
/// its ops and nodes first, the flops summed, one entry fewer than kernels.
pub(crate) fn assert_one_profile_entry(
    g: &Graph,
    fetch: &str,
    feeds: &[&Tensor],
    inner: &str,
    outer: &str,
) {
    let apart = lower_for_cpu(&request(g, &[fetch]))
        .unwrap()
        .zeroed_kernel_times();
    let (_, times) = CpuBackend
        .compile(&request(g, &[fetch]))
        .unwrap()
        .run_profiled(feeds, &mut [])
        .unwrap();
    assert_eq!(times.len(), apart.len() - 1, "{times:#?}");
    let first_op = |op: &str| apart.iter().find(|t| t.ops[0] == op).unwrap();
    let (inner, outer) = (first_op(inner), first_op(outer));
    let merged = times.iter().find(|t| t.kernel == outer.kernel).unwrap();
    assert_eq!(merged.ops, [inner.ops.clone(), outer.ops.clone()].concat());
    assert_eq!(
        merged.nodes,
        [inner.nodes.clone(), outer.nodes.clone()].concat()
    );
    assert_eq!(
        merged.flops,
        Some(inner.flops.unwrap() + outer.flops.unwrap()),
        "{merged:?}"
    );
    assert!(merged.nanos > 0);
    assert!(times.iter().all(|t| t.kernel != inner.kernel));
}
