//! The one comparison of a computed tensor with an expected one, used by every test in the
//! workspace (backends against the reference evaluator, importers against ONNX Runtime, the
//! golden cases against TensorFlow, passes before and after a rewrite).
//!
//! [`check_close`] checks, in this order: dims, dtype (exactly), then every element. Integer and
//! bool elements must be equal whatever the tolerance. An f32 element `got` passes against
//! `want` when
//! - `want` is NaN and `got` is NaN (any payload), or `want` is an infinity and `got` is the
//!   same infinity; a NaN or infinity against a finite `want` always fails;
//! - with [`Tolerance::EXACT`] (all three terms zero): `got` has the same bits as `want` (so
//!   `-0.0` differs from `0.0`: pure rewrites must be bit-exact);
//! - otherwise `|got - want| <= abs + rel * |want| + scale * max|want|`, the maximum taken over
//!   the finite elements of `want`. The `scale` term bounds errors of sums whose terms cancel:
//!   an element near zero can carry the rounding error of the tensor's large values.
//!
//! One formula for the workspace; tests that need another bound choose other numbers, not
//! another formula.

use crate::dtype::DType;
use crate::tensor::{Data, Tensor};
use std::fmt;

/// How far an f32 element may be from its expected value (see the module doc for the formula).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute slack.
    pub abs: f64,
    /// Slack per unit of the element's own `|want|`.
    pub rel: f64,
    /// Slack per unit of the largest finite `|want|` of the whole tensor.
    pub scale: f64,
}

impl Tolerance {
    /// Bit-identical values (NaN matching any NaN): rewrites that must not change results.
    pub const EXACT: Tolerance = Tolerance::new(0.0, 0.0, 0.0);

    /// One kernel or a short chain of ops against the f64-accumulating reference evaluator:
    /// f32 accumulation in another order and polynomial transcendentals (the differential and
    /// OpenCL tests, single ONNX ops).
    pub const KERNEL: Tolerance = Tolerance::new(1e-4, 1e-4, 1e-5);

    /// A whole network (20 to 50 layers of f32 sums in another order than the producer of the
    /// expected values): the ONNX `net_*` fixtures.
    pub const NETWORK: Tolerance = Tolerance::new(1e-3, 1e-3, 0.0);

    /// `abs + rel * |want| + scale * max|want|`.
    pub const fn new(abs: f64, rel: f64, scale: f64) -> Tolerance {
        Tolerance { abs, rel, scale }
    }

    /// `t + t * |want|`: the golden cases' `tolerance.txt` and other single-number bounds.
    pub const fn abs_rel(t: f64) -> Tolerance {
        Tolerance::new(t, t, 0.0)
    }

    /// Whether this is [`Tolerance::EXACT`].
    pub fn is_exact(&self) -> bool {
        self.abs == 0.0 && self.rel == 0.0 && self.scale == 0.0
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_exact() {
            return f.write_str("exact");
        }
        write!(
            f,
            "{:e} + {:e}*|want| + {:e}*max|want|",
            self.abs, self.rel, self.scale
        )
    }
}

/// Why a tensor is not close to the expected one.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// The element types differ.
    #[error("dtype {got}, expected {want}")]
    Dtype {
        /// The computed tensor's dtype.
        got: DType,
        /// The expected dtype.
        want: DType,
    },
    /// The dims differ (checked before the dtype).
    #[error("dims {got:?}, expected {want:?}")]
    Dims {
        /// The computed tensor's dims.
        got: Vec<usize>,
        /// The expected dims.
        want: Vec<usize>,
    },
    /// Some elements are out of tolerance.
    #[error(
        "{bad} of {total} elements differ (max abs error {max_abs_error:e}, tolerance \
         {tolerance}); first at {index:?}: got {got}, expected {want}"
    )]
    Values {
        /// The multi-index of the first bad element.
        index: Vec<usize>,
        /// The first bad element as computed.
        got: String,
        /// The first bad element as expected.
        want: String,
        /// How many elements are bad.
        bad: usize,
        /// How many elements there are.
        total: usize,
        /// The largest `|got - want|` over all elements (infinite for a misplaced NaN or
        /// infinity).
        max_abs_error: f64,
        /// The tolerance applied (exact for integer and bool tensors).
        tolerance: Tolerance,
    },
}

/// Compares `got` with `want`: dims, dtype, NaN/infinity placement, then values within `tol`
/// (integer and bool tensors exactly). See the module doc.
pub fn check_close(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), Mismatch> {
    if got.dims() != want.dims() {
        return Err(Mismatch::Dims {
            got: got.dims().to_vec(),
            want: want.dims().to_vec(),
        });
    }
    if got.dtype() != want.dtype() {
        return Err(Mismatch::Dtype {
            got: got.dtype(),
            want: want.dtype(),
        });
    }
    let (bad, first, max_abs_error, tolerance) = match (got.data(), want.data()) {
        (Data::F32(g), Data::F32(w)) => {
            let (bad, first, max) = compare_floats(g, w, tol);
            (bad, first, max, tol)
        }
        (Data::I32(g), Data::I32(w)) => exact(g, w, |a, b| (a - b).abs() as f64),
        (Data::I64(g), Data::I64(w)) => exact(g, w, |a, b| (*a as f64 - *b as f64).abs()),
        (Data::Bool(g), Data::Bool(w)) => exact(g, w, |_, _| 1.0),
        // The dtypes are equal, so the data variants are too.
        _ => unreachable!("equal dtypes with different data variants"),
    };
    let Some(first) = first else {
        return Ok(());
    };
    Err(Mismatch::Values {
        index: unravel(first, want.dims()),
        got: element(got, first),
        want: element(want, first),
        bad,
        total: want.numel(),
        max_abs_error,
        tolerance,
    })
}

/// [`check_close`], panicking with `what` and the mismatch.
#[track_caller]
pub fn assert_close(got: &Tensor, want: &Tensor, tol: Tolerance, what: &str) {
    if let Err(m) = check_close(got, want, tol) {
        panic!("{what}: {m}");
    }
}

/// Bad count, first bad flat index and max abs error of two f32 slices of equal length.
fn compare_floats(got: &[f32], want: &[f32], tol: Tolerance) -> (usize, Option<usize>, f64) {
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, &w| m.max(f64::from(w).abs()));
    let bound = |w: f64| tol.abs + tol.rel * w.abs() + tol.scale * scale;
    let (mut bad, mut first, mut max) = (0, None, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g64, w64) = (f64::from(g), f64::from(w));
        let (ok, err) = if w.is_nan() || g.is_nan() {
            (w.is_nan() && g.is_nan(), f64::INFINITY)
        } else if w.is_infinite() || g.is_infinite() {
            (g == w, f64::INFINITY)
        } else if tol.is_exact() {
            (g.to_bits() == w.to_bits(), (g64 - w64).abs())
        } else {
            let err = (g64 - w64).abs();
            (err <= bound(w64), err)
        };
        if !ok {
            bad += 1;
            first.get_or_insert(i);
            max = max.max(err);
        } else if err.is_finite() {
            max = max.max(err);
        }
    }
    (bad, first, max)
}

/// Bad count, first bad flat index, max error and [`Tolerance::EXACT`] for elements that must
/// be equal.
fn exact<T: PartialEq>(
    got: &[T],
    want: &[T],
    err: impl Fn(&T, &T) -> f64,
) -> (usize, Option<usize>, f64, Tolerance) {
    let (mut bad, mut first, mut max) = (0, None, 0.0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            bad += 1;
            first.get_or_insert(i);
            max = max.max(err(g, w));
        }
    }
    (bad, first, max, Tolerance::EXACT)
}

/// Element `i` of `t`, as its own type prints it (no f64 rounding of large i64 values).
fn element(t: &Tensor, i: usize) -> String {
    match t.data() {
        Data::F32(v) => v[i].to_string(),
        Data::I32(v) => v[i].to_string(),
        Data::I64(v) => v[i].to_string(),
        Data::Bool(v) => v[i].to_string(),
    }
}

/// Row-major flat index -> multi-index.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (i, &d) in dims.iter().enumerate().rev() {
        idx[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    idx
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
