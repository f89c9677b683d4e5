//! Every integration test of this crate, as modules of one test binary: each binary links the
//! whole crate graph (Cranelift included), and on CI's two cores linking thirty of them cost
//! minutes. Run one file's tests with a filter: `cargo test -p kiln-cpu --test suite -- MODULE::`.

mod codegen_data_movement;
mod codegen_data_reduce;
mod codegen_data_util;
mod codegen_epilogue_exprs;
mod codegen_epilogue_lowered;
mod codegen_epilogue_ranges;
mod codegen_epilogue_util;
mod codegen_window_bench;
mod codegen_window_ops;
mod math_accuracy;
mod math_loops;
mod math_special;
mod math_util;
mod runtime_concurrency;
