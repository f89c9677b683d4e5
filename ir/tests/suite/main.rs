//! Every integration test of this crate, as modules of one test binary: each binary links the
//! whole crate graph (Cranelift included), and on CI's two cores linking thirty of them cost
//! minutes. Run one file's tests with a filter: `cargo test -p kiln-ir --test suite -- MODULE::`.

mod lower_common;
mod lower_concat;
mod lower_grouping;
mod lower_memory;
mod lower_proptest;
mod passes_common;
mod passes_core;
mod passes_fold;
mod passes_fusion;
mod text_dot;
mod text_errors;
mod text_fuzz;
mod text_roundtrip;
