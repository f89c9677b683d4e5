//! Accuracy of the inline transcendentals against f64 references: a ~1M-point sweep over all
//! f32 bit patterns, a ~1M-point sweep of each function's interesting range, and special values;
//! for vector (f32x4 + scalar tail) and scalar-only kernels, with the host's features (FMA) and
//! with the SSE2 baseline. Prints the measured max ulp / relative error per function.

use crate::math_util;

use kiln_cpu::math::{emit_exp, emit_log, emit_pow, emit_sigmoid, emit_tanh};
use math_util::*;

struct Case {
    name: &'static str,
    emit: Emit1,
    reference: fn(f64) -> f64,
    /// The range where the function is neither saturated nor trivial.
    focus: (f32, f32, f32),
    max_ulp: u64,
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "exp",
            emit: emit_exp,
            reference: f64::exp,
            focus: (-104.0, 0.0, 89.0),
            max_ulp: 1,
        },
        Case {
            name: "log",
            emit: emit_log,
            reference: f64::ln,
            focus: (0.0, 0.0, 1e6),
            max_ulp: 1,
        },
        Case {
            name: "tanh",
            emit: emit_tanh,
            reference: f64::tanh,
            focus: (-10.0, 0.0, 10.0),
            max_ulp: 1,
        },
        Case {
            name: "sigmoid",
            emit: emit_sigmoid,
            reference: sigmoid64,
            focus: (-105.0, 0.0, 20.0),
            max_ulp: 2,
        },
    ]
}

/// Inputs: the full sweep, the focus range on both sides of its split point, specials.
fn inputs(focus: (f32, f32, f32)) -> Vec<f32> {
    let mut xs = sweep_all();
    let (lo, mid, hi) = focus;
    if lo < mid {
        xs.extend(sweep_between(
            -f32::from_bits(1).max(-mid.abs()),
            lo,
            1 << 19,
        ));
    }
    xs.extend(sweep_between(mid.max(f32::from_bits(1)), hi, 1 << 19));
    xs.extend(specials());
    xs
}

#[test]
fn unary_transcendentals_accuracy() {
    for case in cases() {
        let xs = inputs(case.focus);
        let want: Vec<f64> = xs.iter().map(|&x| (case.reference)(f64::from(x))).collect();
        let mut total = Stats::default();
        for (label, features) in variants() {
            for vector in [true, false] {
                let k = unary_kernel(&features, xs.len(), vector, case.emit);
                let t0 = std::time::Instant::now();
                let got = run1(&k, &xs);
                let ns = t0.elapsed().as_nanos() as f64 / xs.len() as f64;
                let mut s = Stats::default();
                for i in 0..xs.len() {
                    s.add(&xs[i..=i], got[i], want[i]);
                }
                eprintln!(
                    "{:8} {:8} {:6} ({ns:.2} ns/elem): max {} ulp, max rel {:.3e}, subnormal max {} ulp ({} points), worst {:?}",
                    case.name,
                    label,
                    if vector { "f32x4" } else { "f32" },
                    s.max_ulp,
                    s.max_rel,
                    s.max_ulp_subnormal,
                    s.count,
                    s.worst
                );
                total.merge(s);
            }
        }
        assert!(
            total.max_ulp <= case.max_ulp,
            "{}: {} ulp > {} (worst {:?})",
            case.name,
            total.max_ulp,
            case.max_ulp,
            total.worst
        );
        assert!(
            total.max_rel < 1e-6,
            "{}: relative error {:e}",
            case.name,
            total.max_rel
        );
        assert!(
            total.max_ulp_subnormal <= 1,
            "{}: subnormal error {}",
            case.name,
            total.max_ulp_subnormal
        );
    }
}

fn pow_stats(xs: &[f32], ys: &[f32]) -> Stats {
    let want: Vec<f64> = xs
        .iter()
        .zip(ys)
        .map(|(&x, &y)| f64::from(x).powf(f64::from(y)))
        .collect();
    let mut total = Stats::default();
    for (label, features) in variants() {
        for vector in [true, false] {
            let k = binary_kernel(&features, xs.len(), vector, emit_pow);
            let got = run2(&k, xs, ys);
            let mut s = Stats::default();
            for i in 0..xs.len() {
                s.add(&[xs[i], ys[i]], got[i], want[i]);
            }
            eprintln!(
                "pow      {:8} {:6}: max {} ulp, max rel {:.3e}, subnormal max {} ulp ({} points), worst {:?}",
                label,
                if vector { "f32x4" } else { "f32" },
                s.max_ulp,
                s.max_rel,
                s.max_ulp_subnormal,
                s.count,
                s.worst
            );
            total.merge(s);
        }
    }
    total
}

#[test]
fn pow_accuracy() {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    // Positive x over every exponent × exponents of every kind.
    let yset = [
        -150.0, -37.5, -3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0, 7.25, 150.0, 1e-3, -1e-3, 0.1,
        33.3,
    ];
    for x in sweep_between(f32::from_bits(1), f32::MAX, 1 << 16) {
        for &y in &yset {
            xs.push(x);
            ys.push(y);
        }
    }
    // Where |y ln x| is large but the result finite: error amplification is worst here.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..1 << 18 {
        let x = rng.uniform(0.5, 2.0);
        xs.push(x);
        ys.push(rng.uniform(-140.0, 140.0));
    }
    // Negative bases with integer exponents (sign from parity), and random bit patterns.
    for _ in 0..1 << 16 {
        xs.push(rng.uniform(-4.0, -0.25));
        ys.push((rng.next_u32() % 121) as f32 - 60.0);
        xs.push(f32::from_bits(rng.next_u32()));
        ys.push(f32::from_bits(rng.next_u32()));
    }
    let s = pow_stats(&xs, &ys);
    assert!(
        s.max_ulp <= 1,
        "pow: {} ulp (worst {:?})",
        s.max_ulp,
        s.worst
    );
    assert!(s.max_rel < 1e-6, "pow: relative error {:e}", s.max_rel);
}

#[test]
fn pow_special_values_follow_powf() {
    let xs_special = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        -2.0,
        -3.0,
        2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MAX,
    ];
    let ys_special = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        -2.0,
        3.0,
        -3.0,
        0.5,
        -0.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e10,
        -1e10,
        8388609.0,
        16777217.0,
        16777216.0,
        8388608.5,
        1e-45,
    ];
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &x in &xs_special {
        for &y in &ys_special {
            xs.push(x);
            ys.push(y);
        }
    }
    for (label, features) in variants() {
        for vector in [true, false] {
            let k = binary_kernel(&features, xs.len(), vector, emit_pow);
            let got = run2(&k, &xs, &ys);
            for i in 0..xs.len() {
                let want = f64::from(xs[i]).powf(f64::from(ys[i])) as f32;
                let ok = if want.is_nan() {
                    got[i].is_nan()
                } else if want == 0.0 || want.is_infinite() {
                    got[i].to_bits() == want.to_bits()
                } else {
                    ulp_distance(got[i], want) <= 1
                };
                assert!(
                    ok,
                    "{label} vector={vector}: pow({:e}, {:e}) = {:e}, want {:e}",
                    xs[i], ys[i], got[i], want
                );
            }
        }
    }
}
