//! The host tensor: a row-major, contiguous buffer with concrete dims.
//!
//! Equality and hashing compare element bits, so that constants can be deduplicated by CSE
//! and used in compile-cache keys (NaN equals NaN of the same bits; -0.0 differs from 0.0).

use crate::shape::{Dims, Shape, TensorType, fmt_dims};
use crate::{DType, Error, Result};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::hash::{Hash, Hasher};

/// Element storage of a [`Tensor`], one variant per [`DType`].
#[derive(Clone, Debug)]
pub enum Data {
    /// f32 elements.
    F32(Vec<f32>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// bool elements.
    Bool(Vec<bool>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }
}

/// A host tensor: dims plus row-major element data.
#[derive(Clone, Debug)]
pub struct Tensor {
    dims: Dims,
    data: Data,
}

/// Element count of concrete dims, or an error when the product overflows `usize`.
pub fn checked_numel(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Invalid(format!("shape {} has too many elements", fmt_dims(dims))))
}

impl Tensor {
    /// A tensor from dims and data; errors when the element count does not match.
    pub fn new(dims: &[usize], data: Data) -> Result<Tensor> {
        let n = checked_numel(dims)?;
        if n != data.len() {
            return Err(Error::Invalid(format!(
                "shape {} needs {n} elements, got {}",
                fmt_dims(dims),
                data.len()
            )));
        }
        Ok(Tensor {
            dims: dims.into(),
            data,
        })
    }

    /// An f32 tensor from dims and row-major values.
    pub fn from_vec(dims: &[usize], values: Vec<f32>) -> Result<Tensor> {
        Tensor::new(dims, Data::F32(values))
    }

    /// An f32 scalar (shape `[]`).
    pub fn scalar(value: f32) -> Tensor {
        Tensor {
            dims: Dims::new(),
            data: Data::F32(vec![value]),
        }
    }

    /// An f32 tensor with every element `value`.
    pub fn fill(dims: &[usize], value: f32) -> Tensor {
        let n = dims.iter().product();
        Tensor {
            dims: dims.into(),
            data: Data::F32(vec![value; n]),
        }
    }

    /// An f32 tensor of zeros.
    pub fn zeros(dims: &[usize]) -> Tensor {
        Tensor::fill(dims, 0.0)
    }

    /// An f32 tensor of ones.
    pub fn ones(dims: &[usize]) -> Tensor {
        Tensor::fill(dims, 1.0)
    }

    /// A tensor of zeros (false for bool) of any dtype.
    pub fn zeros_of(dtype: DType, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        let data = match dtype {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::Bool => Data::Bool(vec![false; n]),
        };
        Tensor {
            dims: dims.into(),
            data,
        }
    }

    /// Normally distributed f32 values (Box-Muller over ChaCha8), reproducible from `seed`.
    /// Samples beyond f32's range (a huge `mean` or `std`) saturate at `±f32::MAX` rather
    /// than becoming infinite.
    pub fn normal(dims: &[usize], mean: f32, std: f32, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = dims.iter().product();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            // u1 in (0, 1] so that ln(u1) is finite.
            let u1 = 1.0 - unit_f64(&mut rng);
            let u2 = unit_f64(&mut rng);
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = std::f64::consts::TAU * u2;
            v.push(scaled_normal(mean, std, r * theta.cos()));
            if v.len() < n {
                v.push(scaled_normal(mean, std, r * theta.sin()));
            }
        }
        Tensor {
            dims: dims.into(),
            data: Data::F32(v),
        }
    }

    /// Uniformly distributed f32 values in `[lo, hi)`, reproducible from `seed`:
    /// `lo + u * (hi - lo)` with `u` in [0, 1) (53 random bits). In f32 as long as the range
    /// spans at least `EXACT_BELOW_STEPS` f32 steps (so existing graphs keep their values);
    /// otherwise in f64, rounded once, so that neither a range wider than f32 arithmetic allows
    /// (`[-3e38, 3e38)`) nor one only a few steps wide (`[16777216, 16777218)`) collapses onto
    /// `lo`. A sample that rounds up to `hi` becomes the f32 just below `hi`, unless that is `lo`
    /// itself (a range one step wide): then `hi` is kept, so the samples still spread.
    pub fn uniform(dims: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = dims.iter().product();
        let (lo64, hi64) = (lo as f64, hi as f64);
        let width = hi - lo;
        let widest = lo.abs().max(hi.abs());
        // An infinite width (hi - lo overflowed) or a NaN one takes f64 too.
        let exact = !width.is_finite() || width < EXACT_BELOW_STEPS * (widest.next_up() - widest);
        let below_hi = hi.next_down();
        let v = (0..n)
            .map(|_| {
                let u = unit_f64(&mut rng);
                let x = if exact {
                    finite_f32(lo64 + (hi64 - lo64) * u)
                } else {
                    lo + width * u as f32
                };
                if x >= hi && below_hi > lo {
                    below_hi
                } else {
                    x
                }
            })
            .collect();
        Tensor {
            dims: dims.into(),
            data: Data::F32(v),
        }
    }

    /// The concrete dims.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The shape as a (fully known) symbolic shape.
    pub fn shape(&self) -> Shape {
        Shape::known(&self.dims)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// dtype and shape together.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape())
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The element storage.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The f32 elements, if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The f32 elements, mutably, if this is an f32 tensor.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The first element's address, whatever the dtype (for backends that hand buffers to
    /// generated code; the tensor stays the owner).
    pub fn as_ptr(&self) -> *const u8 {
        match &self.data {
            Data::F32(v) => v.as_ptr().cast(),
            Data::I32(v) => v.as_ptr().cast(),
            Data::I64(v) => v.as_ptr().cast(),
            Data::Bool(v) => v.as_ptr().cast(),
        }
    }

    /// The first element's address, mutably, whatever the dtype (bool elements are one byte
    /// each, 0 or 1; generated code must store only those values).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match &mut self.data {
            Data::F32(v) => v.as_mut_ptr().cast(),
            Data::I32(v) => v.as_mut_ptr().cast(),
            Data::I64(v) => v.as_mut_ptr().cast(),
            Data::Bool(v) => v.as_mut_ptr().cast(),
        }
    }

    /// The f32 elements, or an error naming the actual dtype.
    pub fn f32s(&self) -> Result<&[f32]> {
        self.as_f32()
            .ok_or_else(|| Error::Invalid(format!("expected an f32 tensor, got {}", self.ty())))
    }

    /// Consumes the tensor and returns its f32 elements, if it is f32.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The same data with other dims of the same element count.
    pub fn reshaped(mut self, dims: &[usize]) -> Result<Tensor> {
        let n = checked_numel(dims)?;
        if n != self.numel() {
            return Err(Error::Invalid(format!(
                "cannot reshape {} elements to {}",
                self.numel(),
                fmt_dims(dims)
            )));
        }
        self.dims = dims.into();
        Ok(self)
    }

    /// Elements converted to f64 (for summaries and comparisons).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }
}

/// Ranges narrower than this many f32 steps are sampled in f64: there, f32 rounding of
/// `lo + width * u` (up to about one step) is a visible share of the range.
const EXACT_BELOW_STEPS: f32 = 256.0;

/// `mean + std * z` in f32, or in f64 saturated to f32's range when f32 overflows (a huge
/// `mean` or `std`); the f32 path keeps the values existing graphs were made with.
fn scaled_normal(mean: f32, std: f32, z: f64) -> f32 {
    let x = mean + std * z as f32;
    if x.is_finite() {
        x
    } else {
        finite_f32(mean as f64 + std as f64 * z)
    }
}

/// `x` rounded to the nearest f32, saturating at `±f32::MAX` (a sampler never makes an
/// infinity from finite parameters).
fn finite_f32(x: f64) -> f32 {
    (x as f32).clamp(-f32::MAX, f32::MAX)
}

/// A float in [0, 1) with 53 random bits.
fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.dims == other.dims
            && match (&self.data, &other.data) {
                (Data::F32(a), Data::F32(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                }
                (Data::I32(a), Data::I32(b)) => a == b,
                (Data::I64(a), Data::I64(b)) => a == b,
                (Data::Bool(a), Data::Bool(b)) => a == b,
                _ => false,
            }
    }
}

impl Eq for Tensor {}

impl Hash for Tensor {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.dims.hash(state);
        self.dtype().hash(state);
        match &self.data {
            Data::F32(v) => f32_digest(v).hash(state),
            Data::I32(v) => v.hash(state),
            Data::I64(v) => v.hash(state),
            Data::Bool(v) => v.hash(state),
        }
    }
}

/// A 64-bit digest of every element's bits, for [`Tensor`]'s `Hash`: hashing element by element
/// through the std hasher cost CSE about 20 ns per weight (250 ms on ResNet-18); this folds
/// pairs of elements in eight independent multiply chains, near one element per cycle. Equal
/// bits give equal digests, which is all `Hash` needs; `Eq` still compares every element.
fn f32_digest(values: &[f32]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |lane: u64, word: u64| (lane ^ word).wrapping_mul(K).rotate_left(29);
    let pair = |p: &[f32]| p[0].to_bits() as u64 | (p[1].to_bits() as u64) << 32;
    let mut lanes = [0u64; 8];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, p) in lanes.iter_mut().zip(chunk.chunks_exact(2)) {
            *lane = mix(*lane, pair(p));
        }
    }
    let mut digest = chunks
        .remainder()
        .iter()
        .fold(0u64, |acc, x| mix(acc, x.to_bits() as u64));
    for lane in lanes {
        digest = mix(digest, lane);
    }
    digest
}

#[cfg(test)]
mod sampler_tests {
    use super::Tensor;
    use rand_chacha::rand_core::SeedableRng;

    fn stats(t: &Tensor) -> (f32, f32, usize) {
        let v = t.as_f32().expect("f32");
        let min = v.iter().copied().fold(f32::INFINITY, f32::min);
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        bits.sort_unstable();
        bits.dedup();
        (min, max, bits.len())
    }

    #[test]
    fn uniform_spans_ranges_wider_than_f32_arithmetic_allows() {
        // (hi - lo) overflows f32: every sample used to be -3e38.
        let (min, max, distinct) = stats(&Tensor::uniform(&[1000], -3e38, 3e38, 7));
        assert!(min < -2.9e38 && max > 2.9e38, "{min} {max}");
        assert!(max < 3e38 && distinct > 990, "{max} {distinct}");
    }

    #[test]
    fn uniform_spreads_over_a_range_one_f32_step_wide() {
        // lo + 2u rounded in f32 used to make every sample lo.
        let t = Tensor::uniform(&[1000], 16_777_216.0, 16_777_218.0, 7);
        let v = t.as_f32().expect("f32");
        let highs = v.iter().filter(|&&x| x == 16_777_218.0).count();
        assert!(v.iter().all(|&x| x == 16_777_216.0 || x == 16_777_218.0));
        assert!((400..600).contains(&highs), "{highs} of 1000 at hi");
    }

    #[test]
    fn uniform_stays_below_hi_in_ordinary_ranges() {
        let (min, max, distinct) = stats(&Tensor::uniform(&[10_000], -1.0, 1.0, 3));
        assert!(
            (-1.0..-0.99).contains(&min) && (0.99..1.0).contains(&max),
            "{min} {max}"
        );
        assert!(distinct > 9_900, "{distinct}");
        // A range whose real samples often round up to hi still excludes hi.
        let (lo, hi) = (1.0f32, 1.0f32.next_up().next_up());
        let (min, max, distinct) = stats(&Tensor::uniform(&[1000], lo, hi, 3));
        assert_eq!((min, max, distinct), (lo, lo.next_up(), 2));
    }

    #[test]
    fn ordinary_ranges_keep_the_values_existing_graphs_were_made_with() {
        // The f32 formula the samplers used before the f64 fallbacks (graph goldens hold
        // constants folded from these values).
        let mut rng = super::ChaCha8Rng::seed_from_u64(5);
        let old: Vec<f32> = (0..64)
            .map(|_| -1.0 + 2.0 * super::unit_f64(&mut rng) as f32)
            .collect();
        assert_eq!(
            Tensor::uniform(&[64], -1.0, 1.0, 5).as_f32(),
            Some(&old[..])
        );
        let mut rng = super::ChaCha8Rng::seed_from_u64(7);
        let mut old = Vec::new();
        while old.len() < 64 {
            let u1 = 1.0 - super::unit_f64(&mut rng);
            let u2 = super::unit_f64(&mut rng);
            let (r, theta) = ((-2.0 * u1.ln()).sqrt(), std::f64::consts::TAU * u2);
            old.push(0.1 * (r * theta.cos()) as f32);
            old.push(0.1 * (r * theta.sin()) as f32);
        }
        assert_eq!(Tensor::normal(&[64], 0.0, 0.1, 7).as_f32(), Some(&old[..]));
    }

    #[test]
    fn normal_saturates_instead_of_overflowing() {
        let (min, max, distinct) = stats(&Tensor::normal(&[1000], 0.0, 3e38, 5));
        assert!(
            min == -f32::MAX && max == f32::MAX && distinct > 100,
            "{min} {max}"
        );
        let (min, max, _) = stats(&Tensor::normal(&[1000], 3e38, 1e38, 5));
        assert!(
            min.is_finite() && max == f32::MAX && min < 2e38,
            "{min} {max}"
        );
        let t = Tensor::normal(&[10_000], 0.0, 1.0, 5);
        let mean = t.as_f32().expect("f32").iter().sum::<f32>() / 10_000.0;
        assert!(mean.abs() < 0.05, "{mean}");
    }
}

#[cfg(test)]
mod digest_tests {
    use super::{Tensor, f32_digest};

    #[test]
    fn every_element_changes_the_digest_and_equal_bits_keep_it() {
        // 37 elements: two full 16-element chunks (all eight lanes) and a 5-element remainder.
        let base = Tensor::uniform(&[37], -1.0, 1.0, 11);
        let v = base.as_f32().expect("f32");
        let d = f32_digest(v);
        let copy = Tensor::from_vec(&[37], v.to_vec()).expect("dims");
        let copy = copy.as_f32().expect("f32");
        assert_eq!(
            d,
            f32_digest(copy),
            "equal bits in another buffer, equal digest"
        );
        for i in 0..v.len() {
            let mut w = v.to_vec();
            w[i] = -w[i];
            assert_ne!(f32_digest(&w), d, "element {i} is not in the digest");
        }
        // Two elements swapped between lanes, and -0.0 against 0.0 (different bits).
        let mut swapped = v.to_vec();
        swapped.swap(0, 3);
        assert_ne!(f32_digest(&swapped), d);
        assert_ne!(f32_digest(&[0.0; 20]), f32_digest(&[-0.0; 20]));
    }
}
