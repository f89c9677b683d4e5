//! The fused epilogue: what happens to an output tile between the last multiply-add and the store.
//!
//! For output element `(i, j)` with accumulated dot product `acc`, the stored value is
//! `activation((acc + bias[j]) + add[i * ld + j])`, each term present only when given, added in
//! that order. Kernels apply it to the accumulators while they are still in registers, so a
//! conv/matmul with bias, ResNet skip connection and ReLU makes one pass over the output.
//! NaN propagates through every activation (as TensorFlow's kernels do), so a NaN produced
//! upstream is never hidden by a ReLU.

/// Elementwise function applied last in the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu(f32),
    /// `min(max(x, min), max)`; Relu and Relu6 are special cases, kept separate for readability.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl Activation {
    /// The scalar definition every kernel matches (NaN in, NaN out).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => clamp(x, 0.0, f32::INFINITY),
            Activation::Relu6 => clamp(x, 0.0, 6.0),
            Activation::LeakyRelu(alpha) => {
                if x >= 0.0 || x.is_nan() {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Clamp { min, max } => clamp(x, min, max),
        }
    }

    /// [`Activation::apply`] to every value, choosing the activation once rather than per
    /// value (a per-value choice was a jump table per lane, a tenth of Winograd's output
    /// transform).
    pub(crate) fn apply_all(self, xs: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::LeakyRelu(_) => xs.iter_mut().for_each(|x| *x = self.apply(*x)),
            Activation::Relu | Activation::Relu6 | Activation::Clamp { .. } => {
                let (lo, hi) = self.bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
                xs.iter_mut().for_each(|x| *x = clamp(*x, lo, hi));
            }
        }
    }

    /// The activation as lower and upper bounds, when it is a clamp (for the SIMD kernels).
    pub(crate) fn bounds(self) -> Option<(f32, f32)> {
        match self {
            Activation::None | Activation::LeakyRelu(_) => None,
            Activation::Relu => Some((0.0, f32::INFINITY)),
            Activation::Relu6 => Some((0.0, 6.0)),
            Activation::Clamp { min, max } => Some((min, max)),
        }
    }
}

/// `min(max(x, lo), hi)` that keeps NaN, like `maxps(lo, x)` then `minps(hi, .)` do.
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let y = if x < lo { lo } else { x };
    if y > hi { hi } else { y }
}

/// A matrix added to the output before the activation (e.g. a ResNet skip connection).
#[derive(Clone, Copy, Debug)]
pub struct Residual<'a> {
    /// Row-major values; element `(i, j)` is `data[i * ld + j]`.
    pub data: &'a [f32],
    /// Leading dimension (distance between rows), at least the number of output columns.
    pub ld: usize,
}

/// Bias, residual and activation fused into the store of a GEMM or convolution.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per output column (per output channel of a convolution).
    pub bias: Option<&'a [f32]>,
    /// A matrix with the output's shape, added after the bias.
    pub add: Option<Residual<'a>>,
    /// Applied last.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// No bias, no residual, identity activation: a plain product.
    pub fn none() -> Epilogue<'a> {
        Epilogue::default()
    }

    /// Checks the slices against an `m` x `n` output; `what` names the caller in the error.
    pub(crate) fn validate(&self, what: &str, m: usize, n: usize) -> Result<(), String> {
        if let Some(bias) = self.bias
            && bias.len() < n
        {
            return Err(format!(
                "{what}: bias has {} values, expected at least {n} (one per output column)",
                bias.len()
            ));
        }
        if let Some(res) = self.add
            && m > 0
            && n > 0
        {
            if res.ld < n {
                return Err(format!(
                    "{what}: residual leading dimension {} is smaller than the {n} output columns",
                    res.ld
                ));
            }
            let need = super::extent(m, res.ld, n)
                .ok_or_else(|| format!("{what}: residual extent overflows usize"))?;
            if res.data.len() < need {
                return Err(format!(
                    "{what}: residual has {} values, expected at least {need} for {m}x{n} with ld {}",
                    res.data.len(),
                    res.ld
                ));
            }
        }
        Ok(())
    }

    /// The part of the epilogue that a tile starting at `(i0, j0)` sees.
    pub(crate) fn at(&self, i0: usize, j0: usize) -> TileEpilogue<'a> {
        TileEpilogue {
            bias: self.bias.map(|b| &b[j0..]),
            add: self
                .add
                .map(|r| (&r.data[(i0 * r.ld + j0).min(r.data.len())..], r.ld)),
            activation: self.activation,
        }
    }
}

/// The epilogue seen from one output tile: slices start at the tile's first element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileEpilogue<'a> {
    /// Bias values from the tile's first column on.
    pub bias: Option<&'a [f32]>,
    /// Residual values from the tile's first element on, with their leading dimension.
    pub add: Option<(&'a [f32], usize)>,
    /// Applied last.
    pub activation: Activation,
}

impl TileEpilogue<'_> {
    /// Scalar application to element `(r, j)` of the tile; used by the portable kernel.
    #[inline]
    pub(crate) fn apply(&self, r: usize, j: usize, acc: f32) -> f32 {
        let mut x = acc;
        if let Some(b) = self.bias {
            x += b[j];
        }
        if let Some((res, ld)) = self.add {
            x += res[r * ld + j];
        }
        self.activation.apply(x)
    }

    /// The same epilogue for the block `rows` rows further down.
    pub(crate) fn down(self, rows: usize) -> Self {
        TileEpilogue {
            add: self
                .add
                .map(|(res, ld)| (&res[(rows * ld).min(res.len())..], ld)),
            ..self
        }
    }

    /// Checks that the slices cover a `rows` x `cols` tile (the SIMD kernels rely on it).
    pub(crate) fn covers(&self, rows: usize, cols: usize) -> bool {
        let bias_ok = self.bias.is_none_or(|b| b.len() >= cols);
        let add_ok = self.add.is_none_or(|(res, ld)| {
            rows == 0 || cols == 0 || (ld >= cols && res.len() >= (rows - 1) * ld + cols)
        });
        bias_ok && add_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_activation_scalar_definitions() {
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert_eq!(Activation::Relu.apply(3.5), 3.5);
        assert_eq!(Activation::Relu6.apply(7.0), 6.0);
        assert_eq!(Activation::Relu6.apply(-1.0), 0.0);
        assert_eq!(Activation::LeakyRelu(0.2).apply(-5.0), -1.0);
        assert_eq!(Activation::LeakyRelu(0.2).apply(5.0), 5.0);
        assert_eq!(
            Activation::Clamp {
                min: -1.0,
                max: 1.0
            }
            .apply(-3.0),
            -1.0
        );
        for act in [
            Activation::Relu,
            Activation::Relu6,
            Activation::LeakyRelu(0.1),
        ] {
            assert!(act.apply(f32::NAN).is_nan(), "{act:?} must keep NaN");
        }
    }
}
