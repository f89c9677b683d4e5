//! The renderer: a lowered [`Program`] becomes one OpenCL C source with one `__kernel` per
//! program kernel (main op and fused epilogue in one function), plus the launch description
//! the runtime needs (arguments, global and local sizes). It depends on nothing but kiln-ir, so
//! it builds and is tested without an OpenCL installation.
//!
//! Invariants:
//! - Every dim is a literal in the source: a rendered program is specialised to its shapes, and
//!   the source text alone identifies it (the runtime caches builds by source).
//! - Kernel `i` of the program is the function `k<i>`, writes only its output buffer, and reads
//!   only the buffers its `Kernel::reads` lists; a kernel whose output has no elements is not
//!   launched at all (OpenCL rejects empty ranges).
//! - Nothing here panics on a malformed program: a kernel the renderer cannot express is an
//!   [`Error::Unsupported`] naming the kernel; run-time failures that the shapes already decide
//!   (an average pool window of only padding, argmax over an empty axis) become the launch's
//!   `failure`, raised when the program runs, as the reference evaluator raises them.
//!
//! One file per op family, named as in [`kiln_ir::schema::OpFamily`] (`elementwise`, `matmul`,
//! `window`, `reduce`, `normalize`, `movement`, `state`); `expr` (scalar C pieces and the fused
//! epilogue) and `kernel` (a kernel's arguments and addressing) are shared helpers, and this
//! file dispatches on the main op.

mod elementwise;
mod expr;
mod kernel;
mod matmul;
mod movement;
mod normalize;
mod reduce;
mod state;
mod window;

use kernel::KernelSrc;
use kiln_ir::lower::axis_index;
use kiln_ir::op::Op;
use kiln_ir::program::{BufferId, Program};
use kiln_ir::{DType, Error, Result};
use std::fmt::Write;

/// What the device allows, as far as the renderer cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most work-items in one work-group (CL_DEVICE_MAX_WORK_GROUP_SIZE).
    pub max_work_group: usize,
    /// Bytes of local memory per work-group (CL_DEVICE_LOCAL_MEM_SIZE).
    pub local_mem_bytes: usize,
}

impl Default for Limits {
    /// The OpenCL 1.2 minimums for a full-profile device (256 work-items is what most GPUs and
    /// PoCL give; 16 KiB is the spec's minimum local memory).
    fn default() -> Limits {
        Limits {
            max_work_group: 256,
            local_mem_bytes: 16 * 1024,
        }
    }
}

/// One kernel argument, in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// The arena holding every temporary (`__global uchar*`).
    Arena,
    /// A feed, variable, constant or output buffer.
    Buffer(BufferId),
    /// The run's error flag (`__global int[4]`): 0, or the failing kernel's index + 1 followed by
    /// the offending value's low and high 32 bits and its flat position in the indices.
    ErrorFlag,
}

/// How one program kernel is launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The C function name.
    pub entry: String,
    /// Its arguments.
    pub args: Vec<Arg>,
    /// Global work size, one entry per dimension (1 to 3), a multiple of `local`.
    pub global: Vec<usize>,
    /// Local work size, same length as `global`.
    pub local: Vec<usize>,
}

/// A rendered program kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedKernel {
    /// `None` when the output has no elements (nothing to launch).
    pub launch: Option<Launch>,
    /// A failure the shapes already decide; the run returns it when it reaches this kernel.
    pub failure: Option<String>,
}

/// A whole program as OpenCL C.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The source of every kernel, prelude first.
    pub source: String,
    /// One entry per program kernel, in program order.
    pub kernels: Vec<RenderedKernel>,
}

/// What an op renderer produces for one kernel: the function body and its launch shape.
pub(crate) struct Body {
    /// Text between `__kernel` and `void` (e.g. `reqd_work_group_size`), may be empty.
    pub attrs: String,
    /// Statements of the function.
    pub code: String,
    /// Global work size.
    pub global: Vec<usize>,
    /// Local work size.
    pub local: Vec<usize>,
    /// A shape-decided run-time failure.
    pub failure: Option<String>,
}

/// Renders every kernel of `program` for a device with `limits`. The program must be valid
/// ([`Program::validate`]); an unsupported kernel is an error naming it.
pub fn render(program: &Program, limits: &Limits) -> Result<Rendered> {
    program.validate()?;
    let mut source = String::from(expr::PRELUDE);
    source.push('\n');
    let mut kernels = Vec::with_capacity(program.kernels.len());
    for index in 0..program.kernels.len() {
        let kernel = &program.kernels[index];
        let unsupported = |reason: String| Error::Unsupported {
            backend: "opencl".into(),
            node: kernel.name.clone(),
            op: kernel.op_name().into(),
            reason,
        };
        if program.buffer(kernel.output).numel() == 0 {
            kernels.push(RenderedKernel {
                launch: None,
                failure: None,
            });
            continue;
        }
        let mut src = KernelSrc::new(program, index);
        let body = render_kernel(&mut src, limits).map_err(unsupported)?;
        let entry = src.entry.clone();
        let (text, args) = src.finish(&body.attrs, &body.code);
        source.push_str(&text);
        kernels.push(RenderedKernel {
            launch: Some(Launch {
                entry,
                args,
                global: body.global,
                local: body.local,
            }),
            failure: body.failure,
        });
    }
    Ok(Rendered { source, kernels })
}

/// Dispatches on the main op.
fn render_kernel(src: &mut KernelSrc<'_>, limits: &Limits) -> Result<Body, String> {
    let out = src.out();
    if !src.kernel.epilogue.is_identity() && out.dtype != DType::F32 {
        return Err(format!(
            "an elementwise epilogue on a {} result (epilogues compute in f32)",
            out.dtype
        ));
    }
    let Some(main) = &src.kernel.main else {
        return elementwise::elementwise(src, limits);
    };
    match main {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul::matmul(src, limits, *transpose_a, *transpose_b),
        Op::Conv2d(a) => window::conv2d(src, limits, a),
        Op::DepthwiseConv2d(a) => window::depthwise(src, limits, a),
        Op::MaxPool(a) => window::pool(src, limits, a, false),
        Op::AvgPool(a) => window::pool(src, limits, a, true),
        Op::Reduce { op, axes, keepdims } => {
            let axes: Vec<usize> = axes.iter().flatten().map(|&a| axis_index(a)).collect();
            reduce::reduce(src, limits, *op, &axes, *keepdims)
        }
        Op::Softmax { axis } => reduce::softmax(src, limits, axis_index(*axis), false),
        Op::LogSoftmax { axis } => reduce::softmax(src, limits, axis_index(*axis), true),
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => normalize::lrn(src, limits, *depth_radius, [bias.0, alpha.0, beta.0]),
        Op::ArgMax { axis, .. } => reduce::argmax(src, limits, axis_index(*axis)),
        Op::Reshape { .. } => movement::reshape(src, limits),
        Op::Transpose { perm } => movement::transpose(src, limits, perm),
        Op::Concat { axis } => movement::concat(src, limits, axis_index(*axis)),
        Op::Slice { begin, .. } => movement::slice(src, limits, begin),
        Op::Pad {
            paddings,
            constant_value,
        } => movement::pad(src, limits, paddings, constant_value.0),
        Op::BatchNorm {
            epsilon,
            data_format,
        } => normalize::batch_norm(src, limits, epsilon.0, *data_format),
        Op::Assign(op) => state::assign(src, limits, *op),
        Op::Gather { axis } => movement::gather(src, limits, axis_index(*axis)),
        Op::Cast { .. } => elementwise::cast(src, limits),
        Op::Conv2dBackpropInput { attrs, .. } => {
            window::conv2d_backprop_input(src, limits, attrs, false)
        }
        Op::Conv2dBackpropFilter { attrs, .. } => {
            window::conv2d_backprop_filter(src, limits, attrs, false)
        }
        Op::DepthwiseConv2dBackpropInput { attrs, .. } => {
            window::conv2d_backprop_input(src, limits, attrs, true)
        }
        Op::DepthwiseConv2dBackpropFilter { attrs, .. } => {
            window::conv2d_backprop_filter(src, limits, attrs, true)
        }
        Op::MaxPoolGrad(a) => window::pool_grad(src, limits, a, true),
        Op::AvgPoolGrad { attrs, .. } => window::pool_grad(src, limits, attrs, false),
        Op::SoftmaxCrossEntropyWithLogits => reduce::cross_entropy(src, limits, false),
        Op::SparseSoftmaxCrossEntropyWithLogits => reduce::cross_entropy(src, limits, true),
        Op::OneHot {
            depth,
            on_value,
            off_value,
            axis,
        } => movement::one_hot(
            src,
            limits,
            *depth,
            [on_value.0, off_value.0],
            axis_index(*axis),
        ),
        Op::GatherGrad { axis, .. } => movement::gather_grad(src, limits, axis_index(*axis)),
        // Program::validate rejects these as main ops; say so rather than panic.
        Op::Input(_)
        | Op::Var(_)
        | Op::Const(_)
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::BiasAdd { .. }
        | Op::Fused(_)
        | Op::BroadcastLike
        // Lowering makes stop_gradient a reshape (see `normalize_main_op`).
        | Op::StopGradient => Err(format!("{} is not a kernel's main op", main.name())),
        Op::Compare(c) => elementwise::compare(src, limits, *c),
        Op::Logical(l) => elementwise::logical(src, limits, *l),
        Op::LogicalNot => elementwise::logical_not(src, limits),
        Op::Select => elementwise::select(src, limits),
        | Op::Group => Err(format!("{} is not a kernel's main op", main.name())),
        Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam => {
            state::apply(src, limits, main)
        }
    }
}

/// Work-items per group for one-item-per-element kernels: 64 (two warps, one AMD wavefront),
/// or less when the device allows less.
pub(crate) fn group_1d(limits: &Limits) -> usize {
    limits.max_work_group.clamp(1, 64)
}

/// The body of a kernel with one work-item per output element: `main` holds statements that
/// define `m`, the main result at flat output index `gid` (empty for an elementwise kernel,
/// which has no main result); the epilogue follows and the value is stored at `gid`.
pub(crate) fn per_element(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    main: &str,
) -> Result<Body, String> {
    let n = src.out().numel();
    let it = src.it;
    let mut code = String::new();
    let _ = writeln!(code, "    const {it} gid = ({it})get_global_id(0);");
    let _ = writeln!(code, "    if (gid >= {n}) return;");
    code.push_str(main);
    let has_main = !main.is_empty();
    let value = expr::epilogue(src, &mut code, "gid", has_main.then_some("m"))?;
    let out = src.out_name();
    let _ = writeln!(code, "    {out}[gid] = {value};");
    let local = group_1d(limits);
    Ok(Body {
        attrs: String::new(),
        code,
        global: vec![n.div_ceil(local) * local],
        local: vec![local],
        failure: None,
    })
}

/// The C statements storing `main` (an f32 expression) at flat output index `gid` through the
/// epilogue; used by kernels that compute several outputs per work-item.
pub(crate) fn store_f32(src: &mut KernelSrc<'_>, gid: &str, main: &str) -> Result<String, String> {
    let mut code = String::new();
    let value = expr::epilogue(src, &mut code, gid, Some(main))?;
    let out = src.out_name();
    let _ = writeln!(code, "    {out}[{gid}] = {value};");
    Ok(code)
}

#[cfg(test)]
mod tests;
