//! A rank-4 image's extents read in its layout (NHWC or NCHW): the one place that knows which
//! axis is which, shared by the reference evaluator and the backends that index images.

use crate::op::DataFormat;
use crate::shape::fmt_dims;

/// A rank-4 image's extents and layout, for index arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Layout.
    pub format: DataFormat,
}

impl Image {
    /// Reads a rank-4 operand's extents in `format`.
    pub fn of(dims: &[usize], format: DataFormat, role: &str) -> Result<Image, String> {
        let &[a, b, c, d] = dims else {
            return Err(format!(
                "{role} must be rank 4 ({}), got {}",
                format.name(),
                fmt_dims(dims)
            ));
        };
        Ok(match format {
            DataFormat::Nhwc => Image {
                n: a,
                h: b,
                w: c,
                c: d,
                format,
            },
            DataFormat::Nchw => Image {
                n: a,
                c: b,
                h: c,
                w: d,
                format,
            },
        })
    }

    /// The dims in layout order.
    pub fn dims(&self) -> [usize; 4] {
        match self.format {
            DataFormat::Nhwc => [self.n, self.h, self.w, self.c],
            DataFormat::Nchw => [self.n, self.c, self.h, self.w],
        }
    }

    /// Flat index of element (n, y, x, c).
    pub fn at(&self, n: usize, y: usize, x: usize, c: usize) -> usize {
        match self.format {
            DataFormat::Nhwc => ((n * self.h + y) * self.w + x) * self.c + c,
            DataFormat::Nchw => ((n * self.c + c) * self.h + y) * self.w + x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_indexing() {
        let i = Image::of(&[2, 3, 4, 5], DataFormat::Nhwc, "x").unwrap();
        assert_eq!((i.n, i.h, i.w, i.c), (2, 3, 4, 5));
        assert_eq!(i.at(1, 2, 3, 4), 2 * 3 * 4 * 5 - 1);
        assert_eq!(i.at(0, 0, 1, 0), 5);
        let i = Image::of(&[2, 5, 3, 4], DataFormat::Nchw, "x").unwrap();
        assert_eq!((i.n, i.h, i.w, i.c), (2, 3, 4, 5));
        assert_eq!(i.dims(), [2, 5, 3, 4]);
        assert_eq!(i.at(0, 0, 1, 0), 1);
        assert_eq!(i.at(0, 0, 0, 1), 12);
        assert!(Image::of(&[1, 2, 3], DataFormat::Nhwc, "x").is_err());
    }
}
