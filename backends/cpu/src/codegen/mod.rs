//! Cranelift code generation for the kernels of a [`kiln_ir::program::Program`], one file per
//! kernel family. Main-stage kernels take the buffer pointers `kernel.inputs ++ [kernel.output]`;
//! the epilogue stage runs in place on the output.

pub mod epilogue;
pub mod movement;
pub mod reduce;
pub mod window;
