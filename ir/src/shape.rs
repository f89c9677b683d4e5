//! Symbolic shapes (dims may be unknown until run time, written `?`) and the
//! typed description of a value: dtype plus shape.

use crate::DType;
use smallvec::SmallVec;
use std::fmt;

/// One dimension of a symbolic shape: `Some(n)` when known, `None` for `?`.
pub type Dim = Option<usize>;

/// Concrete dimensions of a tensor (every dim known).
pub type Dims = SmallVec<[usize; 4]>;

/// A shape whose dims may be unknown until run time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub SmallVec<[Dim; 4]>);

impl Shape {
    /// A shape from symbolic dims: `Shape::of(&[None, Some(100), Some(100), Some(1)])`.
    pub fn of(dims: &[Dim]) -> Shape {
        Shape(dims.iter().copied().collect())
    }

    /// A fully known shape.
    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Some(d)).collect())
    }

    /// The scalar shape `[]`.
    pub fn scalar() -> Shape {
        Shape(SmallVec::new())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dims.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Dim `i` (panics when out of range, like slice indexing).
    pub fn dim(&self, i: usize) -> Dim {
        self.0[i]
    }

    /// Whether every dim is known.
    pub fn is_concrete(&self) -> bool {
        self.0.iter().all(Option::is_some)
    }

    /// The concrete dims, if every dim is known.
    pub fn to_dims(&self) -> Option<Dims> {
        self.0.iter().copied().collect()
    }

    /// The element count if every dim is known and the product does not overflow.
    pub fn numel(&self) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, d| d.and_then(|d| acc.checked_mul(d)))
    }

    /// Whether a concrete shape is an instance of this one (same rank, known dims equal).
    pub fn matches(&self, dims: &[usize]) -> bool {
        self.rank() == dims.len()
            && self
                .0
                .iter()
                .zip(dims)
                .all(|(s, &d)| s.is_none_or(|s| s == d))
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Shape {
        Shape::known(dims)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match d {
                Some(n) => write!(f, "{n}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

/// Formats concrete dims the way the .kiln format writes shapes: `[1,100,100,1]`.
pub fn fmt_dims(dims: &[usize]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(","))
}

/// The type of a value: element type and (symbolic) shape, written `f32[?,100,100,1]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape; dims may be unknown.
    pub shape: Shape,
}

impl TensorType {
    /// A type from dtype and shape.
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    /// An f32 type with the given shape.
    pub fn f32(shape: Shape) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    /// The rank of the shape.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
