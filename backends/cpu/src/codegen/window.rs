//! Main-stage kernels of the window ops: `conv2d` (direct convolution), `depthwise_conv2d`,
//! `max_pool`, `avg_pool`, specialised to exact shapes. NHWC depthwise convolutions with
//! multiplier 1 and NHWC pools with 8 or more channels do not come here: the planner runs them
//! on `host::ChannelWindow` (wider vectors than Cranelift's f32x4, and no code to generate).
//!
//! Conv and pool kernels walk the output rows `r` in `0..n*out_h` (`n = r / out_h`,
//! `oy = r % out_h`). Rows and columns whose taps all lie inside the input (the interior,
//! computed at compile time) run without any bounds checks; border positions clamp their tap
//! ranges at run time (dilation 1) or test each tap (dilation > 1), so no code ever reads
//! outside the input and padded cells never count. NHWC kernels vectorise over the contiguous
//! channel axis (f32x4, scalar tail); when columns are contiguous in input and output and the
//! column stride is 1 (NCHW, or a single-channel NHWC image such as the 1x100x100x1 5x5 seed
//! convolution) the interior columns of every row vectorise over four adjacent output columns
//! instead, 16 columns per step (kernel rows as a loop, kernel columns unrolled; border rows
//! clamp the kernel-row range). NHWC depthwise convolutions with multiplier 1 and column stride
//! 1 compute their interior columns four at a time, over two f32x4 channel vectors per step
//! (`chanvec`). Border columns (up to 8 per side) get constant coordinates, so
//! their valid taps are known when compiling and unrolled. Avg pool divides by the number of unpadded cells of
//! each window; a pool window made only of padding is rejected at compile time, as the
//! reference evaluator rejects it.
//!
//! Threading. [`define_window`] uses the fixed main-stage ABI (`kernel.inputs` then
//! `kernel.output`) and computes everything. [`define_window_range`] appends one more buffer
//! pointer: two `i64` `[start, end)` (clamped to `0..extent`) selecting the outer work units
//! [`window_outer_extent`] counts: output rows `n * out_h`. Threads given disjoint ranges write
//! disjoint output elements, so a driver may split `0..extent` over threads and call the
//! same kernel concurrently. The batch_norm kernels of [`super::normalize`] share this range
//! ABI (`work_range`) and the element-index helpers of `geom`.

mod chanvec;
mod colvec;
pub(super) mod geom;
mod pixel;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::program::{Kernel, Program};

use crate::jit::loops::{Bound, data_flags, for_range};
use crate::jit::{FnEnv, Jit, KernelId};
use geom::{Geo, Ix, imax, imin};

/// Border columns up to this many per side are emitted one by one with constant taps.
const BORDER_UNROLL: i64 = 8;
use pixel::{Bufs, emit_pixel};

/// Defines the main-stage kernel of a conv2d / depthwise_conv2d / max_pool / avg_pool kernel,
/// computing the whole output. Buffers: `kernel.inputs`, then the output.
pub fn define_window(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<KernelId, String> {
    define(jit, program, kernel, false)
}

/// Like [`define_window`] with one extra last buffer: a pointer to two `i64` `[start, end)`
/// selecting the outer work units (see [`window_outer_extent`]) this call computes.
pub fn define_window_range(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<KernelId, String> {
    define(jit, program, kernel, true)
}

/// Number of outer work units of a window kernel: output rows `n * out_h`. An error names the
/// kernel when it is not a window op or its shapes are invalid.
pub fn window_outer_extent(program: &Program, kernel: &Kernel) -> Result<usize, String> {
    let g = Geo::of(program, kernel)?;
    let units = g.n * g.oh;
    usize::try_from(units).map_err(|_| format!("kernel '{}': negative extent", kernel.name))
}

fn define(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
    ranged: bool,
) -> Result<KernelId, String> {
    let n_bufs = kernel.inputs.len() + 1 + usize::from(ranged);
    let suffix = if ranged { "__range" } else { "" };
    let name = format!("{}__{}{suffix}", kernel.name, kernel.op_name());
    let g = Geo::of(program, kernel)?;
    jit.define_kernel(&name, n_bufs, |b, env| {
        let bufs = Bufs {
            x: env.buffer(0)?,
            w: if kernel.inputs.len() > 1 {
                Some(env.buffer(1)?)
            } else {
                None
            },
            out: env.buffer(kernel.inputs.len())?,
        };
        if g.numel_out() == 0 {
            return Ok(());
        }
        let (start, end) = work_range(b, env, ranged, kernel.inputs.len() + 1, g.n * g.oh)?;
        for_range(b, start, end, 1, |b, r| emit_row(b, &g, bufs, r))
    })
}

/// The `[start, end)` of the outer units: constants, or read from buffer `index` and clamped
/// to `0..extent`.
pub(super) fn work_range(
    b: &mut FunctionBuilder,
    env: &FnEnv,
    ranged: bool,
    index: usize,
    extent: i64,
) -> Result<(Bound, Bound), String> {
    if !ranged {
        return Ok((Bound::Const(0), Bound::Const(extent)));
    }
    let p = env.buffer(index)?;
    let s = b.ins().load(types::I64, data_flags(), p, 0);
    let e = b.ins().load(types::I64, data_flags(), p, 8);
    let zero = b.ins().iconst(types::I64, 0);
    let top = b.ins().iconst(types::I64, extent);
    let s = imax(b, s, zero);
    let e = imin(b, e, top);
    Ok((Bound::Dyn(s), Bound::Dyn(e)))
}

/// One output row `r` (= `n * out_h + oy`) of a conv/pool.
fn emit_row(b: &mut FunctionBuilder, g: &Geo, bufs: Bufs, r: Value) -> Result<(), String> {
    let (n, oy) = if g.oh == 1 {
        (r, b.ins().iconst(types::I64, 0))
    } else {
        let n = b.ins().udiv_imm_u(r, g.oh);
        let base = b.ins().imul_imm_s(n, g.oh);
        (n, b.ins().isub(r, base))
    };
    let (rlo, rhi) = g.rows;
    if rlo >= rhi {
        return emit_columns(b, g, bufs, n, oy, true);
    }
    let ge = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, oy, rlo);
    let lt = b.ins().icmp_imm_s(IntCC::SignedLessThan, oy, rhi);
    let inside = b.ins().band(ge, lt);
    let inner = b.create_block();
    let border = b.create_block();
    let done = b.create_block();
    b.ins().brif(inside, inner, &[], border, &[]);
    b.switch_to_block(inner);
    b.seal_block(inner);
    emit_columns(b, g, bufs, n, oy, false)?;
    b.ins().jump(done, &[]);
    b.switch_to_block(border);
    b.seal_block(border);
    emit_columns(b, g, bufs, n, oy, true)?;
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.seal_block(done);
    Ok(())
}

/// Every column of row `(n, oy)`: left border, interior, right border.
#[allow(clippy::too_many_arguments)]
fn emit_columns(
    b: &mut FunctionBuilder,
    g: &Geo,
    bufs: Bufs,
    n: Value,
    oy: Value,
    ycheck: bool,
) -> Result<(), String> {
    let (clo, chi) = g.cols;
    let pixels = |b: &mut FunctionBuilder, lo: i64, hi: i64, xcheck: bool| {
        if xcheck && hi - lo <= BORDER_UNROLL {
            // Few border columns: constant coordinates, so their taps are known and unrolled.
            (lo..hi).try_for_each(|ox| emit_pixel(b, g, bufs, n, oy, Ix::S(ox), ycheck, true))
        } else {
            for_range(b, lo, hi, 1, |b, ox| {
                emit_pixel(b, g, bufs, n, oy, Ix::D(ox), ycheck, xcheck)
            })
        }
    };
    pixels(b, 0, clo, true)?;
    let mut from = clo;
    if colvec::eligible(g) {
        from = colvec::emit_colvec(b, g, bufs, n, oy, clo, chi, ycheck)?;
    } else if chanvec::eligible(g) {
        from = chanvec::emit_chanvec(b, g, bufs, n, oy, clo, chi, ycheck)?;
    }
    pixels(b, from, chi, false)?;
    pixels(b, chi, g.ow, true)
}
