//! A small emission layer that lets one piece of approximation code serve scalars and vectors:
//! `Em` knows the float type being computed (`f32`, `f32x4`, `f64`, `f64x2`), materialises
//! constants of that type, and hides the scalar/vector differences of masks and selects.
//!
//! Masks are what comparisons return: an `i8` boolean for scalars, an all-ones/all-zeros integer
//! vector (`i32x4`, `i64x2`) for vectors. `sel` accepts either kind matching `Em`'s type. Shift
//! amounts are scalar constants, which every type accepts.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types,
};
use cranelift_frontend::FunctionBuilder;

/// Emitter for one float type; see the module docs.
pub(super) struct Em<'a, 'f> {
    pub b: &'a mut FunctionBuilder<'f>,
    /// F32, F32X4, F64 or F64X2.
    pub ty: Type,
    /// Use fused multiply-add (the target has it).
    pub fma: bool,
}

impl<'a, 'f> Em<'a, 'f> {
    pub fn new(b: &'a mut FunctionBuilder<'f>, ty: Type, fma: bool) -> Self {
        Em { b, ty, fma }
    }

    /// The same emitter for another float type (e.g. f64 halves of an f32 computation).
    pub fn with_type<R>(&mut self, ty: Type, f: impl FnOnce(&mut Em) -> R) -> R {
        let mut em = Em {
            b: &mut *self.b,
            ty,
            fma: self.fma,
        };
        f(&mut em)
    }

    /// The integer type with the float type's lane layout.
    pub fn ity(&self) -> Type {
        self.ty.as_int()
    }

    /// Bitcast flags: vectors whose lane types differ need an explicit byte order.
    fn cast_flags(&self) -> MemFlagsData {
        if self.ty.is_vector() {
            MemFlagsData::new().with_endianness(Endianness::Little)
        } else {
            MemFlagsData::new()
        }
    }

    /// A float constant of the emitter's type (rounded to the lane type).
    pub fn f(&mut self, v: f64) -> Value {
        let lane = self.ty.lane_type();
        if !self.ty.is_vector() {
            return if lane == types::F32 {
                self.b.ins().f32const(v as f32)
            } else {
                self.b.ins().f64const(v)
            };
        }
        let bytes: Vec<u8> = if lane == types::F32 {
            (0..self.ty.lane_count())
                .flat_map(|_| (v as f32).to_le_bytes())
                .collect()
        } else {
            (0..self.ty.lane_count())
                .flat_map(|_| v.to_le_bytes())
                .collect()
        };
        self.vconst(self.ty, bytes)
    }

    /// An integer constant of the emitter's integer type (truncated to the lane width).
    pub fn i(&mut self, v: i64) -> Value {
        let ity = self.ity();
        if ity == types::I32 {
            // The verifier wants i32 immediates zero-extended.
            return self.b.ins().iconst(ity, i64::from(v as i32 as u32));
        }
        if !ity.is_vector() {
            return self.b.ins().iconst(ity, v);
        }
        let bytes: Vec<u8> = if ity.lane_type() == types::I32 {
            (0..ity.lane_count())
                .flat_map(|_| (v as i32).to_le_bytes())
                .collect()
        } else {
            (0..ity.lane_count())
                .flat_map(|_| v.to_le_bytes())
                .collect()
        };
        self.vconst(ity, bytes)
    }

    fn vconst(&mut self, ty: Type, bytes: Vec<u8>) -> Value {
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(ty, c)
    }

    /// Float → its integer bits.
    pub fn bits(&mut self, x: Value) -> Value {
        let (ity, flags) = (self.ity(), self.cast_flags());
        if self.b.func.dfg.value_type(x) == ity {
            return x;
        }
        self.b.ins().bitcast(ity, flags, x)
    }

    /// Integer bits → float.
    pub fn float(&mut self, x: Value) -> Value {
        let (ty, flags) = (self.ty, self.cast_flags());
        if self.b.func.dfg.value_type(x) == ty {
            return x;
        }
        self.b.ins().bitcast(ty, flags, x)
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    pub fn neg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }
    pub fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    pub fn addc(&mut self, a: Value, c: f64) -> Value {
        let c = self.f(c);
        self.add(a, c)
    }
    pub fn mulc(&mut self, a: Value, c: f64) -> Value {
        let c = self.f(c);
        self.mul(a, c)
    }

    /// `a * b + c`, fused when the target has FMA.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `coeffs[0] + x*(coeffs[1] + x*(...))` by Horner's rule.
    pub fn poly(&mut self, x: Value, coeffs: &[f64]) -> Value {
        let Some((&last, rest)) = coeffs.split_last() else {
            return self.f(0.0);
        };
        let mut acc = self.f(last);
        for &c in rest.iter().rev() {
            let c = self.f(c);
            acc = self.mul_add(acc, x, c);
        }
        acc
    }

    /// Float comparison → mask.
    pub fn fcmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }
    /// Float comparison against a constant → mask.
    pub fn fcmpc(&mut self, cc: FloatCC, a: Value, c: f64) -> Value {
        let c = self.f(c);
        self.fcmp(cc, a, c)
    }
    /// Integer comparison → mask.
    pub fn icmp(&mut self, cc: IntCC, a: Value, b: Value) -> Value {
        self.b.ins().icmp(cc, a, b)
    }

    /// `m ? a : b` per lane; `a` and `b` are both floats of `ty` or both integers of `ity`.
    pub fn sel(&mut self, m: Value, a: Value, b: Value) -> Value {
        if !self.ty.is_vector() {
            return self.b.ins().select(m, a, b);
        }
        let vty = self.b.func.dfg.value_type(a);
        let m = if vty == self.ity() { m } else { self.float(m) };
        self.b.ins().bitselect(m, a, b)
    }

    pub fn and(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }
    pub fn or(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }
    /// Mask negation (scalar masks are 0/1, so flip only the low bit).
    pub fn not(&mut self, m: Value) -> Value {
        if self.ty.is_vector() {
            self.b.ins().bnot(m)
        } else {
            self.b.ins().bxor_imm_u(m, 1)
        }
    }

    /// `(x < lo) ? lo : x`: NaN passes through (one `maxps` for vectors).
    pub fn max_keep_nan(&mut self, x: Value, lo: f64) -> Value {
        let lo = self.f(lo);
        let m = self.fcmp(FloatCC::LessThan, x, lo);
        self.sel(m, lo, x)
    }
    /// `(hi < x) ? hi : x`: NaN passes through (one `minps` for vectors).
    pub fn min_keep_nan(&mut self, x: Value, hi: f64) -> Value {
        let hi = self.f(hi);
        let m = self.fcmp(FloatCC::LessThan, hi, x);
        self.sel(m, hi, x)
    }

    pub fn iadd(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }
    pub fn isub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().isub(a, b)
    }
    pub fn iaddc(&mut self, a: Value, c: i64) -> Value {
        let c = self.i(c);
        self.iadd(a, c)
    }
    pub fn iandc(&mut self, a: Value, c: i64) -> Value {
        let c = self.i(c);
        self.b.ins().band(a, c)
    }
    pub fn shl(&mut self, a: Value, n: i64) -> Value {
        let n = self.b.ins().iconst(types::I32, n);
        self.b.ins().ishl(a, n)
    }
    pub fn ushr(&mut self, a: Value, n: i64) -> Value {
        let n = self.b.ins().iconst(types::I32, n);
        self.b.ins().ushr(a, n)
    }
    pub fn sshr(&mut self, a: Value, n: i64) -> Value {
        let n = self.b.ins().iconst(types::I32, n);
        self.b.ins().sshr(a, n)
    }
}
