//! `simplify-algebra`: local algebraic identities that keep every result bit for bit.
//!
//! A rule fires only when the value it keeps has exactly the replaced node's type, so a
//! broadcast that changes the shape (`x + zeros[2,3]` for `x: f32[3]`) is never dropped.
//! Exactness under IEEE-754, including -0.0, NaN and inf, decides which identities are here:
//! - `x + (-0.0) = x` for every x, but `x + (+0.0)` turns -0.0 into +0.0, so only constants
//!   that are all -0.0 are dropped from an add; dually `x - (+0.0) = x` but `x - (-0.0)` is not.
//! - `x * 1 = x` and `x / 1 = x` exactly; `x * 0` is not 0 (NaN, inf and the sign of zero).
//! - `(x * c1) * c2 -> x * (c1 * c2)` is a reassociation, not exact in general (double
//!   rounding, intermediate overflow, underflow to subnormals). It is exact when c1 and c2 are
//!   powers of two of magnitude >= 1 with a finite product: each step only changes the
//!   exponent, overflow happens in both forms alike (to the same signed inf), and no
//!   subnormal rounding can occur when scaling up. Only that case is rewritten.
//! - NaN operands come out of +, *, / and neg with their payload (neg flips only the sign
//!   bit, twice), so the rules also hold bit for bit on quiet NaNs.
//!
//! - `stop_gradient(x) = x` at run time (it cuts gradients only, and gradients are built
//!   before any pass runs).
//!
//! Only `const` operands count as constants here (not frozen variables: the rules are about
//! exact values, and folding variables is `fold-constants`' business). Nodes orphaned by a
//! rewrite are removed.

use super::rewrite::{remove_if_dead, replace_with_existing, replace_with_new};
use super::{Pass, PassContext};
use crate::Result;
use crate::eval::source_value;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, Initializer, Op, Source, UnaryOp};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Applies exact algebraic identities.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimplifyAlgebra;

/// What a matched rule replaces the node with.
enum Action {
    /// An existing node.
    Keep(NodeId),
    /// A new node: op and operands.
    New(Op, Vec<NodeId>),
    /// A new `mul(x, const)`.
    MulConst(NodeId, Tensor),
}

impl Pass for SimplifyAlgebra {
    fn name(&self) -> &'static str {
        "simplify-algebra"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut changed = false;
        for id in graph.topo_order() {
            if graph.get(id).is_none() {
                continue;
            }
            let Some((rule, rewrite)) = match_rule(graph, id) else {
                continue;
            };
            let before = super::rewrite::describe(graph, id);
            let inputs = graph.inputs(id);
            let done = match rewrite {
                Action::Keep(x) => {
                    let kept = format!("%{}", graph.node(x).name);
                    let ok = replace_with_existing(graph, cx, id, x)?;
                    if ok {
                        cx.record(self.name(), format!("{rule}: {before} -> {kept}"));
                    }
                    ok
                }
                Action::New(op, operands) => {
                    let name = graph.node(id).name.clone();
                    let new = graph.add(graph.unique_name(&name), op, &operands)?;
                    replace_with_new(graph, cx, id, new)?;
                    cx.record(
                        self.name(),
                        format!("{rule}: {before} -> {}", describe_new(graph, new)),
                    );
                    true
                }
                Action::MulConst(x, c) => {
                    let name = graph.node(id).name.clone();
                    let src = Source {
                        ty: c.ty(),
                        init: Initializer::Literal(Arc::new(c)),
                    };
                    let c =
                        graph.add(graph.unique_name(&format!("{name}_c")), Op::Const(src), &[])?;
                    let new =
                        graph.add(graph.unique_name(&name), Op::Binary(BinaryOp::Mul), &[x, c])?;
                    replace_with_new(graph, cx, id, new)?;
                    cx.record(
                        self.name(),
                        format!("{rule}: {before} -> {}", describe_new(graph, new)),
                    );
                    true
                }
            };
            if done {
                for i in inputs {
                    remove_if_dead(graph, cx, i)?;
                }
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// The statement of a node just made (operands by name).
fn describe_new(graph: &Graph, id: NodeId) -> String {
    super::rewrite::describe(graph, id)
}

/// The first rule that matches node `id`: its name for the log and the rewrite.
fn match_rule(graph: &Graph, id: NodeId) -> Option<(&'static str, Action)> {
    let node = graph.node(id);
    let inputs = graph.inputs(id);
    // Keeping `x` is allowed only when that changes no type (no broadcast is dropped).
    let same_type = |x: NodeId| graph.node(x).ty == node.ty;
    match &node.op {
        Op::Binary(op) => {
            let [a, b] = [inputs[0], inputs[1]];
            let (ca, cb) = (const_f32(graph, a), const_f32(graph, b));
            let all = |c: &Option<Tensor>, bits: u32| {
                c.as_ref()
                    .and_then(|t| t.as_f32().map(|v| v.iter().all(|x| x.to_bits() == bits)))
                    .unwrap_or(false)
            };
            const NEG_ZERO: u32 = 0x8000_0000;
            const ONE: u32 = 0x3f80_0000;
            match op {
                // x + (-0.0) -> x ; (-0.0) + x -> x
                BinaryOp::Add if all(&cb, NEG_ZERO) && same_type(a) => {
                    Some(("x+(-0)", Action::Keep(a)))
                }
                BinaryOp::Add if all(&ca, NEG_ZERO) && same_type(b) => {
                    Some(("(-0)+x", Action::Keep(b)))
                }
                // x - (+0.0) -> x
                BinaryOp::Sub if all(&cb, 0) && same_type(a) => Some(("x-0", Action::Keep(a))),
                // x * 1 -> x ; 1 * x -> x
                BinaryOp::Mul if all(&cb, ONE) && same_type(a) => Some(("x*1", Action::Keep(a))),
                BinaryOp::Mul if all(&ca, ONE) && same_type(b) => Some(("1*x", Action::Keep(b))),
                // x / 1 -> x
                BinaryOp::Div if all(&cb, ONE) && same_type(a) => Some(("x/1", Action::Keep(a))),
                // (x * c1) * c2 -> x * (c1 * c2) for powers of two |c| >= 1, product finite
                BinaryOp::Mul => mul_chain(graph, id, [a, b], [ca, cb]),
                _ => None,
            }
        }
        // neg(neg(x)) -> x
        Op::Unary(UnaryOp::Neg) => {
            let inner = inputs[0];
            match graph.node(inner).op {
                Op::Unary(UnaryOp::Neg) => {
                    let x = graph.inputs(inner)[0];
                    same_type(x).then_some(("neg(neg(x))", Action::Keep(x)))
                }
                _ => None,
            }
        }
        Op::Transpose { perm } => {
            let x = inputs[0];
            // transpose(x, identity) -> x
            if perm.iter().enumerate().all(|(i, &p)| i == p) && same_type(x) {
                return Some(("identity transpose", Action::Keep(x)));
            }
            let Op::Transpose { perm: inner_perm } = &graph.node(x).op else {
                return None;
            };
            // transpose(transpose(x, p), q) -> transpose(x, p∘q), or x if that is the identity
            let y = graph.inputs(x)[0];
            let composed: Option<Vec<usize>> =
                perm.iter().map(|&q| inner_perm.get(q).copied()).collect();
            let composed = composed?;
            if composed.iter().enumerate().all(|(i, &p)| i == p) {
                same_type(y).then_some(("transpose(transpose(x))", Action::Keep(y)))
            } else {
                Some((
                    "transpose(transpose(x))",
                    Action::New(Op::Transpose { perm: composed }, vec![y]),
                ))
            }
        }
        Op::Reshape { shape } => {
            let x = inputs[0];
            // reshape(x) -> x when the shape does not change
            if same_type(x) {
                return Some(("identity reshape", Action::Keep(x)));
            }
            // reshape(reshape(x)) -> reshape(x): row-major order is unchanged by either
            if let Op::Reshape { .. } = graph.node(x).op {
                let y = graph.inputs(x)[0];
                // reshape(reshape(x)) -> x when the shape comes back to x's
                if same_type(y) {
                    return Some(("reshape(reshape(x))", Action::Keep(y)));
                }
                let op = Op::Reshape {
                    shape: shape.clone(),
                };
                // The type must come out the same (unknown dims could infer differently).
                if graph.infer_node(&node.name, &op, &[y]).ok()? == node.ty {
                    return Some(("reshape(reshape(x))", Action::New(op, vec![y])));
                }
            }
            None
        }
        // stop_gradient(x) -> x: it only matters to the gradient transformation, which runs
        // on the user's graph before any pass.
        Op::StopGradient => {
            let x = inputs[0];
            same_type(x).then_some(("stop_gradient(x)", Action::Keep(x)))
        }
        _ => None,
    }
}

/// `(x * c1) * c2 -> x * (c1 * c2)` (either operand order in both muls) when c1 and c2 are
/// one-element constants holding powers of two of magnitude >= 1 whose product is finite, and
/// neither multiplication changes `x`'s type. See the module comment for why that is exact.
fn mul_chain(
    graph: &Graph,
    id: NodeId,
    [a, b]: [NodeId; 2],
    [ca, cb]: [Option<Tensor>; 2],
) -> Option<(&'static str, Action)> {
    let (inner, c2) = match (ca, cb) {
        (None, Some(c)) => (a, c),
        (Some(c), None) => (b, c),
        _ => return None,
    };
    let Op::Binary(BinaryOp::Mul) = graph.node(inner).op else {
        return None;
    };
    let [p, q] = [graph.inputs(inner)[0], graph.inputs(inner)[1]];
    let (x, c1) = match (const_f32(graph, p), const_f32(graph, q)) {
        (None, Some(c)) => (p, c),
        (Some(c), None) => (q, c),
        _ => return None,
    };
    let ty = &graph.node(x).ty;
    if graph.node(inner).ty != *ty || graph.node(id).ty != *ty {
        return None;
    }
    let (v1, v2) = (scalar_power_of_two(&c1)?, scalar_power_of_two(&c2)?);
    let product = v1 * v2;
    if !product.is_finite() {
        return None;
    }
    // Keep the rank of the lower-rank constant so the new mul broadcasts no further.
    let dims = if c1.rank() <= c2.rank() {
        c1.dims()
    } else {
        c2.dims()
    };
    let c = Tensor::from_vec(dims, vec![product]).ok()?;
    Some(("(x*c1)*c2", Action::MulConst(x, c)))
}

/// The value of a one-element f32 constant that is ±2^k with k >= 0.
fn scalar_power_of_two(t: &Tensor) -> Option<f32> {
    let &[v] = t.as_f32()? else { return None };
    let m = v.abs();
    // A normal power of two has a zero mantissa; `m >= 1` rules out scaling down.
    (m.is_finite() && m >= 1.0 && m.to_bits() & 0x007f_ffff == 0).then_some(v)
}

/// The value of `id` if it is an f32 `const`.
fn const_f32(graph: &Graph, id: NodeId) -> Option<Tensor> {
    match &graph.node(id).op {
        Op::Const(src) if src.ty.dtype.is_float() => source_value(src).ok(),
        _ => None,
    }
}
