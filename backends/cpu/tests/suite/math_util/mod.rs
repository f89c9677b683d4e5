//! Shared helpers for the math tests: JIT kernels that map an emitter over buffers (vector main
//! loop + scalar tail, or scalar only), and ulp / relative-error bookkeeping against f64
//! references.

#![allow(dead_code)]

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_cpu::jit::loops::{data_flags, elem_addr, for_range, for_range_tail};
use kiln_cpu::jit::{CompiledKernel, CpuFeatures, Jit, JitOptions};
use kiln_cpu::math::MathConfig;

/// A unary emitter as the math module exposes them.
pub type Emit1 = fn(&mut FunctionBuilder, MathConfig, Value) -> Result<Value, String>;
/// A binary emitter.
pub type Emit2 = fn(&mut FunctionBuilder, MathConfig, Value, Value) -> Result<Value, String>;

/// An emitter over any number of operands.
pub type MapFn<'a> =
    dyn Fn(&mut FunctionBuilder, MathConfig, &[Value]) -> Result<Value, String> + 'a;

/// Feature sets every test runs under: the host's (FMA if present) and the SSE2 baseline.
pub fn variants() -> [(&'static str, CpuFeatures); 2] {
    [
        ("native", CpuFeatures::Native),
        ("baseline", CpuFeatures::Baseline),
    ]
}

fn jit(features: &CpuFeatures) -> Jit {
    Jit::with_options(JitOptions {
        features: features.clone(),
        ..JitOptions::default()
    })
    .expect("host JIT")
}

/// `out[i] = f(in0[i], in1[i], ...)` over `n` elements; buffers: inputs..., output.
pub fn map_kernel(
    features: &CpuFeatures,
    n: usize,
    vector: bool,
    arity: usize,
    f: &MapFn<'_>,
) -> CompiledKernel {
    let mut jit = jit(features);
    let math = jit.math_config();
    let id = jit
        .define_kernel("map", arity + 1, |b, env| {
            let bufs = env.buffers().to_vec();
            let step = |b: &mut FunctionBuilder, iv: Value, ty| -> Result<(), String> {
                let args: Vec<Value> = bufs[..arity]
                    .iter()
                    .map(|&buf| {
                        let p = elem_addr(b, buf, iv, 4);
                        b.ins().load(ty, data_flags(), p, 0)
                    })
                    .collect();
                let r = f(b, math, &args)?;
                let p = elem_addr(b, bufs[arity], iv, 4);
                b.ins().store(data_flags(), r, p, 0);
                Ok(())
            };
            let n = n as i64;
            if vector {
                for_range_tail(
                    b,
                    0,
                    n,
                    4,
                    |b, iv| step(b, iv, types::F32X4),
                    |b, iv| step(b, iv, types::F32),
                )
            } else {
                for_range(b, 0, n, 1, |b, iv| step(b, iv, types::F32))
            }
        })
        .expect("define kernel");
    jit.finish().expect("finish").kernel(id).expect("kernel")
}

pub fn unary_kernel(features: &CpuFeatures, n: usize, vector: bool, f: Emit1) -> CompiledKernel {
    map_kernel(features, n, vector, 1, &|b, m, a| f(b, m, a[0]))
}

pub fn binary_kernel(features: &CpuFeatures, n: usize, vector: bool, f: Emit2) -> CompiledKernel {
    map_kernel(features, n, vector, 2, &|b, m, a| f(b, m, a[0], a[1]))
}

pub fn run1(k: &CompiledKernel, xs: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; xs.len()];
    // SAFETY: the kernel reads xs.len() f32 from buffer 0 and writes as many to buffer 1.
    unsafe { k.call(&[xs.as_ptr() as *mut u8, out.as_mut_ptr() as *mut u8]) }.expect("call");
    out
}

pub fn run2(k: &CompiledKernel, xs: &[f32], ys: &[f32]) -> Vec<f32> {
    assert_eq!(xs.len(), ys.len());
    let mut out = vec![0.0f32; xs.len()];
    // SAFETY: as in run1, with a second input of the same length.
    unsafe {
        k.call(&[
            xs.as_ptr() as *mut u8,
            ys.as_ptr() as *mut u8,
            out.as_mut_ptr() as *mut u8,
        ])
    }
    .expect("call");
    out
}

/// Position of a float on the line of all floats (-0 and +0 coincide; inf follows MAX).
fn ordinal(x: f32) -> i64 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        -i64::from(b & 0x7fff_ffff)
    } else {
        i64::from(b)
    }
}

/// Distance in ulps; NaN against NaN is 0, NaN against a number is u64::MAX.
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => 0,
        (false, false) => ordinal(a).abs_diff(ordinal(b)),
        _ => u64::MAX,
    }
}

/// Error statistics of one function on one input set.
#[derive(Debug, Default)]
pub struct Stats {
    pub max_ulp: u64,
    /// Max relative error against the f64 reference, over normal (non-subnormal) results.
    pub max_rel: f64,
    /// Max ulps over subnormal results.
    pub max_ulp_subnormal: u64,
    /// Worst case (inputs, got, want) by ulps.
    pub worst: Option<(Vec<f32>, f32, f32)>,
    pub count: usize,
}

impl Stats {
    pub fn add(&mut self, inputs: &[f32], got: f32, want64: f64) {
        let want = want64 as f32;
        let ulps = ulp_distance(got, want);
        self.count += 1;
        if ulps > self.max_ulp {
            self.max_ulp = ulps;
            self.worst = Some((inputs.to_vec(), got, want));
        }
        if want.is_finite() && want != 0.0 {
            if want.abs() >= f32::MIN_POSITIVE {
                let rel = ((f64::from(got) - want64) / want64).abs();
                if rel > self.max_rel {
                    self.max_rel = rel;
                }
            } else {
                self.max_ulp_subnormal = self.max_ulp_subnormal.max(ulps);
            }
        }
    }

    pub fn merge(&mut self, other: Stats) {
        if other.max_ulp > self.max_ulp {
            self.max_ulp = other.max_ulp;
            self.worst = other.worst;
        }
        self.max_rel = self.max_rel.max(other.max_rel);
        self.max_ulp_subnormal = self.max_ulp_subnormal.max(other.max_ulp_subnormal);
        self.count += other.count;
    }
}

/// About 1M floats spread over every bit pattern (both signs, all exponents, NaNs included).
pub fn sweep_all() -> Vec<f32> {
    (0u32..1 << 20)
        .map(|i| f32::from_bits(i.wrapping_mul(4099).wrapping_add(i >> 7)))
        .collect()
}

/// `count` floats evenly spaced by bit pattern between `lo` and `hi` (same sign).
pub fn sweep_between(lo: f32, hi: f32, count: u32) -> Vec<f32> {
    let (a, b) = (lo.to_bits(), hi.to_bits());
    let (a, b) = (a.min(b), a.max(b));
    let span = u64::from(b - a);
    (0..count)
        .map(|i| f32::from_bits(a + (span * u64::from(i) / u64::from(count)) as u32))
        .collect()
}

/// Special inputs: zeros, infinities, NaNs, subnormal edges, overflow thresholds.
pub fn specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        1.0,
        -1.0,
        0.5,
        2.0,
        88.72283,
        88.722_84,
        88.7229,
        89.0,
        -87.33654,
        -87.3366,
        -103.97,
        -103.98,
        -104.0,
        0.625,
        -0.625,
        0.624_999_9,
        1e-30,
        -1e-30,
        1e-40,
        9.0,
        -9.1,
        20.0,
        -20.0,
        1e30,
    ];
    v.extend((0..64).map(|i| f32::from_bits(0x3f80_0000 + i) - 1.0));
    v
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = self.next_u32() as f64 / 4294967296.0;
        (f64::from(lo) + u * f64::from(hi - lo)) as f32
    }
}
