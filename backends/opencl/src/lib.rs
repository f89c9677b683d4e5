//! kiln-opencl: kiln's OpenCL backend.
//!
//! The same lowered [`kiln_ir::program::Program`] the CPU backend compiles is rendered as OpenCL
//! C ([`render`](mod@render): one `__kernel` per program kernel, the fused epilogue inlined, every shape a
//! literal) and run through the `ocl` crate on any OpenCL device: GPUs, and CPUs through PoCL.
//!
//! The renderer depends on kiln-ir only and is always built. The runtime (device choice,
//! buffers, program builds and launches) links libOpenCL, so it sits behind this crate's
//! `runtime` feature, which the `kiln` crate's `opencl` feature turns on:
//! - `device`: platform and device discovery and selection (index, name, `KILN_OPENCL_DEVICE`);
//! - `backend`: `OpenClBackend`, which lowers, renders and builds (builds cached per source
//!   and device);
//! - `runtime`: `runtime::OpenClExecutable`, which owns the device buffers and runs.

// Every unsafe block states why it is sound (CI denies clippy warnings).
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod render;

#[cfg(feature = "runtime")]
pub mod backend;
#[cfg(feature = "runtime")]
pub mod device;
#[cfg(feature = "runtime")]
pub mod runtime;

#[cfg(feature = "runtime")]
pub use backend::OpenClBackend;
pub use render::{Limits, Rendered, render};
