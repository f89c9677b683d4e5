//! `lrn` on the host: `y[.., c] = x[.., c] / (bias + alpha * sum_{|j - c| <= r} x[.., j]^2) ^
//! beta` over the last axis (tf.nn.local_response_normalization), the window clipped at the
//! edges.
//!
//! The fast path works in f32 on one pixel (a row of channels) at a time, in loops LLVM
//! vectorises: the squares into a zero-padded scratch row, the window sums as `2r + 1` shifted
//! adds (no subtraction, so no cancellation when a huge value leaves the window; windows wider
//! than [`DIRECT_WINDOW_MAX`] use van Herk's blocked prefix sums in f64, O(C) with no
//! subtraction either), and the power specialised for beta 0.5 (`1/sqrt`), 0.75
//! (`1/(s * sqrt(s))`, `s = sqrt(d)`) and 1. Pixels are split across rayon's threads.
//!
//! The f32 path is only as accurate as the f64 reference while the squares and denominators
//! are normal f32 numbers and `bias + alpha * sum` cannot cancel; a row that leaves that range
//! (a huge, tiny, infinite or NaN input, a zero denominator) and every row under a negative
//! `bias` or `alpha` is recomputed the reference's way, in f64.

use rayon::prelude::*;

/// Windows up to this wide are summed directly (one vector add per tap); wider ones in O(C).
const DIRECT_WINDOW_MAX: usize = 16;
/// Below this many elements the kernel runs on the calling thread (waking a worker costs
/// microseconds).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 14;
/// Smallest nonzero `|x|` whose square is a normal f32 (exact to rounding, never flushed).
const X_MIN: f32 = 1.1e-19;
/// Range of denominators `bias + alpha * sum` the f32 path accepts: far from f32's overflow
/// and underflow, so the power and the division round like the reference's f64.
const D_RANGE: (f32, f32) = (1e-30, 1e30);

/// `y = lrn(x)` for a rank-4 `x` of `dims`; `params` are `[bias, alpha, beta]`.
pub(super) fn lrn(x: &[f32], dims: &[usize], radius: usize, params: [f32; 3], y: &mut [f32]) {
    let c = dims.last().copied().unwrap_or(0);
    if c == 0 || x.is_empty() {
        return;
    }
    let kernel = Lrn::new(c, radius, params);
    let threads = rayon::current_num_threads();
    if x.len() < PARALLEL_MIN_ELEMENTS || threads < 2 {
        kernel.rows(x, y);
        return;
    }
    let rows = x.len() / c;
    let chunk = rows.div_ceil(threads * 4) * c;
    x.par_chunks(chunk)
        .zip(y.par_chunks_mut(chunk))
        .for_each(|(xs, ys)| kernel.rows(xs, ys));
}

/// `d ^ -beta` as the fast path evaluates it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Power {
    /// beta = 0.5: `1 / sqrt(d)`.
    Half,
    /// beta = 0.75: `1 / (s * sqrt(s))` with `s = sqrt(d)`.
    ThreeQuarters,
    /// beta = 1: `1 / d`.
    One,
    /// Any other beta: `1 / powf(d, beta)`.
    General(f32),
}

/// One LRN's parameters, the window clipped to the channel count.
struct Lrn {
    channels: usize,
    /// `min(radius, channels - 1)`: a wider window covers the whole row from every channel.
    radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
    power: Power,
    /// Whether the f32 path may run at all (`bias + alpha * sum` cannot cancel).
    fast: bool,
}

/// Per-thread scratch: the zero-padded squares, the denominators, and for wide windows the
/// blocked prefix and suffix sums.
struct Scratch {
    squares: Vec<f32>,
    denominators: Vec<f32>,
    prefix: Vec<f64>,
    suffix: Vec<f64>,
}

impl Lrn {
    fn new(channels: usize, radius: usize, [bias, alpha, beta]: [f32; 3]) -> Lrn {
        let power = match beta {
            0.5 => Power::Half,
            0.75 => Power::ThreeQuarters,
            1.0 => Power::One,
            b => Power::General(b),
        };
        let finite = bias.is_finite() && alpha.is_finite() && beta.is_finite();
        Lrn {
            channels,
            radius: radius.min(channels - 1),
            bias,
            alpha,
            beta,
            power,
            fast: finite && bias >= 0.0 && alpha >= 0.0,
        }
    }

    fn window(&self) -> usize {
        2 * self.radius + 1
    }

    /// Normalises whole rows of `x` into `y`, the loops compiled for the widest vectors the
    /// CPU has (and `KILN_CPU_FEATURES` allows). Every variant gives the same bits: the
    /// vector loops use only IEEE-exact operations (no contraction into FMA), the rest is the
    /// same scalar code.
    fn rows(&self, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match crate::gemm::detect() {
            // SAFETY: `detect` returns a family only when the CPU supports it.
            crate::gemm::Isa::Avx512 => return unsafe { self.rows_avx512(x, y) },
            // SAFETY: as above.
            crate::gemm::Isa::Avx2Fma => return unsafe { self.rows_avx2(x, y) },
            crate::gemm::Isa::Portable => {}
        }
        self.rows_body(x, y);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn rows_avx512(&self, x: &[f32], y: &mut [f32]) {
        self.rows_body(x, y);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn rows_avx2(&self, x: &[f32], y: &mut [f32]) {
        self.rows_body(x, y);
    }

    #[inline(always)]
    fn rows_body(&self, x: &[f32], y: &mut [f32]) {
        let c = self.channels;
        let padded = c + 2 * self.radius;
        let wide = self.window() > DIRECT_WINDOW_MAX;
        let mut scratch = Scratch {
            squares: vec![0.0; if self.fast { padded } else { 0 }],
            denominators: vec![0.0; if self.fast { c } else { 0 }],
            prefix: vec![0.0; if self.fast && wide { padded } else { 0 }],
            suffix: vec![0.0; if self.fast && wide { padded } else { 0 }],
        };
        for (row, out) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
            if !(self.fast && self.fast_row(row, out, &mut scratch)) {
                self.exact_row(row, out);
            }
        }
    }

    /// The f32 path on one row; false (with `out` unspecified) when the row must be
    /// recomputed exactly.
    #[inline(always)]
    fn fast_row(&self, row: &[f32], out: &mut [f32], s: &mut Scratch) -> bool {
        let (c, r) = (self.channels, self.radius);
        // Squares between `r` zeros on either side (the pads are never written).
        let mut ok = true;
        for (q, &v) in s.squares[r..r + c].iter_mut().zip(row) {
            *q = v * v;
            ok &= v == 0.0 || v.abs() >= X_MIN;
        }
        if !ok {
            return false;
        }
        let d = &mut s.denominators[..c];
        if self.window() <= DIRECT_WINDOW_MAX {
            d.copy_from_slice(&s.squares[..c]);
            for tap in 1..self.window() {
                for (a, &q) in d.iter_mut().zip(&s.squares[tap..tap + c]) {
                    *a += q;
                }
            }
        } else {
            blocked_window_sums(&s.squares, self.window(), &mut s.prefix, &mut s.suffix, d);
        }
        let (bias, alpha) = (self.bias, self.alpha);
        for a in d.iter_mut() {
            *a = bias + alpha * *a;
            ok &= *a >= D_RANGE.0 && *a <= D_RANGE.1;
        }
        if !ok {
            return false;
        }
        let pairs = out.iter_mut().zip(row.iter().zip(d.iter()));
        match self.power {
            Power::Half => pairs.for_each(|(o, (&v, &a))| *o = v / a.sqrt()),
            Power::ThreeQuarters => pairs.for_each(|(o, (&v, &a))| {
                let s = a.sqrt();
                *o = v / (s * s.sqrt());
            }),
            Power::One => pairs.for_each(|(o, (&v, &a))| *o = v / a),
            Power::General(b) => pairs.for_each(|(o, (&v, &a))| *o = v / a.powf(b)),
        }
        true
    }

    /// The reference evaluator's arithmetic: a direct window sum and the power in f64.
    fn exact_row(&self, row: &[f32], out: &mut [f32]) {
        let [bias, alpha, beta] = [self.bias, self.alpha, self.beta].map(f64::from);
        let c = self.channels;
        for (ch, o) in out.iter_mut().enumerate() {
            let lo = ch.saturating_sub(self.radius);
            let hi = (ch + self.radius).min(c - 1);
            let sum: f64 = row[lo..=hi]
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum();
            *o = (f64::from(row[ch]) / (bias + alpha * sum).powf(beta)) as f32;
        }
    }
}

/// `sums[i] = squares[i] + ... + squares[i + w - 1]` for every `i < sums.len()`, in O(len)
/// without subtraction (van Herk / Gil-Werman): within blocks of `w`, a forward prefix sum and
/// a backward suffix sum; a window starting inside a block is that block's suffix from `i`
/// plus the next block's prefix up to `i + w - 1`. Summed in f64 (a wide window adds many
/// terms), rounded once.
fn blocked_window_sums(
    squares: &[f32],
    w: usize,
    prefix: &mut [f64],
    suffix: &mut [f64],
    sums: &mut [f32],
) {
    let n = squares.len();
    for start in (0..n).step_by(w) {
        let end = (start + w).min(n);
        let mut acc = 0.0;
        for j in start..end {
            acc += f64::from(squares[j]);
            prefix[j] = acc;
        }
        let mut acc = 0.0;
        for j in (start..end).rev() {
            acc += f64::from(squares[j]);
            suffix[j] = acc;
        }
    }
    for (i, s) in sums.iter_mut().enumerate() {
        let total = if i % w == 0 {
            suffix[i]
        } else {
            suffix[i] + prefix[i + w - 1]
        };
        *s = total as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Isa;

    /// Every vector width this CPU has gives the portable loops' bits (the host tests compare
    /// only the detected one with the reference).
    #[test]
    fn every_isa_gives_the_portable_bits() {
        let c = 37;
        let x: Vec<f32> = (0..c * 50)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.01)
            .collect();
        for (radius, beta) in [(2, 0.75), (1, 0.5), (3, 1.0), (20, 0.6)] {
            let kernel = Lrn::new(c, radius, [1.0, 0.3, beta]);
            let mut want = vec![0.0; x.len()];
            kernel.rows_body(&x, &mut want);
            for isa in Isa::supported() {
                let mut got = vec![0.0; x.len()];
                match isa {
                    Isa::Portable => kernel.rows_body(&x, &mut got),
                    // SAFETY: `supported` lists only families this CPU runs.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { kernel.rows_avx512(&x, &mut got) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2Fma => unsafe { kernel.rows_avx2(&x, &mut got) },
                    #[cfg(not(target_arch = "x86_64"))]
                    _ => continue,
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{isa:?}, radius {radius}, beta {beta}"
                );
            }
        }
    }
}
