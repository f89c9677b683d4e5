//! `softmax` / `log_softmax` along one axis: three sweeps per row (the maximum, the sum of
//! exp(x - max), the normalisation). Along the last axis a row is contiguous and is swept with
//! [`fold_row`]'s four f32x4 accumulators; along an outer axis four neighbouring rows (adjacent
//! inner positions) are swept together in one f32x4, with a scalar tail. Softmax stores the
//! exponentials in the output during the second sweep and divides them in place in the third;
//! log_softmax computes `(x - max) - ln(sum)` like the reference.

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::op::ReduceOp;

use super::{collapse, fold_row, load, store};
use crate::jit::loops::{for_range, for_range_carry, vector_end};
use crate::math::{MathConfig, emit_exp, emit_f32_const, emit_log, emit_maximum};

/// Softmax / log-softmax code for one kernel: `len` elements along the axis, `inner`
/// contiguous elements after it.
pub(super) struct Softmax {
    /// Math options.
    pub cfg: MathConfig,
    /// Input base pointer.
    pub src: Value,
    /// Output base pointer.
    pub dst: Value,
    /// Elements along the axis.
    pub len: i64,
    /// Contiguous elements after the axis (1 when it is the last one).
    pub inner: i64,
    /// `log_softmax` instead of `softmax`.
    pub log: bool,
}

impl Softmax {
    /// A contiguous row (the axis is the last one) starting at element `base`.
    pub(super) fn row(&self, b: &mut FunctionBuilder, base: Value) -> Result<(), String> {
        let (src, dst, cfg) = (self.src, self.dst, self.cfg);
        // Pass 1: the maximum.
        let ninf4 = emit_f32_const(b, types::F32X4, f32::NEG_INFINITY)?;
        let ninf = b.ins().f32const(f32::NEG_INFINITY);
        let init = [ninf4, ninf4, ninf4, ninf4, ninf];
        let m = fold_row(
            b,
            ReduceOp::Max,
            src,
            base,
            self.len,
            &init,
            &mut |_, x, _| Ok(x),
        )?;
        let m = collapse(b, ReduceOp::Max, &m)?;
        let m4 = b.ins().splat(types::F32X4, m);
        // Pass 2: sum of exp(x - max); softmax keeps the exponentials in the output.
        let z4 = emit_f32_const(b, types::F32X4, 0.0)?;
        let z = b.ins().f32const(0.0);
        let init = [z4, z4, z4, z4, z];
        let log = self.log;
        let s = fold_row(
            b,
            ReduceOp::Sum,
            src,
            base,
            self.len,
            &init,
            &mut |b, x, at| {
                let mv = if b.func.dfg.value_type(x) == types::F32X4 {
                    m4
                } else {
                    m
                };
                let d = b.ins().fsub(x, mv);
                let e = emit_exp(b, cfg, d)?;
                if !log {
                    store(b, e, dst, at);
                }
                Ok(e)
            },
        )?;
        let s = collapse(b, ReduceOp::Sum, &s)?;
        // Pass 3: normalise.
        let k = if log { emit_log(b, cfg, s)? } else { s };
        let k4 = b.ins().splat(types::F32X4, k);
        let end4 = vector_end(b, 0, self.len, 4)?;
        let step = |b: &mut FunctionBuilder, j: Value, ty: Type| -> Result<(), String> {
            let at = b.ins().iadd(base, j);
            let (mv, kv) = if ty == types::F32X4 { (m4, k4) } else { (m, k) };
            let r = if log {
                let x = load(b, ty, src, at);
                let d = b.ins().fsub(x, mv);
                b.ins().fsub(d, kv)
            } else {
                let e = load(b, ty, dst, at);
                b.ins().fdiv(e, kv)
            };
            store(b, r, dst, at);
            Ok(())
        };
        for_range(b, 0, end4, 4, |b, j| step(b, j, types::F32X4))?;
        for_range(b, end4, self.len, 1, |b, j| step(b, j, types::F32))
    }

    /// Rows along a non-last axis starting at element `base`: 16 (then 4, then 1) neighbouring
    /// inner positions are processed together, each a column of `len` elements `inner` apart.
    /// Sixteen lanes use each 64-byte line the strided sweeps fetch (measured
    /// on a [1024, 4096] softmax along axis 0: 33 ms with 4 lanes, 18.6 ms with 16).
    pub(super) fn columns(&self, b: &mut FunctionBuilder, base: Value) -> Result<(), String> {
        let end16 = self.inner / 16 * 16;
        let end4 = self.inner / 4 * 4;
        for_range(b, 0, end16, 16, |b, c| {
            self.column(b, base, c, types::F32X4, 4)
        })?;
        for_range(b, end16, end4, 4, |b, c| {
            self.column(b, base, c, types::F32X4, 1)
        })?;
        for_range(b, end4, self.inner, 1, |b, c| {
            self.column(b, base, c, types::F32, 1)
        })
    }

    /// `n` values of type `ty` side by side, starting at inner position `c`.
    fn column(
        &self,
        b: &mut FunctionBuilder,
        base: Value,
        c: Value,
        ty: Type,
        n: usize,
    ) -> Result<(), String> {
        let (src, dst, cfg, log) = (self.src, self.dst, self.cfg, self.log);
        let lanes = i64::from(ty.lane_count());
        let start = b.ins().iadd(base, c);
        // Element index of value `k` in row `j`.
        let at = |b: &mut FunctionBuilder, j: Value, k: usize| {
            let off = b.ins().imul_imm_s(j, self.inner);
            let off = b.ins().iadd_imm_s(off, k as i64 * lanes);
            b.ins().iadd(start, off)
        };
        let ninf = emit_f32_const(b, ty, f32::NEG_INFINITY)?;
        let m = for_range_carry(b, 0, self.len, 1, &vec![ninf; n], |b, j, acc| {
            let mut next = Vec::with_capacity(n);
            for (k, &a) in acc.iter().enumerate() {
                let p = at(b, j, k);
                let x = load(b, ty, src, p);
                next.push(emit_maximum(b, a, x)?);
            }
            Ok(next)
        })?;
        let zero = emit_f32_const(b, ty, 0.0)?;
        let s = for_range_carry(b, 0, self.len, 1, &vec![zero; n], |b, j, acc| {
            let mut next = Vec::with_capacity(n);
            for (k, &a) in acc.iter().enumerate() {
                let p = at(b, j, k);
                let x = load(b, ty, src, p);
                let d = b.ins().fsub(x, m[k]);
                let e = emit_exp(b, cfg, d)?;
                if !log {
                    store(b, e, dst, p);
                }
                next.push(b.ins().fadd(a, e));
            }
            Ok(next)
        })?;
        let k: Vec<Value> = if log {
            s.iter()
                .map(|&v| emit_log(b, cfg, v))
                .collect::<Result<_, _>>()?
        } else {
            s
        };
        for_range(b, 0, self.len, 1, |b, j| {
            for (i, &kv) in k.iter().enumerate() {
                let p = at(b, j, i);
                let r = if log {
                    let x = load(b, ty, src, p);
                    let d = b.ins().fsub(x, m[i]);
                    b.ins().fsub(d, kv)
                } else {
                    let e = load(b, ty, dst, p);
                    b.ins().fdiv(e, kv)
                };
                store(b, r, dst, p);
            }
            Ok(())
        })
    }
}
