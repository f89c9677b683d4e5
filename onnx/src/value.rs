//! What an ONNX value name stands for during import, and the symbolic integer vectors that
//! shape computations fold to.
//!
//! ONNX models compute shapes at run time (`Shape -> Gather -> Unsqueeze -> Concat ->
//! Reshape`); kiln wants them as attributes. The importer evaluates such subgraphs on what it
//! knows: a [`Sym`] is a rank-0 or rank-1 integer value whose entries are known numbers or
//! unknown (`None`, from a `?` dim). Invariant: `Sym::vals.len()` is 1 for rank 0 and
//! `dims[0]` for rank 1.

use kiln_ir::eval::eval_op;
use kiln_ir::{DType, Data, NodeId, Op, Tensor};
use std::sync::Arc;

/// An ONNX value as the importer holds it.
#[derive(Clone, Debug)]
pub enum Value {
    /// Computed at run time by this kiln node.
    Node(NodeId),
    /// Known at import time (an initializer, a `Constant`, or a folded computation).
    Const(Arc<Tensor>),
    /// An integer scalar or vector, some entries unknown until run time.
    Sym(Sym),
}

/// A rank-0 or rank-1 integer value whose entries may be unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sym {
    /// Whether this is a scalar (rank 0) rather than a vector.
    pub scalar: bool,
    /// The entries; `None` is known only at run time.
    pub vals: Vec<Option<i64>>,
}

impl Sym {
    /// A vector.
    pub fn vector(vals: Vec<Option<i64>>) -> Sym {
        Sym {
            scalar: false,
            vals,
        }
    }

    /// The value as an i64 constant when every entry is known, else as a `Sym`.
    pub fn into_value(self) -> Value {
        match self.vals.iter().copied().collect::<Option<Vec<i64>>>() {
            Some(v) => {
                let dims: &[usize] = if self.scalar { &[] } else { &[v.len()] };
                // The element count matches `dims` by the struct's invariant.
                match Tensor::new(dims, Data::I64(v)) {
                    Ok(t) => Value::Const(Arc::new(t)),
                    Err(_) => Value::Sym(self),
                }
            }
            None => Value::Sym(self),
        }
    }
}

/// A constant integer tensor of rank 0 or 1 as a [`Sym`] (every entry known).
pub fn sym_of_tensor(t: &Tensor) -> Option<Sym> {
    if t.rank() > 1 {
        return None;
    }
    let vals: Vec<Option<i64>> = match t.data() {
        Data::I32(v) => v.iter().map(|&x| Some(x as i64)).collect(),
        Data::I64(v) => v.iter().map(|&x| Some(x)).collect(),
        _ => return None,
    };
    Some(Sym {
        scalar: t.rank() == 0,
        vals,
    })
}

impl Value {
    /// This value as a [`Sym`], if it is one or an integer constant of rank 0 or 1.
    pub fn as_sym(&self) -> Option<Sym> {
        match self {
            Value::Sym(s) => Some(s.clone()),
            Value::Const(t) => sym_of_tensor(t),
            Value::Node(_) => None,
        }
    }
}

/// The elements of an integer (or bool) tensor as i64, or `None` for f32.
pub fn tensor_ints(t: &Tensor) -> Option<Vec<i64>> {
    match t.data() {
        Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
        Data::I64(v) => Some(v.clone()),
        Data::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
        Data::F32(_) => None,
    }
}

/// The elements as f32 (integers converted), for scalars such as Clip bounds.
pub fn tensor_f32s(t: &Tensor) -> Vec<f32> {
    t.to_f64_vec().into_iter().map(|x| x as f32).collect()
}

/// Transposes a constant: the reference evaluator's `transpose`, so import-time folding
/// computes exactly what the op computes at run time.
pub fn permute(t: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    eval_op(
        &Op::Transpose {
            perm: perm.to_vec(),
        },
        &[t],
    )
}

/// Converts a constant to another dtype: the reference evaluator's `cast` (float to integer
/// truncates toward zero and saturates, NaN becomes 0, to bool is `x != 0`), so a folded
/// `Cast` equals the run-time one (no detour through f64, which rounds i64 to f32 twice).
pub fn cast_tensor(t: &Tensor, to: DType) -> Result<Tensor, String> {
    eval_op(&Op::Cast { to }, &[t])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_naive_indexing() {
        let dims = [2usize, 3, 4, 5];
        let t = Tensor::from_vec(&dims, (0..120).map(|v| v as f32).collect()).expect("t");
        let p = permute(&t, &[2, 3, 1, 0]).expect("permute");
        assert_eq!(p.dims(), [4, 5, 3, 2]);
        let v = p.as_f32().expect("f32");
        for (o, i, h, w) in all_indices(dims) {
            // Output [h, w, i, o] holds input [o, i, h, w].
            let want = (((o * 3 + i) * 4 + h) * 5 + w) as f32;
            assert_eq!(v[((h * 5 + w) * 3 + i) * 2 + o], want);
        }
    }

    fn all_indices(d: [usize; 4]) -> Vec<(usize, usize, usize, usize)> {
        let mut out = Vec::new();
        for a in 0..d[0] {
            for b in 0..d[1] {
                for c in 0..d[2] {
                    for e in 0..d[3] {
                        out.push((a, b, c, e));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn casts_truncate_toward_zero() {
        let t = Tensor::from_vec(&[4], vec![2.7, -2.7, 0.0, f32::NAN]).expect("t");
        let i = cast_tensor(&t, DType::I32).expect("cast");
        assert_eq!(
            i,
            Tensor::new(&[4], Data::I32(vec![2, -2, 0, 0])).expect("t")
        );
        let b = cast_tensor(&t, DType::Bool).expect("cast");
        assert_eq!(b.to_f64_vec(), vec![1.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn casts_round_once_as_the_evaluator_does() {
        // 2^60 + 2^36 + 1 is just above halfway between two f32s and rounds up; through f64
        // it first loses the +1, lands exactly halfway and rounds to even (down).
        let x: i64 = (1 << 60) + (1 << 36) + 1;
        let t = Tensor::new(&[1], Data::I64(vec![x])).expect("t");
        let f = cast_tensor(&t, DType::F32).expect("cast");
        assert_eq!(f.as_f32().expect("f32"), [x as f32]);
        assert_ne!(
            x as f32,
            (x as f64) as f32,
            "the example must tell the paths apart"
        );
        // Saturation, as the evaluator casts.
        let big = Tensor::from_vec(&[2], vec![3e9, -3e9]).expect("t");
        let i = cast_tensor(&big, DType::I32).expect("cast");
        assert_eq!(
            i,
            Tensor::new(&[2], Data::I32(vec![i32::MAX, i32::MIN])).expect("t")
        );
    }

    #[test]
    fn syms_become_constants_when_known() {
        assert!(matches!(
            Sym::vector(vec![Some(2), None]).into_value(),
            Value::Sym(_)
        ));
        let Value::Const(t) = Sym::vector(vec![Some(2), Some(-1)]).into_value() else {
            panic!("expected a constant");
        };
        assert_eq!(*t, Tensor::new(&[2], Data::I64(vec![2, -1])).expect("t"));
        let s = Sym {
            scalar: true,
            vals: vec![Some(5)],
        };
        let Value::Const(t) = s.into_value() else {
            panic!("constant")
        };
        assert_eq!(t.dims(), [0usize; 0]);
    }
}
