//! The `opencl` backend: lower the request, render OpenCL C, build it for the chosen device
//! (or reuse an earlier build of the same source) and hand the result to the runtime.
//!
//! One context per device is shared by every backend and executable of the process, so a
//! built program can be reused across sessions: builds are cached by source text (which
//! spells every shape, so it identifies the program) in that context. PoCL also keeps its own
//! on-disk cache (`POCL_CACHE_DIR`) across processes.
//!
//! Build options never include `-cl-fast-relaxed-math` (exp/tanh accuracy and NaN/inf
//! semantics matter); `-cl-fp32-correctly-rounded-divide-sqrt` is added where the device
//! supports it, so division and sqrt round like the reference.

use crate::device::{DeviceInfo, choose, cl_err, discover};
use crate::render::{Limits, render};
use crate::runtime::OpenClExecutable;
use kiln_ir::backend::{Backend, CompileRequest, Executable};
use kiln_ir::lower::lower;
use kiln_ir::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Builds kept per device before the cache is cleared (a bound on memory, far above what a
/// test suite or a serving process compiles).
const MAX_CACHED_BUILDS: usize = 1024;

/// A device with its context and build cache, shared process-wide.
pub struct DeviceCtx {
    /// What the device is.
    pub info: DeviceInfo,
    /// The device handle.
    pub device: ocl::Device,
    /// The context every kiln program on this device lives in.
    pub context: ocl::Context,
    /// Built programs by source text.
    builds: Mutex<HashMap<String, ocl::Program>>,
}

impl DeviceCtx {
    /// The renderer's view of the device.
    pub fn limits(&self) -> Limits {
        Limits {
            max_work_group: self.info.max_work_group.max(1),
            local_mem_bytes: usize::try_from(self.info.local_mem_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The program built from `source`, from the cache or freshly built. A build failure is
    /// an error carrying the compiler's log.
    pub fn build(&self, source: &str) -> Result<ocl::Program> {
        if let Some(p) = self.builds.lock().ok().and_then(|c| c.get(source).cloned()) {
            return Ok(p);
        }
        let mut options = String::new();
        if self.info.correctly_rounded_div_sqrt {
            options.push_str("-cl-fp32-correctly-rounded-divide-sqrt");
        }
        let program = ocl::Program::builder()
            .src(source)
            .devices(self.device)
            .cmplr_opt(options)
            .build(&self.context)
            .map_err(cl_err("building the generated OpenCL C"))?;
        if let Ok(mut cache) = self.builds.lock() {
            if cache.len() >= MAX_CACHED_BUILDS {
                cache.clear();
            }
            cache.insert(source.to_string(), program.clone());
        }
        Ok(program)
    }
}

/// Device contexts by (platform, device) index.
type Registry = Mutex<HashMap<(usize, usize), Arc<DeviceCtx>>>;

/// Every device context made so far.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The shared context of the device `spec` picks (see [`crate::device`]).
pub fn device_ctx(spec: Option<&str>) -> Result<Arc<DeviceCtx>> {
    let found = discover()?;
    let infos: Vec<DeviceInfo> = found.iter().map(|(i, _, _)| i.clone()).collect();
    let (info, platform, device) = found
        .into_iter()
        .nth(choose(&infos, spec)?)
        .ok_or_else(|| Error::Invalid("opencl: the chosen device disappeared".into()))?;
    let key = (info.platform_index, info.device_index);
    let mut reg = registry()
        .lock()
        .map_err(|_| Error::Invalid("opencl: the device registry is poisoned".into()))?;
    if let Some(ctx) = reg.get(&key) {
        return Ok(ctx.clone());
    }
    let context = ocl::Context::builder()
        .platform(platform)
        .devices(device)
        .build()
        .map_err(cl_err(&format!("creating a context on {}", info.name)))?;
    let ctx = Arc::new(DeviceCtx {
        info,
        device,
        context,
        builds: Mutex::new(HashMap::new()),
    });
    reg.insert(key, ctx.clone());
    Ok(ctx)
}

/// OpenCL C kernels on one device.
#[derive(Clone)]
pub struct OpenClBackend {
    ctx: Arc<DeviceCtx>,
}

impl std::fmt::Debug for OpenClBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenClBackend({})", self.ctx.info)
    }
}

impl OpenClBackend {
    /// The backend on the device `spec` picks: `P:D`, a device index, part of a name, or
    /// `None` for `KILN_OPENCL_DEVICE` or the default device. Fails clearly when no OpenCL
    /// platform is installed.
    pub fn new(spec: Option<&str>) -> Result<OpenClBackend> {
        Ok(OpenClBackend {
            ctx: device_ctx(spec)?,
        })
    }

    /// The device this backend compiles for.
    pub fn device(&self) -> &DeviceInfo {
        &self.ctx.info
    }
}

impl Backend for OpenClBackend {
    fn name(&self) -> &str {
        "opencl"
    }

    fn compile(&self, request: &CompileRequest<'_>) -> Result<Box<dyn Executable>> {
        let program = lower(request)?;
        let rendered = render(&program, &self.ctx.limits())?;
        if std::env::var_os("KILN_OPENCL_DUMP").is_some() {
            eprintln!(
                "// kiln: OpenCL C for {}\n{}",
                self.ctx.info.name, rendered.source
            );
        }
        let built = self.ctx.build(&rendered.source)?;
        Ok(Box::new(OpenClExecutable::new(
            self.ctx.clone(),
            program,
            rendered,
            &built,
        )?))
    }
}
