//! Transposing an NCHW input inside the convolution that reads it.
//!
//! An ONNX model's image arrives channels first; the layout pass turns it channels last for
//! the first convolution with a transpose kernel of its own (224x224x3: 0.026 ms on one
//! thread, 1.5% of MobileNet-v2 and SqueezeNet). That convolution, with three input channels,
//! copies its input anyway (padded, so that a filter row's taps are one contiguous segment),
//! and the copy can read the planes as well as the pixels: here such a transpose, when the
//! conv is its only reader, is dropped and the conv reads the NCHW buffer itself
//! ([`gemm::conv2d_nchw_input_strided`]). Same values, bit for bit.

use super::{Stage, Weights, may_overlap, merge_producers, only_reader};
use crate::gemm;
use kiln_ir::Op;
use kiln_ir::program::{BufferKind, Program};

/// Merges each NCHW -> NHWC transpose kernel whose stages come right before a one-group
/// [`Stage::Conv`] with packed weights that copies its input padded
/// ([`gemm::nchw_input_supported`]) and is the transpose's only reader, unless the conv's
/// output may share arena bytes with the transpose's input.
pub(super) fn fuse_input_transposes(
    program: &Program,
    stages: Vec<(usize, Stage)>,
) -> Vec<(usize, Stage)> {
    merge_producers(stages, |before, index, stage| {
        let producer = transpose_for(program, before, index, stage)?;
        if let Stage::Conv {
            input, nchw_from, ..
        } = stage
        {
            *input = program.kernels[producer].inputs[0];
            *nchw_from = Some(producer);
        }
        Some(producer)
    })
}

/// For conv stage `stage` of kernel `index`: the transpose kernel whose stages end `before`
/// and whose output the conv reads, when they can merge.
fn transpose_for(
    program: &Program,
    before: &[(usize, Stage)],
    index: usize,
    stage: &Stage,
) -> Option<usize> {
    let Stage::Conv {
        input,
        in_dims,
        filter: Weights::Packed(_),
        groups: 1,
        geometry,
        out,
        prologue: None,
        nchw_from: None,
        ..
    } = stage
    else {
        return None;
    };
    let &(producer, _) = before.last()?;
    let kernel = &program.kernels[producer];
    let Some(Op::Transpose { perm }) = &kernel.main else {
        return None;
    };
    let &[x] = kernel.inputs.as_slice() else {
        return None;
    };
    let [n, h, w, c] = *in_dims;
    // A dense NCHW buffer (not a concat slot, whose rows lie at a wider stride).
    let slot = |b| matches!(program.buffer(b).kind, BufferKind::Part { .. });
    let dense = !slot(x) && !slot(program.storage(x));
    let mergeable = perm.as_slice() == [0, 2, 3, 1]
        && kernel.epilogue.is_identity()
        && kernel.output == *input
        && dense
        && program.buffer(x).dims.as_slice() == [n, c, h, w]
        && gemm::nchw_input_supported(c, geometry)
        && only_reader(program, *input, index)
        && !may_overlap(program, x, *out);
    mergeable.then_some(producer)
}
