//! Host kernels: plain, safe Rust for the ops that are not worth generated code — `lrn`,
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

use kiln_ir::lower::axis_index;
use kiln_ir::op::Op;
use kiln_ir::program::{BufferId, Kernel, Program};
use kiln_ir::shape::fmt_dims;
use kiln_ir::{ConvAttrs, DType, DataFormat};

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
            Some(Op::Conv2d(a))
                if a.data_format == DataFormat::Nchw && conv_groups(program, kernel) > 1 =>
            {
                HostOp::GroupedConv(*a)
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
        Ok(Some(host))
    }

    /// Checks operand count, dtypes and dims against the op (the run relies on it).
    fn check(&self) -> Result<(), String> {
        let (ins, out) = (&self.inputs, &self.output);
        let arity = match &self.op {
            HostOp::Gather { .. } | HostOp::GroupedConv(_) => 2,
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
            (HostOp::GroupedConv(attrs), [View::F32(x), View::F32(w)]) => match out {
                ViewMut::F32(y) => window::grouped_conv(attrs, x, dims(0), w, dims(1), y),
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
