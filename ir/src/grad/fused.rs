//! Gradients of fused nodes (made by the fusion passes, or written in a file as
//! `fused_<main>` / `elementwise`): the node is unfolded into the ops it stands for — its main
//! op on the main operands, then one unary or binary node per expression node — and the
//! gradient of that subgraph, seeded with `g`, gives the operands' gradients. A fused node
//! computes exactly what those ops compute (see `fused.rs`), so this is its gradient.

use super::{Ctx, GradientOptions, Grads, Unconnected, no_gradient};
use crate::fused::ExprNode;
use crate::graph::NodeId;
use crate::op::Op;

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let Op::Fused(f) = op else {
        return Err(no_gradient(format!("{} is not a fused node", op.name())));
    };
    let operands = cx.graph.inputs(n);
    let k = f.main_arity();
    let main = match f.main() {
        Some(m) => Some(cx.add(m.name(), m.clone(), &operands[..k])?),
        None => None,
    };
    let mut values: Vec<NodeId> = Vec::with_capacity(f.expr().nodes().len());
    for node in f.expr().nodes() {
        let v = match *node {
            // `FusedOp::new` checked that `main` appears exactly when there is a main op.
            ExprNode::Main => main.ok_or_else(|| no_gradient("`main` without a main op"))?,
            ExprNode::Operand(i) => operands[i],
            ExprNode::Unary(u, x) => cx.unary(u, values[x])?,
            ExprNode::Binary(b, x, y) => cx.binary(b, values[x], values[y])?,
        };
        values.push(v);
    }
    let result = values[f.expr().result()];
    // Each distinct operand once: the walk adds one contribution per operand position.
    let mut wanted: Vec<NodeId> = Vec::new();
    for (&o, &need) in operands.iter().zip(needs) {
        if need && !wanted.contains(&o) {
            wanted.push(o);
        }
    }
    let options = GradientOptions {
        unconnected: Unconnected::Zero,
    };
    let grads = cx
        .graph
        .gradients_with(&[result], &wanted, Some(&[g]), options)?;
    let mut given: Vec<NodeId> = Vec::new();
    Ok(operands
        .iter()
        .zip(needs)
        .map(|(o, &need)| {
            let i = wanted.iter().position(|w| w == o)?;
            if !need || given.contains(o) {
                return None;
            }
            given.push(*o);
            Some(grads[i])
        })
        .collect())
}
