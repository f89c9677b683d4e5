//! Helpers shared by the `lower_*` tests: building compile requests from .kiln text, making
//! deterministic feeds, comparing a lowered program with the reference backend bit for bit,
//! and an independent check that simultaneously-live temporaries never share arena bytes.

#![allow(dead_code)] // each test file uses a different subset

use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::lower::{lower, run_program};
use kiln_ir::program::{BufferKind, Program};
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{Graph, NodeId, Op, Tensor};
use std::collections::HashMap;

/// Parses .kiln text (panics with the parse error: test inputs are written by hand).
pub fn parse(text: &str) -> Graph {
    kiln_ir::text::parse(text, None).unwrap_or_else(|e| panic!("test graph: {e}\n{text}"))
}

/// The node named `name`.
pub fn id(g: &Graph, name: &str) -> NodeId {
    g.find(name).unwrap_or_else(|| panic!("no node %{name}"))
}

/// A request fetching `fetches` and running `targets`, feeding every placeholder and passing
/// every variable in insertion order.
pub fn request<'a>(g: &'a Graph, fetches: &[&str], targets: &[&str]) -> CompileRequest<'a> {
    CompileRequest {
        graph: g,
        feeds: g.placeholders(),
        variables: g.variables(),
        fetches: fetches.iter().map(|n| id(g, n)).collect(),
        targets: targets.iter().map(|n| id(g, n)).collect(),
    }
}

/// Deterministic values in [-2, 2) for every feed and variable of the request.
pub fn inputs(req: &CompileRequest<'_>, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let make = |ids: &[NodeId], salt: u64| -> Vec<Tensor> {
        ids.iter()
            .enumerate()
            .map(|(i, &n)| {
                let dims = req
                    .graph
                    .node(n)
                    .ty
                    .shape
                    .to_dims()
                    .expect("concrete test shape");
                Tensor::uniform(&dims, -2.0, 2.0, seed * 1000 + salt + i as u64)
            })
            .collect()
    };
    (make(&req.feeds, 0), make(&req.variables, 500))
}

/// Lowers `req`, validates the program, checks the arena independently, runs it and the
/// reference backend on the same inputs and asserts bit-identical fetches and variables.
pub fn check_against_reference(req: &CompileRequest<'_>, seed: u64) -> Program {
    let program = lower(req).unwrap_or_else(|e| panic!("lower: {e}"));
    program
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", program.describe()));
    assert_no_live_overlap(&program);
    let (feeds, vars) = inputs(req, seed);
    let feed_refs: Vec<&Tensor> = feeds.iter().collect();
    let mut vars_lowered = vars.clone();
    let got = run_program(&program, &feed_refs, &mut vars_lowered)
        .unwrap_or_else(|e| panic!("run_program: {e}\n{}", program.describe()));
    let exe = ReferenceBackend.compile(req).expect("reference compile");
    let mut vars_ref = vars.clone();
    let want = exe.run(&feed_refs, &mut vars_ref).expect("reference run");
    assert_eq!(got.len(), want.len(), "fetch count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "fetch {i} differs\n got {g:?}\nwant {w:?}\n{}",
            program.describe()
        );
    }
    assert!(vars_lowered == vars_ref, "variables differ after the run");
    program
}

/// Independent of `Program::live_ranges`: recomputes each temporary's live range from the
/// kernels and asserts that no two temporaries live at the same kernel share a byte, that
/// offsets are 64-aligned and inside the arena, and that the arena is at most the sum.
pub fn assert_no_live_overlap(p: &Program) {
    let mut span: HashMap<usize, (usize, usize)> = HashMap::new();
    for (k, kernel) in p.kernels.iter().enumerate() {
        // A concat operand written in place (a part) writes its concat's output first.
        let out = match p.buffers[kernel.output.index()].kind {
            BufferKind::Part { of, .. } => of.index(),
            _ => kernel.output.index(),
        };
        if matches!(p.buffers[out].kind, BufferKind::Temporary { .. }) {
            span.entry(out).or_insert((k, k));
        }
        let reads = kernel
            .inputs
            .iter()
            .chain(kernel.epilogue.loads.iter().map(|l| &l.buffer));
        for b in reads {
            // A read of an alias (a reshape viewing another buffer's bytes) reads its source.
            let b = match p.buffers[b.index()].kind {
                BufferKind::Alias { of } | BufferKind::Part { of, .. } => of,
                _ => *b,
            };
            if let Some(s) = span.get_mut(&b.index()) {
                s.1 = s.1.max(k);
            }
        }
    }
    for u in &p.updates {
        if let Some(s) = span.get_mut(&u.value.index()) {
            s.1 = p.kernels.len();
        }
    }
    let bytes = |i: usize| -> (usize, usize) {
        match p.buffers[i].kind {
            BufferKind::Temporary { offset } => (offset, offset + p.buffers[i].size_bytes()),
            _ => unreachable!("only temporaries have spans"),
        }
    };
    for (&a, &ra) in &span {
        let (sa, ea) = bytes(a);
        assert_eq!(sa % 64, 0, "b{a} offset {sa} is not 64-aligned");
        assert!(
            ea <= p.arena_bytes,
            "b{a} ends at {ea}, past the arena {}",
            p.arena_bytes
        );
        for (&b, &rb) in &span {
            if a >= b {
                continue;
            }
            let (sb, eb) = bytes(b);
            let live_together = ra.0 <= rb.1 && rb.0 <= ra.1;
            let overlap = sa < eb && sb < ea && sa != ea && sb != eb;
            assert!(
                !(live_together && overlap),
                "b{a} ({sa}..{ea}, kernels {ra:?}) and b{b} ({sb}..{eb}, kernels {rb:?}) overlap"
            );
        }
    }
    assert!(p.arena_bytes <= p.sum_temporary_bytes);
    assert_eq!(p.arena_bytes % 64, 0);
}

/// Runs the fusion passes (fuse-epilogues, then fuse-elementwise) to a fixed point, keeping
/// the nodes named in `roots` (fetches, targets) as values of their own.
pub fn fuse(g: &mut Graph, roots: &[&str]) {
    let ids: Vec<NodeId> = roots.iter().map(|n| id(g, n)).collect();
    kiln_ir::passes::fuse(g, &ids).unwrap_or_else(|e| panic!("fusion: {e}"));
}

/// Names of the kernels in order, each as its fused node names.
pub fn kernel_nodes(p: &Program) -> Vec<Vec<String>> {
    p.kernels.iter().map(|k| k.nodes.clone()).collect()
}

/// Whether node `name` is a graph op (not a source) in `g`.
pub fn is_op(g: &Graph, name: &str) -> bool {
    !matches!(
        g.node(id(g, name)).op,
        Op::Input(_) | Op::Var(_) | Op::Const(_)
    )
}
