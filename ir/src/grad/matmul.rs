//! The gradient of matmul: two matmuls with the transposes chosen so that no explicit
//! transpose is built (TensorFlow's `_MatMulGrad`). With `y = op_a(a) · op_b(b)`:
//!
//! | transpose_a, transpose_b | da | db |
//! |---|---|---|
//! | false, false | g · bᵀ | aᵀ · g |
//! | false, true | g · b | gᵀ · a |
//! | true, false | b · gᵀ | a · g |
//! | true, true | bᵀ · gᵀ | gᵀ · aᵀ |
//!
//! Batched (rank-3) matmuls transpose their last two axes, so the same table holds.

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::Op;

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let Op::MatMul {
        transpose_a,
        transpose_b,
    } = *op
    else {
        return Err(no_gradient(format!("{} is not a matmul", op.name())));
    };
    let operands = cx.graph.inputs(n);
    let (a, b) = (operands[0], operands[1]);
    let mut matmul = |x: NodeId, y: NodeId, tx: bool, ty: bool| {
        let op = Op::MatMul {
            transpose_a: tx,
            transpose_b: ty,
        };
        cx.add("matmul", op, &[x, y])
    };
    let (da, db) = match (transpose_a, transpose_b) {
        (false, false) => ((g, b, false, true), (a, g, true, false)),
        (false, true) => ((g, b, false, false), (g, a, true, false)),
        (true, false) => ((b, g, false, true), (a, g, false, false)),
        (true, true) => ((b, g, true, true), (g, a, true, true)),
    };
    let ga = if needs[0] {
        Some(matmul(da.0, da.1, da.2, da.3)?)
    } else {
        None
    };
    let gb = if needs[1] {
        Some(matmul(db.0, db.1, db.2, db.3)?)
    } else {
        None
    };
    Ok(vec![ga, gb])
}
