//! From a lowered [`Program`] to a list of executable stages.
//!
//! Each kernel becomes a main stage and, unless its epilogue is the identity or was folded
//! into a micro-kernel's store, an epilogue stage run in place on the kernel's output:
//! - matmul, and NHWC convolutions thick enough for a GEMM micro-kernel, call [`crate::gemm`]
//!   with constant weights packed here, once; a bias-plus-activation epilogue is applied to
//!   the accumulators before the store;
//! - grouped NHWC convolutions always take the GEMM path (one micro-kernel GEMM per group,
//!   however thin), since the generated window kernels do not group;
//! - lrn, argmax, gather, gather_grad, one_hot, cast, the softmax cross entropies, the
//!   comparisons, logical ops, select and grouped NCHW convolutions are plain Rust
//!   [`crate::host`] kernels (rare ops, ops on bool or integer values, or ones whose run can
//!   fail on data, like a gather index), and so are the backward window ops (their
//!   convolution contractions on the GEMM micro-kernels);
//! - NHWC depthwise convolutions (multiplier 1) and pools with at least 8 channels run
//!   [`host::ChannelWindow`] (full-width vectors across channels, bias and clamp folded);
//! - every other op is a Cranelift kernel from [`crate::codegen`], specialised to the shapes.

use crate::codegen;
use crate::gemm::{self, Activation, ConvGeometry, PackedB};
use crate::host::{self, HostKernel};
use crate::jit::{CompiledKernel, Jit, KernelId};
use crate::pack_cache::PackCache;
use crate::runtime::PARALLEL_MIN_WORK;
use kiln_ir::cost::flops;
use kiln_ir::lower::part_is_contiguous;
use kiln_ir::program::{BufferId, BufferKind, Kernel, Operand, Program, Step};
use kiln_ir::{BinaryOp, DType, DataFormat, Error, Op, Result, Shape, TensorType, UnaryOp};
use std::cell::Cell;
use std::time::{Duration, Instant};

mod depthwise_pointwise;
mod nchw_input;
mod prologue;

pub use depthwise_pointwise::kept_live;

/// A contraction's B operand: packed once when it is a constant, else packed per run (for a
/// variable, only when its bytes changed).
pub enum Weights {
    /// Packed at compile time.
    Packed(PackedB),
    /// A grouped convolution's filter, packed at compile time as one B per group.
    PackedGroups(Vec<PackedB>),
    /// Packed at run time from this buffer (`transposed` as matmul's `transpose_b`).
    Runtime {
        /// The buffer holding B.
        buffer: BufferId,
        /// Whether B is stored transposed.
        transposed: bool,
        /// For a variable: its last packing, reused while its bytes are unchanged.
        cache: Option<PackCache>,
    },
}

/// Bias, residual and activation folded into a micro-kernel's store.
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedEpilogue {
    /// One value per output column.
    pub bias: Option<BufferId>,
    /// A contiguous tensor of the output's shape added after the bias (a residual
    /// connection); only NHWC convolutions fold one.
    pub residual: Option<BufferId>,
    /// Applied last.
    pub activation: Activation,
}

/// One step of a run.
pub enum Stage {
    /// A generated kernel; `buffers` are passed in this order.
    Jit {
        /// The code.
        code: CompiledKernel,
        /// Buffer ids whose addresses form the kernel's argument array.
        buffers: Vec<BufferId>,
        /// For kernels that take a trailing `[start, end)` range over outer work units: how
        /// many units there are and roughly how many FLOPs all of them cost together.
        split: Option<Split>,
    },
    /// `out = epilogue(a x b)`, batched over `batch` (B broadcast when `b_batch` is 1).
    MatMul {
        /// Left operand `[batch, m, k]` (or `[batch, k, m]` when `transpose_a`).
        a: BufferId,
        /// Whether A is stored transposed.
        transpose_a: bool,
        /// Right operand.
        b: Weights,
        /// Batches of B (1: shared by every batch of A).
        b_batch: usize,
        /// Output `[batch, m, n]`.
        out: BufferId,
        /// Sizes.
        batch: usize,
        /// Rows of the output.
        m: usize,
        /// Columns of the output.
        n: usize,
        /// Reduction length.
        k: usize,
        /// Folded bias/activation.
        epilogue: FusedEpilogue,
    },
    /// NHWC convolution as implicit GEMM.
    Conv {
        /// Input `[n, h, w, cin]`.
        input: BufferId,
        /// Its dims.
        in_dims: [usize; 4],
        /// Filter as `[kh*kw*cin/groups, cout]` (one packed B per group when grouped).
        filter: Weights,
        /// The filter's rows: kh * kw * cin / groups.
        depth: usize,
        /// Output channels.
        cout: usize,
        /// Channel groups (1: an ordinary convolution).
        groups: usize,
        /// Where taps land.
        geometry: ConvGeometry,
        /// Output `[n, oh, ow, cout]`.
        out: BufferId,
        /// Values from one output pixel's channels to the next: `cout`, or the channels of
        /// the concat whose slot `out` is (see [`writes_rows_at_stride`]).
        ldc: usize,
        /// Folded bias/activation.
        epilogue: FusedEpilogue,
        /// A batch norm and activation applied to the input on its way into the GEMM (a
        /// plain 1x1 conv only; planned in `plan/prologue.rs`): `input` is then the batch
        /// norm's input.
        prologue: Option<Box<ConvPrologue>>,
        /// The kernel transposing the input from NCHW that the conv does itself, while making
        /// its padded copy (planned in `plan/nchw_input.rs`): `input` then holds the values
        /// `[n, cin, h, w]`, and `in_dims` still names them `[n, h, w, cin]`.
        nchw_from: Option<usize>,
    },
    /// A 3x3 stride-1 NHWC convolution with constant weights as Winograd F(2x2, 3x3) or
    /// F(4x4, 3x3) ([`gemm::conv2d_winograd`]), when [`gemm::winograd_choice`] picks one.
    Winograd {
        /// Input `[n, h, w, cin]`.
        input: BufferId,
        /// Its dims.
        in_dims: [usize; 4],
        /// The transformed, packed filter.
        filter: gemm::WinogradFilter,
        /// Padding and output size.
        geometry: ConvGeometry,
        /// Output `[n, oh, ow, cout]`.
        out: BufferId,
        /// Values from one output pixel's channels to the next: `cout`, or the channels of
        /// the concat whose slot `out` is.
        ldc: usize,
        /// Folded bias, residual (the output's shape) and activation.
        epilogue: FusedEpilogue,
    },
    /// A plain Rust kernel (see [`crate::host`]); its epilogue, if any, is a separate stage.
    Host(HostKernel),
    /// An NHWC depthwise conv whose output only a 1x1, stride-1 convolution reads, both run
    /// band by band ([`host::depthwise_pointwise`]); planned from a [`Stage::Window`] and the
    /// [`Stage::Conv`] after it, under the conv's kernel (the depthwise kernel has no stage).
    DepthwisePointwise {
        /// The depthwise conv's kernel (the stage runs under the 1x1 conv's): profiles count
        /// both kernels' ops and flops in the stage's time.
        depthwise: usize,
        /// The depthwise conv's shapes.
        window: host::ChannelWindow,
        /// Its input `[n, h, w, c]`.
        input: BufferId,
        /// Its filter `[kh, kw, c, 1]`.
        filter: BufferId,
        /// Its folded bias and clamp.
        window_epilogue: FusedEpilogue,
        /// The 1x1 filter, packed as `[c, cout]`.
        pointwise: PackedB,
        /// Output `[n, oh, ow, cout]`.
        out: BufferId,
        /// The 1x1 conv's folded bias, residual and activation.
        epilogue: FusedEpilogue,
    },
    /// An NHWC depthwise conv or pool vectorised across channels ([`host::ChannelWindow`]).
    Window {
        /// Shapes and op.
        window: host::ChannelWindow,
        /// Input `[n, h, w, c]`.
        input: BufferId,
        /// Depthwise filter `[kh, kw, c, 1]`.
        filter: Option<BufferId>,
        /// Output `[n, oh, ow, c]`.
        out: BufferId,
        /// Folded bias/activation.
        epilogue: FusedEpilogue,
    },
}

/// The map a 1x1 [`Stage::Conv`] applies to its input channels before the product:
/// `act(x * scale[c] + shift[c])` ([`gemm::Prologue`]), from a batch-norm kernel that then
/// has no stage of its own.
pub struct ConvPrologue {
    /// The batch norm's kernel (the stage runs under the conv's): profiles count its ops.
    pub kernel: usize,
    /// One factor per input channel.
    pub scale: Vec<f32>,
    /// One term per input channel.
    pub shift: Vec<f32>,
    /// Applied last.
    pub activation: Activation,
}

/// How a range-taking kernel's work divides over threads.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    /// Outer work units (`[start, end)` ranges index these).
    pub extent: usize,
    /// Estimated FLOPs of the whole kernel, to keep tiny kernels on one thread.
    pub work: u64,
}

/// A compiled program: stages in order, with the kernel each came from (for profiles).
pub struct Plan {
    /// The stages.
    pub stages: Vec<(usize, Stage)>,
    /// Time spent packing constant weights while planning.
    pub packing: Duration,
    /// Whether some stage has enough work to be split across threads
    /// (`runtime::PARALLEL_MIN_WORK`); a program without one runs on the caller's thread.
    pub uses_threads: bool,
}

/// Contractions thinner than this (k or n) run as direct Cranelift loops: a micro-kernel tile
/// would be mostly empty (the seed case has k = 25, n = 1).
const MIN_GEMM_N: usize = 4;
const MIN_GEMM_K: usize = 8;

/// What moving one value costs in the FLOPs of `Split::work`: a blocked transpose moves about
/// 1-2 values per ns on one Zen 5 core, while the dense kernels do 200-300 FLOPs in that time.
/// Counted as one, ShuffleNet's shuffles (53 k values, 0.015-0.04 ms each) stayed on one thread.
const MOVE_WORK_PER_VALUE: u64 = 16;

enum Pending {
    Ready(Box<Stage>),
    Jit(KernelId, Vec<BufferId>, Option<Split>),
}

/// Estimated FLOPs of a kernel's main op (at least its output size).
fn kernel_work(program: &Program, kernel: &Kernel) -> u64 {
    let out = program.buffer(kernel.output);
    let out_numel = out.numel() as u64;
    let types: Vec<TensorType> = kernel
        .inputs
        .iter()
        .map(|&b| {
            TensorType::new(
                program.buffer(b).dtype,
                Shape::known(&program.buffer(b).dims),
            )
        })
        .collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = TensorType::new(out.dtype, Shape::known(&out.dims));
    kernel
        .main
        .as_ref()
        .and_then(|op| flops(op, &refs, &out_ty))
        .unwrap_or(0)
        .max(out_numel)
}

/// Builds the stages of `program`.
pub fn plan(program: &Program) -> Result<Plan> {
    let mut jit = Jit::new().map_err(|m| unsupported(None, m))?;
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    let packing = Cell::new(Duration::ZERO);
    let mut uses_threads = false;
    for (index, kernel) in program.kernels.iter().enumerate() {
        let err = |m: String| unsupported(Some(kernel), m);
        if copies_nothing(program, kernel) {
            continue;
        }
        uses_threads |= kernel_work(program, kernel) >= PARALLEL_MIN_WORK;
        let out = program.buffer(kernel.output);
        if let BufferKind::Part { row, stride, .. } = out.kind
            && !part_is_contiguous(out.numel(), row, stride)
            && !writes_rows_at_stride(program, kernel, row, stride)
        {
            return Err(err(format!(
                "its output is a concat slot of rows of {row} values {stride} apart, which \
                 this kernel cannot store"
            )));
        }
        let mut epilogue_fused = false;
        let host = match contraction(program, kernel, &packing).map_err(err)? {
            Some(found) => Some(found),
            None => match channel_window(program, kernel).map_err(err)? {
                Some(found) => Some(found),
                None => HostKernel::plan(program, kernel)
                    .map_err(err)?
                    .map(|h| (Stage::Host(h), false)),
            },
        };
        match (host, &kernel.main) {
            (Some((stage, fused)), _) => {
                epilogue_fused = fused;
                pending.push((index, Pending::Ready(Box::new(stage))));
            }
            // A pure elementwise kernel: its epilogue stage below is the whole kernel.
            (None, None) => {}
            (None, Some(main)) => {
                let mut split = None;
                let id = match main {
                    Op::Conv2d(_) | Op::DepthwiseConv2d(_) | Op::MaxPool(_) | Op::AvgPool(_) => {
                        let extent =
                            codegen::window::window_outer_extent(program, kernel).map_err(err)?;
                        split = Some(Split {
                            extent,
                            work: kernel_work(program, kernel),
                        });
                        codegen::window::define_window_range(&mut jit, program, kernel)
                    }
                    Op::BatchNorm { .. } => {
                        let extent = codegen::normalize::normalize_outer_extent(program, kernel)
                            .map_err(err)?;
                        split = Some(Split {
                            extent,
                            work: kernel_work(program, kernel),
                        });
                        codegen::normalize::define_normalize_range(&mut jit, program, kernel)
                    }
                    Op::Reduce { .. } | Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                        codegen::reduce::define_reduce(&mut jit, program, kernel)
                    }
                    Op::Reshape { .. }
                    | Op::Transpose { .. }
                    | Op::Concat { .. }
                    | Op::Slice { .. }
                    | Op::Pad { .. } => {
                        match codegen::movement::define_movement_range(&mut jit, program, kernel)
                        {
                            Ok(Some(id)) => {
                                split = Some(Split {
                                    extent: codegen::movement::MOVE_PARTS,
                                    work: program.buffer(kernel.output).numel() as u64
                                        * MOVE_WORK_PER_VALUE,
                                });
                                Ok(id)
                            }
                            Ok(None) => {
                                codegen::movement::define_movement(&mut jit, program, kernel)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Op::Assign(_) => codegen::state::define_state(&mut jit, program, kernel),
                    // Matmul, lrn, argmax, gather, cast, the comparisons, logical ops, select,
                    // the optimizer updates, grouped NCHW conv2d and the backward window ops
                    // were taken by `contraction` or `HostKernel::plan` above; the rest never
                    // reach a kernel (Program::validate rejects them).
                    Op::MatMul { .. }
                    | Op::Lrn { .. }
                    | Op::ArgMax { .. }
                    | Op::Gather { .. }
                    | Op::Cast { .. }
                    | Op::SoftmaxCrossEntropyWithLogits
                    | Op::SparseSoftmaxCrossEntropyWithLogits
                    | Op::OneHot { .. }
                    | Op::GatherGrad { .. }
                    | Op::Input(_)
                    | Op::Var(_)
                    | Op::Const(_)
                    | Op::Unary(_)
                    | Op::Binary(_)
                    | Op::BiasAdd { .. }
                    | Op::Fused(_)
                    | Op::BroadcastLike
                    | Op::Compare(_)
                    | Op::Logical(_)
                    | Op::LogicalNot
                    | Op::Select
                    // Lowering makes stop_gradient a reshape (see `normalize_main_op`).
                    | Op::StopGradient
                    | Op::Conv2dBackpropInput { .. }
                    | Op::Conv2dBackpropFilter { .. }
                    | Op::MaxPoolGrad(_)
                    | Op::AvgPoolGrad { .. }
                    | Op::DepthwiseConv2dBackpropInput { .. }
                    | Op::DepthwiseConv2dBackpropFilter { .. } => {
                        Err(format!("no cpu code path for {}", main.name()))
                    }
                    | Op::ApplyGradientDescent
                    | Op::ApplyMomentum { .. }
                    | Op::ApplyAdam
                    | Op::Group => Err(format!("no cpu code path for {}", main.name())),
                }
                .map_err(err)?;
                let mut buffers = kernel.inputs.clone();
                buffers.push(kernel.output);
                pending.push((index, Pending::Jit(id, buffers, split)));
            }
        }
        if !epilogue_fused
            && let Some(id) =
                codegen::elementwise::define_epilogue(&mut jit, program, kernel).map_err(err)?
        {
            let mut buffers = vec![kernel.output];
            buffers.extend(kernel.epilogue.loads.iter().map(|l| l.buffer));
            let extent = codegen::elementwise::epilogue_outer_extent(program, kernel);
            let work = program.buffer(kernel.output).numel() as u64
                * (1 + kernel.epilogue.steps.len() as u64);
            pending.push((
                index,
                Pending::Jit(id, buffers, Some(Split { extent, work })),
            ));
        }
    }
    let code = jit.finish().map_err(|m| unsupported(None, m))?;
    let stages: Vec<(usize, Stage)> = pending
        .into_iter()
        .map(|(index, p)| match p {
            Pending::Ready(stage) => Ok((index, *stage)),
            Pending::Jit(id, buffers, split) => {
                let code = code.kernel(id).map_err(|m| unsupported(None, m))?;
                Ok((
                    index,
                    Stage::Jit {
                        code,
                        buffers,
                        split,
                    },
                ))
            }
        })
        .collect::<Result<_>>()?;
    let stages = depthwise_pointwise::fuse_depthwise_pointwise(program, stages);
    let stages = prologue::fuse_affine_prologues(program, stages);
    let stages = nchw_input::fuse_input_transposes(program, stages);
    let uses_threads = uses_threads
        || stages.iter().any(|(_, stage)| {
            matches!(stage, Stage::Jit { split: Some(split), .. } if split.work >= PARALLEL_MIN_WORK)
        });
    Ok(Plan {
        stages,
        packing: packing.get(),
        uses_threads,
    })
}

/// Runs `merge` on every stage, with the stages kept so far before it; where it returns a
/// kernel (a producer whose work the stage, rewritten by `merge`, now does itself), that
/// kernel's stages at the end of those kept are dropped.
fn merge_producers(
    stages: Vec<(usize, Stage)>,
    mut merge: impl FnMut(&[(usize, Stage)], usize, &mut Stage) -> Option<usize>,
) -> Vec<(usize, Stage)> {
    let mut out: Vec<(usize, Stage)> = Vec::with_capacity(stages.len());
    for (index, mut stage) in stages {
        if let Some(producer) = merge(&out, index, &mut stage) {
            while out.last().is_some_and(|(i, _)| *i == producer) {
                out.pop();
            }
        }
        out.push((index, stage));
    }
    out
}

/// The arena bytes buffer `id` occupies (a view: the bytes of the buffer it views, a concat
/// slot conservatively the whole concat), or `None` outside the arena (feeds, variables,
/// constants and outputs are their own allocations).
pub(crate) fn arena_bytes(program: &Program, id: BufferId) -> Option<std::ops::Range<usize>> {
    let storage = program.buffer(program.storage(id));
    match storage.kind {
        BufferKind::Temporary { offset } => {
            Some(offset..offset.saturating_add(storage.size_bytes()))
        }
        _ => None,
    }
}

/// Whether two buffers may share bytes of the arena.
fn may_overlap(program: &Program, a: BufferId, b: BufferId) -> bool {
    match (arena_bytes(program, a), arena_bytes(program, b)) {
        (Some(a), Some(b)) => a.start < b.end && b.start < a.end,
        _ => false,
    }
}

/// Whether kernel `reader` is the only reader of temporary `buffer`: no other kernel reads
/// it or a view of it, and the run does not return it.
fn only_reader(program: &Program, buffer: BufferId, reader: usize) -> bool {
    let temporary = matches!(program.buffer(buffer).kind, BufferKind::Temporary { .. });
    let viewed = program.buffers.iter().any(|b| {
        matches!(b.kind, BufferKind::Alias { of } | BufferKind::Part { of, .. } if of == buffer)
    });
    let others = program
        .kernels
        .iter()
        .enumerate()
        .any(|(i, k)| i != reader && k.reads().contains(&buffer));
    temporary
        && !viewed
        && !others
        && !program.fetches.contains(&buffer)
        && !program.updates.iter().any(|u| u.value == buffer)
}

/// A concat all of whose operands were written in place by their producers: no stage.
fn copies_nothing(program: &Program, kernel: &Kernel) -> bool {
    matches!(kernel.main, Some(Op::Concat { .. }))
        && kernel.epilogue.is_identity()
        && kernel.inputs.iter().all(|&b| {
            matches!(program.buffer(b).kind, BufferKind::Part { of, .. } if of == kernel.output)
        })
}

/// Whether `kernel`'s stages can store its output as rows of `row` values `stride` apart,
/// for [`kiln_ir::lower::write_concat_operands_in_place`]: a pure elementwise kernel (its
/// generated loops take output strides), or an NHWC convolution that runs as a GEMM (the
/// micro-kernels take a row stride, and an epilogue not folded into their store runs as an
/// elementwise stage) writing all of its output channels per row (a channel concat's slot).
/// Every other stage writes contiguous output only.
pub fn writes_rows_at_stride(
    program: &Program,
    kernel: &Kernel,
    row: usize,
    stride: usize,
) -> bool {
    let Some(out) = program.buffers.get(kernel.output.index()) else {
        return false;
    };
    if out.dtype != DType::F32 || row > stride {
        return false;
    }
    let Some(Op::Conv2d(attrs)) = &kernel.main else {
        // An elementwise kernel's rows must end at an axis of its output.
        let rows_end_at_axis =
            (0..=out.dims.len()).any(|j| out.dims[j..].iter().product::<usize>() == row);
        return kernel.main.is_none() && rows_end_at_axis;
    };
    let Some(&w) = kernel.inputs.get(1) else {
        return false;
    };
    let wd = &program.buffer(w).dims;
    if attrs.data_format != DataFormat::Nhwc || wd.len() != 4 || out.dims.last() != Some(&row) {
        return false;
    }
    let (kdepth, cout) = (wd[0] * wd[1] * wd[2], wd[3]);
    host::conv_groups(program, kernel) > 1 || (kdepth >= MIN_GEMM_K && cout >= MIN_GEMM_N)
}

/// The row stride of a kernel's output for a GEMM stage writing `n` values per row: the
/// stride of the concat slot it writes in place, else `n`.
fn output_row_stride(program: &Program, kernel: &Kernel, n: usize) -> usize {
    match program.buffer(kernel.output).kind {
        BufferKind::Part { row, stride, .. } if row == n => stride,
        _ => n,
    }
}

fn unsupported(kernel: Option<&Kernel>, reason: String) -> Error {
    Error::Unsupported {
        backend: "cpu".into(),
        node: kernel
            .map(|k| k.name.clone())
            .unwrap_or_else(|| "(program)".into()),
        op: kernel.map(|k| k.op_name().to_string()).unwrap_or_default(),
        reason,
    }
}

/// A GEMM stage for matmul and thick NHWC convolutions, with the epilogue folded when it is a
/// per-column bias and/or an activation; `None` for everything else.
/// Time spent packing weights is added to `packing`.
fn contraction(
    program: &Program,
    kernel: &Kernel,
    packing: &Cell<Duration>,
) -> Result<Option<(Stage, bool)>, String> {
    let dims = |id: BufferId| program.buffer(id).dims.to_vec();
    let conv_nhwc =
        matches!(&kernel.main, Some(Op::Conv2d(a)) if a.data_format == DataFormat::Nhwc);
    let (folded, fused) = match fold_epilogue(program, kernel, conv_nhwc) {
        Some(f) => (f, true),
        None => (FusedEpilogue::default(), false),
    };
    let weights = |id: BufferId, k: usize, n: usize, transposed: bool| -> Result<Weights, String> {
        Ok(match &program.buffer(id).kind {
            BufferKind::Constant(t) => Weights::Packed(timed(packing, || {
                gemm::pack_b(k, n, t.f32s().map_err(|e| e.to_string())?, transposed)
            })?),
            kind => Weights::Runtime {
                buffer: id,
                transposed,
                cache: matches!(kind, BufferKind::Variable(_)).then(PackCache::default),
            },
        })
    };
    match &kernel.main {
        Some(Op::MatMul {
            transpose_a,
            transpose_b,
        }) => {
            let (a, b) = (kernel.inputs[0], kernel.inputs[1]);
            let (ad, bd, od) = (dims(a), dims(b), dims(kernel.output));
            let r = od.len();
            let (m, n) = (od[r - 2], od[r - 1]);
            let k = if *transpose_a {
                ad[ad.len() - 2]
            } else {
                ad[ad.len() - 1]
            };
            let batch = if r == 3 { od[0] } else { 1 };
            let b_batch = if bd.len() == 3 { bd[0] } else { 1 };
            let a_batch = if ad.len() == 3 { ad[0] } else { 1 };
            if a_batch != batch {
                return Err(format!("matmul batches differ: a {ad:?}, output {od:?}"));
            }
            let b = if b_batch == 1 {
                weights(b, k, n, *transpose_b)?
            } else {
                Weights::Runtime {
                    buffer: b,
                    transposed: *transpose_b,
                    cache: None,
                }
            };
            let stage = Stage::MatMul {
                a,
                transpose_a: *transpose_a,
                b,
                b_batch,
                out: kernel.output,
                batch,
                m,
                n,
                k,
                epilogue: folded,
            };
            Ok(Some((stage, fused)))
        }
        Some(Op::Conv2d(attrs)) if attrs.data_format == DataFormat::Nhwc => {
            let (x, w) = (kernel.inputs[0], kernel.inputs[1]);
            let (xd, wd) = (dims(x), dims(w));
            let (kdepth, cout) = (wd[0] * wd[1] * wd[2], wd[3]);
            let groups = host::conv_groups(program, kernel);
            // Grouped convolutions have no other NHWC path, so they stay here however thin.
            if groups == 1 && (kdepth < MIN_GEMM_K || cout < MIN_GEMM_N) {
                return Ok(None);
            }
            let geometry = ConvGeometry::new(
                [xd[1], xd[2]],
                [wd[0], wd[1]],
                attrs.strides,
                attrs.dilations,
                attrs.padding,
            )?;
            let ldc = output_row_stride(program, kernel, cout);
            if let BufferKind::Constant(t) = &program.buffer(w).kind
                && groups == 1
                && let Some(variant) = gemm::winograd_choice(&geometry, xd[0], xd[3], cout)
            {
                let w = t.f32s().map_err(|e| e.to_string())?;
                let filter = timed(packing, || gemm::pack_winograd(w, xd[3], cout, variant))?;
                let stage = Stage::Winograd {
                    input: x,
                    in_dims: [xd[0], xd[1], xd[2], xd[3]],
                    filter,
                    geometry,
                    out: kernel.output,
                    ldc,
                    epilogue: folded,
                };
                return Ok(Some((stage, fused)));
            }
            let filter = match &program.buffer(w).kind {
                BufferKind::Constant(t) if groups > 1 => {
                    Weights::PackedGroups(timed(packing, || {
                        gemm::pack_conv_groups(
                            t.f32s().map_err(|e| e.to_string())?,
                            kdepth,
                            cout,
                            groups,
                        )
                    })?)
                }
                _ => weights(w, kdepth, cout, false)?,
            };
            let stage = Stage::Conv {
                input: x,
                in_dims: [xd[0], xd[1], xd[2], xd[3]],
                filter,
                depth: kdepth,
                cout,
                groups,
                geometry,
                out: kernel.output,
                ldc,
                epilogue: folded,
                prologue: None,
                nchw_from: None,
            };
            Ok(Some((stage, fused)))
        }
        _ => Ok(None),
    }
}

/// The channel-vectorised stage of an NHWC depthwise conv or pool ([`host::ChannelWindow`]),
/// with its bias and activation folded when they fit; `None` for other kernels.
fn channel_window(program: &Program, kernel: &Kernel) -> Result<Option<(Stage, bool)>, String> {
    let Some(window) = host::ChannelWindow::of(program, kernel)? else {
        return Ok(None);
    };
    // The bias is read as `c` values and only clamps are applied in registers; any other
    // epilogue stays a separate stage.
    let folded = fold_epilogue(program, kernel, false).filter(|f| {
        f.bias.is_none_or(|b| program.buffer(b).numel() == window.c)
            && (f.activation == Activation::None || f.activation.bounds().is_some())
    });
    let filter = (window.op == host::ChannelOp::Depthwise).then(|| kernel.inputs[1]);
    let stage = Stage::Window {
        window,
        input: kernel.inputs[0],
        filter,
        out: kernel.output,
        epilogue: folded.unwrap_or_default(),
    };
    Ok(Some((stage, folded.is_some())))
}

/// Runs `work`, adding its wall time to `total`.
fn timed<T>(total: &Cell<Duration>, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    total.set(total.get() + started.elapsed());
    result
}

/// Recognises `act((main + bias) + residual)` and its parts (`main + bias`, `act(main)`, ...)
/// where the bias varies only along the last output axis and, when `residual_ok`, the
/// residual is a contiguous f32 tensor of the output's shape: what a micro-kernel applies in
/// registers, in the kernels' order (bias first, so the sums round as the graph's do).
/// ResNet blocks and ShuffleNet's units end in `relu(conv + bias + shortcut)`; unfolded, the
/// shortcut cost a second pass over the output.
fn fold_epilogue(program: &Program, kernel: &Kernel, residual_ok: bool) -> Option<FusedEpilogue> {
    let e = &kernel.epilogue;
    if e.is_identity() {
        return Some(FusedEpilogue::default());
    }
    let rank = program.buffer(kernel.output).dims.len();
    let bias_load = |op: Operand| -> Option<BufferId> {
        let Operand::Load(j) = op else { return None };
        let load = &e.loads[j];
        let per_column = load
            .strides
            .iter()
            .enumerate()
            .all(|(axis, &s)| if axis + 1 == rank { s == 1 } else { s == 0 });
        per_column.then_some(load.buffer)
    };
    let out_dims = &program.buffer(kernel.output).dims;
    let residual_load = |op: Operand| -> Option<BufferId> {
        let Operand::Load(j) = op else { return None };
        let load = &e.loads[j];
        let buf = program.buffer(load.buffer);
        // Row-major strides of the output's shape; axes of size 1 take any stride.
        let mut want = 1usize;
        let mut contiguous = load.strides.len() == rank;
        for axis in (0..rank).rev() {
            let dim = out_dims[axis];
            contiguous &= dim == 1 || load.strides.get(axis) == Some(&want);
            want = want.saturating_mul(dim);
        }
        let plain = !matches!(buf.kind, BufferKind::Part { .. });
        (residual_ok && contiguous && plain && buf.dtype == DType::F32 && buf.numel() == want)
            .then_some(load.buffer)
    };
    let activation = |u: &UnaryOp| match u {
        UnaryOp::Relu => Some(Activation::Relu),
        UnaryOp::Relu6 => Some(Activation::Relu6),
        UnaryOp::LeakyRelu { alpha } => Some(Activation::LeakyRelu(alpha.0)),
        _ => None,
    };
    let mut fused = FusedEpilogue::default();
    let mut current = Operand::Main;
    for (i, step) in e.steps.iter().enumerate() {
        match step {
            Step::Binary(BinaryOp::Add, a, b)
                if fused.residual.is_none() && fused.activation == Activation::None =>
            {
                let other = if *a == current {
                    *b
                } else if *b == current {
                    *a
                } else {
                    return None;
                };
                match (fused.bias, bias_load(other)) {
                    (None, Some(bias)) => fused.bias = Some(bias),
                    _ => fused.residual = Some(residual_load(other)?),
                }
            }
            Step::Unary(u, x) if *x == current && fused.activation == Activation::None => {
                fused.activation = activation(u)?;
            }
            _ => return None,
        }
        current = Operand::Step(i);
    }
    (e.result == current).then_some(fused)
}
