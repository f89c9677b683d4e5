//! The `cpu` backend: lower the request, plan stages (micro-kernels and Cranelift code),
//! return an executable.

use crate::plan::plan;
use crate::runtime::CpuExecutable;
use kiln_ir::Result;
use kiln_ir::backend::{Backend, CompileRequest, Executable};
use kiln_ir::lower::lower;

/// Native code for this machine's CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn compile(&self, request: &CompileRequest<'_>) -> Result<Box<dyn Executable>> {
        let program = lower(request)?;
        // The stages index buffers and arena offsets through raw pointers: check every
        // invariant of the program contract before any of that is planned.
        program.validate()?;
        let plan = plan(&program)?;
        Ok(Box::new(CpuExecutable::new(program, plan)))
    }
}
