//! Every integration test of this crate, as modules of one test binary: each binary links the
//! whole crate graph (Cranelift included), and on CI's two cores linking thirty of them cost
//! minutes. Run one file's tests with a filter: `cargo test -p kiln --test suite -- MODULE::`.

mod cli;
mod concurrency;
mod conformance;
mod differential;
mod images_apart;
mod losses;
mod onnx_errors;
mod onnx_import;
mod onnx_real;
mod optimizer;
mod saving;
mod session;
mod training;
mod view;
