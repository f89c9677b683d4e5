//! Finished JIT code: the module that owns the executable memory, shared through an `Arc`, and
//! kernel handles that keep it alive.
//!
//! Invariant: a [`CompiledKernel`]'s entry pointer points into the memory of the `JITModule`
//! its `Arc<CodeMemory>` owns, and that memory is freed only when the last `Arc` drops.

use std::sync::Arc;

use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};

/// Identifies a kernel defined with [`super::Jit::define_kernel`] (so it has the kernel ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelId(pub(super) FuncId);

impl KernelId {
    /// The underlying Cranelift function id (for `call`s from other functions of the same Jit).
    pub fn func_id(self) -> FuncId {
        self.0
    }
}

/// The kernel ABI as a Rust type.
type KernelFn = unsafe extern "C" fn(args: *const *mut u8);

/// Owner of finalized code memory; frees it on drop.
struct CodeMemory {
    /// `Some` until drop.
    module: Option<JITModule>,
}

// SAFETY: after `finalize_definitions` the module is never read or written again except by
// `Drop`, which has exclusive access; the code memory it owns is immutable and executable, so
// sharing or sending the owner between threads cannot race. (`JITModule` is not `Send`/`Sync`
// only because it stores raw pointers and a `RefCell` symbol cache used while compiling.)
unsafe impl Send for CodeMemory {}
// SAFETY: see `Send`: no `&self` method exists, so shared references allow no access at all.
unsafe impl Sync for CodeMemory {}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: every pointer into this memory is held by a `CompiledKernel` or `JitCode`
            // together with an `Arc` to this owner, so when the last `Arc` drops no kernel is
            // running and none can be called again.
            unsafe { module.free_memory() };
        }
    }
}

/// The callable result of [`super::Jit::finish`].
pub struct JitCode {
    memory: Arc<CodeMemory>,
    /// (id, name, buffer count) of every kernel, in definition order.
    kernels: Vec<(FuncId, String, usize)>,
}

impl JitCode {
    pub(super) fn new(module: JITModule, kernels: Vec<(FuncId, String, usize)>) -> JitCode {
        JitCode {
            memory: Arc::new(CodeMemory {
                module: Some(module),
            }),
            kernels,
        }
    }

    fn module(&self) -> Result<&JITModule, String> {
        self.memory
            .module
            .as_ref()
            .ok_or_else(|| "JIT code memory already freed".to_string())
    }

    /// A handle to kernel `id`, or an error if `id` came from another Jit.
    pub fn kernel(&self, id: KernelId) -> Result<CompiledKernel, String> {
        let (_, name, n_buffers) = self
            .kernels
            .iter()
            .find(|(fid, _, _)| *fid == id.0)
            .ok_or_else(|| format!("{:?} is not a kernel of this JitCode", id.0))?;
        let ptr = self.module()?.get_finalized_function(id.0);
        // SAFETY: `define_kernel` compiled this function with the kernel signature
        // (one pointer parameter, no results, the platform C calling convention).
        let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        Ok(CompiledKernel {
            entry,
            name: name.as_str().into(),
            n_buffers: *n_buffers,
            _memory: Arc::clone(&self.memory),
        })
    }

    /// A handle to the kernel called `name`.
    pub fn kernel_by_name(&self, name: &str) -> Result<CompiledKernel, String> {
        let (id, _, _) = self
            .kernels
            .iter()
            .find(|(_, n, _)| n == name)
            .ok_or_else(|| format!("no kernel named '{name}' in this JitCode"))?;
        self.kernel(KernelId(*id))
    }

    /// Entry address of any defined function (kernel or not). The address is valid only while
    /// this `JitCode` (or a kernel taken from it) is alive; casting it to the right `fn` type and
    /// calling it is up to the caller.
    pub fn function_address(&self, id: FuncId) -> Result<*const u8, String> {
        let module = self.module()?;
        let defined = module
            .declarations()
            .get_functions()
            .any(|(fid, decl)| fid == id && decl.linkage.is_definable());
        if !defined {
            return Err(format!("{id} is not a function defined in this JitCode"));
        }
        Ok(module.get_finalized_function(id))
    }
}

/// A compiled kernel: `extern "C" fn(args: *const *mut u8)` plus a share of its code memory.
///
/// `Send + Sync`: the code is immutable and the memory outlives every handle, so several threads
/// may call the same kernel at once (on disjoint outputs, which is the caller's business).
#[derive(Clone)]
pub struct CompiledKernel {
    entry: KernelFn,
    name: Arc<str>,
    n_buffers: usize,
    _memory: Arc<CodeMemory>,
}

impl std::fmt::Debug for CompiledKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledKernel")
            .field("name", &self.name)
            .field("n_buffers", &self.n_buffers)
            .finish_non_exhaustive()
    }
}

impl CompiledKernel {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many buffer pointers the kernel reads from its `args` array.
    pub fn n_buffers(&self) -> usize {
        self.n_buffers
    }

    /// Runs the kernel on `buffers` (its `args` array, in the order the code generator chose).
    ///
    /// Returns an error, without running anything, when `buffers.len()` differs from the count
    /// the kernel was defined with.
    ///
    /// # Safety
    /// The generated code reads and writes through these pointers exactly as the code generator
    /// laid out, without checks. The caller guarantees that every pointer is valid for all the
    /// reads and writes the kernel makes (extent and alignment as generated), that buffers the
    /// kernel writes are not accessed by anyone else during the call, and that no buffer it
    /// writes overlaps another one it reads unless the kernel was generated for that aliasing.
    pub unsafe fn call(&self, buffers: &[*mut u8]) -> Result<(), String> {
        if buffers.len() != self.n_buffers {
            return Err(format!(
                "kernel '{}' takes {} buffers, got {}",
                self.name,
                self.n_buffers,
                buffers.len()
            ));
        }
        // SAFETY: `entry` has the kernel ABI (see `JitCode::kernel`) and its code memory is
        // kept alive by `_memory`; the args array has exactly the `n_buffers` entries the kernel
        // loads; the pointers' validity is the caller's contract above.
        unsafe { (self.entry)(buffers.as_ptr()) };
        Ok(())
    }
}
