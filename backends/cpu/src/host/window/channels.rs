//! NHWC `depthwise_conv2d` (multiplier 1), `max_pool` and `avg_pool` vectorised across the
//! contiguous channel axis with the widest vectors the CPU has, the bias and activation applied
//! before the store, output rows split across threads. `reduce_sum`, `reduce_mean` and
//! `reduce_max` over the middle of a shape (global pooling) run here too, as one window over
//! the reduced axes ([`ChannelWindow::of`]).
//!
//! These kernels are memory-bound (one multiply-add, max or add per loaded input value), so
//! what matters is one full-width load per input vector and nothing else: for each output
//! pixel, the valid taps are listed once (their input and filter offsets), then every block
//! of channels runs over that list with its accumulators in registers. Blocks are fixed-size
//! arrays (`[f32; N]`) whose loops LLVM turns into vector code for the ISA the enclosing
//! `#[target_feature]` function enables: `N` = 64 channels (four zmm registers) under
//! AVX-512, 32 (four ymm) under AVX2, 16 (four xmm) for the portable baseline; the channels
//! left over run in blocks of 16, 8, 4 and 1. Four accumulator vectors hide the latency of the
//! adds; more would not fit beside the loaded values on the 16-register ISAs.
//!
//! Border pixels list only their in-bounds taps (padded cells never count: not in a max, not
//! in an average's divisor, as the reference evaluator and TensorFlow do), so no read is ever
//! outside the input. A pool window made only of padding is rejected when planning.
//!
//! Numerics match the generated window kernels: taps summed in (ky, kx) order from 0.0 with
//! separate multiply and add, `acc + bias` then the activation; max propagates NaN (a NaN
//! input or accumulator wins); the average divides by the number of unpadded cells.

use super::lanes::Lanes;
#[cfg(target_arch = "x86_64")]
use super::lanes::{F32x4, F32x8, F32x16};
use crate::codegen::reduce::middle_reduction;
use crate::gemm::{Activation, Isa};
use kiln_ir::DType;
use kiln_ir::infer::window_dim;
use kiln_ir::lower::axis_index;
use kiln_ir::op::{DataFormat, Op, ReduceOp};
use kiln_ir::program::{Kernel, Program};
use kiln_ir::shape::fmt_dims;
use rayon::prelude::*;

/// Which window computation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelOp {
    /// Depthwise convolution with channel multiplier 1 (filter `[kh, kw, c, 1]`).
    Depthwise,
    /// Max pool.
    Max,
    /// Average pool over the unpadded cells.
    Avg,
    /// Sum over the window (a `reduce_sum`; see [`ChannelWindow::of`]).
    Sum,
}

/// Shapes of one NHWC window kernel, checked against its buffers when planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelWindow {
    /// What it computes.
    pub op: ChannelOp,
    /// Batch, input height, width and channels.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels (input = output).
    pub c: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Window height and width.
    pub k: [usize; 2],
    /// Strides (height, width).
    pub s: [usize; 2],
    /// Dilations (height, width).
    pub d: [usize; 2],
    /// Padding before the first row and column.
    pub pad: [usize; 2],
}

/// Fewer channels than this stay on the generated kernels: per-tap bookkeeping would outweigh
/// a block of channels narrower than one vector (RGB pools, single-channel images).
const MIN_CHANNELS: usize = 8;

impl ChannelWindow {
    /// The window of an NHWC depthwise (multiplier 1) / max / avg pool kernel on f32 buffers
    /// with at least `MIN_CHANNELS` channels, or `None` for other kernels (which keep the
    /// generated path). An error names the shapes when they disagree with the op.
    pub fn of(program: &Program, kernel: &Kernel) -> Result<Option<ChannelWindow>, String> {
        if let Some(Op::Reduce { op, axes, .. }) = &kernel.main {
            return Ok(Self::of_reduce(program, kernel, *op, axes.as_deref()));
        }
        let (op, k, s, d, padding, format) = match &kernel.main {
            Some(Op::DepthwiseConv2d(a)) => {
                let wd = &program.buffer(kernel.inputs[1]).dims;
                if wd.len() != 4 || wd[3] != 1 {
                    return Ok(None);
                }
                (
                    ChannelOp::Depthwise,
                    [wd[0], wd[1]],
                    a.strides,
                    a.dilations,
                    a.padding,
                    a.data_format,
                )
            }
            Some(Op::MaxPool(a)) => (
                ChannelOp::Max,
                a.ksize,
                a.strides,
                [1, 1],
                a.padding,
                a.data_format,
            ),
            Some(Op::AvgPool(a)) => (
                ChannelOp::Avg,
                a.ksize,
                a.strides,
                [1, 1],
                a.padding,
                a.data_format,
            ),
            _ => return Ok(None),
        };
        let all_f32 = kernel
            .inputs
            .iter()
            .chain([&kernel.output])
            .all(|&b| program.buffer(b).dtype == DType::F32);
        if format != DataFormat::Nhwc || !all_f32 {
            return Ok(None);
        }
        let xd = &program.buffer(kernel.inputs[0]).dims;
        let &[n, h, w, c] = xd.as_slice() else {
            return Ok(None);
        };
        if c < MIN_CHANNELS {
            return Ok(None);
        }
        let ctx = |m: String| format!("input {}: {m}", fmt_dims(xd));
        if op == ChannelOp::Depthwise {
            let wd = &program.buffer(kernel.inputs[1]).dims;
            if wd[2] != c {
                return Err(ctx(format!(
                    "filter {} expects {} channels",
                    fmt_dims(wd),
                    wd[2]
                )));
            }
        }
        let wy = window_dim(h, k[0], s[0], d[0], padding, 0).map_err(ctx)?;
        let wx = window_dim(w, k[1], s[1], d[1], padding, 1).map_err(ctx)?;
        let od = &program.buffer(kernel.output).dims;
        if od.as_slice() != [n, wy.out, wx.out, c] {
            return Err(ctx(format!(
                "output buffer is {} but the op produces {}",
                fmt_dims(od),
                fmt_dims(&[n, wy.out, wx.out, c])
            )));
        }
        let win = ChannelWindow {
            op,
            n,
            h,
            w,
            c,
            oh: wy.out,
            ow: wx.out,
            k,
            s,
            d,
            pad: [wy.pad_before, wx.pad_before],
        };
        if op != ChannelOp::Depthwise && win.has_empty_window() {
            return Err(ctx(format!(
                "a pooling window covers only padding (window {}x{}, padding {padding:?})",
                k[0], k[1]
            )));
        }
        Ok(Some(win))
    }

    /// A `reduce_sum`, `reduce_mean` or `reduce_max` over one run of adjacent axes with at
    /// least `MIN_CHANNELS` contiguous values kept inside it (global average pooling: NHWC over
    /// H and W) as a window over the whole run: `n` the values kept outside, `w` the run, `c`
    /// the values kept inside. The generated reduction sums such a shape four lanes at a time
    /// on one thread (W4's 16x16x16x64 global average pool: 0.016 ms, here 0.0076, against
    /// ONNX Runtime's 0.011; Zen 5, two threads). Runs of more than `MAX_REDUCED` values are
    /// left to it (not measured).
    fn of_reduce(
        program: &Program,
        kernel: &Kernel,
        op: ReduceOp,
        axes: Option<&[i64]>,
    ) -> Option<ChannelWindow> {
        const MAX_REDUCED: usize = 4096;
        let x = program.buffer(kernel.inputs[0]);
        let out = program.buffer(kernel.output);
        let op = match op {
            ReduceOp::Sum => ChannelOp::Sum,
            ReduceOp::Mean => ChannelOp::Avg,
            ReduceOp::Max => ChannelOp::Max,
            ReduceOp::Min => return None,
        };
        if x.dtype != DType::F32 || out.dtype != DType::F32 {
            return None;
        }
        // Lowering lists the axes, sorted and distinct.
        let axes: Vec<usize> = axes.into_iter().flatten().map(|&a| axis_index(a)).collect();
        let [outer, run, inner] = middle_reduction(&x.dims, &axes, &out.dims)?;
        let fits = inner >= MIN_CHANNELS && (1..=MAX_REDUCED).contains(&run);
        fits.then_some(ChannelWindow {
            op,
            n: outer,
            h: 1,
            w: run,
            c: inner,
            oh: 1,
            ow: 1,
            k: [1, run],
            s: [1, 1],
            d: [1, 1],
            pad: [0, 0],
        })
    }

    /// Whether some output position's window lies wholly in the padding (only the first or
    /// last position of an axis can).
    fn has_empty_window(&self) -> bool {
        let empty = |axis: usize, input: usize, out: usize| {
            out > 0
                && [0, out - 1]
                    .iter()
                    .any(|&o| self.taps(axis, o, input).next().is_none())
        };
        self.n * self.c > 0 && (empty(0, self.h, self.oh) || empty(1, self.w, self.ow))
    }

    /// `(tap, input coordinate)` of the in-bounds taps of output position `o` on `axis`.
    fn taps(&self, axis: usize, o: usize, input: usize) -> impl Iterator<Item = (usize, usize)> {
        let (s, d, pad) = (self.s[axis], self.d[axis], self.pad[axis]);
        (0..self.k[axis]).filter_map(move |t| {
            (o * s + t * d)
                .checked_sub(pad)
                .filter(|&i| i < input)
                .map(|i| (t, i))
        })
    }

    fn numel(&self, rows: usize, cols: usize) -> Option<usize> {
        self.n
            .checked_mul(rows)?
            .checked_mul(cols)?
            .checked_mul(self.c)
    }

    /// The kernel's work in FLOPs, to decide whether to split it: two per tap and output
    /// value (a multiply-add, or a load and a max or add, costs about what a GEMM's two FLOPs
    /// of one multiply-add do). Counting one per tap kept SqueezeNet's 27x27x128 max_pool
    /// (0.84 M taps) on one thread: 0.028 ms against ONNX Runtime's 0.014.
    pub fn work(&self) -> u64 {
        let taps = (self.k[0] * self.k[1]) as u64;
        (self.numel(self.oh, self.ow).unwrap_or(0) as u64).saturating_mul(2 * taps)
    }

    /// Computes `out = act(window(x, filter) + bias)` with the ISA [`crate::gemm::detect`]
    /// (`act` a clamp: none, relu, relu6, clamp)
    /// chose. `filter` (`[kh, kw, c, 1]`) is for depthwise only; `bias` has `c` values.
    pub fn run(
        &self,
        x: &[f32],
        filter: Option<&[f32]>,
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
    ) -> Result<(), String> {
        self.run_with(crate::gemm::detect(), x, filter, bias, act, out)
    }

    /// Computes output rows `first..` (rows of all images in order, `ow * c` values each) into
    /// `out`, which holds whole rows, on this thread: the same values [`Self::run_with`]
    /// stores there. For a caller that consumes the rows band by band.
    #[allow(clippy::too_many_arguments)] // run_with's operands plus the first row
    pub fn run_rows_with(
        &self,
        isa: Isa,
        x: &[f32],
        filter: Option<&[f32]>,
        bias: Option<&[f32]>,
        act: Activation,
        first: usize,
        out: &mut [f32],
    ) -> Result<(), String> {
        let row_len = self.ow * self.c;
        let rows = out.len().checked_div(row_len).unwrap_or(0);
        let whole = row_len > 0 && out.len().is_multiple_of(row_len);
        let fits = first
            .checked_add(rows)
            .is_some_and(|end| end <= self.n * self.oh);
        let want = (whole && fits).then_some(out.len());
        let filter = self.checked(isa, x, filter, bias, act, out.len(), want)?;
        if !out.is_empty() {
            self.rows_on(isa, x, filter, bias, act, first, out);
        }
        Ok(())
    }

    /// Checks the operands of a run whose output holds `out_len` values where `want` are
    /// expected (`None`: the sizes overflow or the rows do not fit); returns the filter
    /// (empty for pools).
    #[allow(clippy::too_many_arguments)] // the run's operands and the output's two sizes
    fn checked<'f>(
        &self,
        isa: Isa,
        x: &[f32],
        filter: Option<&'f [f32]>,
        bias: Option<&[f32]>,
        act: Activation,
        out_len: usize,
        want: Option<usize>,
    ) -> Result<&'f [f32], String> {
        let bad = |why: String| {
            Err(format!(
                "{:?} window over NHWC {}: {why}",
                self.op,
                fmt_dims(&[self.n, self.h, self.w, self.c])
            ))
        };
        if !isa.is_supported() {
            return bad(format!("this CPU cannot run {}", isa.name()));
        }
        let (Some(xn), Some(on)) = (self.numel(self.h, self.w), want) else {
            return bad(format!(
                "sizes overflow, or {out_len} output values are not whole rows of the output"
            ));
        };
        if x.len() != xn || out_len != on {
            return bad(format!(
                "expected {xn} input and {on} output values, got {} and {out_len}",
                x.len()
            ));
        }
        let wn = self.k[0] * self.k[1] * self.c;
        let filter = match (self.op, filter) {
            (ChannelOp::Depthwise, Some(f)) if f.len() == wn => f,
            (ChannelOp::Depthwise, f) => {
                return bad(format!(
                    "expected a filter of {wn} values, got {:?}",
                    f.map(<[f32]>::len)
                ));
            }
            (_, _) => &[],
        };
        if let Some(b) = bias
            && b.len() != self.c
        {
            return bad(format!("expected {} bias values, got {}", self.c, b.len()));
        }
        if act != Activation::None && act.bounds().is_none() {
            return bad(format!("{act:?} is not fused here (only clamps are)"));
        }
        Ok(filter)
    }

    /// Output rows `first..` into `out` (whole rows) with the kernels of `isa`; the caller
    /// checked every operand ([`Self::checked`]).
    #[allow(clippy::too_many_arguments)] // the checked operands and the rows' place
    fn rows_on(
        &self,
        isa: Isa,
        x: &[f32],
        filter: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        first: usize,
        out: &mut [f32],
    ) {
        let args = Args {
            win: self,
            x,
            filter,
            bias,
            act,
        };
        match isa {
            // SAFETY: `checked` verified `isa.is_supported()`, so the CPU has the features
            // these functions are compiled for.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { rows_avx512(&args, first, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2Fma => unsafe { rows_avx2(&args, first, out) },
            _ => rows_portable(&args, first, out),
        }
    }

    /// [`Self::run`] with a given ISA (which must be supported; tests run every one).
    pub fn run_with(
        &self,
        isa: Isa,
        x: &[f32],
        filter: Option<&[f32]>,
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
    ) -> Result<(), String> {
        let on = self.numel(self.oh, self.ow);
        let filter = self.checked(isa, x, filter, bias, act, out.len(), on)?;
        if out.is_empty() {
            return Ok(());
        }
        let row_len = self.ow * self.c;
        let out_rows = self.n * self.oh;
        let threads = rayon::current_num_threads();
        // Four chunks a thread, as the runtime splits generated kernels: with one a thread, a
        // thread that starts late (woken, or preempted on a shared machine) delays the whole
        // kernel; with more, the others steal its rows (measured on SqueezeNet's first
        // max_pool at 2 threads: 1.4x slower in the model with two chunks than with eight).
        let chunks = if self.work() >= crate::runtime::PARALLEL_MIN_WORK && threads > 1 {
            (threads * 4).min(out_rows)
        } else {
            1
        };
        let per_chunk = out_rows.div_ceil(chunks);
        let run_rows = |(i, block): (usize, &mut [f32])| {
            self.rows_on(isa, x, filter, bias, act, i * per_chunk, block);
        };
        if chunks == 1 {
            run_rows((0, out));
        } else {
            out.par_chunks_mut(per_chunk * row_len)
                .enumerate()
                .for_each(run_rows);
        }
        Ok(())
    }
}

/// What every row of one run shares.
struct Args<'a> {
    win: &'a ChannelWindow,
    x: &'a [f32],
    filter: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_avx512(a: &Args, first: usize, out: &mut [f32]) {
    rows::<F32x16, F32x8, F32x4>(a, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx2(a: &Args, first: usize, out: &mut [f32]) {
    rows::<F32x8, F32x4, F32x4>(a, first, out);
}

#[cfg(target_arch = "x86_64")]
fn rows_portable(a: &Args, first: usize, out: &mut [f32]) {
    rows::<F32x4, F32x4, F32x4>(a, first, out);
}

#[cfg(not(target_arch = "x86_64"))]
fn rows_portable(a: &Args, first: usize, out: &mut [f32]) {
    rows::<f32, f32, f32>(a, first, out);
}

/// Adjacent interior output pixels computed together: independent accumulator chains per
/// channel vector (the adds' latency hidden) sharing each filter vector's load. Eight where a
/// row has them (four chains left the adds' latency exposed: MobileNet-v2's 112x112x32
/// depthwise conv, one thread on Zen 5, 0.116 ms against its multiply-adds' 0.04), four at
/// the end of a row.
const GROUP: usize = 8;
const SMALL_GROUP: usize = 4;

/// Output rows `first..` (`n * oh + oy` numbering), as many as `out` holds, with vectors `V`
/// and, for the channels left over, the narrower `V2` and `V3`, then scalars.
#[inline(always)]
fn rows<V: Lanes, V2: Lanes, V3: Lanes>(a: &Args, first: usize, out: &mut [f32]) {
    let win = a.win;
    let c = win.c;
    // Output columns whose every column tap is inside the input share one tap list per row,
    // relative to the pixel's first tap column; border columns list their own.
    let (sw, dw, pl) = (win.s[1], win.d[1], win.pad[1]);
    let inner = |ox: usize| ox * sw >= pl && ox * sw - pl + (win.k[1] - 1) * dw < win.w;
    // (input offset, filter offset) of each in-bounds tap.
    let mut row_taps: Vec<(usize, usize)> = Vec::with_capacity(win.k[0] * win.k[1]);
    let mut taps: Vec<(usize, usize)> = Vec::with_capacity(win.k[0] * win.k[1]);
    for (i, row) in out.chunks_exact_mut(win.ow * c).enumerate() {
        let r = first + i;
        let (b, oy) = (r / win.oh, r % win.oh);
        let image = b * win.h * win.w * c;
        row_taps.clear();
        for (ky, iy) in win.taps(0, oy, win.h) {
            for kx in 0..win.k[1] {
                row_taps.push(((iy * win.w + kx * dw) * c, (ky * win.k[1] + kx) * c));
            }
        }
        let mut ox = 0;
        while ox < win.ow {
            let px = &mut row[ox * c..];
            let fits = |n: usize| inner(ox) && ox + n <= win.ow && inner(ox + n - 1);
            if let Some(n) = [GROUP, SMALL_GROUP].into_iter().find(|&n| fits(n)) {
                let at = Pixels {
                    base: image + (ox * sw - pl) * c,
                    step: sw * c,
                    taps: &row_taps,
                };
                if n == GROUP {
                    channels::<V, V2, V3, GROUP>(a, &at, &mut px[..n * c]);
                } else {
                    channels::<V, V2, V3, SMALL_GROUP>(a, &at, &mut px[..n * c]);
                }
                ox += n;
                continue;
            }
            let at = if inner(ox) {
                Pixels {
                    base: image + (ox * sw - pl) * c,
                    step: 0,
                    taps: &row_taps,
                }
            } else {
                taps.clear();
                for (ky, iy) in win.taps(0, oy, win.h) {
                    for (kx, ix) in win.taps(1, ox, win.w) {
                        taps.push(((iy * win.w + ix) * c, (ky * win.k[1] + kx) * c));
                    }
                }
                Pixels {
                    base: image,
                    step: 0,
                    taps: &taps,
                }
            };
            channels::<V, V2, V3, 1>(a, &at, &mut px[..c]);
            ox += 1;
        }
    }
}

/// `P` output pixels sharing one tap list: pixel `p`'s tap `t` reads input offset
/// `base + p * step + taps[t].0` and filter offset `taps[t].1`.
struct Pixels<'a> {
    base: usize,
    step: usize,
    taps: &'a [(usize, usize)],
}

/// Every channel of `P` adjacent output pixels (`out` holds their `P * c` values), in blocks
/// that keep four accumulator vectors busy: 4 `V` per pixel when alone, else one `V`; then
/// `V2`, `V3` and scalars for the channels left over.
#[inline(always)]
fn channels<V: Lanes, V2: Lanes, V3: Lanes, const P: usize>(
    a: &Args,
    at: &Pixels,
    out: &mut [f32],
) {
    let c = a.win.c;
    let mut c0 = 0;
    if P == 1 {
        while c0 + 4 * V::LANES <= c {
            block::<V, 4, P>(a, at, c0, out);
            c0 += 4 * V::LANES;
        }
    }
    // A 3-wide window at stride 1 or 2: each tap row's input columns loaded once.
    let threes = P > 1 && a.win.k[1] == 3 && a.win.d[1] == 1;
    macro_rules! threes {
        ($op:expr, $sw:expr) => {
            while c0 + V::LANES <= c {
                block3::<V, P, $sw, { $op }>(a, at, c0, out);
                c0 += V::LANES;
            }
        };
    }
    match (threes, a.win.op, a.win.s[1]) {
        (true, ChannelOp::Depthwise, 1) => threes!(THREE_DEPTHWISE, 1),
        (true, ChannelOp::Depthwise, 2) => threes!(THREE_DEPTHWISE, 2),
        (true, ChannelOp::Max, 1) => threes!(THREE_MAX, 1),
        (true, ChannelOp::Max, 2) => threes!(THREE_MAX, 2),
        (true, ChannelOp::Avg | ChannelOp::Sum, 1) => threes!(THREE_SUM, 1),
        (true, ChannelOp::Avg | ChannelOp::Sum, 2) => threes!(THREE_SUM, 2),
        _ => {}
    }
    while c0 + V::LANES <= c {
        block::<V, 1, P>(a, at, c0, out);
        c0 += V::LANES;
    }
    while c0 + V2::LANES <= c {
        block::<V2, 1, P>(a, at, c0, out);
        c0 += V2::LANES;
    }
    while c0 + V3::LANES <= c {
        block::<V3, 1, P>(a, at, c0, out);
        c0 += V3::LANES;
    }
    while c0 < c {
        block::<f32, 1, P>(a, at, c0, out);
        c0 += 1;
    }
}

/// Channels `c0..c0 + Q * S::LANES` of `P` output pixels, accumulated in registers over the
/// taps, then the bias and activation, then stored.
// The accumulators and the filter vectors are indexed in step.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block<S: Lanes, const Q: usize, const P: usize>(
    a: &Args,
    at: &Pixels,
    c0: usize,
    out: &mut [f32],
) {
    let (c, l) = (a.win.c, S::LANES);
    // (`finish` checks `out` before it stores.)
    assert!(c0 + Q * l <= c, "channel block past the pixel");
    // Unchecked reads: every tap lies inside the image (`ChannelWindow::taps` keeps
    // coordinates in `0..h` / `0..w`; `rows` groups only interior columns), `run_with`
    // checked `x`, `filter` and `bias` against the shapes, and the block ends within `c`.
    // Bounds checks per vector would cost more than the arithmetic.
    let x = a.x.as_ptr();
    let w = a.filter.as_ptr();
    let mut acc = [[S::splat(0.0); Q]; P];
    // The average's cell count, applied with the epilogue (a loop over the accumulators
    // here made the compiler keep them in memory).
    let mut divisor = None;
    match a.win.op {
        ChannelOp::Depthwise => {
            for &(xo, wo) in at.taps {
                let mut wv = [S::splat(0.0); Q];
                for (q, v) in wv.iter_mut().enumerate() {
                    // SAFETY: see above.
                    *v = unsafe { S::load(w.add(wo + c0 + q * l)) };
                }
                for (p, acc) in acc.iter_mut().enumerate() {
                    let xp = at.base + p * at.step + xo + c0;
                    for q in 0..Q {
                        // SAFETY: see above.
                        let xv = unsafe { S::load(x.add(xp + q * l)) };
                        acc[q] = acc[q].add(xv.mul(wv[q]));
                    }
                }
            }
        }
        ChannelOp::Max => {
            acc = [[S::splat(f32::NEG_INFINITY); Q]; P];
            for &(xo, _) in at.taps {
                for (p, acc) in acc.iter_mut().enumerate() {
                    let xp = at.base + p * at.step + xo + c0;
                    for q in 0..Q {
                        // SAFETY: see above.
                        let xv = unsafe { S::load(x.add(xp + q * l)) };
                        acc[q] = acc[q].max_nan(xv);
                    }
                }
            }
        }
        ChannelOp::Avg | ChannelOp::Sum => {
            for &(xo, _) in at.taps {
                for (p, acc) in acc.iter_mut().enumerate() {
                    let xp = at.base + p * at.step + xo + c0;
                    for q in 0..Q {
                        // SAFETY: see above.
                        let xv = unsafe { S::load(x.add(xp + q * l)) };
                        acc[q] = acc[q].add(xv);
                    }
                }
            }
            if a.win.op == ChannelOp::Avg {
                divisor = Some(S::splat(at.taps.len() as f32));
            }
        }
    }
    finish::<S, Q, P>(a, &acc, divisor, c0, out);
}

/// What a [`block3`] computes: a depthwise conv, a max pool, or a sum (sum or average pool).
const THREE_DEPTHWISE: u8 = 0;
const THREE_MAX: u8 = 1;
const THREE_SUM: u8 = 2;

/// Input columns a [`block3`] of `P` pixels at stride `SW` reads per tap row, at most: 8
/// pixels at stride 2.
const COLUMNS: usize = 17;

/// [`block`] for `P` pixels of a window 3 columns wide (dilation 1; a depthwise conv, or a
/// pool, `OP`) at column stride `SW` (1 or 2), one `S` of channels: each tap row's `(P - 1) * SW + 3` input columns
/// are loaded once and kept in registers (the tap list loads each of them up to three times:
/// 56-59 GFLOP/s on one core of a 2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core, against
/// 71-74 with them in registers). The same products and sums in the same order as [`block`],
/// so the same bits. With the three tap rows of an interior row unrolled, no closures between
/// the loads and the kernel's target features, and the bias and clamp tested once a block:
/// 82-87 (112x112x32), 82-90 (56x56x144), 83-87 (14x14x384); at stride 2 50 -> 55-58. Not
/// the input lines' trips from the L2, as first thought: at 40x40x32, all in the L2, it ran
/// at 66 as well. Walking tiles of columns and channels down the rows to keep them in the L1
/// measured slower (the per-row setup and the strided lines).
///
/// Pools of 3-wide windows take the same path, their maximum or sum taken in the same order
/// as [`block`]'s: a 3x3 stride-2 max pool on 112x112x64 (ResNet's), one thread, best of
/// 3000, 72.7-75.5 -> 64.5-65.8 us.
// The columns, filter vectors and accumulators are indexed in step.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block3<S: Lanes, const P: usize, const SW: usize, const OP: u8>(
    a: &Args,
    at: &Pixels,
    c0: usize,
    out: &mut [f32],
) {
    let (c, l) = (a.win.c, S::LANES);
    assert!(
        c0 + l <= c && (P - 1) * SW + 3 <= COLUMNS && at.step == SW * c,
        "channel block past the pixel"
    );
    let x = a.x.as_ptr();
    let w = a.filter.as_ptr();
    let start = if OP == THREE_MAX {
        f32::NEG_INFINITY
    } else {
        0.0
    };
    let mut acc = [[S::splat(start); 1]; P];
    // One tap row: its 3 filter vectors times its input columns, into every pixel's sum (or
    // its maximum, for a pool). A macro: a closure is not compiled with the caller's target
    // features.
    macro_rules! tap_row {
        ($tap:expr) => {{
            let (xo, wo) = $tap;
            let (xo, wo) = (xo + at.base + c0, wo + c0);
            // SAFETY: as in `block`: column j is pixel j / SW's tap j % SW (or its last tap's
            // column), all inside the image, and the filter's 3 taps of this row are in it
            // (only a depthwise conv has a filter).
            let mut wv = [S::splat(0.0); 3];
            if OP == THREE_DEPTHWISE {
                for (kx, v) in wv.iter_mut().enumerate() {
                    // SAFETY: see above.
                    *v = unsafe { S::load(w.add(wo + kx * c)) };
                }
            }
            // Plain loops, no `array::from_fn`: its closure is not compiled with the caller's
            // target features, and with this much code around it was not inlined either.
            let mut xv = [S::splat(0.0); COLUMNS];
            let mut xp = x.wrapping_add(xo);
            for v in xv.iter_mut().take((P - 1) * SW + 3) {
                // SAFETY: see above.
                *v = unsafe { S::load(xp) };
                xp = xp.wrapping_add(c);
            }
            for p in 0..P {
                for kx in 0..3 {
                    let xv = xv[p * SW + kx];
                    acc[p][0] = match OP {
                        THREE_DEPTHWISE => acc[p][0].add(xv.mul(wv[kx])),
                        THREE_MAX => acc[p][0].max_nan(xv),
                        _ => acc[p][0].add(xv),
                    };
                }
            }
        }};
    }
    // `rows` lists a 3-wide window's interior taps three to a row, kx = 0, 1, 2 in turn. All
    // three rows (every row but the image's first and last) unrolled: a loop of unknown count
    // kept the columns' offsets on the stack.
    if let Ok(taps) = <&[(usize, usize); 9]>::try_from(at.taps) {
        tap_row!(taps[0]);
        tap_row!(taps[3]);
        tap_row!(taps[6]);
    } else {
        for row in at.taps.chunks_exact(3) {
            tap_row!(row[0]);
        }
    }
    let divisor = (a.win.op == ChannelOp::Avg).then(|| S::splat(at.taps.len() as f32));
    finish::<S, 1, P>(a, &acc, divisor, c0, out);
}

/// A block's accumulators, divided by `divisor` (an average's cell count), plus the bias,
/// through the activation, stored.
#[allow(clippy::needless_range_loop)] // the accumulators and the bias are indexed in step
#[inline(always)]
fn finish<S: Lanes, const Q: usize, const P: usize>(
    a: &Args,
    acc: &[[S; Q]; P],
    divisor: Option<S>,
    c0: usize,
    out: &mut [f32],
) {
    let (c, l) = (a.win.c, S::LANES);
    assert!(
        c0 + Q * l <= c && out.len() >= P * c,
        "channel block past the pixel"
    );
    let bias: Option<[S; Q]> = a.bias.map(|b| {
        let mut v = [S::splat(0.0); Q];
        for (q, v) in v.iter_mut().enumerate() {
            // SAFETY: `b` has `c` values (checked in `run_with`) and the block ends within `c`.
            *v = unsafe { S::load(b.as_ptr().add(c0 + q * l)) };
        }
        v
    });
    let bounds = a.act.bounds().map(|(lo, hi)| (S::splat(lo), S::splat(hi)));
    // The common case (a convolution's bias and clamp) without a test per vector: those tests
    // were a tenth of a depthwise block's instructions.
    if let (None, Some(b), Some((lo, hi))) = (divisor, bias, bounds) {
        for (p, acc) in acc.iter().enumerate() {
            for q in 0..Q {
                let v = acc[q].add(b[q]).clamp(lo, hi);
                // SAFETY: as below.
                unsafe { v.store(out.as_mut_ptr().add(p * c + c0 + q * l)) };
            }
        }
        return;
    }
    for (p, acc) in acc.iter().enumerate() {
        for q in 0..Q {
            let mut v = acc[q];
            if let Some(d) = divisor {
                v = v.div(d);
            }
            if let Some(b) = bias {
                v = v.add(b[q]);
            }
            if let Some((lo, hi)) = bounds {
                v = v.clamp(lo, hi);
            }
            // SAFETY: `out` holds `P * c` values and the block ends within `c` (asserted above).
            unsafe { v.store(out.as_mut_ptr().add(p * c + c0 + q * l)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ChannelOp, ChannelWindow};
    use crate::gemm::{Activation, Isa};

    /// The window by plain loops: taps in (ky, kx) order, padded cells skipped.
    fn plain(win: &ChannelWindow, x: &[f32], f: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
        let mut out = Vec::new();
        for b in 0..win.n {
            for oy in 0..win.oh {
                for ox in 0..win.ow {
                    for ch in 0..win.c {
                        let mut acc = match win.op {
                            ChannelOp::Max => f32::NEG_INFINITY,
                            _ => 0.0,
                        };
                        let mut count = 0;
                        for ky in 0..win.k[0] {
                            for kx in 0..win.k[1] {
                                let iy =
                                    (oy * win.s[0] + ky * win.d[0]) as isize - win.pad[0] as isize;
                                let ix =
                                    (ox * win.s[1] + kx * win.d[1]) as isize - win.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= win.h as isize || ix >= win.w as isize
                                {
                                    continue;
                                }
                                let v = x[((b * win.h + iy as usize) * win.w + ix as usize)
                                    * win.c
                                    + ch];
                                count += 1;
                                acc = match win.op {
                                    ChannelOp::Depthwise => {
                                        acc + v * f[(ky * win.k[1] + kx) * win.c + ch]
                                    }
                                    ChannelOp::Max if acc < v || v.is_nan() => v,
                                    ChannelOp::Max => acc,
                                    ChannelOp::Avg | ChannelOp::Sum => acc + v,
                                };
                            }
                        }
                        if win.op == ChannelOp::Avg {
                            acc /= count as f32;
                        }
                        out.push(act.apply(acc + bias[ch]));
                    }
                }
            }
        }
        out
    }

    fn window(
        op: ChannelOp,
        nhwc: [usize; 4],
        k: usize,
        s: usize,
        d: usize,
        same: bool,
    ) -> ChannelWindow {
        let [n, h, w, c] = nhwc;
        let eff = (k - 1) * d + 1;
        let (oh, ow, pad) = if same {
            let out = |i: usize| i.div_ceil(s);
            let before = |i: usize| ((out(i) - 1) * s + eff).saturating_sub(i) / 2;
            (out(h), out(w), [before(h), before(w)])
        } else {
            ((h - eff) / s + 1, (w - eff) / s + 1, [0, 0])
        };
        ChannelWindow {
            op,
            n,
            h,
            w,
            c,
            oh,
            ow,
            k: [k, k],
            s: [s, s],
            d: [d, d],
            pad,
        }
    }

    /// Every op, odd channel counts (remainders of every vector width), strides, dilations,
    /// SAME/VALID, on every ISA this CPU runs, with NaN and clamp epilogues: exactly the plain
    /// loop's values (same operation order), NaN where it is NaN.
    #[test]
    fn channel_window_matches_plain_loops_on_every_isa() {
        let shapes = [
            [1, 7, 9, 8],
            [2, 6, 11, 13],
            [1, 5, 17, 45],
            [1, 9, 8, 136],
            [1, 4, 5, 67],
        ];
        let mut checked = 0;
        for isa in Isa::supported() {
            for op in [
                ChannelOp::Depthwise,
                ChannelOp::Max,
                ChannelOp::Avg,
                ChannelOp::Sum,
            ] {
                for (i, &shape) in shapes.iter().enumerate() {
                    for (k, s, d, same) in [
                        (3, 1, 1, true),
                        (3, 2, 1, true),
                        (3, 1, 2, true),
                        (2, 2, 1, false),
                        (1, 1, 1, false),
                        (5, 1, 1, true),
                    ] {
                        if op != ChannelOp::Depthwise && d > 1 {
                            continue;
                        }
                        let win = window(op, shape, k, s, d, same);
                        let xn = shape.iter().product::<usize>();
                        let mut x: Vec<f32> = (0..xn)
                            .map(|j| ((j * 7919 + i) % 97) as f32 / 13.0 - 3.0)
                            .collect();
                        x[xn / 3] = f32::NAN;
                        let f: Vec<f32> = (0..k * k * shape[3])
                            .map(|j| ((j * 31) % 17) as f32 / 8.0 - 1.0)
                            .collect();
                        let bias: Vec<f32> = (0..shape[3]).map(|j| j as f32 / 10.0 - 0.5).collect();
                        let act = if i % 2 == 0 {
                            Activation::Relu6
                        } else {
                            Activation::None
                        };
                        let want = plain(&win, &x, &f, &bias, act);
                        let mut got = vec![0.0; want.len()];
                        let filter = (op == ChannelOp::Depthwise).then_some(&f[..]);
                        win.run_with(isa, &x, filter, Some(&bias), act, &mut got)
                            .unwrap();
                        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                                "{isa:?} {op:?} {shape:?} k{k} s{s} d{d} same {same}: [{j}] {g} != {w}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 4 * 5 * 4);
    }

    /// Wrong buffer sizes and unfusable activations are clean errors, never a read past an end.
    #[test]
    fn channel_window_rejects_mismatched_buffers() {
        let win = window(ChannelOp::Depthwise, [1, 5, 5, 8], 3, 1, 1, true);
        let x = vec![0.0; 200];
        let f = vec![0.0; 72];
        let mut out = vec![0.0; 200];
        let err = win
            .run(&x[..199], Some(&f), None, Activation::None, &mut out)
            .unwrap_err();
        assert!(
            err.contains("expected 200 input and 200 output values, got 199 and 200"),
            "{err}"
        );
        let err = win
            .run(&x, Some(&f[..71]), None, Activation::None, &mut out)
            .unwrap_err();
        assert!(err.contains("expected a filter of 72 values"), "{err}");
        let err = win
            .run(&x, Some(&f), Some(&f[..7]), Activation::None, &mut out)
            .unwrap_err();
        assert!(err.contains("expected 8 bias values, got 7"), "{err}");
        let err = win
            .run(&x, Some(&f), None, Activation::LeakyRelu(0.1), &mut out)
            .unwrap_err();
        assert!(err.contains("not fused here"), "{err}");
    }
}
