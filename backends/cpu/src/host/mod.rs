//! Host kernels: plain, safe Rust for the ops that are not worth generated code — `lrn`,
//! `argmax`, `gather`, `cast`, the comparisons, logical ops and `select` (bool and integer
//! operands), grouped NCHW `conv2d` (grouped NHWC convolutions run on the GEMM micro-kernels,
//! see [`crate::gemm::conv2d_nhwc_grouped`]) — and the backward window ops, whose convolution
//! contractions call the SGEMM micro-kernels from here (`window/conv_backprop.rs`; the pool
//! gradients are plain loops).
//! `argmax`, `gather`, `gather_grad`, `one_hot`, `cast`, the softmax cross entropies (one pass
//! per row), and grouped NCHW `conv2d` (grouped NHWC convolutions run on the
//! `argmax`, `gather`, `cast`, the optimizer updates, and grouped NCHW `conv2d` (grouped NHWC convolutions run on the
//! GEMM micro-kernels, see [`crate::gemm::conv2d_nhwc_grouped`]).
//!
//! [`HostKernel::plan`] checks everything about a kernel that is known at compile time
//! (operand count, dtypes, dims and attributes against each other), so that running it can
//! only fail on data: a `gather` index out of range is an error naming the index, never an
//! out-of-bounds read. Kernels see their buffers as typed slices ([`View`], [`ViewMut`]) that
//! the runtime makes from the arena; nothing here touches a raw pointer. Bool buffers are seen
//! as bytes (0 or 1), so a stray byte value can never make an invalid `bool`.
//!
//! A host kernel stores its main result; a non-identity epilogue (only `lrn`, `gather` and
//! `cast` to f32 could get one) runs afterwards as the ordinary in-place epilogue stage the
//! planner adds for every kernel whose epilogue was not folded.
//!
//! One file per op family, named as in [`kiln_ir::schema::OpFamily`]: `elementwise` (cast),
//! `window` (grouped conv2d), `reduce` (argmax), `normalize` (lrn), `movement` (gather),
//! `state` (the optimizer updates). This
//! file holds what they share: the planner, its checks, and the buffer views.

mod elementwise;
mod movement;
mod normalize;
mod reduce;
mod state;
mod window;

pub use window::{ChannelOp, ChannelWindow, depthwise_pointwise};

use kiln_ir::lower::axis_index;
use kiln_ir::op::{CompareOp, LogicalOp, Op};
use kiln_ir::program::{BufferId, Kernel, Program};
use kiln_ir::shape::fmt_dims;
use kiln_ir::shape::{Shape, TensorType};
use kiln_ir::{ConvAttrs, DType, DataFormat, PoolAttrs};

/// Which host routine a kernel runs, with the attributes it needs in the routine's types.
#[derive(Clone, Debug, PartialEq)]
pub enum HostOp {
    /// `lrn(x)` over the last axis of a rank-4 f32 tensor.
    Lrn {
        /// Half-width of the channel window.
        depth_radius: usize,
        /// Added to the weighted sum of squares.
        bias: f32,
        /// Weight of the sum of squares.
        alpha: f32,
        /// Exponent.
        beta: f32,
    },
    /// `argmax(x)` along `axis` into an i32 or i64 output.
    ArgMax {
        /// The reduced axis, in `0..rank`.
        axis: usize,
    },
    /// `gather(params, indices)` along `axis` of params.
    Gather {
        /// The axis of params, in `0..rank`.
        axis: usize,
    },
    /// `cast(x)` to the output's dtype.
    Cast,
    /// A grouped `conv2d` in NCHW layout (`x` channels a multiple of the filter's `cin`).
    GroupedConv(ConvAttrs),
    /// `equal(a, b)`, `less(a, b)`, ...: one dtype in, bool out, numpy broadcasting.
    Compare(CompareOp),
    /// `logical_and(a, b)` / `logical_or(a, b)`, numpy broadcasting.
    Logical(LogicalOp),
    /// `logical_not(x)`.
    LogicalNot,
    /// `select(cond, a, b)`, the three broadcast to the output.
    Select,
    /// `conv2d_backprop_input(w, dy)` on the SGEMM micro-kernels, then col2im.
    Conv2dBackpropInput(ConvAttrs),
    /// `conv2d_backprop_filter(x, dy)` on the SGEMM micro-kernels, over im2col rows.
    Conv2dBackpropFilter(ConvAttrs),
    /// `max_pool_grad(orig_input, orig_output, grad)`.
    MaxPoolGrad(PoolAttrs),
    /// `avg_pool_grad(grad)`.
    AvgPoolGrad(PoolAttrs),
    /// `depthwise_conv2d_backprop_input(w, dy)`: the grouped conv2d backprop with one group per
    /// channel (the filter `[kh, kw, cin, mult]` read as `[kh, kw, 1, cin * mult]`).
    DepthwiseBackpropInput(ConvAttrs),
    /// `depthwise_conv2d_backprop_filter(x, dy)`, likewise.
    DepthwiseBackpropFilter(ConvAttrs),
    /// `softmax_cross_entropy_with_logits(logits, labels)`, one pass per row.
    CrossEntropy,
    /// `sparse_softmax_cross_entropy_with_logits(logits, labels)`, one pass per row.
    SparseCrossEntropy,
    /// `one_hot(indices)` with the new axis at `axis` of the output.
    OneHot {
        /// Size of the new axis.
        depth: usize,
        /// Value at the index.
        on: f32,
        /// Value elsewhere.
        off: f32,
        /// The new axis, in `0..rank(output)`.
        axis: usize,
    },
    /// `gather_grad(grad, indices)`: a scatter-add into axis `axis` of the output.
    GatherGrad {
        /// The scattered axis of the output, in `0..rank(output)`.
        axis: usize,
    },
    /// An optimizer update (`apply_*`, the op itself), see `state.rs`.
    Apply(Op),
}

/// A buffer a host kernel reads or writes, with its compile-time type.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBuffer {
    /// The buffer.
    pub id: BufferId,
    /// Its element type.
    pub dtype: DType,
    /// Its dims.
    pub dims: Vec<usize>,
}

/// One host kernel: the op, its operands and its output, all checked against each other.
#[derive(Clone, Debug, PartialEq)]
pub struct HostKernel {
    /// What it computes.
    pub op: HostOp,
    /// Operand buffers in the op's order.
    pub inputs: Vec<HostBuffer>,
    /// The buffer written.
    pub output: HostBuffer,
}

/// A read-only typed view of a buffer.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// i32 elements.
    I32(&'a [i32]),
    /// i64 elements.
    I64(&'a [i64]),
    /// bool elements as bytes (nonzero is true).
    Bool(&'a [u8]),
}

/// A writable typed view of a kernel's output.
#[derive(Debug)]
pub enum ViewMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// i32 elements.
    I32(&'a mut [i32]),
    /// i64 elements.
    I64(&'a mut [i64]),
    /// bool elements as bytes; kernels store only 0 and 1.
    Bool(&'a mut [u8]),
}

impl View<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            View::F32(v) => v.len(),
            View::I32(v) => v.len(),
            View::I64(v) => v.len(),
            View::Bool(v) => v.len(),
        }
    }

    /// Whether the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ViewMut<'_> {
    /// Number of elements.
    fn len(&self) -> usize {
        match self {
            ViewMut::F32(v) => v.len(),
            ViewMut::I32(v) => v.len(),
            ViewMut::I64(v) => v.len(),
            ViewMut::Bool(v) => v.len(),
        }
    }
}

impl HostKernel {
    /// The host kernel for `kernel`, or `None` when its op runs elsewhere (generated code or a
    /// micro-kernel). Errors describe operands that do not fit the op.
    pub fn plan(program: &Program, kernel: &Kernel) -> Result<Option<HostKernel>, String> {
        let op = match &kernel.main {
            Some(Op::Lrn {
                depth_radius,
                bias,
                alpha,
                beta,
            }) => HostOp::Lrn {
                depth_radius: *depth_radius,
                bias: bias.0,
                alpha: alpha.0,
                beta: beta.0,
            },
            Some(Op::ArgMax { axis, .. }) => HostOp::ArgMax {
                axis: axis_index(*axis),
            },
            Some(Op::Gather { axis }) => HostOp::Gather {
                axis: axis_index(*axis),
            },
            Some(Op::Cast { .. }) => HostOp::Cast,
            Some(Op::SoftmaxCrossEntropyWithLogits) => HostOp::CrossEntropy,
            Some(Op::SparseSoftmaxCrossEntropyWithLogits) => HostOp::SparseCrossEntropy,
            Some(Op::OneHot {
                depth,
                on_value,
                off_value,
                axis,
            }) => HostOp::OneHot {
                depth: *depth,
                on: on_value.0,
                off: off_value.0,
                axis: axis_index(*axis),
            },
            Some(Op::GatherGrad { axis, .. }) => HostOp::GatherGrad {
                axis: axis_index(*axis),
            },
            Some(Op::Conv2d(a))
                if a.data_format == DataFormat::Nchw && conv_groups(program, kernel) > 1 =>
            {
                HostOp::GroupedConv(*a)
            }
            Some(Op::Compare(c)) => HostOp::Compare(*c),
            Some(Op::Logical(l)) => HostOp::Logical(*l),
            Some(Op::LogicalNot) => HostOp::LogicalNot,
            Some(Op::Select) => HostOp::Select,
            Some(Op::Conv2dBackpropInput { attrs, .. }) => HostOp::Conv2dBackpropInput(*attrs),
            Some(Op::Conv2dBackpropFilter { attrs, .. }) => HostOp::Conv2dBackpropFilter(*attrs),
            Some(Op::MaxPoolGrad(a)) => HostOp::MaxPoolGrad(*a),
            Some(Op::AvgPoolGrad { attrs, .. }) => HostOp::AvgPoolGrad(*attrs),
            Some(Op::DepthwiseConv2dBackpropInput { attrs, .. }) => {
                HostOp::DepthwiseBackpropInput(*attrs)
            }
            Some(Op::DepthwiseConv2dBackpropFilter { attrs, .. }) => {
                HostOp::DepthwiseBackpropFilter(*attrs)
            }
            Some(op @ (Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam)) => {
                HostOp::Apply(op.clone())
            }
            _ => return Ok(None),
        };
        let buffer = |id: BufferId| -> Result<HostBuffer, String> {
            let b = program
                .buffers
                .get(id.index())
                .ok_or_else(|| format!("buffer {id} does not exist"))?;
            Ok(HostBuffer {
                id,
                dtype: b.dtype,
                dims: b.dims.to_vec(),
            })
        };
        let host = HostKernel {
            op,
            inputs: kernel
                .inputs
                .iter()
                .map(|&id| buffer(id))
                .collect::<Result<_, _>>()?,
            output: buffer(kernel.output)?,
        };
        host.check()?;
        if let Some(main) = &kernel.main
            && main.family() == kiln_ir::schema::OpFamily::Window
        {
            // The backward window ops: their shape rules (dy against the forward output) are
            // kiln-ir's inference, rerun on the concrete buffers.
            host.check_inferred(main)?;
        }
        Ok(Some(host))
    }

    /// Errors unless kiln-ir's inference of `op` on the operand buffers gives the output
    /// buffer's type exactly.
    fn check_inferred(&self, op: &Op) -> Result<(), String> {
        let ty = |b: &HostBuffer| TensorType::new(b.dtype, Shape::known(&b.dims));
        let types: Vec<TensorType> = self.inputs.iter().map(ty).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let want = kiln_ir::infer::infer(op, &refs)?;
        if want != ty(&self.output) {
            return Err(format!(
                "{} of {} gives {want}, but the output buffer is {}",
                op.name(),
                types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                ty(&self.output)
            ));
        }
        Ok(())
    }

    /// Checks operand count, dtypes and dims against the op (the run relies on it).
    fn check(&self) -> Result<(), String> {
        let (ins, out) = (&self.inputs, &self.output);
        let arity = match &self.op {
            HostOp::Gather { .. }
            | HostOp::GroupedConv(_)
            | HostOp::Compare(_)
            | HostOp::Logical(_) => 2,
            HostOp::Select => 3,
            HostOp::Conv2dBackpropInput(_)
            | HostOp::Conv2dBackpropFilter(_)
            | HostOp::DepthwiseBackpropInput(_)
            | HostOp::DepthwiseBackpropFilter(_) => 2,
            HostOp::MaxPoolGrad(_) => 3,
            HostOp::CrossEntropy | HostOp::SparseCrossEntropy | HostOp::GatherGrad { .. } => 2,
            HostOp::Apply(op) => return state::check(op, ins, out),
            _ => 1,
        };
        if ins.len() != arity {
            return Err(format!("expected {arity} operand(s), got {}", ins.len()));
        }
        let x = &ins[0];
        let describe = |b: &HostBuffer| format!("{}{}", b.dtype, fmt_dims(&b.dims));
        let mismatch = |want: String| {
            Err(format!(
                "operands {} do not give output {}: expected {want}",
                ins.iter().map(describe).collect::<Vec<_>>().join(", "),
                describe(out)
            ))
        };
        match &self.op {
            HostOp::Lrn { .. } => {
                let same = out.dtype == DType::F32 && out.dims == x.dims;
                if x.dtype != DType::F32 || x.dims.len() != 4 || !same {
                    return mismatch("f32 rank 4 in and out, same dims".into());
                }
            }
            HostOp::ArgMax { axis } => {
                let mut want = x.dims.clone();
                if *axis >= want.len() || x.dtype == DType::Bool {
                    return mismatch(format!("a numeric operand with an axis {axis}"));
                }
                let n = want.remove(*axis);
                let numel: usize = want.iter().product();
                if out.dims != want || !matches!(out.dtype, DType::I32 | DType::I64) {
                    return mismatch(format!("i32 or i64 {}", fmt_dims(&want)));
                }
                if n == 0 && numel > 0 {
                    return mismatch(format!("a non-empty axis {axis}"));
                }
            }
            HostOp::Gather { axis } => {
                let idx = &ins[1];
                if *axis >= x.dims.len() || !matches!(idx.dtype, DType::I32 | DType::I64) {
                    return mismatch(format!("i32 or i64 indices and an axis {axis} of params"));
                }
                let mut want = x.dims[..*axis].to_vec();
                want.extend_from_slice(&idx.dims);
                want.extend_from_slice(&x.dims[axis + 1..]);
                if out.dims != want || out.dtype != x.dtype {
                    return mismatch(format!("{}{}", x.dtype, fmt_dims(&want)));
                }
            }
            HostOp::Cast => {
                if out.dims != x.dims {
                    return mismatch(format!("dims {}", fmt_dims(&x.dims)));
                }
            }
            HostOp::GroupedConv(attrs) => {
                window::check(attrs, x, &ins[1], out)?;
            }
            HostOp::Compare(c) => {
                let y = &ins[1];
                let dtype_ok = x.dtype == y.dtype && !(c.is_ordering() && x.dtype == DType::Bool);
                if !dtype_ok || out.dtype != DType::Bool || !broadcasts_to(ins, &out.dims) {
                    return mismatch("operands of one dtype broadcasting to a bool output".into());
                }
            }
            HostOp::Logical(_) | HostOp::LogicalNot => {
                let bools = ins.iter().chain([out]).all(|b| b.dtype == DType::Bool);
                let dims_ok = match self.op {
                    HostOp::LogicalNot => x.dims == out.dims,
                    _ => broadcasts_to(ins, &out.dims),
                };
                if !bools || !dims_ok {
                    return mismatch("bool operands broadcasting to a bool output".into());
                }
            }
            HostOp::Select => {
                let (a, b) = (&ins[1], &ins[2]);
                let typed = x.dtype == DType::Bool && a.dtype == b.dtype && out.dtype == a.dtype;
                if !typed || !broadcasts_to(ins, &out.dims) {
                    return mismatch(
                        "a bool cond and a, b of the output's dtype, broadcasting".into(),
                    );
                }
            }
            // Checked against kiln-ir's inference in `plan` (`check_inferred`).
            HostOp::Conv2dBackpropInput(_)
            | HostOp::Conv2dBackpropFilter(_)
            | HostOp::MaxPoolGrad(_)
            | HostOp::AvgPoolGrad(_)
            | HostOp::DepthwiseBackpropInput(_)
            | HostOp::DepthwiseBackpropFilter(_) => {}
            HostOp::CrossEntropy | HostOp::SparseCrossEntropy => {
                let labels = &ins[1];
                let sparse = self.op == HostOp::SparseCrossEntropy;
                let rows = x.dims.split_last().map(|(_, r)| r.to_vec());
                let labels_fit = if sparse {
                    matches!(labels.dtype, DType::I32 | DType::I64)
                        && Some(&labels.dims) == rows.as_ref()
                } else {
                    labels.dtype == DType::F32 && labels.dims == x.dims
                };
                let classes = x.dims.last().copied().unwrap_or(0);
                let out_fits = out.dtype == DType::F32 && Some(&out.dims) == rows.as_ref();
                if x.dtype != DType::F32 || classes == 0 || !labels_fit || !out_fits {
                    return mismatch("f32 logits with classes, labels to match, f32 rows".into());
                }
            }
            HostOp::OneHot { depth, axis, .. } => {
                let mut want = x.dims.clone();
                if *axis > want.len() || !matches!(x.dtype, DType::I32 | DType::I64) {
                    return mismatch(format!("i32 or i64 indices and an axis {axis}"));
                }
                want.insert(*axis, *depth);
                if out.dims != want || out.dtype != DType::F32 {
                    return mismatch(format!("f32{}", fmt_dims(&want)));
                }
            }
            HostOp::GatherGrad { axis } => {
                let idx = &ins[1];
                let ir = idx.dims.len();
                let fits = *axis < out.dims.len()
                    && matches!(idx.dtype, DType::I32 | DType::I64)
                    && x.dtype == DType::F32
                    && out.dtype == DType::F32;
                let mut want = out.dims.clone();
                if fits {
                    want.splice(*axis..axis + 1, idx.dims.iter().copied());
                }
                if !fits || x.dims != want || want.len() + 1 != out.dims.len() + ir {
                    return mismatch(format!("f32 grad with i32 or i64 indices at axis {axis}"));
                }
            }
            HostOp::Apply(op) => state::check(op, ins, out)?,
        }
        Ok(())
    }

    /// Runs the kernel on views of its buffers (`inputs` in operand order, each with the
    /// dtype and element count [`HostKernel::plan`] recorded).
    pub fn run(&self, inputs: &[View<'_>], out: ViewMut<'_>) -> Result<(), String> {
        let dims = |i: usize| self.inputs[i].dims.as_slice();
        match (&self.op, inputs) {
            (
                HostOp::Lrn {
                    depth_radius,
                    bias,
                    alpha,
                    beta,
                },
                [View::F32(x)],
            ) => match out {
                ViewMut::F32(y) => {
                    normalize::lrn(x, dims(0), *depth_radius, [*bias, *alpha, *beta], y);
                    Ok(())
                }
                _ => Err(self.bad_views()),
            },
            (HostOp::ArgMax { axis }, [x]) => reduce::argmax(*x, dims(0), *axis, out),
            (HostOp::Gather { axis }, [params, indices]) => {
                movement::gather(*params, dims(0), *indices, *axis, out)
            }
            (HostOp::Cast, [x]) => elementwise::cast(*x, out),
            (HostOp::Compare(c), [a, b]) => {
                let od = self.output.dims.as_slice();
                elementwise::compare(*c, (*a, dims(0)), (*b, dims(1)), (out, od))
            }
            (HostOp::Logical(l), [a, b]) => {
                let od = self.output.dims.as_slice();
                elementwise::logical(*l, (*a, dims(0)), (*b, dims(1)), (out, od))
            }
            (HostOp::LogicalNot, [x]) => elementwise::logical_not(*x, out),
            (HostOp::Select, [c, a, b]) => {
                let od = self.output.dims.as_slice();
                elementwise::select((*c, dims(0)), (*a, dims(1)), (*b, dims(2)), (out, od))
            }
            (HostOp::CrossEntropy, [View::F32(x), View::F32(labels)]) => match out {
                ViewMut::F32(y) => {
                    reduce::cross_entropy(x, labels, y);
                    Ok(())
                }
                _ => Err(self.bad_views()),
            },
            (HostOp::SparseCrossEntropy, [View::F32(x), labels]) => match out {
                ViewMut::F32(y) => reduce::sparse_cross_entropy(x, *labels, y),
                _ => Err(self.bad_views()),
            },
            (
                HostOp::OneHot {
                    depth,
                    on,
                    off,
                    axis,
                },
                [indices],
            ) => match out {
                ViewMut::F32(y) => {
                    movement::one_hot(*indices, dims(0), *depth, [*on, *off], *axis, y)
                }
                _ => Err(self.bad_views()),
            },
            (HostOp::GatherGrad { axis }, [View::F32(g), indices]) => match out {
                ViewMut::F32(y) => movement::gather_grad(g, *indices, &self.output.dims, *axis, y),
                _ => Err(self.bad_views()),
            },
            (HostOp::GroupedConv(attrs), [View::F32(x), View::F32(w)]) => match out {
                ViewMut::F32(y) => window::grouped_conv(attrs, x, dims(0), w, dims(1), y),
                _ => Err(self.bad_views()),
            },
            (HostOp::Conv2dBackpropInput(a), [View::F32(w), View::F32(dy)]) => match out {
                ViewMut::F32(dx) => {
                    window::conv2d_backprop_input(a, w, dims(0), dy, dims(1), dx, &self.output.dims)
                }
                _ => Err(self.bad_views()),
            },
            (HostOp::Conv2dBackpropFilter(a), [View::F32(x), View::F32(dy)]) => match out {
                ViewMut::F32(dw) => window::conv2d_backprop_filter(
                    a,
                    x,
                    dims(0),
                    dy,
                    dims(1),
                    dw,
                    &self.output.dims,
                ),
                _ => Err(self.bad_views()),
            },
            (HostOp::MaxPoolGrad(a), [View::F32(x), View::F32(_), View::F32(g)]) => match out {
                ViewMut::F32(dx) => window::max_pool_grad(a, x, dims(0), g, dx),
                _ => Err(self.bad_views()),
            },
            (HostOp::DepthwiseBackpropInput(a), [View::F32(w), View::F32(dy)]) => match out {
                ViewMut::F32(dx) => window::conv2d_backprop_input(
                    a,
                    w,
                    &depthwise_as_grouped(dims(0)),
                    dy,
                    dims(1),
                    dx,
                    &self.output.dims,
                ),
                _ => Err(self.bad_views()),
            },
            (HostOp::DepthwiseBackpropFilter(a), [View::F32(x), View::F32(dy)]) => match out {
                ViewMut::F32(dw) => window::conv2d_backprop_filter(
                    a,
                    x,
                    dims(0),
                    dy,
                    dims(1),
                    dw,
                    &depthwise_as_grouped(&self.output.dims),
                ),
                _ => Err(self.bad_views()),
            },
            (HostOp::AvgPoolGrad(a), [View::F32(g)]) => match out {
                ViewMut::F32(dx) => window::avg_pool_grad(a, g, dx, &self.output.dims),
                _ => Err(self.bad_views()),
            },
            (HostOp::Apply(op), _) => match out {
                ViewMut::F32(y) => state::apply(op, inputs, y),
                _ => Err(self.bad_views()),
            },
            _ => Err(self.bad_views()),
        }
    }

    fn bad_views(&self) -> String {
        format!(
            "internal error: host kernel {:?} was handed buffers of the wrong types",
            self.op
        )
    }
}

/// Whether every operand broadcasts to exactly `out` (numpy rules: aligned from the right,
/// each dim equal or 1, no operand of higher rank).
fn broadcasts_to(operands: &[HostBuffer], out: &[usize]) -> bool {
    operands.iter().all(|b| {
        b.dims.len() <= out.len()
            && b.dims
                .iter()
                .rev()
                .zip(out.iter().rev())
                .all(|(&d, &o)| d == o || d == 1)
    })
}

/// A depthwise filter's dims `[kh, kw, cin, mult]` as the grouped conv2d filter it equals,
/// `[kh, kw, 1, cin * mult]` (same flat layout; group `c` is input channel `c`). Other ranks
/// are passed through for the kernel to refuse.
fn depthwise_as_grouped(d: &[usize]) -> Vec<usize> {
    match d {
        &[kh, kw, ci, mult] => vec![kh, kw, 1, ci.saturating_mul(mult)],
        other => other.to_vec(),
    }
}

/// The group count of a conv2d kernel: input channels over the filter's `cin` (1 when either
/// is unknown or the filter is empty).
pub fn conv_groups(program: &Program, kernel: &Kernel) -> usize {
    let Some(Op::Conv2d(a)) = &kernel.main else {
        return 1;
    };
    let dims = |i: usize| {
        kernel
            .inputs
            .get(i)
            .and_then(|b| program.buffers.get(b.index()))
            .map(|b| b.dims.to_vec())
    };
    let (Some(x), Some(w)) = (dims(0), dims(1)) else {
        return 1;
    };
    let c = match a.data_format {
        DataFormat::Nhwc => x.get(3),
        DataFormat::Nchw => x.get(1),
    };
    match (c, w.get(2)) {
        (Some(&c), Some(&wc)) if wc > 0 && c.is_multiple_of(wc) => c / wc,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
