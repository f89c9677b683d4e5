//! Whether this run must have OpenCL: `KILN_REQUIRE_OPENCL=1` (set by `.ci/run`, where PoCL is
//! installed) turns a missing platform, device or `runtime` feature from a visible skip into a
//! test failure.

/// True when `KILN_REQUIRE_OPENCL` is set to anything but empty or `0`.
pub fn opencl_required() -> bool {
    std::env::var("KILN_REQUIRE_OPENCL").is_ok_and(|v| !v.is_empty() && v != "0")
}
