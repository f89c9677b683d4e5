//! pow(x, y) for `f32` and `f32x4`, computed as exp(y · ln|x|) in double precision.
//!
//! Why f64: the relative error of e^w is the absolute error of w, and |w| = |y ln x| reaches
//! ~104 before the result leaves the f32 range, so an f32 logarithm good to 1 ulp would still
//! cost ~5e-6 relative error near the ends of the range. In f64 (each `f32x4` split into two
//! `f64x2` halves) log and exp only need ~1e-13 accuracy, and the final rounding to f32 (which
//! also produces overflow to inf and correctly rounded subnormals) dominates: measured max error
//! 1 ulp (see tests/suite/math_accuracy.rs).
//!
//! Special cases follow C99 `powf` / IEEE 754 `pow`, which TensorFlow's `pow` inherits:
//! pow(x, ±0) = 1 and pow(1, y) = 1 even for NaN; pow(-1, ±inf) = 1; a negative finite x with a
//! non-integer y is NaN; x = ±0 gives ±0 for y > 0 and ±inf for y < 0 (signed only for odd
//! integer y); infinities follow the limits; NaN otherwise propagates.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value, types};

use super::emit::Em;
use super::explog::{Ln2Reduction, reduce_ln2};

const LN2: f64 = std::f64::consts::LN_2;
/// ln 2 with 32 significant bits, so n * LN2_HI is exact for the |n| < 2^11 seen here.
const LN2_HI: f64 = 0.6931471803691238;
const LN2_LO: f64 = 1.9082149292705877e-10;
/// 1.5 * 2^52: adding it rounds an f64 to an integer held in the low mantissa bits.
const ROUND_MAGIC: f64 = 6755399441055744.0;
const ROUND_MAGIC_BITS: i64 = 0x4338_0000_0000_0000;
/// The f64 reduction used by pow's exp.
const F64_LN2: Ln2Reduction = Ln2Reduction {
    ln2_hi: LN2_HI,
    ln2_lo: LN2_LO,
    round_magic: ROUND_MAGIC,
    round_magic_bits: ROUND_MAGIC_BITS,
};
/// 2^52: the double whose bits plus j (j < 2^52) are the double 2^52 + j.
const INT_MAGIC_BITS: i64 = 0x4330_0000_0000_0000;
const INT_MAGIC: f64 = 4503599627370496.0;

/// pow(x, y) for f32 lanes; see the module docs.
pub(super) fn pow(e: &mut Em, x: Value, y: Value) -> Value {
    let ax = e.abs(x);
    let ay = e.abs(y);
    let mag = magnitude(e, ax, y);

    // x = ±0, |x| = inf or |y| = inf: the magnitude is a limit, inf when (y > 0) == (|x| > 1)
    // and 0 otherwise (|x| = 1 with |y| = inf is settled below).
    let x0 = e.fcmpc(FloatCC::Equal, ax, 0.0);
    let xinf = e.fcmpc(FloatCC::Equal, ax, f64::INFINITY);
    let yinf = e.fcmpc(FloatCC::Equal, ay, f64::INFINITY);
    let edge = e.or(x0, xinf);
    let edge = e.or(edge, yinf);
    let ypos = e.fcmpc(FloatCC::GreaterThan, y, 0.0);
    let xbig = e.fcmpc(FloatCC::GreaterThan, ax, 1.0);
    let differ = e.b.ins().bxor(ypos, xbig);
    let big = e.not(differ);
    let inf = e.f(f64::INFINITY);
    let zero = e.f(0.0);
    let limit = e.sel(big, inf, zero);
    let mag = e.sel(edge, limit, mag);

    // Is y an integer, and an odd one? Below 2^23, adding 2^23 moves y's integer part into the
    // low mantissa bits (rounding off any fraction); from 2^23 every float is an integer and
    // from 2^24 every one is even. Infinities count as even integers.
    let two23 = f64::from(1u32 << 23);
    let small = e.fcmpc(FloatCC::LessThan, ay, two23);
    let shifted = e.addc(ay, two23);
    let u = e.sel(small, shifted, ay);
    let back = e.addc(u, -two23);
    let rounded = e.sel(small, back, ay);
    let yint = e.fcmp(FloatCC::Equal, rounded, ay);
    let below24 = e.fcmpc(FloatCC::LessThan, ay, two23 * 2.0);
    let ubits = e.bits(u);
    let low = e.iandc(ubits, 1);
    let one_i = e.i(1);
    let low_set = e.icmp(IntCC::Equal, low, one_i);
    let yodd = e.and(yint, below24);
    let yodd = e.and(yodd, low_set);

    // A negative x (including -0 and -inf) to an odd integer power keeps its sign.
    let xbits = e.bits(x);
    let sign = e.iandc(xbits, i64::from(i32::MIN));
    let no_sign = e.i(0);
    let flip = e.sel(yodd, sign, no_sign);
    let mag_bits = e.bits(mag);
    let signed = e.b.ins().bxor(mag_bits, flip);
    let res = e.float(signed);

    // NaN: negative finite x to a non-integer power, or a NaN operand.
    let xneg = e.fcmpc(FloatCC::LessThan, x, 0.0);
    let xfinite = e.fcmpc(FloatCC::GreaterThan, x, f64::NEG_INFINITY);
    let not_int = e.not(yint);
    let bad = e.and(xneg, xfinite);
    let bad = e.and(bad, not_int);
    let xnan = e.fcmp(FloatCC::Unordered, x, x);
    let ynan = e.fcmp(FloatCC::Unordered, y, y);
    let nan_in = e.or(xnan, ynan);
    let bad = e.or(bad, nan_in);
    let nan = e.f(f64::NAN);
    let res = e.sel(bad, nan, res);

    // Exactly 1: y = ±0, x = 1, or x = -1 with |y| = inf (these override NaN operands).
    let y0 = e.fcmpc(FloatCC::Equal, y, 0.0);
    let x1 = e.fcmpc(FloatCC::Equal, x, 1.0);
    let xm1 = e.fcmpc(FloatCC::Equal, x, -1.0);
    let xm1 = e.and(xm1, yinf);
    let one = e.or(y0, x1);
    let one = e.or(one, xm1);
    let one_f = e.f(1.0);
    e.sel(one, one_f, res)
}

/// |x|^y for finite nonzero |x| (other lanes produce garbage that `pow` replaces), in f64.
fn magnitude(e: &mut Em, ax: Value, y: Value) -> Value {
    if !e.ty.is_vector() {
        let ax64 = e.b.ins().fpromote(types::F64, ax);
        let y64 = e.b.ins().fpromote(types::F64, y);
        let m = e.with_type(types::F64, |e| magnitude_f64(e, ax64, y64));
        return e.b.ins().fdemote(types::F32, m);
    }
    let ax_lo = e.b.ins().fvpromote_low(ax);
    let y_lo = e.b.ins().fvpromote_low(y);
    let ax_up = high_to_low(e, ax);
    let ax_hi = e.b.ins().fvpromote_low(ax_up);
    let y_up = high_to_low(e, y);
    let y_hi = e.b.ins().fvpromote_low(y_up);
    let m_lo = e.with_type(types::F64X2, |e| magnitude_f64(e, ax_lo, y_lo));
    let m_hi = e.with_type(types::F64X2, |e| magnitude_f64(e, ax_hi, y_hi));
    let d_lo = e.b.ins().fvdemote(m_lo);
    let d_hi = e.b.ins().fvdemote(m_hi);
    // Lanes 0-1 of each demoted half (punpcklqdq).
    let mask: Vec<u8> = (0..8).chain(16..24).collect();
    shuffle(e, d_lo, d_hi, mask)
}

/// Lanes 2-3 of an f32x4 moved to lanes 0-1 (pshufd).
fn high_to_low(e: &mut Em, v: Value) -> Value {
    let mask: Vec<u8> = (8..16).chain(8..16).collect();
    shuffle(e, v, v, mask)
}

/// Byte shuffle of two f32x4 values (CLIF `shuffle` works on i8x16).
fn shuffle(e: &mut Em, a: Value, b: Value, mask: Vec<u8>) -> Value {
    let flags = MemFlagsData::new().with_endianness(Endianness::Little);
    let a = e.b.ins().bitcast(types::I8X16, flags, a);
    let b = e.b.ins().bitcast(types::I8X16, flags, b);
    let imm = e.b.func.dfg.immediates.push(ConstantData::from(mask));
    let s = e.b.ins().shuffle(a, b, imm);
    e.b.ins().bitcast(types::F32X4, flags, s)
}

/// e^(y ln ax) for f64 or f64x2 lanes.
fn magnitude_f64(e: &mut Em, ax: Value, y: Value) -> Value {
    let l = log_f64(e, ax);
    let w = e.mul(y, l);
    exp_f64(e, w)
}

/// ln x for positive normal f64 (every nonzero finite f32 is one), ~1e-15 relative.
fn log_f64(e: &mut Em, x: Value) -> Value {
    // x = 2^k m, m in [sqrt(2)/2, sqrt(2)) (as in `explog::log`, on the f64 layout).
    let bits = e.bits(x);
    let hx = e.iaddc(bits, 0x3ff0_0000_0000_0000 - 0x3fe6_a09e_667f_3bcd);
    let kb = e.ushr(hx, 52);
    // k as a double without an i64 -> f64 conversion (none exists for vectors before AVX-512).
    let kb = e.iaddc(kb, INT_MAGIC_BITS);
    let kf = e.float(kb);
    let k = e.addc(kf, -(INT_MAGIC + 1023.0));
    let mb = e.iandc(hx, 0x000f_ffff_ffff_ffff);
    let mb = e.iaddc(mb, 0x3fe6_a09e_667f_3bcd);
    let m = e.float(mb);

    // log1p(f) = f - f²/2 + s (f²/2 + R), R = Σ 2 s^2j / (2j+1) (the atanh series; |s| < 0.1716
    // so seven terms leave a relative error below 1e-14).
    let f = e.addc(m, -1.0);
    let two_f = e.addc(f, 2.0);
    let s = e.div(f, two_f);
    let z = e.mul(s, s);
    let series: Vec<f64> = (1..=7).map(|j| 2.0 / f64::from(2 * j + 1)).collect();
    let r = e.poly(z, &series);
    let r = e.mul(z, r);
    let ff = e.mul(f, f);
    let hfsq = e.mulc(ff, 0.5);
    let hr = e.add(hfsq, r);
    let neg_hfsq = e.neg(hfsq);
    let acc = e.mul_add(s, hr, neg_hfsq);
    let acc = e.add(acc, f);
    let ln2 = e.f(LN2);
    e.mul_add(k, ln2, acc)
}

/// e^w for f64 lanes, ~1e-15 relative; w is clamped to [-120, 100], beyond the f32 range on
/// both sides, so the caller's rounding to f32 yields 0 or inf there. NaN passes through.
fn exp_f64(e: &mut Em, w: Value) -> Value {
    let w = e.max_keep_nan(w, -120.0);
    let w = e.min_keep_nan(w, 100.0);
    let (ni, r) = reduce_ln2(e, w, &F64_LN2);
    // Taylor series to r^11: |r| <= ln2/2 leaves a truncation error below 7e-15.
    let mut coeffs = [1.0f64; 12];
    for j in 1..12 {
        coeffs[j] = coeffs[j - 1] / j as f64;
    }
    let p = e.poly(r, &coeffs);
    // n is in [-174, 145], so 2^n is a normal double.
    let biased = e.iaddc(ni, 1023);
    let sbits = e.shl(biased, 52);
    let scale = e.float(sbits);
    e.mul(p, scale)
}
