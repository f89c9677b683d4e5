//! Shape and dtype inference for every op (placeholder: filled in by the inference work).

use crate::op::Op;
use crate::shape::TensorType;

/// The type of `op`'s value given its operands' types, or a message saying what is wrong.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, String> {
    match op {
        Op::Input(ty) => Ok(ty.clone()),
        Op::Var(s) | Op::Const(s) => Ok(s.ty.clone()),
        _ => inputs.first().map(|t| (*t).clone()).ok_or_else(|| "no operands".to_string()),
    }
}
