//! Interior rows vectorised over output columns: four adjacent output columns of one channel
//! form an f32x4. Used when the column axis is contiguous in both the input and the output and
//! the column stride is 1 (NCHW, or NHWC with one input and one output channel — the thin
//! convolutions a GEMM handles badly), so the taps of four adjacent outputs are four adjacent
//! input cells: one unaligned vector load per tap. Up to four such vectors (16 columns) are
//! computed at once to hide FMA latency and share each filter value's broadcast.
//!
//! Only interior columns (every column tap inside the input) come here; in border rows the row
//! taps are clamped at run time. The columns left over (fewer than four) are the caller's.

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::geom::{Family, Geo, Ix, Lin, for_each, load, mac, store};
use super::pixel::{Bufs, CI_UNROLL, Taps, acc_init, checked_taps, tap_count, unroll_taps, visit};
use crate::jit::loops::for_range;
use crate::math::emit_maximum;

/// Kernel rows run as an emitted loop (columns unrolled): Cranelift then keeps one row of
/// filter values in registers for all column groups, which beats a fully unrolled block whose
/// filter values spill and are reloaded per group.
const ROWS_UNROLLED: bool = false;

/// Whether [`emit_colvec`] applies to this kernel.
pub(super) fn eligible(g: &Geo) -> bool {
    g.sw == 1 && g.xs[2] == 1 && g.os[2] == 1 && g.cols.1 - g.cols.0 >= 4
}

/// Computes columns `lo..end` of interior row `(n, oy)` for every channel, where `end` (the
/// return value) is the last multiple of four columns from `lo` not beyond `hi`.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_colvec(
    b: &mut FunctionBuilder,
    g: &Geo,
    bufs: Bufs,
    n: Value,
    oy: Value,
    lo: i64,
    hi: i64,
    ycheck: bool,
) -> Result<i64, String> {
    let ncols = (hi - lo).max(0);
    let end16 = lo + ncols / 16 * 16;
    let end4 = lo + ncols / 4 * 4;
    if end4 == lo {
        return Ok(lo);
    }
    let ytaps = if ycheck {
        checked_taps(b, Ix::D(oy), g.kh, g.sh, g.dh, g.pt, g.h)
    } else {
        Taps::Full {
            k: g.kh,
            unroll: ROWS_UNROLLED && unroll_taps(g),
        }
    };
    let div = if g.fam == Family::Avg {
        let cy = tap_count(b, &ytaps);
        let c = b.ins().imul_imm_s(cy, g.kw);
        let c = b.ins().fcvt_from_sint(types::F32, c);
        Some(b.ins().splat(types::F32X4, c))
    } else {
        None
    };
    let ctx = Ctx {
        g,
        bufs,
        ytaps: &ytaps,
        div,
    };
    let xrow = Lin::c(-g.pt * g.xs[1] - g.pl)
        .plus(b, Ix::D(n), g.xs[0])
        .plus(b, Ix::D(oy), g.sh * g.xs[1]);
    let orow = Lin::c(0)
        .plus(b, Ix::D(n), g.os[0])
        .plus(b, Ix::D(oy), g.os[1]);
    // (output channel, input channel) pairs; the input channel is unused for conv2d, which
    // sums over all of them.
    let per_channel = |b: &mut FunctionBuilder, o: Lin, c: Lin| -> Result<(), String> {
        let orow = orow.plus_lin(b, o, g.os[3]);
        let xrow = xrow.plus_lin(b, c, g.xs[3]);
        for_range(b, lo, end16, 16, |b, ox| {
            block(b, &ctx, xrow, orow, o, ox, 4)
        })?;
        for_range(b, end16, end4, 4, |b, ox| {
            block(b, &ctx, xrow, orow, o, ox, 1)
        })
    };
    match g.fam {
        Family::Conv => {
            for_each(b, g.cout, false, &[], &mut |b, o, _| {
                let o = Lin::c(0).plus(b, o, 1);
                per_channel(b, o, Lin::c(0)).map(|()| Vec::new())
            })?;
        }
        Family::Depthwise { mult } => {
            for_each(b, g.cin, false, &[], &mut |b, c, _| {
                for_each(b, mult, false, &[], &mut |b, m, _| {
                    let o = Lin::c(0).plus(b, c, mult).plus(b, m, 1);
                    let c = Lin::c(0).plus(b, c, 1);
                    per_channel(b, o, c).map(|()| Vec::new())
                })
                .map(|_| Vec::new())
            })?;
        }
        Family::Max | Family::Avg => {
            for_each(b, g.cin, false, &[], &mut |b, c, _| {
                let c = Lin::c(0).plus(b, c, 1);
                per_channel(b, c, c).map(|()| Vec::new())
            })?;
        }
    }
    Ok(end4)
}

/// What every block of a row shares.
struct Ctx<'a> {
    g: &'a Geo,
    bufs: Bufs,
    ytaps: &'a Taps,
    /// Avg pool divisor (cells per window).
    div: Option<Value>,
}

/// `groups` vectors of four columns starting at output column `ox` of one channel.
fn block(
    b: &mut FunctionBuilder,
    ctx: &Ctx,
    xrow: Lin,
    orow: Lin,
    o: Lin,
    ox: Value,
    groups: i64,
) -> Result<(), String> {
    let (g, bufs) = (ctx.g, ctx.bufs);
    let unroll = unroll_taps(g);
    let xrow = xrow.plus(b, Ix::D(ox), 1);
    let orow = orow.plus(b, Ix::D(ox), 1);
    // With unrolled rows, even and odd kernel rows feed separate accumulators: twice the
    // independent FMA chains, so the loop is bound by throughput rather than FMA latency.
    let sets = if matches!(ctx.ytaps, Taps::Full { unroll: true, .. }) && g.kh >= 2 {
        2
    } else {
        1
    };
    let width = groups as usize;
    let init = (0..groups * sets)
        .map(|_| acc_init(b, g.fam, true))
        .collect::<Result<Vec<_>, _>>()?;
    let all = visit(b, ctx.ytaps, &init, &mut |b, ky, all| {
        let set = match ky {
            Ix::S(k) => (k % sets) as usize,
            Ix::D(_) => 0,
        };
        let acc = &all[set * width..(set + 1) * width];
        let row = xrow.plus(b, ky, g.dh * g.xs[1]);
        let next = for_each(b, g.kw, unroll, acc, &mut |b, kx, acc| {
            let at = row.plus(b, kx, g.dw);
            let vectors = |b: &mut FunctionBuilder, at: Lin| -> Vec<Value> {
                (0..groups)
                    .map(|j| {
                        load(
                            b,
                            types::F32X4,
                            bufs.x,
                            Lin {
                                c: at.c + 4 * j,
                                v: at.v,
                            },
                        )
                    })
                    .collect()
            };
            match g.fam {
                Family::Conv => {
                    let w = bufs.filter()?;
                    let wtap = Lin::c(0)
                        .plus(b, ky, g.kw * g.cin * g.cout)
                        .plus(b, kx, g.cin * g.cout)
                        .plus_lin(b, o, 1);
                    for_each(b, g.cin, g.cin <= CI_UNROLL, acc, &mut |b, ci, acc| {
                        let wat = wtap.plus(b, ci, g.cout);
                        let ws = load(b, types::F32, w, wat);
                        let wv = b.ins().splat(types::F32X4, ws);
                        let xat = at.plus(b, ci, g.xs[3]);
                        let xs = vectors(b, xat);
                        xs.iter()
                            .zip(acc)
                            .map(|(&x, &a)| Ok(mac(b, a, x, wv)))
                            .collect()
                    })
                }
                Family::Depthwise { .. } => {
                    let w = bufs.filter()?;
                    let wat = Lin::c(0)
                        .plus(b, ky, g.kw * g.cout)
                        .plus(b, kx, g.cout)
                        .plus_lin(b, o, 1);
                    let ws = load(b, types::F32, w, wat);
                    let wv = b.ins().splat(types::F32X4, ws);
                    let xs = vectors(b, at);
                    xs.iter()
                        .zip(acc)
                        .map(|(&x, &a)| Ok(mac(b, a, x, wv)))
                        .collect()
                }
                Family::Max => {
                    let xs = vectors(b, at);
                    xs.iter()
                        .zip(acc)
                        .map(|(&x, &a)| emit_maximum(b, a, x))
                        .collect()
                }
                Family::Avg => {
                    let xs = vectors(b, at);
                    Ok(xs
                        .iter()
                        .zip(acc)
                        .map(|(&x, &a)| b.ins().fadd(a, x))
                        .collect())
                }
            }
        })?;
        let mut all = all.to_vec();
        all[set * width..(set + 1) * width].copy_from_slice(&next);
        Ok(all)
    })?;
    let mut accs = all[..width].to_vec();
    for (j, a) in accs.iter_mut().enumerate() {
        for s in 1..sets as usize {
            let other = all[s * width + j];
            *a = match g.fam {
                Family::Max => emit_maximum(b, *a, other)?,
                _ => b.ins().fadd(*a, other),
            };
        }
    }
    for (j, &a) in accs.iter().enumerate() {
        let v = match ctx.div {
            Some(d) => b.ins().fdiv(a, d),
            None => a,
        };
        store(
            b,
            bufs.out,
            Lin {
                c: orow.c + 4 * j as i64,
                v: orow.v,
            },
            v,
        );
    }
    Ok(())
}
