//! A per-column affine map and activation applied to A as the driver copies it, so that the
//! elementwise layer before a contraction never writes its output to memory.
//!
//! `A'[i, k] = act(A[i, k] * scale[k] + shift[k])`: a batch norm (with any per-channel scale
//! and shift after it) and a ReLU in front of a 1x1 convolution, DenseNet's pre-activation
//! order. Run apart, that layer reads and writes every activation once more; here the driver
//! transforms each A row band into its packed copy, which it makes anyway for rows whose
//! stride would thrash L1, and the micro-kernels read the copy. The values are those of
//! transforming A first and multiplying after (same operations, same order; tested).

use super::{Activation, Isa};

/// `act(a * scale[k] + shift[k])` for column `k` of A (a multiply, then an add: two
/// roundings, never contracted into one FMA, so every ISA gives the same bits).
#[derive(Clone, Copy, Debug)]
pub struct Prologue<'a> {
    /// One factor per column of A.
    pub scale: &'a [f32],
    /// One term per column of A.
    pub shift: &'a [f32],
    /// Applied last.
    pub activation: Activation,
}

impl Prologue<'_> {
    /// Checks that the map covers the `k` columns of A.
    pub(crate) fn validate(&self, k: usize) -> Result<(), String> {
        if self.scale.len() < k || self.shift.len() < k {
            return Err(format!(
                "sgemm: prologue has {} scales and {} shifts, A has {k} columns",
                self.scale.len(),
                self.shift.len()
            ));
        }
        Ok(())
    }

    /// Writes `dst[j] = act(src[j] * scale[k0 + j] + shift[k0 + j])` for every `j` of `dst`
    /// (`src` at least as long), in the vectors of `isa` (the GEMM kernels'), or plain ones
    /// where this CPU lacks it.
    pub(crate) fn transform(&self, isa: Isa, src: &[f32], k0: usize, dst: &mut [f32]) {
        let n = dst.len();
        let (src, scale, shift) = (&src[..n], &self.scale[k0..k0 + n], &self.shift[k0..k0 + n]);
        // A clamping activation in the same pass; the others (none, leaky ReLU) after it,
        // through unbounded clamps that change nothing.
        let bounds = self.activation.bounds();
        let (lo, hi) = bounds.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        // One pass, in the kernels' vectors: compiled for the baseline, the affine pass and
        // the clamp pass ran 4 lanes at a time, 8% of DenseNet-121's run (perf, 2 threads on a
        // 2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core).
        match isa {
            // SAFETY: the CPU has AVX-512F (the guard: a cached feature test).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if isa.is_supported() => unsafe {
                affine_clamp_avx512(src, scale, shift, lo, hi, dst)
            },
            // SAFETY: the CPU has AVX2 (the guard).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma if isa.is_supported() => unsafe {
                affine_clamp_avx2(src, scale, shift, lo, hi, dst)
            },
            _ => affine_clamp(src, scale, shift, lo, hi, dst),
        }
        if bounds.is_none() {
            self.activation.apply_all(dst);
        }
    }
}

/// `dst[j] = clamp(src[j] * scale[j] + shift[j], lo, hi)`, a NaN kept (as
/// [`Activation::apply_all`] does), for slices of one length.
#[inline(always)]
fn affine_clamp(src: &[f32], scale: &[f32], shift: &[f32], lo: f32, hi: f32, dst: &mut [f32]) {
    for (((d, &a), &s), &t) in dst.iter_mut().zip(src).zip(scale).zip(shift) {
        let y = a * s + t;
        let y = if y < lo { lo } else { y };
        *d = if y > hi { hi } else { y };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn affine_clamp_avx512(
    src: &[f32],
    scale: &[f32],
    shift: &[f32],
    lo: f32,
    hi: f32,
    dst: &mut [f32],
) {
    affine_clamp(src, scale, shift, lo, hi, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn affine_clamp_avx2(src: &[f32], scale: &[f32], shift: &[f32], lo: f32, hi: f32, dst: &mut [f32]) {
    affine_clamp(src, scale, shift, lo, hi, dst);
}

#[cfg(test)]
mod tests {
    use super::{Activation, Isa, Prologue};

    /// Every activation, on lengths around the vector widths, with NaN, infinities and values
    /// on both sides of the bounds: the bits of the multiply, the add and then the activation
    /// one value at a time, on every ISA this CPU runs.
    #[test]
    fn transform_gives_the_bits_of_the_plain_map() {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            6.0,
            7.5,
            -3.0,
        ];
        for activation in [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::Clamp {
                min: -1.0,
                max: 2.0,
            },
            Activation::LeakyRelu(0.1),
        ] {
            for n in [0, 1, 7, 15, 16, 17, 33, 100] {
                let k0 = 3;
                let values = |seed: usize| -> Vec<f32> {
                    (0..k0 + n)
                        .map(|i| ((i * 7919 + seed) % 97) as f32 / 8.0 - 6.0)
                        .collect()
                };
                let (scale, shift) = (values(1), values(2));
                let mut src = values(3);
                for (i, &v) in specials.iter().enumerate().take(n) {
                    src[i * 5 % n] = v;
                }
                let p = Prologue {
                    scale: &scale,
                    shift: &shift,
                    activation,
                };
                for isa in Isa::supported() {
                    let mut got = vec![0.0; n];
                    p.transform(isa, &src, k0, &mut got);
                    for (j, g) in got.iter().enumerate() {
                        let want = activation.apply(src[j] * scale[k0 + j] + shift[k0 + j]);
                        assert!(
                            g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                            "{isa:?} {activation:?} n {n} [{j}]: {g} != {want}"
                        );
                    }
                }
            }
        }
    }
}
