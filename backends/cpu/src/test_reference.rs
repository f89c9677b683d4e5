//! The plan-level tests' oracle (tests_*.rs): a request's results on the CPU backend, compiled
//! as a session compiles it, against the reference evaluator's.

use crate::CpuBackend;
use kiln_ir::Tensor;
use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::compare::{Tolerance, assert_close};
use kiln_ir::reference::ReferenceBackend;

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
