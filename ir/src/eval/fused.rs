//! Evaluating a fused node op by op: the main op, then each expression node with the
//! reference unary and binary ops. Every intermediate is rounded to f32 exactly as the unfused
//! graph rounds it, so a fused node is bit-identical to the nodes it replaced.

use super::eval_op;
use crate::fused::{ExprNode, FusedOp};
use crate::op::Op;
use crate::tensor::Tensor;
use std::borrow::Cow;

/// The value of fused node `f` on `inputs`.
pub(super) fn fused(f: &FusedOp, inputs: &[&Tensor]) -> Result<Tensor, String> {
    f.expr().validate(inputs.len(), f.main().is_some())?;
    let main = match f.main() {
        Some(op) => {
            let k = f.main_arity();
            let operands = inputs
                .get(..k)
                .ok_or_else(|| format!("{} needs {k} operands for its main op", f.name()))?;
            Some(eval_op(op, operands).map_err(|e| format!("main op {}: {e}", op.name()))?)
        }
        None => None,
    };
    let mut values: Vec<Cow<'_, Tensor>> = Vec::with_capacity(f.expr().nodes().len());
    for node in f.expr().nodes() {
        let v = match *node {
            ExprNode::Main => Cow::Borrowed(main.as_ref().ok_or("`main` without a main op")?),
            ExprNode::Operand(i) => Cow::Borrowed(inputs[i]),
            ExprNode::Unary(u, x) => Cow::Owned(eval_op(&Op::Unary(u), &[&values[x]])?),
            ExprNode::Binary(b, x, y) => {
                Cow::Owned(eval_op(&Op::Binary(b), &[&values[x], &values[y]])?)
            }
        };
        values.push(v);
    }
    values
        .pop()
        .map(Cow::into_owned)
        .ok_or_else(|| "empty expression".to_string())
}
