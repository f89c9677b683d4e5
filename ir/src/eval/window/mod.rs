//! Window geometry shared by convolutions and pools: output size and padding of each spatial
//! axis (TensorFlow's rules), and index arithmetic for NHWC / NCHW images.
//!
//! Invariant: once an [`Axis`] is built, every padded coordinate `o * stride + k * dilation`
//! for `o < out` and `k < kernel` fits in `usize` (it is below `input + total padding`, which
//! was computed with checked arithmetic), so the loops need no further overflow checks.
//!
//! The output-size and padding formulas themselves live in [`crate::infer::window_dim`], shared
//! with shape inference so the two can never disagree.

pub(super) mod backprop;
pub(super) mod conv;
pub(super) mod pool;
pub(super) mod pool_grad;

pub(super) use crate::image::Image;
use crate::infer::window_dim;
use crate::op::Padding;

/// One spatial axis of a window op: how output coordinates map to input coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Axis {
    /// Input extent.
    pub input: usize,
    /// Output extent.
    pub out: usize,
    /// Padding cells before the first input cell (top / left).
    pub before: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation (1 for pools).
    pub dilation: usize,
}

impl Axis {
    /// Geometry of one axis, with `pad` being `None` for SAME, `Some((0, 0))` for VALID and
    /// `Some((before, after))` for explicit padding. With the effective kernel
    /// `eff = (k - 1) * dilation + 1`:
    /// - SAME (TensorFlow): `out = ceil(in / s)`, total padding
    ///   `max((out - 1) * s + eff - in, 0)`, `before = total / 2` (so an odd total puts the
    ///   extra cell at the bottom/right).
    /// - VALID / explicit: `out = (in + before + after - eff) / s + 1`, and the padded input
    ///   must hold at least one window.
    pub fn new(
        input: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        pad: Option<(usize, usize)>,
        what: &str,
    ) -> Result<Axis, String> {
        let padding = match pad {
            None => Padding::Same,
            Some((before, after)) => Padding::Explicit([[before, after], [before, after]]),
        };
        let dim = window_dim(input, k, stride, dilation, padding, 0)
            .map_err(|m| format!("{what}: {m}"))?;
        Ok(Axis {
            input,
            out: dim.out,
            before: dim.pad_before,
            stride,
            dilation,
        })
    }

    /// The input coordinate read by output `o` at kernel tap `k`, or `None` in the padding.
    pub fn src(&self, o: usize, k: usize) -> Option<usize> {
        // Fits in usize: see the module invariant.
        let p = o * self.stride + k * self.dilation;
        p.checked_sub(self.before).filter(|&i| i < self.input)
    }

    /// The taps `t < k` of output `o` that land inside the input (not in the padding).
    ///
    /// Tap `t` reads padded coordinate `p0 + t*d` with `p0 = o*stride`; it is inside when
    /// `before <= p0 + t*d < before + input`, i.e. `ceil((before - p0) / d) <= t <
    /// ceil((before + input - p0) / d)`. Pools use this so that the work per window is the
    /// number of real cells even when the window attribute is absurdly large.
    pub fn taps(&self, o: usize, k: usize) -> std::ops::Range<usize> {
        let p0 = o * self.stride;
        let lo = self.before.saturating_sub(p0).div_ceil(self.dilation);
        let end = (self.before + self.input)
            .saturating_sub(p0)
            .div_ceil(self.dilation);
        lo.min(k)..end.min(k)
    }
}

/// Geometry of both spatial axes (height, width) for a kernel of `k = [kh, kw]`.
pub(super) fn spatial(
    image: &Image,
    k: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    padding: Padding,
) -> Result<(Axis, Axis), String> {
    let (ph, pw) = match padding {
        Padding::Same => (None, None),
        Padding::Valid => (Some((0, 0)), Some((0, 0))),
        Padding::Explicit([[t, b], [l, r]]) => (Some((t, b)), Some((l, r))),
    };
    let h = Axis::new(image.h, k[0], strides[0], dilations[0], ph, "height")?;
    let w = Axis::new(image.w, k[1], strides[1], dilations[1], pw, "width")?;
    Ok((h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_is_asymmetric_with_extra_cell_after() {
        // in 3, k 2, s 2: out 2, total (2-1)*2 + 2 - 3 = 1 -> before 0, after 1.
        let a = Axis::new(3, 2, 2, 1, None, "h").unwrap();
        assert_eq!((a.out, a.before), (2, 0));
        // in 5, k 4, s 1: out 5, total 4 + 4 - 5 = 3 -> before 1, after 2.
        let a = Axis::new(5, 4, 1, 1, None, "h").unwrap();
        assert_eq!((a.out, a.before), (5, 1));
        // in 4, k 3, s 2: out 2, total 2 + 3 - 4 = 1 -> before 0.
        let a = Axis::new(4, 3, 2, 1, None, "h").unwrap();
        assert_eq!((a.out, a.before), (2, 0));
        // in 7, k 3, dilation 2 (eff 5), s 1: out 7, total 6 + 5 - 7 = 4 -> before 2.
        let a = Axis::new(7, 3, 1, 2, None, "h").unwrap();
        assert_eq!((a.out, a.before), (7, 2));
        // Stride larger than needed: no negative padding.
        let a = Axis::new(6, 1, 3, 1, None, "h").unwrap();
        assert_eq!((a.out, a.before), (2, 0));
        let a = Axis::new(0, 3, 1, 1, None, "h").unwrap();
        assert_eq!(a.out, 0);
    }

    #[test]
    fn valid_and_explicit_sizes() {
        let a = Axis::new(5, 2, 2, 1, Some((0, 0)), "h").unwrap();
        assert_eq!((a.out, a.before), (2, 0));
        let a = Axis::new(5, 2, 1, 2, Some((0, 0)), "h").unwrap(); // eff 3
        assert_eq!(a.out, 3);
        let a = Axis::new(3, 2, 1, 1, Some((1, 2)), "h").unwrap();
        assert_eq!((a.out, a.before), (5, 1));
        assert!(Axis::new(2, 3, 1, 1, Some((0, 0)), "h").is_err());
        assert!(Axis::new(5, 0, 1, 1, None, "h").is_err());
        assert!(Axis::new(5, 1, 0, 1, None, "h").is_err());
        assert!(Axis::new(5, 2, 1, 0, None, "h").is_err());
        assert!(Axis::new(5, 3, 1, usize::MAX, None, "h").is_err());
        assert!(Axis::new(5, 1, 1, 1, Some((usize::MAX, 1)), "h").is_err());
    }

    #[test]
    fn src_maps_into_the_input_or_padding() {
        let a = Axis::new(5, 4, 1, 1, None, "h").unwrap(); // before 1
        assert_eq!(a.src(0, 0), None);
        assert_eq!(a.src(0, 1), Some(0));
        assert_eq!(a.src(4, 1), Some(4));
        assert_eq!(a.src(4, 2), None);
    }

    #[test]
    fn taps_agree_with_src() {
        let cases = [
            (5, 4, 1, 1, None),
            (7, 3, 2, 2, None),
            (3, 2, 1, 1, Some((1, 2))),
            (9, 3, 3, 3, Some((4, 1))),
        ];
        for (input, k, s, d, pad) in cases {
            let a = Axis::new(input, k, s, d, pad, "h").unwrap();
            for o in 0..a.out {
                let want: Vec<usize> = (0..k).filter(|&t| a.src(o, t).is_some()).collect();
                let got: Vec<usize> = a.taps(o, k).collect();
                assert_eq!(got, want, "{a:?} o={o}");
            }
        }
        // A huge window on a small input: only the real cells are visited.
        let a = Axis::new(3, usize::MAX / 4, 1, 1, None, "h").unwrap();
        assert_eq!(a.out, 3);
        assert_eq!(a.taps(0, usize::MAX / 4).len(), 3);
    }
}

#[cfg(test)]
mod grad_tests;
