//! Inference for fused nodes: the main op's type, then the expression's types node by node
//! with the same rules as the unfused unary and binary ops.
//!
//! A fused node with a main op must produce exactly the main result's type: its kernel writes
//! one value per main-result element, so an expression that would broadcast the main result to
//! a larger shape is rejected (the fusion passes never build one).

use super::elementwise;
use crate::fused::{ExprNode, FusedOp};
use crate::shape::TensorType;

/// The type of a fused node with operand types `inputs`.
pub(super) fn fused(f: &FusedOp, inputs: &[&TensorType]) -> Result<TensorType, String> {
    f.expr().validate(inputs.len(), f.main().is_some())?;
    let main = match f.main() {
        Some(op) => {
            let k = f.main_arity();
            let operands = inputs
                .get(..k)
                .ok_or_else(|| format!("{} needs {k} operands for its main op", f.name()))?;
            Some(super::infer(op, operands).map_err(|e| format!("main op {}: {e}", op.name()))?)
        }
        None => None,
    };
    let mut types: Vec<TensorType> = Vec::with_capacity(f.expr().nodes().len());
    for node in f.expr().nodes() {
        let ty = match *node {
            // `validate` checked that `main` appears only with a main op and operands exist.
            ExprNode::Main => main.clone().ok_or("`main` without a main op")?,
            ExprNode::Operand(i) => {
                let t = inputs[i];
                super::require_f32(&format!("operand ${i}"), t)?;
                t.clone()
            }
            ExprNode::Unary(_, x) => elementwise::unary(&types[x])?,
            ExprNode::Binary(_, a, b) => elementwise::binary(&types[a], &types[b])?,
        };
        types.push(ty);
    }
    // `FusedExpr` is never empty.
    let result = types.pop().ok_or("empty expression")?;
    if let Some(m) = main
        && m != result
    {
        return Err(format!(
            "the expression's result {result} differs from the main result {m}: a fused \
             epilogue may not broadcast the main result"
        ));
    }
    Ok(result)
}
