//! Interior columns of an NHWC depthwise convolution with multiplier 1, vectorised across the
//! contiguous channel axis and blocked over output columns: [`COLS`] adjacent output columns
//! times up to two f32x4 channel vectors give eight independent accumulators, enough to hide
//! the multiply-add latency, and each filter vector is loaded once per tap for all columns
//! (one filter load per [`COLS`] multiply-adds instead of one per multiply-add in the
//! per-pixel path), and with column stride 1 the input vectors of adjacent columns' taps are
//! shared (the loads are pure, so Cranelift merges equal ones). Channels past the last
//! multiple of four run as scalar accumulators, still blocked over the columns.
//!
//! Measured on an AMD EPYC (bench graphs `depthwise3x3_*`): a fused `fma` made this kernel
//! slower than separate multiply and add, and with column stride 2 the blocking lost to the
//! per-pixel path, so neither is used.
//!
//! Only interior columns come here (every column tap inside the input); in border rows the row
//! taps are clamped or checked at run time as in the per-pixel path. The columns left over
//! (fewer than [`COLS`]) and the border columns are the caller's. The fused epilogue runs
//! afterwards on the stored output, as for every window kernel.

use cranelift_codegen::ir::{Value, types};
use cranelift_frontend::FunctionBuilder;

use super::geom::{Family, Geo, Ix, Lin, for_each, load, mac, store};
use super::pixel::{Bufs, Taps, acc_init, checked_taps, visit};
use crate::jit::loops::for_range;

/// Output columns computed together.
const COLS: i64 = 4;
/// Unroll the row taps of interior rows when there are at most this many taps.
const TAPS_UNROLLED: i64 = 25;

/// Whether [`emit_chanvec`] applies to this kernel.
pub(super) fn eligible(g: &Geo) -> bool {
    g.nhwc
        && g.fam == Family::Depthwise { mult: 1 }
        && g.cin >= 4
        && g.sw == 1
        && g.cols.1 - g.cols.0 >= COLS
}

/// One accumulator per output column: four channels from `off` (a vector) or channel `off`.
#[derive(Clone, Copy)]
struct Lane {
    off: i64,
    vec: bool,
}

/// Channel chunks `(start, count, stride, lanes)`: `count` repetitions (an emitted loop when
/// more than one) of the lane pattern, the i-th at channel `start + i * stride`.
fn chunks(cin: i64) -> Vec<(i64, i64, i64, Vec<Lane>)> {
    let vec = |off| Lane { off, vec: true };
    let mut out = Vec::new();
    let pairs = cin / 8;
    if pairs > 0 {
        out.push((0, pairs, 8, vec![vec(0), vec(4)]));
    }
    let mut c = pairs * 8;
    if cin - c >= 4 {
        out.push((c, 1, 4, vec![vec(0)]));
        c += 4;
    }
    if cin > c {
        let lanes = (0..cin - c).map(|off| Lane { off, vec: false }).collect();
        out.push((c, 1, cin - c, lanes));
    }
    out
}

/// Computes columns `lo..end` of row `(n, oy)` for every channel, where `end` (the return
/// value) is the last multiple of [`COLS`] columns from `lo` not beyond `hi`; `lo..hi` must be
/// interior columns.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_chanvec(
    b: &mut FunctionBuilder,
    g: &Geo,
    bufs: Bufs,
    n: Value,
    oy: Value,
    lo: i64,
    hi: i64,
    ycheck: bool,
) -> Result<i64, String> {
    let end = lo + (hi - lo).max(0) / COLS * COLS;
    if end == lo {
        return Ok(lo);
    }
    let w = bufs.filter()?;
    let ytaps = if ycheck {
        checked_taps(b, Ix::D(oy), g.kh, g.sh, g.dh, g.pt, g.h)
    } else {
        Taps::Full {
            k: g.kh,
            unroll: g.kh * g.kw <= TAPS_UNROLLED,
        }
    };
    let xrow = Lin::c(-g.pt * g.xs[1] - g.pl * g.xs[2])
        .plus(b, Ix::D(n), g.xs[0])
        .plus(b, Ix::D(oy), g.sh * g.xs[1]);
    let orow = Lin::c(0)
        .plus(b, Ix::D(n), g.os[0])
        .plus(b, Ix::D(oy), g.os[1]);
    let plan = chunks(g.cin);
    for_range(b, lo, end, COLS, |b, ox| {
        let xcol = xrow.plus(b, Ix::D(ox), g.sw * g.xs[2]);
        let ocol = orow.plus(b, Ix::D(ox), g.os[2]);
        for (start, count, stride, lanes) in &plan {
            for_each(b, *count, false, &[], &mut |b, i, _| {
                let c = Lin::c(*start).plus(b, i, *stride);
                let xc = xcol.plus_lin(b, c, 1);
                let mut init = Vec::with_capacity(COLS as usize * lanes.len());
                for _ in 0..COLS {
                    for l in lanes {
                        init.push(acc_init(b, g.fam, l.vec)?);
                    }
                }
                let accs = visit(b, &ytaps, &init, &mut |b, ky, acc| {
                    let row = xc.plus(b, ky, g.dh * g.xs[1]);
                    let wrow = Lin::c(0).plus(b, ky, g.kw * g.cout).plus_lin(b, c, 1);
                    let mut acc = acc.to_vec();
                    // One lane at a time: its few input vectors (shared between the taps of
                    // adjacent columns) stay in registers next to the eight accumulators.
                    for (j, l) in lanes.iter().enumerate() {
                        for kx in 0..g.kw {
                            let ty = if l.vec { types::F32X4 } else { types::F32 };
                            let wat = Lin {
                                c: wrow.c + kx * g.cout + l.off,
                                v: wrow.v,
                            };
                            let wv = load(b, ty, w, wat);
                            for p in 0..COLS {
                                let xat = Lin {
                                    c: row.c + (p * g.sw + kx * g.dw) * g.xs[2] + l.off,
                                    v: row.v,
                                };
                                let x = load(b, ty, bufs.x, xat);
                                let k = p as usize * lanes.len() + j;
                                acc[k] = mac(b, acc[k], x, wv);
                            }
                        }
                    }
                    Ok(acc)
                })?;
                let oc = ocol.plus_lin(b, c, 1);
                for p in 0..COLS {
                    for (j, l) in lanes.iter().enumerate() {
                        let at = Lin {
                            c: oc.c + p * g.os[2] + l.off,
                            v: oc.v,
                        };
                        store(b, bufs.out, at, accs[p as usize * lanes.len() + j]);
                    }
                }
                Ok(Vec::new())
            })?;
        }
        Ok(())
    })?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::chunks;

    /// Every channel is covered exactly once, in order, for the channel counts the tests use.
    #[test]
    fn chunks_cover_every_channel_once() {
        for cin in [4, 5, 7, 8, 17, 32, 33, 96] {
            let mut seen = Vec::new();
            for (start, count, stride, lanes) in chunks(cin) {
                for i in 0..count {
                    for l in &lanes {
                        let width = if l.vec { 4 } else { 1 };
                        seen.extend((0..width).map(|k| start + i * stride + l.off + k));
                    }
                }
            }
            assert_eq!(seen, (0..cin).collect::<Vec<_>>(), "cin {cin}");
        }
    }
}
