//! NHWC x HWIO convolution as implicit (indirect) GEMM.
//!
//! The GEMM view: row `i` of A is output pixel `(b, oy, ox)`, the reduction runs over filter
//! taps `(dy, dx)` and input channels, so `A[i, (dy * kw + dx) * cin + ci]` is input pixel
//! `(b, oy * sh + dy * dh - pad_top, ox * sw + dx * dw - pad_left)`, channel `ci`, or zero
//! outside the image. An HWIO filter is already the row-major `[kh * kw * cin, cout]` B. One
//! segment of A is one tap: `cin` contiguous channels of one input pixel, so the driver hands
//! the micro-kernel pointers straight into the input (XNNPACK's indirection idea) and nothing
//! is copied; padding taps point at a zero buffer. A 1x1, stride-1, unpadded convolution is
//! plain GEMM over the input viewed as `[n * h * w, cin]`.
//!
//! Few input channels make short segments (3 values for an RGB input), and the kernel's
//! per-segment setup then dominates. For those the input is first copied into a zero-padded
//! buffer, after which the `kw` taps of one filter row are `kw * cin` contiguous values: one
//! segment per filter row instead of one per tap.
//!
//! A grouped convolution (TensorFlow 2: `groups` blocks of input channels, each convolved into
//! its own block of output channels) is `groups` such GEMMs, one per packed filter block. Each
//! reads its channel block in place (a tap's segment starts at the block's first channel and
//! the pixel stride stays the full channel count) and stores into its output columns through
//! the leading dimension, so the only copy is the padded buffer few channels already use.

use super::driver::{MIN_TASK_FLOPS, streams};
use super::epilogue::{Epilogue, Residual};
use super::pack::PackedB;
use super::{RowSource, sgemm, sgemm_rows};
use kiln_ir::infer::window_dim;
use kiln_ir::op::Padding;
use rayon::prelude::*;

/// Where each filter tap lands in the input: sizes, strides, dilations and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Filter height.
    pub kh: usize,
    /// Filter width.
    pub kw: usize,
    /// Step between output rows, in input rows.
    pub stride_h: usize,
    /// Step between output columns, in input columns.
    pub stride_w: usize,
    /// Step between filter rows, in input rows.
    pub dilation_h: usize,
    /// Step between filter columns, in input columns.
    pub dilation_w: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl ConvGeometry {
    /// The input row and column (counted in the input padded at top and left) of the last
    /// output pixel's last tap; `None` if they overflow.
    fn last_taps(&self) -> Option<(usize, usize)> {
        let last = |out: usize, s: usize, k: usize, d: usize| {
            (out.max(1) - 1)
                .checked_mul(s)?
                .checked_add((k.max(1) - 1).checked_mul(d)?)
        };
        Some((
            last(self.out_h, self.stride_h, self.kh, self.dilation_h)?,
            last(self.out_w, self.stride_w, self.kw, self.dilation_w)?,
        ))
    }

    /// The geometry TensorFlow computes for an `in_hw` input, a `kernel_hw` filter and the
    /// given strides, dilations and padding (SAME puts the odd padding cell bottom/right).
    pub fn new(
        in_hw: [usize; 2],
        kernel_hw: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        padding: Padding,
    ) -> Result<ConvGeometry, String> {
        if strides.contains(&0) || dilations.contains(&0) || kernel_hw.contains(&0) {
            return Err(format!(
                "conv2d: strides {strides:?}, dilations {dilations:?} and filter size \
                 {kernel_hw:?} must be positive"
            ));
        }
        // The padding arithmetic lives once, in kiln-ir, shared with inference and eval.
        let mut out = [0; 2];
        let mut before = [0; 2];
        for d in 0..2 {
            let dim = window_dim(in_hw[d], kernel_hw[d], strides[d], dilations[d], padding, d)
                .map_err(|m| format!("conv2d (input {in_hw:?}, filter {kernel_hw:?}): {m}"))?;
            out[d] = dim.out;
            before[d] = dim.pad_before;
        }
        Ok(ConvGeometry {
            kh: kernel_hw[0],
            kw: kernel_hw[1],
            stride_h: strides[0],
            stride_w: strides[1],
            dilation_h: dilations[0],
            dilation_w: dilations[1],
            pad_top: before[0],
            pad_left: before[1],
            out_h: out[0],
            out_w: out[1],
        })
    }
}

/// `out = epilogue(conv2d(input, filter))` with `input` `[n, h, w, cin]` (`in_dims`), `filter`
/// the HWIO weights packed as `[kh * kw * cin, cout]` by [`super::pack_b`], and `out`
/// `[n, out_h, out_w, cout]`, all row-major. The epilogue's bias has one value per output
/// channel; its residual is indexed `[pixel, channel]` with its own leading dimension.
pub fn conv2d_nhwc(
    input: &[f32],
    in_dims: [usize; 4],
    filter: &PackedB,
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    conv2d_nhwc_grouped(
        input,
        in_dims,
        std::slice::from_ref(filter),
        geom,
        out,
        epilogue,
    )
}

/// Packs a grouped HWIO filter (row-major `[depth, cout]`, `depth = kh * kw * cin / groups`)
/// as one B per group: group `g`'s B is columns `g * cout / groups ..` of it, the output
/// channels that read input channel block `g`. One group packs the whole filter.
pub fn pack_conv_groups(
    w: &[f32],
    depth: usize,
    cout: usize,
    groups: usize,
) -> Result<Vec<PackedB>, String> {
    pack_conv_groups_for(super::detect(), w, depth, cout, groups)
}

/// [`pack_conv_groups`] for the kernels of `isa`.
pub(crate) fn pack_conv_groups_for(
    isa: super::Isa,
    w: &[f32],
    depth: usize,
    cout: usize,
    groups: usize,
) -> Result<Vec<PackedB>, String> {
    if groups == 0 || !cout.is_multiple_of(groups) {
        return Err(format!(
            "conv2d: {cout} output channels do not split into {groups} groups"
        ));
    }
    if groups == 1 {
        return Ok(vec![super::pack_b_for(isa, depth, cout, w, false)?]);
    }
    let need = depth
        .checked_mul(cout)
        .ok_or_else(|| format!("conv2d: filter {depth}x{cout} overflows"))?;
    if w.len() < need {
        return Err(format!(
            "conv2d: filter has {} values, expected {need} for [{depth}, {cout}]",
            w.len()
        ));
    }
    let per = cout / groups;
    (0..groups)
        .map(|g| {
            let cols: Vec<f32> = (0..depth)
                .flat_map(|r| &w[r * cout + g * per..r * cout + (g + 1) * per])
                .copied()
                .collect();
            super::pack_b_for(isa, depth, per, &cols, false)
        })
        .collect()
}

/// A grouped convolution (TensorFlow 2): `filters` holds one packed B per group (see
/// [`pack_conv_groups`]), each `[kh * kw * cin / groups, cout / groups]`; group `g` reads
/// input channels `g * cin / groups ..` and writes output channels `g * cout / groups ..`.
/// Each group runs as its own implicit GEMM reading the input in place (its channel block is
/// a strided view) and storing into its columns of `out`, with the matching slice of the
/// epilogue's bias and residual. One filter is an ordinary convolution.
pub fn conv2d_nhwc_grouped(
    input: &[f32],
    in_dims: [usize; 4],
    filters: &[PackedB],
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let cout = filters
        .first()
        .map_or(0, |f| f.n())
        .saturating_mul(filters.len());
    conv2d_nhwc_grouped_strided(input, in_dims, filters, geom, out, cout, epilogue)
}

/// [`conv2d_nhwc_grouped`] storing output pixel `i`'s `cout` channels at `out[i * ldc ..]`
/// (`ldc >= cout`), so a convolution can write its channels of a wider NHWC tensor in place
/// (a channel concat's slot); the values between are left alone.
pub fn conv2d_nhwc_grouped_strided(
    input: &[f32],
    in_dims: [usize; 4],
    filters: &[PackedB],
    geom: &ConvGeometry,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    conv2d_strided(input, in_dims, false, filters, geom, out, ldc, epilogue)
}

/// Whether [`conv2d_nchw_input_strided`] takes a convolution of `cin` input channels (one
/// group): one whose input it copies anyway, padded, to merge the taps of a filter row (fewer
/// than `MERGE_BELOW_CIN` channels, a filter wider than one tap, no dilation across).
pub fn nchw_input_supported(cin: usize, g: &ConvGeometry) -> bool {
    cin < MERGE_BELOW_CIN && g.kw > 1 && g.dilation_w == 1
}

/// [`conv2d_nhwc_grouped_strided`] for one group whose input is stored channels first:
/// `input` holds `[n, c, h, w]` values for the `[n, h, w, c]` input `in_dims` describes. The
/// padded copy the convolution makes anyway transposes it, so a model's NCHW image needs no
/// transpose of its own (MobileNet-v2's and SqueezeNet's first layers: a 224x224x3 transpose,
/// 0.026 ms, 1.5% of the model). Only where [`nchw_input_supported`]; an error otherwise
/// (checked where the copy is made, `conv_group`).
pub fn conv2d_nchw_input_strided(
    input: &[f32],
    in_dims: [usize; 4],
    filter: &PackedB,
    geom: &ConvGeometry,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let filters = std::slice::from_ref(filter);
    conv2d_strided(input, in_dims, true, filters, geom, out, ldc, epilogue)
}

/// [`conv2d_nhwc_grouped_strided`] with the input channels first (`nchw`) or last.
#[allow(clippy::too_many_arguments)] // the public functions' operands and the input's layout
fn conv2d_strided(
    input: &[f32],
    in_dims: [usize; 4],
    nchw: bool,
    filters: &[PackedB],
    geom: &ConvGeometry,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let [n, _, _, channels] = in_dims;
    let g = *geom;
    let groups = filters.len();
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(format!(
            "conv2d: {channels} input channels do not split into {groups} groups"
        ));
    }
    let cin = channels / groups;
    let per = filters[0].n();
    if filters
        .iter()
        .any(|f| f.n() != per || f.k() != filters[0].k())
    {
        return Err("conv2d: the groups' filters differ in shape".into());
    }
    if [
        g.kh,
        g.kw,
        g.stride_h,
        g.stride_w,
        g.dilation_h,
        g.dilation_w,
    ]
    .contains(&0)
    {
        return Err(format!(
            "conv2d: filter size, strides and dilations must be positive, got {g:?}"
        ));
    }
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    let overflow = || format!("conv2d: sizes overflow usize (input {in_dims:?}, {g:?})");
    let in_len = product(&in_dims).ok_or_else(overflow)?;
    if input.len() < in_len {
        return Err(format!(
            "conv2d: input has {} values, expected at least {in_len} for {in_dims:?}",
            input.len()
        ));
    }
    if Some(filters[0].k()) != product(&[g.kh, g.kw, cin]) {
        return Err(format!(
            "conv2d: filter packed with k = {}, expected kh * kw * cin = {} * {} * {cin}",
            filters[0].k(),
            g.kh,
            g.kw
        ));
    }
    let cout = per.checked_mul(groups).ok_or_else(overflow)?;
    let m = product(&[n, g.out_h, g.out_w]).ok_or_else(overflow)?;
    if ldc < cout {
        return Err(format!(
            "conv2d: output row stride {ldc} is less than its {cout} channels"
        ));
    }
    // The last pixel's row ends `cout` values after its start.
    let out_len = match m {
        0 => 0,
        _ => (m - 1)
            .checked_mul(ldc)
            .and_then(|s| s.checked_add(cout))
            .ok_or_else(overflow)?,
    };
    if out.len() < out_len {
        return Err(format!(
            "conv2d: output has {} values, expected at least {out_len} for [{n}, {}, {}, {cout}] \
             with row stride {ldc}",
            out.len(),
            g.out_h,
            g.out_w
        ));
    }
    if m == 0 || cout == 0 {
        return Ok(());
    }
    epilogue.validate("conv2d", m, cout)?;
    let [_, h, w, _] = in_dims;
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1;
    let plain = pointwise && g.pad_top == 0 && g.pad_left == 0 && g.out_h == h && g.out_w == w;
    let bands = group_bands(groups, m, per, cin, filters[0].isa().mr());
    if plain && bands > 1 {
        return pointwise_groups_in_bands(
            &input[..in_len],
            channels,
            filters,
            m,
            &mut out[..out_len],
            ldc,
            epilogue,
            bands,
        );
    }
    let view = InputView {
        input: &input[..in_len],
        dims: in_dims,
        nchw,
    };
    for (group, filter) in filters.iter().enumerate() {
        // Validated above: bias has >= cout values and the residual covers m x cout at its ld.
        let ep = Epilogue {
            bias: epilogue.bias.map(|b| &b[group * per..]),
            add: epilogue.add.map(|r| Residual {
                data: &r.data[group * per..],
                ld: r.ld,
            }),
            activation: epilogue.activation,
        };
        let c0 = group * cin;
        // The group's output columns: `m` rows of `per` values at stride `ldc`.
        let out_g = &mut out[group * per..out_len];
        conv_group(&view, c0, cin, filter, &g, m, out_g, ldc, &ep)?;
    }
    Ok(())
}

/// Row bands to split a grouped convolution into, each band running every group: more than
/// one only when there are several groups each too small for the driver to split (ShuffleNet's
/// 1x1 convolutions, 4 groups of 34 channels on 28x28 pixels: 1.8 MFLOP a group, so with
/// groups run one after another the second core sat idle through all of them).
pub(super) fn group_bands(groups: usize, m: usize, per: usize, cin: usize, mr: usize) -> usize {
    let per_group = 2.0 * m as f64 * per as f64 * cin as f64;
    if groups < 2 || per_group >= 2.0 * MIN_TASK_FLOPS {
        return 1;
    }
    let total = per_group * groups as f64;
    rayon::current_num_threads()
        .min((total / MIN_TASK_FLOPS) as usize)
        .min(m.div_ceil(mr))
        .max(1)
}

/// A grouped 1x1, stride-1, unpadded convolution as `bands` row bands in parallel, each band
/// the `groups` plain GEMMs of its pixels (bands of whole row tiles, so every output value
/// sees the same kernel calls as when run whole: the bits do not depend on the split). The
/// caller validated every size; `out` is exactly `(m - 1) * ldc + cout` long.
#[allow(clippy::too_many_arguments)] // a GEMM call's shape plus the band count
fn pointwise_groups_in_bands(
    input: &[f32],
    channels: usize,
    filters: &[PackedB],
    m: usize,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    bands: usize,
) -> Result<(), String> {
    use rayon::prelude::*;
    let (per, cin) = (filters[0].n(), filters[0].k());
    let mr = filters[0].isa().mr();
    let band = m.div_ceil(bands).div_ceil(mr) * mr;
    out.par_chunks_mut(band * ldc)
        .enumerate()
        .try_for_each(|(b, chunk)| {
            let r0 = b * band;
            let rows = band.min(m - r0);
            for (group, filter) in filters.iter().enumerate() {
                let ep = Epilogue {
                    bias: epilogue.bias.map(|b| &b[group * per..]),
                    add: epilogue.add.map(|r| Residual {
                        data: &r.data[r0 * r.ld + group * per..],
                        ld: r.ld,
                    }),
                    activation: epilogue.activation,
                };
                let a = &input[r0 * channels + group * cin..];
                let c = &mut chunk[group * per..];
                sgemm(rows, per, cin, a, channels, filter, c, ldc, &ep)?;
            }
            Ok(())
        })
}

/// The input of a convolution: `[n, h, w, channels]` values, or with `nchw` the same input
/// stored `[n, channels, h, w]` (only ever read through the padded copy).
struct InputView<'a> {
    input: &'a [f32],
    dims: [usize; 4],
    nchw: bool,
}

/// One group of a convolution: input channels `c0..c0 + cin` of every pixel, `m` output rows
/// stored at `out[i * ldc ..][..filter.n()]`. The caller validated every size.
#[allow(clippy::too_many_arguments)] // a GEMM call's shape: operands, sizes, leading dimension
fn conv_group(
    view: &InputView<'_>,
    c0: usize,
    cin: usize,
    filter: &PackedB,
    g: &ConvGeometry,
    m: usize,
    out: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) -> Result<(), String> {
    let [_, h, w, channels] = view.dims;
    let cout = filter.n();
    // Channels first, the input is only ever read through the padded copy below.
    if view.nchw && !(nchw_input_supported(cin, g) && cin == channels) {
        return Err(format!(
            "conv2d: a channels-first input of {cin} channels needs one group, a filter wider \
             than one tap, no dilation across and fewer than {MERGE_BELOW_CIN} channels ({g:?})"
        ));
    }
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1;
    if pointwise && g.pad_top == 0 && g.pad_left == 0 && g.out_h == h && g.out_w == w {
        // Plain GEMM over the pixels, the group's channels being a strided [m, cin] view.
        let a = &view.input[c0..];
        return sgemm(m, cout, cin, a, channels, filter, out, ldc, epilogue);
    }
    let src = ConvRows {
        input: view.input,
        dims: [view.dims[0], h, w, cin],
        stride: channels,
        c0,
        g: *g,
        taps_w: 1,
    };
    let merge = cin < MERGE_BELOW_CIN && g.kw > 1 && g.dilation_w == 1;
    // A product that streams its filter (`driver::streams`) reuses each panel across all its
    // row tiles only where they form one strip, which a tap in the padding breaks (every 12
    // pixels of a 7x7 image touch its border); the padded copy is small there (9x9x512
    // floats for ResNet's 7x7x512).
    let pad_to_stream = streams(m, cout, filter.k()) && !src.taps_inside();
    if merge || pad_to_stream {
        if merge && cin == channels && src.taps_inside() && !view.nchw {
            // Already what the padded copy would be: whole pixels, no tap outside.
            let src = ConvRows {
                taps_w: g.kw,
                ..src
            };
            return sgemm_rows(&src, filter, out, ldc, epilogue);
        }
        let overflow = || format!("conv2d: padded input overflows usize ({:?})", view.dims);
        let dims = padded_dims(view.dims, cin, g).ok_or_else(overflow)?;
        // `pad_input` writes every value.
        return super::scratch::with_buffer(&PADDED, dims.iter().product(), |padded| {
            pad_input(view, c0, g, dims, padded);
            let g = ConvGeometry {
                pad_top: 0,
                pad_left: 0,
                ..*g
            };
            let src = ConvRows {
                input: padded,
                dims,
                stride: dims[3],
                c0: 0,
                g,
                taps_w: if merge { g.kw } else { 1 },
            };
            sgemm_rows(&src, filter, out, ldc, epilogue)
        });
    }
    sgemm_rows(&src, filter, out, ldc, epilogue)
}

/// Input channel counts below which whole filter rows become one segment (see module docs).
/// One thread, AVX-512: 16x32x32x3 -> 32 (3x3) 29 -> 49 GFLOP/s; 1x100x100x1 -> 8 (5x5)
/// 3 -> 10 GFLOP/s. At 32 channels too, once the padded copy ran on every thread into a
/// reused buffer (examples/gemm_speed.rs on Zen 5, best of 30, ms on one / two threads, taps
/// apart vs merged): W4's 16x32x32x32 -> 32 1.435 / 0.735 vs 1.340 / 0.675, 16x16x16x32 ->
/// 64 0.709 / 0.361 vs 0.658 / 0.337. At 64 channels small convs lose the copy's cost
/// (1x14x14x64: 0.039 vs 0.077 ms on two threads).
const MERGE_BELOW_CIN: usize = 64;

/// The NHWC dims of input channels `c` padded so that no tap of `g` reads outside: the
/// input's rows and columns with the padding before them, and after them as far as the last
/// output's taps reach; `None` if the sizes overflow.
fn padded_dims(dims: [usize; 4], c: usize, g: &ConvGeometry) -> Option<[usize; 4]> {
    let [n, h, w, _] = dims;
    let (last_y, last_x) = g.last_taps()?;
    let hp = h.checked_add(g.pad_top)?.max(last_y.checked_add(1)?);
    let wp = w.checked_add(g.pad_left)?.max(last_x.checked_add(1)?);
    n.checked_mul(hp)?.checked_mul(wp)?.checked_mul(c)?;
    Some([n, hp, wp, c])
}

/// Values from which the padded copy is split across threads (one row per task at least).
const PARALLEL_PAD_MIN: usize = 1 << 16;

thread_local! {
    /// Each thread's padded input (see [`super::scratch`]).
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies input channels `c0..c0 + dims[3]` into `padded` (`dims` from [`padded_dims`]),
/// zeros around them, every value written once: filling with zeros first doubled the copy's
/// memory traffic. Rows are written in parallel: serial, the copy made merging taps at 32
/// channels a loss on two threads (see [`MERGE_BELOW_CIN`]).
fn pad_input(
    view: &InputView<'_>,
    c0: usize,
    g: &ConvGeometry,
    dims: [usize; 4],
    padded: &mut [f32],
) {
    let [_, h, w, channels] = view.dims;
    let [_, hp, wp, c] = dims;
    let row = wp * c;
    let fill = |(r, out): (usize, &mut [f32])| {
        let (img, y) = (r / hp, r % hp);
        let Some(sy) = y.checked_sub(g.pad_top).filter(|&sy| sy < h) else {
            out.fill(0.0);
            return;
        };
        let (left, rest) = out.split_at_mut(g.pad_left * c);
        let (data, right) = rest.split_at_mut(w * c);
        left.fill(0.0);
        right.fill(0.0);
        let src_row = (img * h + sy) * w;
        if view.nchw {
            // Channel `ch` of the row is the row `sy` of plane `ch` (one group: c0 = 0).
            let plane = |ch: usize| {
                let at = ((img * channels + ch) * h + sy) * w;
                &view.input[at..at + w]
            };
            interleave(c, plane, data);
        } else if c == channels {
            // Whole pixels: one contiguous row.
            data.copy_from_slice(&view.input[src_row * c..(src_row + w) * c]);
        } else {
            for (x, px) in data.chunks_exact_mut(c).enumerate() {
                let src = (src_row + x) * channels + c0;
                px.copy_from_slice(&view.input[src..src + c]);
            }
        }
    };
    if padded.len() >= PARALLEL_PAD_MIN && rayon::current_num_threads() > 1 {
        padded.par_chunks_mut(row).enumerate().for_each(fill);
    } else {
        padded.chunks_mut(row).enumerate().for_each(fill);
    }
}

/// Writes `c` planes' rows (`plane(ch)`, each `out.len() / c` values) into `out` pixel by
/// pixel: `out[x * c + ch] = plane(ch)[x]`. Three channels (an RGB image) go four pixels at a
/// time through 16-byte shuffles (SSE2, every x86-64): element by element the copy took as
/// long as the transpose it replaces.
fn interleave<'p>(c: usize, plane: impl Fn(usize) -> &'p [f32], out: &mut [f32]) {
    if c == 3 {
        let (r, g, b) = (plane(0), plane(1), plane(2));
        let mut x = 0;
        #[cfg(target_arch = "x86_64")]
        for quad in out.chunks_exact_mut(12) {
            let four = |p: &[f32]| -> [f32; 4] { p[x..x + 4].try_into().expect("four values") };
            let values = rgb4(four(r), four(g), four(b));
            quad.copy_from_slice(&values);
            x += 4;
        }
        for (i, p) in out[x * 3..].chunks_exact_mut(3).enumerate() {
            p.copy_from_slice(&[r[x + i], g[x + i], b[x + i]]);
        }
        return;
    }
    for ch in 0..c {
        for (o, &v) in out[ch..].iter_mut().step_by(c).zip(plane(ch)) {
            *o = v;
        }
    }
}

/// Four pixels' red, green and blue values interleaved: `[r0, g0, b0, r1, ...]`.
#[cfg(target_arch = "x86_64")]
fn rgb4(r: [f32; 4], g: [f32; 4], b: [f32; 4]) -> [f32; 12] {
    use std::arch::x86_64::*;
    // SAFETY: SSE is part of every x86-64 CPU (the target's baseline), and `[f32; 4]` /
    // `__m128` (and twelve f32s / three `__m128`) have the same size, every bit pattern
    // valid for both.
    unsafe {
        let [r4, g4, b4] = std::mem::transmute::<[[f32; 4]; 3], [__m128; 3]>([r, g, b]);
        // (r0 g0 r1 g1) and (r2 g2 r3 g3), then the three vectors of four pixels' RGB.
        let (lo, hi) = (_mm_unpacklo_ps(r4, g4), _mm_unpackhi_ps(r4, g4));
        let u = _mm_shuffle_ps::<0b10_10_00_00>(b4, lo); // b0 b0 r1 r1
        let v = _mm_shuffle_ps::<0b01_01_11_11>(lo, b4); // g1 g1 b1 b1
        let w = _mm_shuffle_ps::<0b10_10_10_10>(b4, hi); // b2 b2 r3 r3
        let z = _mm_shuffle_ps::<0b11_11_11_11>(hi, b4); // g3 g3 b3 b3
        std::mem::transmute::<[__m128; 3], [f32; 12]>([
            _mm_shuffle_ps::<0b10_00_01_00>(lo, u), // r0 g0 b0 r1
            _mm_shuffle_ps::<0b01_00_10_00>(v, hi), // g1 b1 r2 g2
            _mm_shuffle_ps::<0b10_00_10_00>(w, z),  // b2 r3 g3 b3
        ])
    }
}

/// The implicit A of a convolution (see the module comment).
struct ConvRows<'a> {
    input: &'a [f32],
    /// `[n, h, w, cin]`: cin is the channels one tap reads (a group's, when grouped).
    dims: [usize; 4],
    /// Values from one pixel to the next (`cin`, or the total channels when grouped).
    stride: usize,
    /// The first channel read in every pixel.
    c0: usize,
    g: ConvGeometry,
    /// Taps of one filter row per segment: 1, or `kw` when the input is padded so that a
    /// filter row never leaves it (then `dilation_w == 1` and `pad_left == 0`).
    taps_w: usize,
}

impl ConvRows<'_> {
    /// Whether every tap of every output pixel reads inside the input: no padding, and the
    /// last pixel's last tap within the last row and column.
    fn taps_inside(&self) -> bool {
        let g = &self.g;
        let [_, h, w, _] = self.dims;
        g.pad_top == 0 && g.pad_left == 0 && g.last_taps().is_some_and(|(y, x)| y < h && x < w)
    }
}

/// An output pixel as (image, row, column), stepped in row-major order without a division
/// (a division per row and segment cost as much as the gather itself).
#[derive(Clone, Copy)]
struct Pixel {
    img: usize,
    oy: usize,
    ox: usize,
}

impl Pixel {
    /// Output pixel `i` (row-major over images, rows and columns of `g`'s output).
    fn of(i: usize, g: &ConvGeometry) -> Pixel {
        let plane = g.out_h * g.out_w;
        Pixel {
            img: i / plane,
            oy: (i % plane) / g.out_w,
            ox: i % g.out_w,
        }
    }

    /// Moves `n` pixels on within the current output row (`ox + n <= out_w`), wrapping to the
    /// next row (and image) at its end.
    fn advance(&mut self, n: usize, g: &ConvGeometry) {
        self.ox += n;
        if self.ox == g.out_w {
            self.ox = 0;
            self.oy += 1;
            if self.oy == g.out_h {
                self.oy = 0;
                self.img += 1;
            }
        }
    }
}

/// A position in the reduction of a conv whose depth runs over taps `ty * kw + tx`, then
/// `c` channels: stepped from segment to segment without a division.
struct Depth {
    ty: usize,
    tx: usize,
    ci: usize,
}

impl Depth {
    /// Depth `k` for `c` channels a tap.
    fn of(k: usize, c: usize, g: &ConvGeometry) -> Depth {
        let tap = k / c;
        Depth {
            ty: tap / g.kw,
            tx: tap % g.kw,
            ci: k % c,
        }
    }

    /// Moves `len` values on: the same tap, or the next ones (a merged segment is a whole
    /// filter row of taps).
    fn advance(&mut self, len: usize, c: usize, g: &ConvGeometry) {
        self.ci += len;
        while self.ci >= c {
            self.ci -= c;
            self.tx += 1;
            if self.tx == g.kw {
                self.tx = 0;
                self.ty += 1;
            }
        }
    }
}

impl RowSource for ConvRows<'_> {
    fn rows(&self) -> usize {
        self.dims[0] * self.g.out_h * self.g.out_w
    }

    fn depth(&self) -> usize {
        self.g.kh * self.g.kw * self.dims[3]
    }

    fn segment_len(&self) -> usize {
        (self.taps_w * self.dims[3]).max(1)
    }

    fn segments<'s>(
        &'s self,
        i0: usize,
        rows: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        out: &mut Vec<Option<&'s [f32]>>,
    ) {
        let [_, h, w, c] = self.dims;
        let g = &self.g;
        let base = out.len();
        out.resize(base + nseg * rows, None);
        let mut px = Pixel::of(i0, g);
        let mut r = 0;
        while r < rows {
            const CHUNK: usize = 16;
            let chunk = (rows - r).min(CHUNK);
            // (first value of the image, top input row, left input column) of each row.
            let mut pos = [(0usize, 0isize, 0isize); CHUNK];
            for p in pos.iter_mut().take(chunk) {
                *p = (
                    px.img * h * w,
                    (px.oy * g.stride_h) as isize - g.pad_top as isize,
                    (px.ox * g.stride_w) as isize - g.pad_left as isize,
                );
                px.advance(1, g);
            }
            for s in 0..nseg {
                // Depth k is tap (k / c) and channel (k % c); a merged segment starts at dx = 0
                // and runs on through the filter row, contiguous in the padded input.
                let k = k0 + s * len;
                let (tap, ci) = (k / c, k % c);
                let dy = ((tap / g.kw) * g.dilation_h) as isize;
                let dx = ((tap % g.kw) * g.dilation_w) as isize;
                for (q, &(first, top, left)) in pos.iter().take(chunk).enumerate() {
                    let (iy, ix) = (top + dy, left + dx);
                    if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                        let at =
                            (first + iy as usize * w + ix as usize) * self.stride + self.c0 + ci;
                        out[base + s * rows + r + q] = Some(&self.input[at..at + len]);
                    }
                }
            }
            r += chunk;
        }
    }

    fn strip_starts(
        &self,
        i0: usize,
        rows: usize,
        mr: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        starts: &mut Vec<usize>,
        offsets: &mut Vec<usize>,
    ) -> Option<(&[f32], usize)> {
        // Only tiles where no tap of the tile's pixels leaves the input (VALID, a padded copy,
        // or away from the edges of a padded one): then every tap is at one offset from the
        // pixel's first, whichever the pixel. Interior tiles of padded convolutions skip the
        // table of a pointer per row and tap (6% of W4's 32-channel 3x3 conv's perf samples on
        // Zen 5).
        if mr == 0 || self.dims[3] == 0 {
            return None;
        }
        let [_, h, w, c] = self.dims;
        let g = &self.g;
        let all_inside = self.taps_inside();
        // How far a pixel's last tap lies below and right of its first.
        let (reach_y, reach_x) = (
            (g.kh.max(1) - 1) * g.dilation_h,
            (g.kw.max(1) - 1) * g.dilation_w,
        );
        let inside_at = |top: usize, left: usize| {
            top >= g.pad_top
                && left >= g.pad_left
                && top - g.pad_top + reach_y < h
                && left - g.pad_left + reach_x < w
        };
        // The first value of the pixel's first tap, in the input (padded at top and left).
        let base = |px: &Pixel| {
            let (top, left) = (px.oy * g.stride_h, px.ox * g.stride_w);
            ((px.img * h + top - g.pad_top) * w + left - g.pad_left) * self.stride + self.c0
        };
        let start = starts.len();
        let mut px = Pixel::of(i0, g);
        let mut covered = 0;
        if all_inside {
            // VALID or a padded copy: the whole strip, output row by output row, each start a
            // step on from the one before within a row (per tile, the checks and table took a
            // tenth of a 3-channel first layer's time; pixel by pixel, 5% of it).
            let step = g.stride_w * self.stride;
            starts.reserve(rows.next_multiple_of(mr));
            while covered < rows {
                let n = (g.out_w - px.ox).min(rows - covered);
                let at = base(&px);
                starts.extend((0..n).map(|j| at + j * step));
                px.advance(n, g);
                covered += n;
            }
            starts.resize(start + rows.next_multiple_of(mr), 0);
        }
        // Otherwise tile by tile, as far as the tiles have every tap inside.
        while covered < rows {
            let n = mr.min(rows - covered);
            if px.ox + n <= g.out_w {
                // The usual tile: pixels of one output row, `stride_w` input pixels apart, so
                // the first and last pixel decide whether all are inside (stepping pixel by
                // pixel took 15% of a 3-channel first layer's perf samples on Zen 5).
                let top = px.oy * g.stride_h;
                let (left, last) = (px.ox * g.stride_w, (px.ox + n - 1) * g.stride_w);
                if !(inside_at(top, left) && inside_at(top, last)) {
                    break;
                }
                let (at, step) = (base(&px), g.stride_w * self.stride);
                starts.extend((0..n).map(|r| at + r * step));
                px.advance(n, g);
            } else {
                let tile = starts.len();
                for _ in 0..n {
                    if !inside_at(px.oy * g.stride_h, px.ox * g.stride_w) {
                        break;
                    }
                    starts.push(base(&px));
                    px.advance(1, g);
                }
                if starts.len() - tile < n {
                    starts.truncate(tile);
                    break;
                }
            }
            starts.resize(starts.len() + mr - n, 0);
            covered += n;
        }
        if covered == 0 {
            starts.truncate(start);
            return None;
        }
        let mut d = Depth::of(k0, c, g);
        for _ in 0..nseg {
            offsets.push((d.ty * g.dilation_h * w + d.tx * g.dilation_w) * self.stride + d.ci);
            d.advance(len, c, g);
        }
        Some((self.input, covered))
    }

    fn tile_rows<'s>(
        &'s self,
        i0: usize,
        rows: usize,
        mr: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        zeros: &'s [f32],
        out: &mut Vec<&'s [f32]>,
    ) -> bool {
        const MAX_RUNS: usize = 16;
        // No channels: no segments to step through (and nothing to divide by).
        if mr > MAX_RUNS || rows > mr || zeros.len() < len || self.dims[3] == 0 {
            return false;
        }
        let [_, h, w, c] = self.dims;
        let g = &self.g;
        // The tile's rows as runs of consecutive pixels of one output row: within a run the
        // pixels are `stride_w` input columns apart, so a tap's valid rows are one range found
        // by two divisions instead of four comparisons per row (a 12-row tile is one run, or
        // two where it wraps to the next output row).
        // (first row, end row, input value where the run's input row starts, top input row,
        // left input column of its first pixel)
        let mut runs = [(0usize, 0usize, 0usize, 0isize, 0isize); MAX_RUNS];
        let mut nruns = 0;
        let mut px = Pixel::of(i0, g);
        let mut q = 0;
        while q < rows {
            let end = (q + g.out_w - px.ox).min(rows);
            runs[nruns] = (
                q,
                end,
                px.img * h * w,
                (px.oy * g.stride_h) as isize - g.pad_top as isize,
                (px.ox * g.stride_w) as isize - g.pad_left as isize,
            );
            nruns += 1;
            px.advance(end - q, g);
            q = end;
        }
        let (sw, hi, wi) = (g.stride_w as isize, h as isize, w as isize);
        // No tap of any pixel leaves the input (a padded copy, or VALID): every run is whole,
        // and the two divisions per run and segment below (a quarter of a short tile's time at
        // stride 2) are skipped.
        let inside = self.taps_inside();
        // Divisions cost as much as the rest of a short tile's table: none for stride 1, and
        // the tap is stepped from segment to segment below rather than divided out each time.
        let by_sw = |x: isize| if sw == 1 { x } else { x / sw };
        let mut d = Depth::of(k0, c, g);
        out.reserve(nseg * mr);
        for _ in 0..nseg {
            let dy = (d.ty * g.dilation_h) as isize;
            let dx = (d.tx * g.dilation_w) as isize;
            for &(q0, q1, first, top, left) in &runs[..nruns] {
                let (iy, x0) = (top + dy, left + dx);
                let n = (q1 - q0) as isize;
                // Pixels q0 + j with 0 <= x0 + j * sw < w, j in lo..hi.
                let (lo, hi_j) = if inside {
                    (0, n)
                } else if iy < 0 || iy >= hi || x0 >= wi {
                    (0, 0)
                } else {
                    let lo = if x0 >= 0 { 0 } else { by_sw(-x0 + sw - 1) };
                    (lo.min(n), (by_sw(wi - 1 - x0) + 1).min(n))
                };
                let lo = lo.min(hi_j);
                for _ in 0..lo {
                    out.push(&zeros[..len]);
                }
                if lo < hi_j {
                    let row = (first + iy as usize * w) * self.stride + self.c0 + d.ci;
                    for j in lo..hi_j {
                        let at = row + (x0 + j * sw) as usize * self.stride;
                        out.push(&self.input[at..at + len]);
                    }
                }
                for _ in hi_j..n {
                    out.push(&zeros[..len]);
                }
            }
            for _ in rows..mr {
                out.push(&zeros[..len]);
            }
            d.advance(len, c, g);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strip from a tile where every tap of its pixels lies inside the input (all tiles of
    /// a VALID conv, the interior tiles of a padded one) runs on as far as such tiles go, and
    /// `strip_starts` describes for each of them the same slices as `tile_rows` (segment `s`
    /// of row `r` starts at the same address); from any other tile it declines.
    #[test]
    fn conv_strip_starts_match_tile_rows() {
        let zeros = vec![0.0f32; 64];
        // (n, h, w, channels, cin, c0, kernel, strides, dilations, padding, taps_w)
        let cases = [
            (2, 7, 9, 3, 3, 0, [3, 3], [2, 2], [1, 1], Padding::Valid, 3),
            (1, 9, 8, 4, 4, 0, [3, 2], [1, 2], [1, 1], Padding::Valid, 1),
            (2, 6, 6, 6, 3, 3, [3, 3], [1, 1], [1, 1], Padding::Valid, 1),
            (
                1,
                11,
                13,
                5,
                5,
                0,
                [3, 3],
                [2, 1],
                [2, 2],
                Padding::Valid,
                1,
            ),
            (2, 5, 5, 8, 8, 0, [1, 1], [2, 2], [1, 1], Padding::Valid, 1),
            (1, 5, 7, 3, 3, 0, [3, 3], [1, 1], [1, 1], Padding::Same, 1),
            (2, 9, 17, 6, 3, 3, [3, 3], [1, 1], [1, 1], Padding::Same, 1),
            (1, 12, 19, 4, 4, 0, [3, 3], [2, 2], [1, 1], Padding::Same, 1),
            (1, 14, 20, 2, 2, 0, [5, 3], [1, 1], [2, 1], Padding::Same, 1),
        ];
        let mut interior_tiles = 0;
        for (n, h, w, channels, cin, c0, k, s, d, pad, taps_w) in cases {
            let g = ConvGeometry::new([h, w], k, s, d, pad).unwrap();
            let input = vec![1.0f32; n * h * w * channels];
            let src = ConvRows {
                input: &input,
                dims: [n, h, w, cin],
                stride: channels,
                c0,
                g,
                taps_w,
            };
            let seg = src.segment_len();
            let taps = src.depth() / seg;
            // Whether every tap of every row of the tile is inside: from the (independent)
            // segments.
            let inside = |i0: usize, rows: usize| {
                let mut rows_segs = Vec::new();
                src.segments(i0, rows, 0, seg, taps, &mut rows_segs);
                rows_segs.iter().all(Option::is_some)
            };
            for mr in [12, 6, 4] {
                for (k0, len, nseg) in [(0, seg, taps), (seg, seg, taps - 1), (1, 1, 3)] {
                    for i0 in (0..src.rows()).step_by(mr) {
                        // Strips of up to three tiles.
                        let rows = (3 * mr).min(src.rows() - i0);
                        let (mut starts, mut offsets) = (Vec::new(), Vec::new());
                        let found = src.strip_starts(
                            i0,
                            rows,
                            mr,
                            k0,
                            len,
                            nseg,
                            &mut starts,
                            &mut offsets,
                        );
                        let covered = found.map_or(0, |(a, covered)| {
                            assert_eq!(a.as_ptr(), input.as_ptr());
                            covered
                        });
                        let mut want = 0;
                        while want < rows && inside(i0 + want, mr.min(rows - want)) {
                            want += mr.min(rows - want);
                        }
                        assert_eq!(covered, want, "{g:?} i0={i0} mr={mr}");
                        if pad == Padding::Same && covered > 0 {
                            interior_tiles += 1;
                        }
                        if covered == 0 {
                            assert!(starts.is_empty() && offsets.is_empty());
                            continue;
                        }
                        assert_eq!(
                            (starts.len(), offsets.len()),
                            (covered.next_multiple_of(mr), nseg)
                        );
                        for t0 in (0..covered).step_by(mr) {
                            let tile_rows = mr.min(covered - t0);
                            let mut table = Vec::new();
                            assert!(src.tile_rows(
                                i0 + t0,
                                tile_rows,
                                mr,
                                k0,
                                len,
                                nseg,
                                &zeros[..len],
                                &mut table
                            ));
                            for (si, &off) in offsets.iter().enumerate() {
                                for r in 0..tile_rows {
                                    let want = table[si * mr + r];
                                    let got = &input[starts[t0 + r] + off..][..len];
                                    assert_eq!(
                                        got.as_ptr(),
                                        want.as_ptr(),
                                        "{g:?} i0={i0} t0={t0} k0={k0}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(interior_tiles > 0, "no padded case had an interior tile");
    }

    /// `tile_rows` hands the kernel exactly the slices (same address, same length) that
    /// `segments` gives, with `zeros` for padding and rows past the tile, on every tile of
    /// geometries with padding on every edge, strides 1 and 2, dilation, output rows shorter
    /// than a tile (runs straddling rows and images), grouped channel blocks and merged filter
    /// rows, for every MR and k-block shape the driver makes.
    #[test]
    fn conv_tile_rows_match_segments() {
        let zeros = vec![0.0f32; 64];
        // (n, h, w, channels, cin, c0, kernel, strides, dilations, padding, taps_w)
        let cases = [
            (2, 5, 7, 3, 3, 0, [3, 3], [1, 1], [1, 1], Padding::Same, 1),
            (1, 9, 8, 4, 4, 0, [3, 2], [2, 2], [1, 1], Padding::Same, 1),
            (3, 4, 3, 2, 2, 0, [3, 3], [1, 2], [2, 1], Padding::Same, 1),
            (1, 11, 13, 5, 5, 0, [5, 5], [2, 1], [1, 2], Padding::Same, 1),
            (2, 6, 6, 6, 3, 3, [3, 3], [1, 1], [1, 1], Padding::Valid, 1),
            (1, 13, 1, 2, 2, 0, [3, 1], [1, 1], [1, 1], Padding::Same, 1),
            (2, 7, 9, 3, 3, 0, [3, 3], [2, 2], [1, 1], Padding::Valid, 3),
        ];
        for (n, h, w, channels, cin, c0, k, s, d, pad, taps_w) in cases {
            let g = ConvGeometry::new([h, w], k, s, d, pad).unwrap();
            let input = vec![1.0f32; n * h * w * channels];
            let src = ConvRows {
                input: &input,
                dims: [n, h, w, cin],
                stride: channels,
                c0,
                g,
                taps_w,
            };
            let seg = src.segment_len();
            let taps = src.depth() / seg;
            // (k0, len, nseg): whole depth, a later block of segments, pieces of one segment.
            let mut blocks = vec![(0, seg, taps), (seg, seg, taps - 1)];
            if seg > 1 {
                blocks.push((seg + 1, seg - 1, 1));
                blocks.push((0, 1, 1));
            }
            // Single values across taps: the tap stepping from one segment to the next.
            blocks.push((1, 1, (src.depth() - 1).min(3 * seg + 2)));
            for mr in [12, 6, 4] {
                for &(k0, len, nseg) in &blocks {
                    for i0 in (0..src.rows()).step_by(mr) {
                        let rows = mr.min(src.rows() - i0);
                        let tag = format!("{g:?} c0={c0} mr={mr} i0={i0} k0={k0} len={len}");
                        let mut raw = Vec::new();
                        src.segments(i0, rows, k0, len, nseg, &mut raw);
                        let mut want: Vec<(*const f32, usize)> = Vec::new();
                        for si in 0..nseg {
                            for r in 0..mr {
                                let sl = if r < rows { raw[si * rows + r] } else { None };
                                let sl = sl.unwrap_or(&zeros[..len]);
                                want.push((sl.as_ptr(), len));
                            }
                        }
                        let mut got = Vec::new();
                        assert!(src.tile_rows(
                            i0,
                            rows,
                            mr,
                            k0,
                            len,
                            nseg,
                            &zeros[..len],
                            &mut got
                        ));
                        let got: Vec<_> = got.iter().map(|sl| (sl.as_ptr(), sl.len())).collect();
                        assert_eq!(got, want, "{tag}");
                    }
                }
            }
        }
    }
}
