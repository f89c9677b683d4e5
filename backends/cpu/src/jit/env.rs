//! What a function-body closure sees besides the `FunctionBuilder`: the function's parameters,
//! a kernel's buffer pointers (already loaded in the entry block), the math options of the
//! target, and access to other declared functions for `call`s.

use cranelift_codegen::ir::{FuncRef, Type, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};

use crate::math::MathConfig;

/// What a body-building closure can use besides the [`FunctionBuilder`].
pub struct FnEnv<'m> {
    pub(super) module: &'m mut JITModule,
    pub(super) name: &'m str,
    pub(super) params: Vec<Value>,
    pub(super) buffers: Vec<Value>,
    pub(super) math: MathConfig,
}

impl FnEnv<'_> {
    /// The function's parameters (for a kernel: the single `args` pointer).
    pub fn params(&self) -> &[Value] {
        &self.params
    }

    /// Buffer base pointers of a kernel, in ABI order (empty for non-kernel functions).
    pub fn buffers(&self) -> &[Value] {
        &self.buffers
    }

    /// Buffer `index`'s base pointer, or an error naming the kernel and its buffer count.
    pub fn buffer(&self, index: usize) -> Result<Value, String> {
        self.buffers.get(index).copied().ok_or_else(|| {
            format!(
                "kernel '{}': buffer {index} requested but the kernel has {} buffers",
                self.name,
                self.buffers.len()
            )
        })
    }

    /// Math options for this target (use with the `crate::math` emitters).
    pub fn math(&self) -> MathConfig {
        self.math
    }

    /// The target's pointer type (`i64` on x86-64).
    pub fn pointer_type(&self) -> Type {
        self.module.target_config().pointer_type()
    }

    /// The name of the function being built (for error messages).
    pub fn name(&self) -> &str {
        self.name
    }

    /// A reference through which `b` can `call` the declared function `id`.
    pub fn func_ref(&mut self, b: &mut FunctionBuilder, id: FuncId) -> Result<FuncRef, String> {
        let known = self
            .module
            .declarations()
            .get_functions()
            .any(|(fid, _)| fid == id);
        if !known {
            return Err(format!(
                "function '{}': {id} is not declared in this Jit",
                self.name
            ));
        }
        Ok(self.module.declare_func_in_func(id, b.func))
    }
}
