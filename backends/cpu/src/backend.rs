//! The `cpu` backend: lower the request, plan stages (micro-kernels and Cranelift code),
//! return an executable.

use crate::plan::{kept_live, plan, writes_rows_at_stride};
use crate::runtime::CpuExecutable;
use kiln_ir::Result;
use kiln_ir::backend::{Backend, CompileRequest, CompileTimes, Executable};
use kiln_ir::lower::{lower, plan_keeping, write_concat_operands_in_place};
use kiln_ir::program::Program;
use std::time::Instant;

/// Native code for this machine's CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn compile(&self, request: &CompileRequest<'_>) -> Result<Box<dyn Executable>> {
        let started = Instant::now();
        // A misspelt KILN_CPU_FEATURES is the user's setting, not a node the backend lacks.
        crate::jit::CpuFeatures::from_env()
            .and_then(|f| f.check())
            .map_err(kiln_ir::Error::Invalid)?;
        let program = lower_for_cpu(request)?;
        // The stages index buffers and arena offsets through raw pointers: check every
        // invariant of the program contract before any of that is planned.
        program.validate()?;
        let lowered = Instant::now();
        let plan = plan(&program)?;
        let times = CompileTimes {
            lowering: lowered - started,
            packing: plan.packing,
            codegen: lowered.elapsed().saturating_sub(plan.packing),
            ..CompileTimes::default()
        };
        Ok(Box::new(
            CpuExecutable::new(program, plan).with_compile_times(times),
        ))
    }
}

/// The request lowered as this backend plans it: concat operands written in place where the
/// producing stage can store there, and the arena planned again where kernels the plan may
/// merge need their first one's input live through the last ([`kept_live`]).
pub(crate) fn lower_for_cpu(request: &CompileRequest<'_>) -> Result<Program> {
    let mut program = lower(request)?;
    write_concat_operands_in_place(&mut program, writes_rows_at_stride)?;
    let keep = kept_live(&program);
    if !keep.is_empty() {
        plan_keeping(&mut program, &keep)?;
    }
    Ok(program)
}
