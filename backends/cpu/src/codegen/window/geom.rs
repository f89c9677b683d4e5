//! Shape facts of one window kernel ([`Geo`]) and the small CLIF helpers the window emitters
//! share: linear index expressions with a compile-time part ([`Lin`]), loop indices that are
//! either unrolled constants or SSA values ([`Ix`]), carried-value loops and conditionals.
//!
//! Invariants: every [`Geo`] field is a concrete, validated size taken from the program's
//! buffers (the input, filter and output dims agree with `window_dim`), so every address the
//! emitters form for an in-range output position and an in-bounds tap is inside its buffer.
//! Indices are `i64` element counts; they become byte addresses only in [`Lin::addr`].

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::infer::window_dim;
use kiln_ir::op::{DataFormat, Op, Padding};
use kiln_ir::program::{Kernel, Program};
use kiln_ir::shape::fmt_dims;

use crate::jit::loops::{Bound, data_flags, for_range_carry};

/// Which window computation a kernel performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// `conv2d`: every output channel sums over all `cin` input channels.
    Conv,
    /// `depthwise_conv2d`: output channel `c * mult + m` reads input channel `c`.
    Depthwise {
        /// Channel multiplier.
        mult: i64,
    },
    /// `max_pool`.
    Max,
    /// `avg_pool` (divisor = number of unpadded cells).
    Avg,
}

/// Geometry of a conv or pool kernel, all sizes as `i64` element counts.
#[derive(Clone, Debug)]
pub(super) struct Geo {
    pub fam: Family,
    pub n: i64,
    pub h: i64,
    pub w: i64,
    pub cin: i64,
    pub oh: i64,
    pub ow: i64,
    pub cout: i64,
    pub kh: i64,
    pub kw: i64,
    pub sh: i64,
    pub sw: i64,
    pub dh: i64,
    pub dw: i64,
    pub pt: i64,
    pub pl: i64,
    /// Input strides (elements) of (batch, row, column, channel).
    pub xs: [i64; 4],
    /// Output strides (elements) of (batch, row, column, channel).
    pub os: [i64; 4],
    /// NHWC (channels contiguous) rather than NCHW.
    pub nhwc: bool,
    /// Output rows whose every tap row is inside the input: `rows.0..rows.1` (may be empty).
    pub rows: (i64, i64),
    /// Output columns whose every tap column is inside the input (may be empty).
    pub cols: (i64, i64),
}

/// The output positions `lo..hi` of one axis whose taps all land inside the input, or an
/// empty range at `out` when there are none.
fn interior(input: i64, out: i64, k: i64, s: i64, d: i64, pad: i64) -> (i64, i64) {
    // Output o reads o*s - pad + t*d for t in 0..k: inside iff o*s >= pad and
    // o*s - pad + (k-1)*d <= input - 1.
    let lo = (pad + s - 1) / s;
    let last = input - 1 + pad - (k - 1) * d;
    let hi = if last < 0 { 0 } else { (last / s + 1).min(out) };
    if lo < hi { (lo, hi) } else { (out, out) }
}

fn to_i64(v: usize, what: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("{what} {v} does not fit in i64"))
}

impl Geo {
    /// Reads and checks the geometry of a conv/pool kernel.
    pub fn of(program: &Program, kernel: &Kernel) -> Result<Geo, String> {
        let op = kernel.op_name();
        let ctx = |m: String| format!("kernel '{}' ({op}): {m}", kernel.name);
        let (fam, ksize, strides, dil, padding, format, want_inputs) = match &kernel.main {
            Some(Op::Conv2d(a)) => (
                Family::Conv,
                None,
                a.strides,
                a.dilations,
                a.padding,
                a.data_format,
                2,
            ),
            Some(Op::DepthwiseConv2d(a)) => (
                Family::Depthwise { mult: 0 },
                None,
                a.strides,
                a.dilations,
                a.padding,
                a.data_format,
                2,
            ),
            Some(Op::MaxPool(a)) => (
                Family::Max,
                Some(a.ksize),
                a.strides,
                [1, 1],
                a.padding,
                a.data_format,
                1,
            ),
            Some(Op::AvgPool(a)) => (
                Family::Avg,
                Some(a.ksize),
                a.strides,
                [1, 1],
                a.padding,
                a.data_format,
                1,
            ),
            _ => return Err(ctx(format!("{op} is not a window op"))),
        };
        if kernel.inputs.len() != want_inputs {
            return Err(ctx(format!(
                "expected {want_inputs} operands, got {}",
                kernel.inputs.len()
            )));
        }
        crate::codegen::require_f32_buffers(program, kernel).map_err(ctx)?;
        let xd = &program.buffer(kernel.inputs[0]).dims;
        let &[n, d1, d2, d3] = xd.as_slice() else {
            return Err(ctx(format!("input must be rank 4, got {}", fmt_dims(xd))));
        };
        let nhwc = format == DataFormat::Nhwc;
        let (h, w, c) = if nhwc { (d1, d2, d3) } else { (d2, d3, d1) };
        let (ksize, cout, fam) = match (fam, ksize) {
            (_, Some(k)) => (k, c, fam),
            (fam, None) => {
                let wd = &program.buffer(kernel.inputs[1]).dims;
                let &[kh, kw, ci, last] = wd.as_slice() else {
                    return Err(ctx(format!("filter must be rank 4, got {}", fmt_dims(wd))));
                };
                if ci != c {
                    return Err(ctx(format!(
                        "input {} ({}) has {c} channels but filter {} expects {ci}",
                        fmt_dims(xd),
                        format.name(),
                        fmt_dims(wd)
                    )));
                }
                match fam {
                    Family::Conv => ([kh, kw], last, fam),
                    _ => {
                        let co = c
                            .checked_mul(last)
                            .ok_or_else(|| ctx("output channels overflow".into()))?;
                        let mult = to_i64(last, "multiplier").map_err(ctx)?;
                        ([kh, kw], co, Family::Depthwise { mult })
                    }
                }
            }
        };
        let pad_err = |m: String| ctx(format!("input {}: {m}", fmt_dims(xd)));
        let wy = window_dim(h, ksize[0], strides[0], dil[0], padding, 0).map_err(pad_err)?;
        let wx = window_dim(w, ksize[1], strides[1], dil[1], padding, 1).map_err(pad_err)?;
        let out_dims = if nhwc {
            vec![n, wy.out, wx.out, cout]
        } else {
            vec![n, cout, wy.out, wx.out]
        };
        let od = &program.buffer(kernel.output).dims;
        if od.as_slice() != out_dims.as_slice() {
            return Err(ctx(format!(
                "output buffer is {} but the op produces {}",
                fmt_dims(od),
                fmt_dims(&out_dims)
            )));
        }
        let i = |v: usize| to_i64(v, "size").map_err(ctx);
        let (n, h, w, cin, oh, ow, cout) =
            (i(n)?, i(h)?, i(w)?, i(c)?, i(wy.out)?, i(wx.out)?, i(cout)?);
        let (kh, kw, sh, sw) = (i(ksize[0])?, i(ksize[1])?, i(strides[0])?, i(strides[1])?);
        let (dh, dw, pt, pl) = (i(dil[0])?, i(dil[1])?, i(wy.pad_before)?, i(wx.pad_before)?);
        let (xs, os) = if nhwc {
            (
                [h * w * cin, w * cin, cin, 1],
                [oh * ow * cout, ow * cout, cout, 1],
            )
        } else {
            ([cin * h * w, w, 1, h * w], [cout * oh * ow, ow, 1, oh * ow])
        };
        let rows = interior(h, oh, kh, sh, dh, pt);
        let cols = interior(w, ow, kw, sw, dw, pl);
        let g = Geo {
            fam,
            n,
            h,
            w,
            cin,
            oh,
            ow,
            cout,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pt,
            pl,
            xs,
            os,
            nhwc,
            rows,
            cols,
        };
        if matches!(fam, Family::Max | Family::Avg) && g.numel_out() > 0 {
            g.check_no_empty_window(padding).map_err(ctx)?;
        }
        Ok(g)
    }

    /// Number of output elements.
    pub fn numel_out(&self) -> i64 {
        self.n * self.oh * self.ow * self.cout
    }

    /// A pool window made only of padding has no defined value (the reference evaluator
    /// rejects it); with stride >= 1 it can only occur at the first or last output position.
    fn check_no_empty_window(&self, padding: Padding) -> Result<(), String> {
        let empty = |input: i64, out: i64, k: i64, s: i64, pad: i64| {
            [0, out - 1].iter().any(|&o| {
                let p0 = o * s - pad;
                p0 + k <= 0 || p0 >= input
            })
        };
        if empty(self.h, self.oh, self.kh, self.sh, self.pt)
            || empty(self.w, self.ow, self.kw, self.sw, self.pl)
        {
            return Err(format!(
                "a pooling window covers only padding (input {}x{}, window {}x{}, padding {padding:?})",
                self.h, self.w, self.kh, self.kw
            ));
        }
        Ok(())
    }
}

/// A loop index: a constant of an unrolled loop or the induction variable of an emitted one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ix {
    /// Unrolled: known when compiling.
    S(i64),
    /// An `i64` SSA value.
    D(Value),
}

/// A linear element index `c + v`, with the constant part kept apart so it can become a load's
/// immediate offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lin {
    /// Compile-time part.
    pub c: i64,
    /// Run-time part (an `i64` value), if any.
    pub v: Option<Value>,
}

impl Lin {
    /// The constant index `c`.
    pub fn c(c: i64) -> Lin {
        Lin { c, v: None }
    }

    /// `self + scale * ix`.
    pub fn plus(self, b: &mut FunctionBuilder, ix: Ix, scale: i64) -> Lin {
        match ix {
            Ix::S(i) => Lin {
                c: self.c + i * scale,
                v: self.v,
            },
            Ix::D(_) if scale == 0 => self,
            Ix::D(v) => {
                let t = if scale == 1 {
                    v
                } else {
                    b.ins().imul_imm_s(v, scale)
                };
                self.add_value(b, t)
            }
        }
    }

    /// `self + scale * other`.
    pub fn plus_lin(self, b: &mut FunctionBuilder, other: Lin, scale: i64) -> Lin {
        let s = Lin {
            c: self.c + other.c * scale,
            v: self.v,
        };
        match other.v {
            Some(v) => s.plus(b, Ix::D(v), scale),
            None => s,
        }
    }

    fn add_value(self, b: &mut FunctionBuilder, t: Value) -> Lin {
        let v = match self.v {
            Some(v) => b.ins().iadd(v, t),
            None => t,
        };
        Lin {
            c: self.c,
            v: Some(v),
        }
    }

    /// The index as an `i64` value.
    pub fn value(self, b: &mut FunctionBuilder) -> Value {
        match self.v {
            Some(v) if self.c == 0 => v,
            Some(v) => b.ins().iadd_imm_s(v, self.c),
            None => b.ins().iconst(types::I64, self.c),
        }
    }

    /// Address and immediate byte offset of f32 element `self` of the buffer at `base`.
    pub fn addr(self, b: &mut FunctionBuilder, base: Value) -> (Value, i32) {
        let mut ptr = match self.v {
            Some(v) => {
                let off = b.ins().ishl_imm_u(v, 2);
                b.ins().iadd(base, off)
            }
            None => base,
        };
        let bytes = self.c.saturating_mul(4);
        match i32::try_from(bytes) {
            Ok(off) => (ptr, off),
            Err(_) => {
                ptr = b.ins().iadd_imm_s(ptr, bytes);
                (ptr, 0)
            }
        }
    }
}

/// Loads an `ty` (f32 or f32x4) at element `at` of the input buffer at `base`.
///
/// Inputs never change during a kernel and never overlap the output, so the load is marked
/// read-only and movable: Cranelift then treats it as a pure value, placed next to its use
/// (instead of every load of an unrolled block first, then all arithmetic, which spills) and
/// hoisted out of loops when invariant (filter values). Pure values are only hoisted to
/// preheaders of loops they do not depend on; every load on a border path depends on the
/// checked tap index, so none is moved above its bounds check.
pub(crate) fn load(b: &mut FunctionBuilder, ty: Type, base: Value, at: Lin) -> Value {
    let (p, off) = at.addr(b, base);
    let flags = data_flags().with_readonly().with_can_move();
    b.ins().load(ty, flags, p, off)
}

/// `acc + x * w`, with the accumulator as the first operand: Cranelift elaborates operands in
/// order, so a long unrolled chain is emitted tap by tap (load, multiply, add) rather than
/// all loads first. Separate multiply and add also keep the dependency chain to one add
/// latency per tap.
pub(super) fn mac(b: &mut FunctionBuilder, acc: Value, x: Value, w: Value) -> Value {
    let p = b.ins().fmul(x, w);
    b.ins().fadd(acc, p)
}

/// Stores `x` at element `at` of the buffer at `base`.
pub(crate) fn store(b: &mut FunctionBuilder, base: Value, at: Lin, x: Value) {
    let (p, off) = at.addr(b, base);
    b.ins().store(data_flags(), x, p, off);
}

/// The body of a carried loop: `(builder, index, carried values) -> next carried values`.
pub(super) type TapBody<'a> =
    dyn FnMut(&mut FunctionBuilder, Ix, &[Value]) -> Result<Vec<Value>, String> + 'a;

/// `for i in 0..n`, unrolled (constant indices) or as an emitted loop, threading `init`.
pub(super) fn for_each(
    b: &mut FunctionBuilder,
    n: i64,
    unroll: bool,
    init: &[Value],
    body: &mut TapBody,
) -> Result<Vec<Value>, String> {
    if unroll || n <= 1 {
        let mut vals = init.to_vec();
        for i in 0..n {
            vals = body(b, Ix::S(i), &vals)?;
        }
        Ok(vals)
    } else {
        for_range_carry(b, 0i64, n, 1, init, |b, iv, c| body(b, Ix::D(iv), c))
    }
}

/// `for i in lo..hi` over run-time bounds, threading `init`.
pub(super) fn for_dyn(
    b: &mut FunctionBuilder,
    lo: Bound,
    hi: Bound,
    init: &[Value],
    body: &mut TapBody,
) -> Result<Vec<Value>, String> {
    for_range_carry(b, lo, hi, 1, init, |b, iv, c| body(b, Ix::D(iv), c))
}

/// `if cond { then(vals) } else { vals }` returning the merged values.
pub(super) fn if_carry(
    b: &mut FunctionBuilder,
    cond: Value,
    vals: &[Value],
    then: impl FnOnce(&mut FunctionBuilder, &[Value]) -> Result<Vec<Value>, String>,
) -> Result<Vec<Value>, String> {
    let then_block = b.create_block();
    let merge = b.create_block();
    for &v in vals {
        let ty = b.func.dfg.value_type(v);
        b.append_block_param(merge, ty);
    }
    let skip: Vec<BlockArg> = vals.iter().copied().map(Into::into).collect();
    b.ins().brif(cond, then_block, &[], merge, &skip);
    b.switch_to_block(then_block);
    b.seal_block(then_block);
    let out = then(b, vals)?;
    let args: Vec<BlockArg> = out.iter().copied().map(Into::into).collect();
    b.ins().jump(merge, &args);
    b.switch_to_block(merge);
    b.seal_block(merge);
    Ok(b.block_params(merge).to_vec())
}

/// `max(a, b)` / `min(a, b)` of `i64` values (signed).
pub(super) fn imax(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let gt = b.ins().icmp(IntCC::SignedGreaterThan, x, y);
    b.ins().select(gt, x, y)
}

/// `min(a, b)` of `i64` values (signed).
pub(crate) fn imin(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let lt = b.ins().icmp(IntCC::SignedLessThan, x, y);
    b.ins().select(lt, x, y)
}
