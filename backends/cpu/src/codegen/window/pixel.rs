//! Per-pixel code for conv/pool kernels: every output channel of one output position
//! `(n, oy, ox)`, with each spatial axis's taps either all inside the input (unchecked,
//! possibly unrolled) or clamped/checked at run time (border positions).
//!
//! Output channels are processed in chunks of up to four accumulators; in NHWC an accumulator
//! is an f32x4 over four consecutive output channels (the channel axis is contiguous in the
//! output, the filter and, for pools and depthwise multiplier 1, the input), with scalar
//! accumulators for the remainder. Many chunks of the same pattern run as an emitted loop so the
//! code size does not grow with the channel count.

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::geom::{
    Family, Geo, Ix, Lin, TapBody, for_dyn, for_each, if_carry, imax, imin, load, mac, store,
};
use crate::jit::loops::Bound;
use crate::math::{emit_f32_const, emit_maximum};
use cranelift_codegen::ir::condcodes::IntCC;

/// Unroll the channel loop of a conv tap when there are at most this many input channels.
pub(super) const CI_UNROLL: i64 = 8;
/// Unroll the taps when at most this many (tap, unrolled channel) steps result.
pub(super) const TAP_UNROLL: i64 = 64;

/// Base pointers of a window kernel's buffers.
#[derive(Clone, Copy)]
pub(super) struct Bufs {
    /// The image.
    pub x: Value,
    /// The filter (convolutions only).
    pub w: Option<Value>,
    /// The output.
    pub out: Value,
}

impl Bufs {
    pub(super) fn filter(&self) -> Result<Value, String> {
        self.w
            .ok_or_else(|| "internal error: convolution without a filter buffer".to_string())
    }
}

/// How the taps of one spatial axis are visited at the current output position.
pub(super) enum Taps {
    /// All `k` taps are inside the input.
    Full { k: i64, unroll: bool },
    /// The inside taps, known when compiling (a border position with a constant coordinate).
    List(Vec<i64>),
    /// Taps `lo..hi` are inside (dilation 1, bounds computed at run time).
    Range { lo: Bound, hi: Bound },
    /// Each of the `k` taps is tested: coordinate `i0 + t * d` must be in `0..size`.
    Check {
        k: i64,
        i0: Value,
        d: i64,
        size: i64,
    },
}

/// Whether the taps of an unchecked window are unrolled.
pub(super) fn unroll_taps(g: &Geo) -> bool {
    let per_tap = match g.fam {
        Family::Conv if g.cin <= CI_UNROLL => g.cin,
        _ => 1,
    };
    g.kh.saturating_mul(g.kw).saturating_mul(per_tap) <= TAP_UNROLL
}

/// The border-safe taps of an axis at output position `o` (first padded coordinate
/// `o * s - pad`).
#[allow(clippy::too_many_arguments)]
pub(super) fn checked_taps(
    b: &mut FunctionBuilder,
    o: Ix,
    k: i64,
    s: i64,
    d: i64,
    pad: i64,
    size: i64,
) -> Taps {
    let o = match o {
        Ix::S(o) => {
            let p0 = o * s - pad;
            let inside: Vec<i64> = (0..k)
                .filter(|t| (0..size).contains(&(p0 + t * d)))
                .collect();
            if inside.len() as i64 <= TAP_UNROLL {
                return Taps::List(inside);
            }
            b.ins().iconst(types::I64, o)
        }
        Ix::D(o) => o,
    };
    let os = b.ins().imul_imm_s(o, s);
    let p0 = b.ins().iadd_imm_s(os, -pad);
    if d == 1 {
        // Tap t reads p0 + t: inside iff -p0 <= t < size - p0.
        let zero = b.ins().iconst(types::I64, 0);
        let neg = b.ins().ineg(p0);
        let lo = imax(b, zero, neg);
        let kk = b.ins().iconst(types::I64, k);
        let sz = b.ins().iconst(types::I64, size);
        let rest = b.ins().isub(sz, p0);
        let hi = imin(b, kk, rest);
        Taps::Range {
            lo: Bound::Dyn(lo),
            hi: Bound::Dyn(hi),
        }
    } else {
        Taps::Check { k, i0: p0, d, size }
    }
}

/// Runs `body` for every tap of `taps`, threading `init`.
pub(super) fn visit(
    b: &mut FunctionBuilder,
    taps: &Taps,
    init: &[Value],
    body: &mut TapBody,
) -> Result<Vec<Value>, String> {
    match *taps {
        Taps::Full { k, unroll } => for_each(b, k, unroll, init, body),
        Taps::List(ref list) => {
            let mut vals = init.to_vec();
            for &t in list {
                vals = body(b, Ix::S(t), &vals)?;
            }
            Ok(vals)
        }
        Taps::Range { lo, hi } => for_dyn(b, lo, hi, init, body),
        Taps::Check { k, i0, d, size } => for_each(b, k, false, init, &mut |b, t, acc| {
            let i = Lin { c: 0, v: Some(i0) }.plus(b, t, d).value(b);
            let inside = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, i, size);
            if_carry(b, inside, acc, |b, acc| body(b, t, acc))
        }),
    }
}

/// Number of taps visited, as an `i64` value (pools only use `Full` and `Range`).
pub(super) fn tap_count(b: &mut FunctionBuilder, taps: &Taps) -> Value {
    match *taps {
        Taps::Full { k, .. } | Taps::Check { k, .. } => b.ins().iconst(types::I64, k),
        Taps::List(ref l) => b.ins().iconst(types::I64, l.len() as i64),
        Taps::Range { lo, hi } => {
            let (lo, hi) = (lo.value(b), hi.value(b));
            let n = b.ins().isub(hi, lo);
            let one = b.ins().iconst(types::I64, 1);
            imax(b, n, one)
        }
    }
}

/// One accumulator of a chunk: output channel `base + off`, a vector of four channels or one.
#[derive(Clone, Copy)]
struct Lane {
    off: i64,
    vec: bool,
}

/// Output-channel chunks: `(count, stride, lanes)` means `count` repetitions (an emitted loop
/// when more than one) of the lane pattern, the i-th starting at channel `start + i * stride`.
fn chunks(g: &Geo) -> Vec<(i64, i64, i64, Vec<Lane>)> {
    let mut out = Vec::new();
    let mut o = 0;
    let mut push = |o: &mut i64, count: i64, lanes: Vec<Lane>, width: i64| {
        if count > 0 {
            out.push((*o, count, width, lanes));
            *o += count * width;
        }
    };
    if g.nhwc {
        let full = g.cout / 16;
        push(
            &mut o,
            full,
            (0..4)
                .map(|j| Lane {
                    off: 4 * j,
                    vec: true,
                })
                .collect(),
            16,
        );
        let vecs = (g.cout - o) / 4;
        push(
            &mut o,
            1.min(vecs),
            (0..vecs)
                .map(|j| Lane {
                    off: 4 * j,
                    vec: true,
                })
                .collect(),
            4 * vecs,
        );
    }
    let full = (g.cout - o) / 4;
    push(
        &mut o,
        full,
        (0..4).map(|j| Lane { off: j, vec: false }).collect(),
        4,
    );
    let rest = g.cout - o;
    push(
        &mut o,
        1.min(rest),
        (0..rest).map(|j| Lane { off: j, vec: false }).collect(),
        rest,
    );
    out
}

/// Accumulator start value for the family.
pub(super) fn acc_init(b: &mut FunctionBuilder, fam: Family, vec: bool) -> Result<Value, String> {
    let ty = if vec { types::F32X4 } else { types::F32 };
    let v = if fam == Family::Max {
        f32::NEG_INFINITY
    } else {
        0.0
    };
    emit_f32_const(b, ty, v)
}

/// Computes and stores every output channel of position `(n, oy, ox)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_pixel(
    b: &mut FunctionBuilder,
    g: &Geo,
    bufs: Bufs,
    n: Value,
    oy: Value,
    ox: Ix,
    ycheck: bool,
    xcheck: bool,
) -> Result<(), String> {
    let unroll = !ycheck && !xcheck && unroll_taps(g);
    let ytaps = if ycheck {
        checked_taps(b, Ix::D(oy), g.kh, g.sh, g.dh, g.pt, g.h)
    } else {
        Taps::Full { k: g.kh, unroll }
    };
    let xtaps = if xcheck {
        checked_taps(b, ox, g.kw, g.sw, g.dw, g.pl, g.w)
    } else {
        Taps::Full { k: g.kw, unroll }
    };
    let count = if g.fam == Family::Avg {
        let cy = tap_count(b, &ytaps);
        let cx = tap_count(b, &xtaps);
        let c = b.ins().imul(cy, cx);
        Some(b.ins().fcvt_from_sint(types::F32, c))
    } else {
        None
    };
    let pbase = Lin::c(-g.pt * g.xs[1] - g.pl * g.xs[2])
        .plus(b, Ix::D(n), g.xs[0])
        .plus(b, Ix::D(oy), g.sh * g.xs[1])
        .plus(b, ox, g.sw * g.xs[2]);
    let obase = Lin::c(0)
        .plus(b, Ix::D(n), g.os[0])
        .plus(b, Ix::D(oy), g.os[1])
        .plus(b, ox, g.os[2]);
    for (start, count_chunks, stride, lanes) in chunks(g) {
        for_each(b, count_chunks, false, &[], &mut |b, i, _| {
            let base = Lin::c(start).plus(b, i, stride);
            let init = lanes
                .iter()
                .map(|l| acc_init(b, g.fam, l.vec))
                .collect::<Result<Vec<_>, _>>()?;
            let accs = visit(b, &ytaps, &init, &mut |b, ky, acc| {
                let row = pbase.plus(b, ky, g.dh * g.xs[1]);
                visit(b, &xtaps, acc, &mut |b, kx, acc| {
                    let px = row.plus(b, kx, g.dw * g.xs[2]);
                    tap_step(b, g, bufs, px, ky, kx, base, &lanes, acc)
                })
            })?;
            for (l, &a) in lanes.iter().zip(&accs) {
                let v = match count {
                    Some(c) => {
                        let c = if l.vec {
                            b.ins().splat(types::F32X4, c)
                        } else {
                            c
                        };
                        b.ins().fdiv(a, c)
                    }
                    None => a,
                };
                let o = Lin {
                    c: base.c + l.off,
                    v: base.v,
                };
                let at = obase.plus_lin(b, o, g.os[3]);
                store(b, bufs.out, at, v);
            }
            Ok(Vec::new())
        })?;
    }
    Ok(())
}

/// Input channel `c` feeding output channel `o` of a depthwise conv, as an index expression.
fn dw_channel(b: &mut FunctionBuilder, o: Lin, mult: i64) -> Lin {
    match o.v {
        None => Lin::c(o.c / mult),
        Some(_) if mult == 1 => o,
        Some(_) => {
            let ov = o.value(b);
            Lin {
                c: 0,
                v: Some(b.ins().udiv_imm_u(ov, mult)),
            }
        }
    }
}

/// One tap (input position `px`, filter position `(ky, kx)`) for every lane of a chunk.
#[allow(clippy::too_many_arguments)]
fn tap_step(
    b: &mut FunctionBuilder,
    g: &Geo,
    bufs: Bufs,
    px: Lin,
    ky: Ix,
    kx: Ix,
    base: Lin,
    lanes: &[Lane],
    acc: &[Value],
) -> Result<Vec<Value>, String> {
    let ty = |l: &Lane| if l.vec { types::F32X4 } else { types::F32 };
    let lane_o = |l: &Lane| Lin {
        c: base.c + l.off,
        v: base.v,
    };
    match g.fam {
        Family::Conv => {
            let w = bufs.filter()?;
            let wtap = Lin::c(0)
                .plus(b, ky, g.kw * g.cin * g.cout)
                .plus(b, kx, g.cin * g.cout);
            for_each(b, g.cin, g.cin <= CI_UNROLL, acc, &mut |b, ci, acc| {
                let at = px.plus(b, ci, g.xs[3]);
                let xs = load(b, types::F32, bufs.x, at);
                let mut xv = None;
                let wrow = wtap.plus(b, ci, g.cout).plus_lin(b, base, 1);
                let mut next = Vec::with_capacity(lanes.len());
                for (l, &a) in lanes.iter().zip(acc) {
                    let x = if l.vec {
                        *xv.get_or_insert_with(|| b.ins().splat(types::F32X4, xs))
                    } else {
                        xs
                    };
                    let wv = load(
                        b,
                        ty(l),
                        w,
                        Lin {
                            c: wrow.c + l.off,
                            v: wrow.v,
                        },
                    );
                    next.push(mac(b, a, x, wv));
                }
                Ok(next)
            })
        }
        Family::Depthwise { mult } => {
            let w = bufs.filter()?;
            let wtap = Lin::c(0)
                .plus(b, ky, g.kw * g.cout)
                .plus(b, kx, g.cout)
                .plus_lin(b, base, 1);
            let mut next = Vec::with_capacity(lanes.len());
            for (l, &a) in lanes.iter().zip(acc) {
                let o = lane_o(l);
                let x = if !l.vec {
                    let c = dw_channel(b, o, mult);
                    let at = px.plus_lin(b, c, g.xs[3]);
                    load(b, types::F32, bufs.x, at)
                } else if mult == 1 {
                    let at = px.plus_lin(b, o, 1);
                    load(b, types::F32X4, bufs.x, at)
                } else {
                    // Lanes o..o+4 read channels (o+j)/mult: gather them (in NHWC the channel
                    // stride is 1), loading each distinct channel once.
                    let mut v = None;
                    let mut last: Option<(Lin, Value)> = None;
                    for j in 0..4 {
                        let c = dw_channel(b, Lin { c: o.c + j, v: o.v }, mult);
                        let s = match last {
                            Some((lc, s)) if o.v.is_none() && lc.c == c.c => s,
                            _ => {
                                let at = px.plus_lin(b, c, 1);
                                load(b, types::F32, bufs.x, at)
                            }
                        };
                        last = Some((c, s));
                        v = Some(match v {
                            None => b.ins().splat(types::F32X4, s),
                            Some(v) => b.ins().insertlane(v, s, j as u8),
                        });
                    }
                    v.ok_or("internal error: empty gather")?
                };
                let wv = load(
                    b,
                    ty(l),
                    w,
                    Lin {
                        c: wtap.c + l.off,
                        v: wtap.v,
                    },
                );
                next.push(mac(b, a, x, wv));
            }
            Ok(next)
        }
        Family::Max | Family::Avg => {
            let mut next = Vec::with_capacity(lanes.len());
            for (l, &a) in lanes.iter().zip(acc) {
                let at = px.plus_lin(b, lane_o(l), g.xs[3]);
                let x = load(b, ty(l), bufs.x, at);
                next.push(if g.fam == Family::Max {
                    emit_maximum(b, a, x)?
                } else {
                    b.ins().fadd(a, x)
                });
            }
            Ok(next)
        }
    }
}
