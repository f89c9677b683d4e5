//! A depthwise conv and the 1x1 conv that is its only reader become one band-by-band stage
//! ([`Stage::DepthwisePointwise`], run by [`host::depthwise_pointwise`]).
//!
//! Such a pair reads the depthwise input while it writes the 1x1's output. Planned kernel by
//! kernel, the arena would let the 1x1's output take the depthwise input's bytes (dead once
//! the depthwise conv is done: every stride-2 block of MobileNet, whose output is smaller than
//! its input); [`kept_live`] names those inputs first, so that the backend plans the arena
//! keeping them live through the 1x1 conv, and the pair can merge.

use super::{Stage, Weights, may_overlap, only_reader};
use crate::host;
use kiln_ir::program::{BufferId, Program};
use kiln_ir::{DataFormat, Op};

/// The inputs to keep live through a later kernel ([`kiln_ir::lower::plan_keeping`]): each
/// NHWC depthwise conv's input, through the next kernel when that is a 1x1, stride-1 NHWC conv
/// reading only the depthwise output. A superset of the pairs that merge (the plan checks the
/// rest); keeping one more costs arena bytes, nothing else.
pub fn kept_live(program: &Program) -> Vec<(BufferId, usize)> {
    let kernels = &program.kernels;
    let mut keep = Vec::new();
    for (i, pair) in kernels.windows(2).enumerate() {
        let (depthwise, pointwise) = (&pair[0], &pair[1]);
        let is_depthwise = host::ChannelWindow::of(program, depthwise)
            .ok()
            .flatten()
            .is_some_and(|w| w.op == host::ChannelOp::Depthwise);
        let one_by_one = match (&pointwise.main, pointwise.inputs.get(1)) {
            (Some(Op::Conv2d(a)), Some(&f)) => {
                let filter = &program.buffer(f).dims;
                a.data_format == DataFormat::Nhwc
                    && a.strides == [1, 1]
                    && filter.len() == 4
                    && filter[..2] == [1, 1]
            }
            _ => false,
        };
        if let Some(&input) = depthwise.inputs.first()
            && is_depthwise
            && one_by_one
            && pointwise.inputs.first() == Some(&depthwise.output)
            && only_reader(program, depthwise.output, i + 1)
        {
            keep.push((input, i + 1));
        }
    }
    keep
}

/// Merges each depthwise [`Stage::Window`] whose output only the next stage reads, a plain
/// 1x1 [`Stage::Conv`] (stride 1, no padding, one group, weights packed at compile time,
/// storing rows of its own width), into one [`Stage::DepthwisePointwise`], unless the 1x1's
/// output may share arena bytes with the depthwise conv's input: merged, early bands would
/// overwrite input rows that later bands still read. The backend plans the arena with
/// [`kept_live`] so that this does not happen; the check stays for programs planned without.
pub(super) fn fuse_depthwise_pointwise(
    program: &Program,
    stages: Vec<(usize, Stage)>,
) -> Vec<(usize, Stage)> {
    let mut out: Vec<(usize, Stage)> = Vec::with_capacity(stages.len());
    for (index, stage) in stages {
        let fusable = match (out.last(), &stage) {
            (
                Some((
                    _,
                    Stage::Window {
                        window,
                        input: dw_in,
                        filter: Some(_),
                        out: dw_out,
                        ..
                    },
                )),
                Stage::Conv {
                    input,
                    in_dims,
                    filter: Weights::Packed(_),
                    cout,
                    groups: 1,
                    geometry: g,
                    out: conv_out,
                    ldc,
                    ..
                },
            ) => {
                window.op == host::ChannelOp::Depthwise
                    && input == dw_out
                    && *ldc == *cout
                    && *in_dims == [window.n, window.oh, window.ow, window.c]
                    && [g.kh, g.kw, g.stride_h, g.stride_w, g.pad_top, g.pad_left]
                        == [1, 1, 1, 1, 0, 0]
                    && (g.out_h, g.out_w) == (window.oh, window.ow)
                    && only_reader(program, *dw_out, index)
                    && !may_overlap(program, *dw_in, *conv_out)
            }
            _ => false,
        };
        if !fusable {
            out.push((index, stage));
            continue;
        }
        let Some((
            depthwise,
            Stage::Window {
                window,
                input,
                filter: Some(filter),
                epilogue: window_epilogue,
                ..
            },
        )) = out.pop()
        else {
            unreachable!("checked above");
        };
        let Stage::Conv {
            filter: Weights::Packed(pointwise),
            out: conv_out,
            epilogue,
            ..
        } = stage
        else {
            unreachable!("checked above");
        };
        out.push((
            index,
            Stage::DepthwisePointwise {
                depthwise,
                window,
                input,
                filter,
                window_epilogue,
                pointwise,
                out: conv_out,
                epilogue,
            },
        ));
    }
    out
}
