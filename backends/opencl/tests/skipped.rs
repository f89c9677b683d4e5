//! Without the `runtime` feature the device tests (`ops.rs`, `runtime.rs`) compile to nothing;
//! this says so visibly instead of passing silently.

#[cfg(not(feature = "runtime"))]
#[test]
fn opencl_runtime_tests_are_skipped_without_the_runtime_feature() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED kiln-opencl device tests: built without the `runtime` feature \
         (cargo test -p kiln-opencl --features runtime, or --features opencl on kiln)"
    );
}
