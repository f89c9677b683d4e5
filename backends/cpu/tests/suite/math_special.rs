//! Exact special-value behaviour of the math emitters (±0, ±inf, NaN, subnormals, overflow
//! thresholds), the simple elementwise helpers, op dispatch, and type errors.

use crate::math_util;

use cranelift_codegen::ir::{InstBuilder, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use kiln_cpu::math::*;
use kiln_ir::op::{BinaryOp, Float, UnaryOp};
use math_util::*;

/// `f` applied to `xs` by every kernel flavour; panics unless all flavours agree bit for bit
/// (up to NaN payloads).
fn apply(f: Emit1, xs: &[f32]) -> Vec<f32> {
    let mut first: Option<Vec<f32>> = None;
    for (label, features) in variants() {
        for vector in [true, false] {
            let got = run1(&unary_kernel(&features, xs.len(), vector, f), xs);
            if let Some(prev) = &first {
                for i in 0..xs.len() {
                    let same = got[i].to_bits() == prev[i].to_bits()
                        || (got[i].is_nan() && prev[i].is_nan());
                    let close = ulp_distance(got[i], prev[i]) <= 1;
                    assert!(
                        same || close,
                        "{label} vector={vector}: x={:e}: {:e} vs {:e}",
                        xs[i],
                        got[i],
                        prev[i]
                    );
                }
            } else {
                first = Some(got);
            }
        }
    }
    first.unwrap_or_default()
}

fn bits_eq(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn exp_special_values() {
    let xs = [
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        88.72283,
        88.7229,
        1000.0,
        -1000.0,
        -104.0,
        -103.0,
        -87.5,
        f32::from_bits(1),
    ];
    let got = apply(emit_exp, &xs);
    assert!(bits_eq(got[0], 0.0));
    assert_eq!(got[1], f32::INFINITY);
    assert!(got[2].is_nan());
    assert_eq!((got[3], got[4]), (1.0, 1.0));
    assert!(
        got[5].is_finite() && got[5] > 3.4e38,
        "exp(88.72283) = {}",
        got[5]
    );
    assert_eq!(got[6], f32::INFINITY);
    assert_eq!(got[7], f32::INFINITY);
    assert!(bits_eq(got[8], 0.0) && bits_eq(got[9], 0.0));
    // exp(-103) ≈ 1.2e-45: the smallest subnormal; exp(-87.5) is subnormal too.
    assert_eq!(got[10], f32::from_bits(1));
    let want = (-87.5f64).exp() as f32;
    assert!(
        got[11] < f32::MIN_POSITIVE && ulp_distance(got[11], want) <= 1,
        "{} vs {}",
        got[11],
        want
    );
    assert_eq!(got[12], 1.0);
}

#[test]
fn log_special_values() {
    let den = f32::from_bits(1);
    let xs = [
        0.0,
        -0.0,
        -1.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        1.0,
        den,
        f32::from_bits(0x0040_0000),
        f32::MAX,
        -den,
    ];
    let got = apply(emit_log, &xs);
    assert_eq!(got[0], f32::NEG_INFINITY);
    assert_eq!(got[1], f32::NEG_INFINITY);
    assert!(got[2].is_nan() && got[3].is_nan() && got[5].is_nan() && got[10].is_nan());
    assert_eq!(got[4], f32::INFINITY);
    assert!(bits_eq(got[6], 0.0));
    // ln(2^-149) and ln(2^-127): subnormal inputs get their true exponent.
    assert!(
        ulp_distance(got[7], (-149.0 * std::f64::consts::LN_2) as f32) <= 1,
        "{}",
        got[7]
    );
    assert!(
        ulp_distance(got[8], (-127.0 * std::f64::consts::LN_2) as f32) <= 1,
        "{}",
        got[8]
    );
    assert!(ulp_distance(got[9], f64::from(f32::MAX).ln() as f32) <= 1);
}

#[test]
fn tanh_and_sigmoid_special_values() {
    let den = f32::from_bits(5);
    let xs = [
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        10.0,
        -10.0,
        1e30,
        den,
        -den,
        1e-20,
    ];
    let t = apply(emit_tanh, &xs);
    assert_eq!(t[0].to_bits(), (-0.0f32).to_bits(), "tanh(-0) must be -0");
    assert_eq!(t[1].to_bits(), 0);
    assert_eq!((t[2], t[3]), (1.0, -1.0));
    assert!(t[4].is_nan());
    assert_eq!((t[5], t[6], t[7]), (1.0, -1.0, 1.0));
    assert_eq!(
        (t[8], t[9], t[10]),
        (den, -den, 1e-20),
        "tanh(x) = x for tiny x"
    );

    let s = apply(emit_sigmoid, &xs);
    assert_eq!((s[0], s[1]), (0.5, 0.5));
    assert_eq!(s[2], 1.0);
    assert!(bits_eq(s[3], 0.0));
    assert!(s[4].is_nan());
    assert_eq!(s[7], 1.0);
    // Large negative inputs give tiny (even subnormal) results, not 0.
    let s2 = apply(emit_sigmoid, &[-90.0, -100.0, -200.0]);
    assert!(ulp_distance(s2[0], (-90.0f64).exp() as f32) <= 1 && s2[0] > 0.0);
    assert!(ulp_distance(s2[1], (-100.0f64).exp() as f32) <= 1 && s2[1] > 0.0);
    assert!(bits_eq(s2[2], 0.0));
}

fn naive_unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Relu6 => x.clamp(0.0, 6.0),
        UnaryOp::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha.0 * x
            } else {
                x
            }
        }
        UnaryOp::Sigmoid => (1.0 / (1.0 + (-f64::from(x)).exp())) as f32,
        UnaryOp::Tanh => f64::from(x).tanh() as f32,
        UnaryOp::Exp => f64::from(x).exp() as f32,
        UnaryOp::Log => f64::from(x).ln() as f32,
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => (1.0 / f64::from(x).sqrt()) as f32,
        UnaryOp::Square => x * x,
        UnaryOp::Sign => {
            if x.is_nan() {
                x
            } else if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
    }
}

#[test]
fn every_unary_op_matches_a_naive_definition() {
    let mut xs = specials();
    let mut rng = Rng(42);
    xs.extend((0..4000).map(|_| rng.uniform(-10.0, 10.0)));
    let ops = UnaryOp::ALL
        .iter()
        .copied()
        .chain([UnaryOp::LeakyRelu { alpha: Float(0.01) }]);
    for op in ops {
        let f = |b: &mut FunctionBuilder, m, a: &[cranelift_codegen::ir::Value]| {
            emit_unary(b, m, op, a[0])
        };
        for (label, features) in variants() {
            for vector in [true, false] {
                let k = map_kernel(&features, xs.len(), vector, 1, &f);
                let got = run1(&k, &xs);
                for (&x, &g) in xs.iter().zip(&got) {
                    let want = naive_unary(op, x);
                    let ok = if want.is_nan() {
                        g.is_nan()
                    } else {
                        ulp_distance(g, want) <= 2
                    };
                    assert!(
                        ok,
                        "{} {label} vector={vector}: f({x:e}) = {g:e}, want {want:e}",
                        op.name()
                    );
                }
            }
        }
    }
}

fn naive_binary(op: BinaryOp, x: f32, y: f32) -> f32 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Maximum => {
            if x.is_nan() || y.is_nan() {
                f32::NAN
            } else {
                x.max(y)
            }
        }
        BinaryOp::Minimum => {
            if x.is_nan() || y.is_nan() {
                f32::NAN
            } else {
                x.min(y)
            }
        }
        BinaryOp::Pow => f64::from(x).powf(f64::from(y)) as f32,
    }
}

#[test]
fn every_binary_op_matches_a_naive_definition() {
    let sp = specials();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &x in sp.iter().take(40) {
        for &y in sp.iter().take(40) {
            xs.push(x);
            ys.push(y);
        }
    }
    for op in BinaryOp::ALL {
        let f = |b: &mut FunctionBuilder, m, a: &[cranelift_codegen::ir::Value]| {
            emit_binary(b, m, op, a[0], a[1])
        };
        for (label, features) in variants() {
            for vector in [true, false] {
                let k = map_kernel(&features, xs.len(), vector, 2, &f);
                let got = run2(&k, &xs, &ys);
                for i in 0..xs.len() {
                    let (x, y, g) = (xs[i], ys[i], got[i]);
                    let want = naive_binary(op, x, y);
                    let ok = if want.is_nan() {
                        g.is_nan()
                    } else {
                        ulp_distance(g, want) <= 1
                    };
                    assert!(
                        ok,
                        "{} {label} vector={vector}: f({x:e}, {y:e}) = {g:e}, want {want:e}",
                        op.name()
                    );
                }
            }
        }
    }
}

#[test]
fn relu_keeps_nan_and_negative_zero() {
    let got = apply(
        |b, _, x| emit_relu(b, x),
        &[f32::NAN, -0.0, -3.0, 2.0, f32::NEG_INFINITY],
    );
    assert!(got[0].is_nan());
    assert_eq!(got[1].to_bits(), (-0.0f32).to_bits());
    assert_eq!(&got[2..], &[0.0, 2.0, 0.0]);
    let got = apply(
        |b, _, x| emit_relu6(b, x),
        &[f32::NAN, 7.0, f32::INFINITY, 5.5, -1.0],
    );
    assert!(got[0].is_nan());
    assert_eq!(&got[1..], &[6.0, 6.0, 5.5, 0.0]);
}

#[test]
fn wrong_types_are_errors_not_panics() {
    let mut func = cranelift_codegen::ir::Function::new();
    let mut ctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut ctx);
    let block = b.create_block();
    b.switch_to_block(block);
    let i = b.ins().iconst(types::I32, 1);
    let f = b.ins().f32const(1.0);
    let d = b.ins().f64const(1.0);
    let cfg = MathConfig::default();
    let err = emit_exp(&mut b, cfg, i).unwrap_err();
    assert!(err.contains("exp") && err.contains("i32"), "{err}");
    assert!(emit_log(&mut b, cfg, d).unwrap_err().contains("f64"));
    assert!(emit_pow(&mut b, cfg, f, d).unwrap_err().contains("pow"));
    assert!(emit_binary(&mut b, cfg, BinaryOp::Maximum, f, i).is_err());
    assert!(emit_mul_add(&mut b, cfg, f, f, d).is_err());
    assert!(emit_f32_const(&mut b, types::I32X4, 1.0).is_err());
    assert!(emit_unary(&mut b, cfg, UnaryOp::Relu, f).is_ok());
}
