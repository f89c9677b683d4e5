//! Single-precision exp, log, tanh and sigmoid as branch-free CLIF for `f32` and `f32x4`.
//!
//! Technique: Cody-Waite range reduction by ln 2 and minimax polynomials on the reduced argument
//! (coefficients fitted with Lawson's iteration on Chebyshev nodes, relative-error weighted, then
//! rounded to f32); exponents are taken apart and rebuilt with integer lane ops. Special values
//! are fixed up with selects at the end rather than branches, so vector lanes stay independent.
//! Measured accuracy (tests/suite/math_accuracy.rs, 1M-point sweep over all f32 bit patterns, vector
//! and scalar code, with and without FMA) is listed on each function.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};

use super::emit::Em;

/// ln 2 split so that `k * LN2_HI` is exact for |k| < 256 (16 significant bits).
pub(super) const LN2_HI: f64 = 0.693145751953125;
/// ln 2 - LN2_HI, rounded to f32.
pub(super) const LN2_LO: f64 = 1.428606765330187e-06;
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer held in the low
/// mantissa bits (round to nearest even, no float-to-int conversion needed).
const ROUND_MAGIC: f64 = 12582912.0;
const ROUND_MAGIC_BITS: i64 = 0x4b40_0000;

/// e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2; minimax relative error 3.1e-9.
const EXP_P: [f64; 5] = [
    0.4999999403953552,
    0.1666651964187622,
    0.04166840761899948,
    0.008368914015591145,
    0.0013814191333949566,
];

/// log1p(f) = f - f²/2 + s·(f²/2 + R(s²)), s = f/(2+f), R(z) = z·(L1 + L2 z + L3 z² + L4 z³)
/// on |s| ≤ 0.1716; minimax relative error of log1p 5e-12.
const LOG_R: [f64; 4] = [
    0.6666666269302368,
    0.40000346302986145,
    0.2853650152683258,
    0.23598483204841614,
];

/// tanh(x) ≈ x + x³·P(x²) on |x| < TANH_SMALL; minimax relative error 4.5e-9.
const TANH_P: [f64; 5] = [
    -0.3333328068256378,
    0.13331420719623566,
    -0.05373779684305191,
    0.0206325463950634,
    -0.005697384011000395,
];
const TANH_SMALL: f64 = 0.625;

/// The constants of a Cody-Waite reduction `x = n·ln2 + r` for one float width.
pub(super) struct Ln2Reduction {
    /// ln2 split so that `n * ln2_hi` is exact for the n that occur.
    pub ln2_hi: f64,
    /// The rest of ln2.
    pub ln2_lo: f64,
    /// 1.5·2^mantissa_bits: adding it rounds to an integer held in the low mantissa bits.
    pub round_magic: f64,
    /// The bit pattern of `round_magic`.
    pub round_magic_bits: i64,
}

/// The f32 reduction used by [`exp`].
const F32_LN2: Ln2Reduction = Ln2Reduction {
    ln2_hi: LN2_HI,
    ln2_lo: LN2_LO,
    round_magic: ROUND_MAGIC,
    round_magic_bits: ROUND_MAGIC_BITS,
};

/// `n = round(x / ln2)` as integer lanes and `r = x - n·ln2` (|r| <= ln2/2), shared by the f32
/// `exp` and pow's f64 exp.
pub(super) fn reduce_ln2(e: &mut Em, x: Value, c: &Ln2Reduction) -> (Value, Value) {
    let log2e = e.f(LOG2E);
    let magic = e.f(c.round_magic);
    let t = e.mul_add(x, log2e, magic);
    let n = e.sub(t, magic);
    let tbits = e.bits(t);
    let magic_bits = e.i(c.round_magic_bits);
    let ni = e.isub(tbits, magic_bits);
    let neg_n = e.neg(n);
    let hi = e.f(c.ln2_hi);
    let lo = e.f(c.ln2_lo);
    let r = e.mul_add(neg_n, hi, x);
    let r = e.mul_add(neg_n, lo, r);
    (ni, r)
}

/// e^x. Max error 1 ulp (relative 7.9e-8) for normal results; subnormal results within
/// 1 ulp; x > 88.7228 → +inf, x < -103.97 → 0, ±inf → inf/0, NaN → NaN.
pub(super) fn exp(e: &mut Em, x: Value) -> Value {
    // Clamping keeps n in [-150, 128] so both scale factors below are normal floats; beyond the
    // bounds the true result already rounds to 0 or overflows. NaN passes the clamps.
    let x = e.max_keep_nan(x, -104.0);
    let x = e.min_keep_nan(x, 89.0);

    let (ni, r) = reduce_ln2(e, x, &F32_LN2);

    // e^r = 1 + (r + r² P(r)): adding the 1 last keeps the small terms' rounding small.
    let q = e.poly(r, &EXP_P);
    let r2 = e.mul(r, r);
    let p = e.mul_add(r2, q, r);
    let p = e.addc(p, 1.0);

    // 2^n as two normal factors 2^(n>>1) * 2^(n - (n>>1)): the first product is exact and the
    // second rounds once, so results in the subnormal range are rounded correctly too.
    let n1 = e.sshr(ni, 1);
    let n2 = e.isub(ni, n1);
    let s1 = pow2(e, n1);
    let s2 = pow2(e, n2);
    let p = e.mul(p, s1);
    e.mul(p, s2)
}

/// 2^n for integer lanes n in [-126, 127], built from the exponent bits.
fn pow2(e: &mut Em, n: Value) -> Value {
    let biased = e.iaddc(n, 127);
    let bits = e.shl(biased, 23);
    e.float(bits)
}

/// ln x. Max error 1 ulp (relative 8.2e-8); subnormal x handled by rescaling; 0 → -inf,
/// x < 0 → NaN, +inf → +inf, NaN → NaN.
pub(super) fn log(e: &mut Em, x: Value) -> Value {
    // Subnormals: scale by 2^23 into the normal range and take 23 off the exponent.
    let tiny = e.fcmpc(FloatCC::LessThan, x, f64::from(f32::MIN_POSITIVE));
    let scaled = e.mulc(x, 8388608.0);
    let xs = e.sel(tiny, scaled, x);
    let adj_on = e.f(23.0);
    let adj_off = e.f(0.0);
    let adj = e.sel(tiny, adj_on, adj_off);

    // x = 2^k * m with m in [sqrt(2)/2, sqrt(2)): offsetting the bits by (1.0 - sqrt(2)/2)
    // carries into the exponent exactly when the mantissa is >= sqrt(2) (musl's logf trick).
    let bits = e.bits(xs);
    let ix = e.iaddc(bits, 0x3f80_0000 - 0x3f35_04f3);
    let kbits = e.sshr(ix, 23);
    let ki = e.iaddc(kbits, -127);
    let fty = e.ty;
    let k = e.b.ins().fcvt_from_sint(fty, ki);
    let k = e.sub(k, adj);
    let mbits = e.iandc(ix, 0x007f_ffff);
    let mbits = e.iaddc(mbits, 0x3f35_04f3);
    let m = e.float(mbits);

    let f = e.addc(m, -1.0);
    let two_f = e.addc(f, 2.0);
    let s = e.div(f, two_f);
    let z = e.mul(s, s);
    let w = e.mul(z, z);
    // R = z (L1 + w L3) + w (L2 + w L4): two short chains instead of one long Horner chain.
    let l3 = e.f(LOG_R[2]);
    let l1 = e.f(LOG_R[0]);
    let l4 = e.f(LOG_R[3]);
    let l2 = e.f(LOG_R[1]);
    let t2 = e.mul_add(w, l3, l1);
    let t2 = e.mul(z, t2);
    let t1 = e.mul_add(w, l4, l2);
    let t1 = e.mul(w, t1);
    let r = e.add(t2, t1);
    let ff = e.mul(f, f);
    let hfsq = e.mulc(ff, 0.5);

    // log x = k ln2_hi + (f - (hfsq - (s (hfsq + R) + k ln2_lo))): small terms first.
    let hr = e.add(hfsq, r);
    let kl = e.mulc(k, LN2_LO);
    let acc = e.mul_add(s, hr, kl);
    let acc = e.sub(acc, hfsq);
    let acc = e.add(acc, f);
    let ln2_hi = e.f(LN2_HI);
    let res = e.mul_add(k, ln2_hi, acc);

    // Specials: only 0 < x < inf took the path above.
    let nan = e.f(f64::NAN);
    let inf = e.f(f64::INFINITY);
    let neg_inf = e.f(f64::NEG_INFINITY);
    let is_inf = e.fcmpc(FloatCC::Equal, x, f64::INFINITY);
    let sp = e.sel(is_inf, inf, nan);
    let is_zero = e.fcmpc(FloatCC::Equal, x, 0.0);
    let sp = e.sel(is_zero, neg_inf, sp);
    let pos = e.fcmpc(FloatCC::GreaterThan, x, 0.0);
    let finite = e.fcmpc(FloatCC::LessThan, x, f64::INFINITY);
    let ok = e.and(pos, finite);
    e.sel(ok, res, sp)
}

/// tanh x. Max error 1 ulp; odd (tanh(-0) = -0, subnormals returned exactly), saturates to ±1,
/// NaN → NaN.
pub(super) fn tanh(e: &mut Em, x: Value) -> Value {
    // Both branches work on |x| and the sign of x is put back at the end: computing the
    // polynomial on signed x would turn tanh(-0) into +0 (-0 + +0 = +0).
    let ax = e.abs(x);

    // Small |x|: the odd polynomial; subnormal x comes out exact.
    let z = e.mul(ax, ax);
    let p = e.poly(z, &TANH_P);
    let xz = e.mul(ax, z);
    let small = e.mul_add(xz, p, ax);

    // Large |x|: (1 - e^-2|x|) / (1 + e^-2|x|) has no cancellation above TANH_SMALL and is
    // exactly 1 once e^-2|x| < 2^-25 (|x| > 9.01). Clamping |x| at 10 keeps e^-2|x| out of
    // the subnormal range, whose microcode assists cost 2.5x on inputs in [-80, 80] (4.6 vs
    // 1.8 ns/element, f32x4 with FMA).
    let capped = e.min_keep_nan(ax, 10.0);
    let m2ax = e.mulc(capped, -2.0);
    let em = exp(e, m2ax);
    let one = e.f(1.0);
    let num = e.sub(one, em);
    let den = e.add(one, em);
    let big = e.div(num, den);

    let is_small = e.fcmpc(FloatCC::LessThan, ax, TANH_SMALL);
    let mag = e.sel(is_small, small, big);
    let mag_bits = e.bits(mag);
    let x_bits = e.bits(x);
    let sign = e.iandc(x_bits, i64::from(i32::MIN));
    let signed = e.or(mag_bits, sign);
    e.float(signed)
}

/// 1 / (1 + e^-x). Max error 2 ulp for normal results (subnormal results within 1 ulp);
/// -inf → 0, +inf → 1, NaN → NaN.
pub(super) fn sigmoid(e: &mut Em, x: Value) -> Value {
    // With t = e^-|x| <= 1: sigmoid(x) = 1/(1+t) for x >= 0 and t/(1+t) for x < 0, so nothing
    // overflows and tiny negative-side results keep their relative accuracy.
    let ax = e.abs(x);
    let nax = e.neg(ax);
    let t = exp(e, nax);
    let one = e.f(1.0);
    let neg = e.fcmpc(FloatCC::LessThan, x, 0.0);
    let num = e.sel(neg, t, one);
    let den = e.add(one, t);
    e.div(num, den)
}
