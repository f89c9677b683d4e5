//! Every integration test of this crate, as modules of one test binary: each binary links the
//! whole crate graph (Cranelift included), and on CI's two cores linking thirty of them cost
//! minutes. Run one file's tests with a filter: `cargo test -p kiln-opencl --test suite -- MODULE::`.

// The device helpers need the runtime; `required` (is a device demanded?) does not.
#[cfg(feature = "runtime")]
mod common;
mod ops;
mod required;
mod runtime;
mod skipped;
