//! Without the `runtime` feature the device tests (`ops.rs`, `runtime.rs`) compile to nothing;
//! this says so visibly instead of passing silently, and fails when `KILN_REQUIRE_OPENCL=1`
//! asks for the device tests.

#[cfg(not(feature = "runtime"))]
use crate::required;

#[cfg(not(feature = "runtime"))]
#[test]
fn opencl_runtime_tests_are_skipped_without_the_runtime_feature() {
    use std::io::Write;
    let how = "cargo test -p kiln-opencl --features runtime, or --features opencl on kiln";
    assert!(
        !required::opencl_required(),
        "KILN_REQUIRE_OPENCL is set but kiln-opencl was built without the `runtime` feature \
         ({how})"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED kiln-opencl device tests: built without the `runtime` feature ({how})"
    );
}
