//! The JIT harness: a Cranelift `JITModule` for the host, a uniform kernel ABI and handles to
//! finished code that are safe to share between threads.
//!
//! Every generated kernel has the signature `extern "C" fn(args: *const *mut u8)`: `args` points
//! to an array of buffer base pointers (inputs, outputs, arena — whatever the code generator
//! chose, in a fixed order per kernel), so one Rust call signature serves all kernels and no
//! per-kernel trampolines are needed. The harness loads every buffer pointer in the entry block,
//! so kernel bodies see them as plain SSA values.
//!
//! Life cycle: [`Jit::new`] (or [`Jit::with_options`]) → [`Jit::define_kernel`] /
//! [`Jit::declare_function`] + [`Jit::define_function`] → [`Jit::finish`] → [`JitCode`], from
//! which [`CompiledKernel`]s are taken. Invariants:
//! - Code memory lives exactly as long as the last [`JitCode`] or [`CompiledKernel`] that refers
//!   to it (an `Arc`); it is freed when that handle drops, never while a handle exists.
//! - Errors (verifier, codegen, bad declarations, even a panic inside Cranelift or inside a
//!   body-building closure) come back as `Err(String)` naming the function; a panic poisons the
//!   `Jit`, whose later calls then fail instead of building on inconsistent state.
//! - With `KILN_DUMP_CLIF=1` every function's CLIF goes to stderr before it is compiled; with
//!   `KILN_DUMP_CLIF=<dir>` it goes to `<dir>/<function>.clif`.
//! - `KILN_CPU_FEATURES` picks the target features: `native` (default), `none` (baseline x86-64:
//!   SSE2, no FMA — kernels then use mul+add) or a comma list such as `sse41,avx,fma`.

mod code;
mod env;
mod features;
pub mod loops;

pub use code::{CompiledKernel, JitCode, KernelId};
pub use env::FnEnv;
pub use features::CpuFeatures;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use cranelift_codegen::CodegenError;
use cranelift_codegen::ir::{self, AbiParam, InstBuilder, Signature, Type, UserFuncName, Value};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleError, default_libcall_names};

use crate::math::MathConfig;

/// Where CLIF text is written before each function is compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClifDump {
    /// No dump (the default).
    #[default]
    Off,
    /// Write to standard error.
    Stderr,
    /// Write `<dir>/<function name>.clif` (the folder is created if needed).
    Dir(PathBuf),
}

impl ClifDump {
    /// Reads `KILN_DUMP_CLIF`: unset or empty → off, `1` → stderr, anything else → a folder.
    pub fn from_env() -> ClifDump {
        match std::env::var_os("KILN_DUMP_CLIF") {
            None => ClifDump::Off,
            Some(v) if v.is_empty() => ClifDump::Off,
            Some(v) if v == "1" => ClifDump::Stderr,
            Some(v) => ClifDump::Dir(PathBuf::from(v)),
        }
    }
}

/// How a [`Jit`] is configured.
#[derive(Clone, Debug, Default)]
pub struct JitOptions {
    /// Target features Cranelift may use.
    pub features: CpuFeatures,
    /// Optional CLIF dump.
    pub dump: ClifDump,
    /// Host symbols that imported functions ([`Linkage::Import`]) resolve to, by name. Entries
    /// are addresses of `extern "C"` Rust functions; lookups fall back to the process's symbols.
    pub symbols: Vec<(String, usize)>,
}

impl JitOptions {
    /// Options from the environment (`KILN_CPU_FEATURES`, `KILN_DUMP_CLIF`), no extra symbols.
    pub fn from_env() -> Result<JitOptions, String> {
        Ok(JitOptions {
            features: CpuFeatures::from_env()?,
            dump: ClifDump::from_env(),
            symbols: Vec::new(),
        })
    }
}

/// A JIT compiler for one batch of functions; [`Jit::finish`] turns it into callable code.
pub struct Jit {
    /// Always `Some` until `finish` or `drop` takes it.
    module: Option<JITModule>,
    isa: OwnedTargetIsa,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    dump: ClifDump,
    kernels: Vec<(FuncId, String, usize)>,
    /// Set when a panic escaped Cranelift or a body closure; the module may be inconsistent.
    poisoned: Option<String>,
}

impl Jit {
    /// A JIT for the host configured from the environment (see the module docs).
    pub fn new() -> Result<Jit, String> {
        Jit::with_options(JitOptions::from_env()?)
    }

    /// A JIT for the host with explicit options.
    pub fn with_options(options: JitOptions) -> Result<Jit, String> {
        let mut flags = settings::builder();
        let debug = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        for (name, value) in [
            ("opt_level", "speed"),
            ("enable_verifier", debug),
            // cranelift-jit requires both (see JITBuilder::with_flags).
            ("use_colocated_libcalls", "false"),
            ("is_pic", "false"),
        ] {
            flags
                .set(name, value)
                .map_err(|e| format!("cranelift flag {name}={value}: {e}"))?;
        }
        let isa = options
            .features
            .isa_builder()?
            .finish(settings::Flags::new(flags))
            .map_err(|e| format!("cannot configure Cranelift for this host: {e}"))?;
        let mut builder = JITBuilder::with_isa(isa.clone(), default_libcall_names());
        for (name, addr) in &options.symbols {
            builder.symbol(name.clone(), *addr as *const u8);
        }
        Ok(Jit {
            module: Some(JITModule::new(builder)),
            isa,
            ctx: cranelift_codegen::Context::new(),
            fctx: FunctionBuilderContext::new(),
            dump: options.dump,
            kernels: Vec::new(),
            poisoned: None,
        })
    }

    /// Compiles one kernel with a fresh host JIT: shorthand for `new`, `define_kernel`, `finish`.
    pub fn compile_kernel(
        name: &str,
        n_buffers: usize,
        body: impl FnOnce(&mut FunctionBuilder, &mut FnEnv) -> Result<(), String>,
    ) -> Result<CompiledKernel, String> {
        let mut jit = Jit::new()?;
        let id = jit.define_kernel(name, n_buffers, body)?;
        jit.finish()?.kernel(id)
    }

    /// Whether generated code may use fused multiply-add (host FMA and not disabled).
    pub fn has_fma(&self) -> bool {
        self.isa.has_native_fma()
    }

    /// Math options matching this target.
    pub fn math_config(&self) -> MathConfig {
        MathConfig {
            fma: self.has_fma(),
        }
    }

    /// The target's pointer type.
    pub fn pointer_type(&self) -> Type {
        self.isa.pointer_type()
    }

    /// A stable description of the target (triple and enabled ISA flags), for compile-cache keys.
    pub fn target_key(&self) -> String {
        features::target_key(&*self.isa)
    }

    /// The kernel ABI signature: `fn(args: *const *mut u8)`, the platform's C calling convention.
    pub fn kernel_signature(&self) -> Signature {
        let mut sig = Signature::new(self.isa.default_call_conv());
        sig.params.push(AbiParam::new(self.isa.pointer_type()));
        sig
    }

    /// An empty signature in the platform's C calling convention, to fill with params/returns.
    pub fn signature(&self) -> Signature {
        Signature::new(self.isa.default_call_conv())
    }

    fn module(&mut self) -> Result<&mut JITModule, String> {
        if let Some(why) = &self.poisoned {
            return Err(format!(
                "the Jit is unusable after an earlier failure: {why}"
            ));
        }
        self.module
            .as_mut()
            .ok_or_else(|| "the Jit was already finished".to_string())
    }

    /// Declares a function: `Linkage::Local`/`Export` ones must then be defined with
    /// [`Jit::define_function`]; `Import` ones resolve to [`JitOptions::symbols`] or process symbols.
    pub fn declare_function(
        &mut self,
        name: &str,
        sig: &Signature,
        linkage: Linkage,
    ) -> Result<FuncId, String> {
        self.module()?
            .declare_function(name, linkage, sig)
            .map_err(|e| format!("declaring function '{name}': {e}"))
    }

    /// Declares and defines a kernel with the uniform ABI and `n_buffers` buffer pointers.
    ///
    /// `body` gets a builder positioned in the entry block (after the buffer pointers are loaded)
    /// and must leave it in an open block; the harness appends the `return`.
    pub fn define_kernel(
        &mut self,
        name: &str,
        n_buffers: usize,
        body: impl FnOnce(&mut FunctionBuilder, &mut FnEnv) -> Result<(), String>,
    ) -> Result<KernelId, String> {
        if self.kernels.iter().any(|(_, n, _)| n == name) {
            return Err(format!("kernel '{name}' is defined twice"));
        }
        let sig = self.kernel_signature();
        let id = self.declare_function(name, &sig, Linkage::Local)?;
        self.define(id, name, Some(n_buffers), body)?;
        self.kernels.push((id, name.to_string(), n_buffers));
        Ok(KernelId(id))
    }

    /// Defines a declared function. `body` gets a builder positioned in the entry block, whose
    /// parameters are [`FnEnv::params`], and must emit every `return` itself.
    pub fn define_function(
        &mut self,
        id: FuncId,
        body: impl FnOnce(&mut FunctionBuilder, &mut FnEnv) -> Result<(), String>,
    ) -> Result<(), String> {
        let module = self.module()?;
        let known = module
            .declarations()
            .get_functions()
            .any(|(fid, _)| fid == id);
        if !known {
            return Err(format!("{id} is not declared in this Jit"));
        }
        let name = module
            .declarations()
            .get_function_decl(id)
            .linkage_name(id)
            .into_owned();
        self.define(id, &name, None, body)
    }

    /// Builds, dumps and compiles one function; panics become errors and poison the Jit.
    fn define(
        &mut self,
        id: FuncId,
        name: &str,
        n_buffers: Option<usize>,
        body: impl FnOnce(&mut FunctionBuilder, &mut FnEnv) -> Result<(), String>,
    ) -> Result<(), String> {
        self.module()?;
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.define_inner(id, name, n_buffers, body)
        }));
        self.ctx.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // The builder may have been dropped unfinalized, leaving state behind.
                self.fctx = FunctionBuilderContext::new();
                Err(e)
            }
            Err(payload) => {
                let why = format!(
                    "panic while compiling '{name}': {}",
                    panic_message(&*payload)
                );
                self.fctx = FunctionBuilderContext::new();
                self.poisoned = Some(why.clone());
                Err(why)
            }
        }
    }

    fn define_inner(
        &mut self,
        id: FuncId,
        name: &str,
        n_buffers: Option<usize>,
        body: impl FnOnce(&mut FunctionBuilder, &mut FnEnv) -> Result<(), String>,
    ) -> Result<(), String> {
        let math = self.math_config();
        let Jit {
            module,
            ctx,
            fctx,
            isa,
            dump,
            ..
        } = self;
        let module = module.as_mut().ok_or("the Jit was already finished")?;
        ctx.clear();
        ctx.func.signature = module
            .declarations()
            .get_function_decl(id)
            .signature
            .clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());

        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        let buffers = match n_buffers {
            Some(n) => load_buffer_pointers(&mut b, params[0], n, isa.pointer_type())?,
            None => Vec::new(),
        };
        let mut env = FnEnv {
            module,
            name,
            params,
            buffers,
            math,
        };
        body(&mut b, &mut env).map_err(|e| format!("building '{name}': {e}"))?;
        if n_buffers.is_some() && !current_block_terminated(&b) {
            b.ins().return_(&[]);
        }
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());

        dump_clif(dump, name, &ctx.func)?;
        module
            .define_function(id, ctx)
            .map_err(|e| compile_error(name, &ctx.func, e))
    }

    /// Finalizes every defined function and returns the callable code.
    pub fn finish(mut self) -> Result<JitCode, String> {
        self.module()?;
        let mut module = self.module.take().ok_or("the Jit was already finished")?;
        if let Err(e) = module.finalize_definitions() {
            // SAFETY: no pointer into this module's memory was handed out yet.
            unsafe { module.free_memory() };
            return Err(format!("finalizing JIT code: {e}"));
        }
        let kernels = std::mem::take(&mut self.kernels);
        Ok(JitCode::new(module, kernels))
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        // A poisoned module may be inconsistent; leaking it is safer than freeing it.
        if let (Some(module), None) = (self.module.take(), &self.poisoned) {
            // SAFETY: `finish` takes the module before any code pointer leaves the Jit, so
            // nothing can point into a module still held here.
            unsafe { module.free_memory() };
        }
    }
}

/// Loads `args[0..n]` in the entry block (the args array is read-only during a call).
fn load_buffer_pointers(
    b: &mut FunctionBuilder,
    args: Value,
    n: usize,
    ptr: Type,
) -> Result<Vec<Value>, String> {
    let flags = ir::MemFlagsData::trusted().with_readonly().with_can_move();
    (0..n)
        .map(|i| {
            let offset = i32::try_from(i * ptr.bytes() as usize)
                .map_err(|_| format!("{n} kernel buffers is too many"))?;
            Ok(b.ins().load(ptr, flags, args, offset))
        })
        .collect()
}

fn current_block_terminated(b: &FunctionBuilder) -> bool {
    let Some(block) = b.current_block() else {
        return true;
    };
    b.func
        .layout
        .last_inst(block)
        .is_some_and(|inst| b.func.dfg.insts[inst].opcode().is_terminator())
}

fn dump_clif(dump: &ClifDump, name: &str, func: &ir::Function) -> Result<(), String> {
    let text = format!("; kiln function '{name}'\n{}", func.display());
    match dump {
        ClifDump::Off => Ok(()),
        ClifDump::Stderr => {
            eprintln!("{text}");
            Ok(())
        }
        ClifDump::Dir(dir) => {
            let file: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = dir.join(format!("{file}.clif"));
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, text))
                .map_err(|e| format!("KILN_DUMP_CLIF: cannot write {}: {e}", path.display()))
        }
    }
}

fn compile_error(name: &str, func: &ir::Function, e: ModuleError) -> String {
    match e {
        ModuleError::Compilation(CodegenError::Verifier(errors)) => format!(
            "CLIF verifier rejected '{name}':\n{}",
            cranelift_codegen::print_errors::pretty_verifier_error(func, None, errors)
        ),
        e => format!("compiling '{name}': {e}"),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
