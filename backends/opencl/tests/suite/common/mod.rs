//! Shared helpers of the OpenCL runtime tests: the backend (or a visible skip when this machine
//! has no OpenCL platform; a failure when `KILN_REQUIRE_OPENCL=1`), graphs from .kiln text, and
//! comparison with the reference interpreter on the same lowered program.

#![allow(dead_code)]

pub use crate::required::opencl_required;

use kiln_ir::backend::{Backend, CompileRequest, Executable};
use kiln_ir::compare::{self, Tolerance};
use kiln_ir::lower::{lower, run_program};
use kiln_ir::{Graph, Tensor};
use kiln_opencl::OpenClBackend;

/// The backend on the default device, or `None` after printing why the test is skipped;
/// panics instead when [`opencl_required`].
pub fn backend() -> Option<OpenClBackend> {
    match OpenClBackend::new(None) {
        Ok(b) => Some(b),
        Err(e) if opencl_required() => {
            panic!("KILN_REQUIRE_OPENCL is set but there is no usable OpenCL device: {e}")
        }
        Err(e) => {
            // Straight to stderr so the skip shows even when output is captured.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED opencl test: {e}");
            None
        }
    }
}

/// Parses .kiln text (panics on a typo in the test itself).
pub fn graph(text: &str) -> Graph {
    kiln_ir::text::parse(text, None).unwrap_or_else(|e| panic!("test graph: {e}\n{text}"))
}

/// The request fetching the graph's outputs, feeding every placeholder, with every variable.
pub fn request(g: &Graph) -> CompileRequest<'_> {
    CompileRequest {
        graph: g,
        feeds: g.placeholders(),
        variables: g.variables(),
        fetches: g.outputs().to_vec(),
        targets: Vec::new(),
    }
}

/// Deterministic feeds in [-2, 2) for every placeholder.
pub fn feeds(g: &Graph, seed: u64) -> Vec<Tensor> {
    g.placeholders()
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let dims = g
                .node(p)
                .ty
                .shape
                .to_dims()
                .expect("test inputs have known dims");
            Tensor::uniform(&dims, -2.0, 2.0, seed + i as u64)
        })
        .collect()
}

/// Initial values of every variable.
pub fn variables(g: &Graph) -> Vec<Tensor> {
    g.variables()
        .iter()
        .map(|&v| match &g.node(v).op {
            kiln_ir::Op::Var(src) => kiln_ir::eval::source_value(src).expect("variable value"),
            _ => unreachable!("variables() returns vars"),
        })
        .collect()
}

/// The differential tests' tolerance ([`Tolerance::KERNEL`]); dtypes must match and integer
/// and bool tensors must be equal.
pub fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    compare::assert_close(got, want, Tolerance::KERNEL, what);
}

/// Compiles `text` on `backend` and checks every output against the reference interpreter
/// running the same lowered program, on two runs (which must also agree bit for bit).
pub fn check(backend: &OpenClBackend, text: &str) {
    let g = graph(text);
    let req = request(&g);
    let program = lower(&req).unwrap_or_else(|e| panic!("lowering: {e}\n{text}"));
    let inputs = feeds(&g, 7);
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut vars_ref = variables(&g);
    let want = run_program(&program, &refs, &mut vars_ref)
        .unwrap_or_else(|e| panic!("reference: {e}\n{text}"));
    let exe = backend
        .compile(&req)
        .unwrap_or_else(|e| panic!("opencl compile: {e}\n{text}"));
    let mut vars = variables(&g);
    let got = exe
        .run(&refs, &mut vars)
        .unwrap_or_else(|e| panic!("opencl run: {e}\n{text}"));
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(g, w, &format!("output {i} of\n{text}"));
    }
    for (i, (g, w)) in vars.iter().zip(&vars_ref).enumerate() {
        assert_close(g, w, &format!("variable {i} of\n{text}"));
    }
    let mut vars2 = variables(&g);
    let again = exe.run(&refs, &mut vars2).expect("second run");
    assert_eq!(again, got, "two runs differ\n{text}");
}

/// Compiles and runs `text` with the given feeds, returning outputs (or the error text).
pub fn run(backend: &OpenClBackend, text: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let g = graph(text);
    let exe = backend.compile(&request(&g)).map_err(|e| e.to_string())?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut vars = variables(&g);
    exe.run(&refs, &mut vars).map_err(|e| e.to_string())
}

/// A compiled executable of `text` (panics on failure).
pub fn compile(backend: &OpenClBackend, text: &str) -> (Graph, Box<dyn Executable>) {
    let g = graph(text);
    let exe = backend
        .compile(&request(&g))
        .unwrap_or_else(|e| panic!("opencl compile: {e}\n{text}"));
    (g, exe)
}
