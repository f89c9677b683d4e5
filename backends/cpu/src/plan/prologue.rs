//! Folding a batch norm and its activation into the 1x1 convolution that reads them.
//!
//! DenseNet (and any pre-activation network) runs `conv1x1(relu(batch_norm(x) [* s + t]))`:
//! the batch norm cannot fold into the conv's weights because the activation sits between
//! them, so it ran as its own pass, reading and writing every activation once more (DenseNet
//! -121: 62 such passes, 2.8 ms of 18). Here such a kernel, when the conv is its only reader,
//! becomes the conv's [`gemm::Prologue`]: one scale and shift per channel and the activation,
//! applied as the GEMM copies its input rows, and the kernel's stages are dropped.
//!
//! The scale and shift are computed in f64 from the batch norm's constants and the constant
//! per-channel factors and terms after it, and rounded once; the conv then computes
//! `act(x * scale + shift)` in f32. That differs from the separate ops' rounding by about one
//! unit in the last place before the activation (within [`kiln_ir::compare::Tolerance::KERNEL`];
//! tested against the reference).

use super::{ConvPrologue, Stage, Weights, may_overlap, merge_producers, only_reader};
use crate::gemm::Activation;
use kiln_ir::program::{BufferId, BufferKind, Operand, Program, Step};
use kiln_ir::{BinaryOp, DataFormat, Op, UnaryOp};

/// Merges each batch-norm kernel whose stages come right before a plain 1x1 [`Stage::Conv`]
/// (stride 1, no padding, one group, packed weights) that is its only reader into that conv
/// as a [`ConvPrologue`], unless the conv's output may share arena bytes with the batch
/// norm's input (the memory plan may give it them once the batch norm is done; merged, the
/// conv still reads them).
pub(super) fn fuse_affine_prologues(
    program: &Program,
    stages: Vec<(usize, Stage)>,
) -> Vec<(usize, Stage)> {
    merge_producers(stages, |before, index, stage| {
        let (producer, input, map) = prologue_for(program, before, index, stage)?;
        if let Stage::Conv {
            input: conv_input,
            prologue,
            ..
        } = stage
        {
            *conv_input = input;
            *prologue = Some(Box::new(map));
        }
        Some(producer)
    })
}

/// For conv stage `stage` of kernel `index`: the kernel whose stages end `before` and whose
/// output the conv reads, that kernel's input, and its map, when they can merge.
fn prologue_for(
    program: &Program,
    before: &[(usize, Stage)],
    index: usize,
    stage: &Stage,
) -> Option<(usize, BufferId, ConvPrologue)> {
    let Stage::Conv {
        input,
        in_dims,
        filter: Weights::Packed(_),
        groups: 1,
        geometry: g,
        out,
        prologue: None,
        ..
    } = stage
    else {
        return None;
    };
    let pointwise = [g.kh, g.kw, g.stride_h, g.stride_w, g.pad_top, g.pad_left]
        == [1, 1, 1, 1, 0, 0]
        && (g.out_h, g.out_w) == (in_dims[1], in_dims[2]);
    let &(producer, _) = before.last()?;
    let kernel = &program.kernels[producer];
    if !pointwise || kernel.output != *input || !only_reader(program, *input, index) {
        return None;
    }
    let x = *kernel.inputs.first()?;
    // Read as dense rows of `c` values: not a concat slot (rows at a wider stride).
    let slot = |b: BufferId| matches!(program.buffer(b).kind, BufferKind::Part { .. });
    let plain = !slot(x) && !slot(program.storage(x));
    if !plain
        || program.buffer(x).dims != program.buffer(*input).dims
        || may_overlap(program, x, *out)
    {
        return None;
    }
    let map = affine_map(program, producer, in_dims[3])?;
    Some((producer, x, map))
}

/// Kernel `producer` as `act(x * scale[c] + shift[c])` over channels `c` of its NHWC input `x`: a
/// batch norm with constant parameters, then multiplications, additions and subtractions by
/// per-channel or scalar constants, then at most one activation; `None` for anything else.
fn affine_map(program: &Program, producer: usize, c: usize) -> Option<ConvPrologue> {
    let kernel = &program.kernels[producer];
    let Some(Op::BatchNorm {
        epsilon,
        data_format: DataFormat::Nhwc,
    }) = kernel.main
    else {
        return None;
    };
    let param = |i: usize| channel_values(program, *kernel.inputs.get(i)?, c, &[0, 0, 0, 1]);
    let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let eps = f64::from(epsilon.0);
    let mut scale: Vec<f64> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let mut shift: Vec<f64> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    let e = &kernel.epilogue;
    let constant = |op: Operand| -> Option<Vec<f64>> {
        let Operand::Load(j) = op else { return None };
        let load = e.loads.get(j)?;
        channel_values(program, load.buffer, c, &load.strides)
    };
    let mut activation = Activation::None;
    let mut current = Operand::Main;
    for (i, step) in e.steps.iter().enumerate() {
        if activation != Activation::None {
            return None; // only the last step may be the activation
        }
        match *step {
            Step::Binary(op, a, b) if a == current || b == current => {
                let (other, first) = if a == current { (b, true) } else { (a, false) };
                let k = constant(other)?;
                for ch in 0..c {
                    let (s, t) = (scale[ch], shift[ch]);
                    (scale[ch], shift[ch]) = match op {
                        BinaryOp::Mul => (s * k[ch], t * k[ch]),
                        BinaryOp::Add => (s, t + k[ch]),
                        BinaryOp::Sub if first => (s, t - k[ch]),
                        BinaryOp::Sub => (-s, k[ch] - t),
                        _ => return None,
                    };
                }
            }
            Step::Unary(op, x) if x == current => {
                activation = match op {
                    UnaryOp::Relu => Activation::Relu,
                    UnaryOp::Relu6 => Activation::Relu6,
                    UnaryOp::LeakyRelu { alpha } => Activation::LeakyRelu(alpha.0),
                    _ => return None,
                };
            }
            _ => return None,
        }
        current = Operand::Step(i);
    }
    (e.result == current).then(|| ConvPrologue {
        kernel: producer,
        scale: scale.iter().map(|&v| v as f32).collect(),
        shift: shift.iter().map(|&v| v as f32).collect(),
        activation,
    })
}

/// The `c` per-channel values of constant f32 `buffer` read with `strides` over an NHWC
/// output (`[0, 0, 0, 1]`: one per channel; all zero: one scalar for every channel), in f64.
fn channel_values(
    program: &Program,
    buffer: BufferId,
    c: usize,
    strides: &[usize],
) -> Option<Vec<f64>> {
    let BufferKind::Constant(t) = &program.buffer(buffer).kind else {
        return None;
    };
    let values = t.f32s().ok()?;
    let per_channel = strides.len() == 4 && strides[..3] == [0, 0, 0] && strides[3] == 1;
    let scalar = strides.iter().all(|&s| s == 0);
    if per_channel && values.len() >= c {
        Some(values[..c].iter().map(|&v| f64::from(v)).collect())
    } else if scalar && !values.is_empty() {
        Some(vec![f64::from(values[0]); c])
    } else {
        None
    }
}
