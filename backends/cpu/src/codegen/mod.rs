//! Cranelift code generation for the kernels of a [`kiln_ir::program::Program`]. Main-stage
//! kernels take the buffer pointers `kernel.inputs ++ [kernel.output]`; the epilogue stage runs
//! in place on the output.
//!
//! One file (or folder) per op family, named as in [`kiln_ir::schema::OpFamily`]:
//! `elementwise` (the epilogue stage and whole elementwise kernels), `window`, `reduce`,
//! `normalize` (batch_norm), `movement` and `state` (assign). Matmul runs on the micro-kernels
//! of [`crate::gemm`]; lrn, argmax, gather and cast run on [`crate::host`].

pub mod elementwise;
pub mod movement;
pub mod normalize;
pub mod reduce;
pub mod state;
pub mod window;

use kiln_ir::DType;
use kiln_ir::program::{Kernel, Program};

/// Checks that every operand and the output of `kernel` exist and are f32 (what the window
/// and normalisation kernels compute in).
fn require_f32_buffers(program: &Program, kernel: &Kernel) -> Result<(), String> {
    for &id in kernel.inputs.iter().chain([&kernel.output]) {
        let buf = program
            .buffers
            .get(id.index())
            .ok_or_else(|| format!("buffer {id} does not exist"))?;
        if buf.dtype != DType::F32 {
            return Err(format!(
                "buffer %{} is {}, only f32 is supported",
                buf.name, buf.dtype
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn files_are_named_after_op_families() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/codegen"));
        let stray = kiln_ir::schema::modules_outside_the_taxonomy(dir, &["mod"]).unwrap();
        assert!(
            stray.is_empty(),
            "codegen/ modules outside OpFamily: {stray:?}"
        );
    }
}
