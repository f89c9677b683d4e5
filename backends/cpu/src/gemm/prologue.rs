//! A per-column affine map and activation applied to A as the driver copies it, so that the
//! elementwise layer before a contraction never writes its output to memory.
//!
//! `A'[i, k] = act(A[i, k] * scale[k] + shift[k])`: a batch norm (with any per-channel scale
//! and shift after it) and a ReLU in front of a 1x1 convolution, DenseNet's pre-activation
//! order. Run apart, that layer reads and writes every activation once more; here the driver
//! transforms each A row band into its packed copy, which it makes anyway for rows whose
//! stride would thrash L1, and the micro-kernels read the copy. The values are those of
//! transforming A first and multiplying after (same operations, same order; tested).

use super::Activation;

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
    /// (`src` at least as long).
    pub(crate) fn transform(&self, src: &[f32], k0: usize, dst: &mut [f32]) {
        let n = dst.len();
        let (scale, shift) = (&self.scale[k0..k0 + n], &self.shift[k0..k0 + n]);
        for (((d, &a), &s), &t) in dst.iter_mut().zip(&src[..n]).zip(scale).zip(shift) {
            *d = a * s + t;
        }
        self.activation.apply_all(dst);
    }
}
