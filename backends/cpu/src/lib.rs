//! kiln-cpu: the CPU backend. Programs are JIT-compiled with Cranelift (loop nests, elementwise
//! clusters, epilogues, transcendental approximations); dense contractions call precompiled SIMD
//! micro-kernels chosen at run time by CPU feature detection.

// Every unsafe block states why it is sound (CI denies clippy warnings).
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod awake;
mod backend;
pub mod codegen;
pub mod cpu_time;
pub mod gemm;
mod guard;
pub mod host;
pub mod jit;
pub mod math;
pub mod pack_cache;
pub mod peak;
pub mod plan;
pub mod runtime;
#[cfg(test)]
mod test_reference;
#[cfg(test)]
mod tests_concat;
#[cfg(test)]
mod tests_depthwise_pointwise;
#[cfg(test)]
mod tests_movement_split;
#[cfg(test)]
mod tests_nchw_input;
#[cfg(test)]
mod tests_prologue;
#[cfg(test)]
mod tests_reduce_window;
#[cfg(test)]
mod tests_residual;

pub use backend::CpuBackend;
