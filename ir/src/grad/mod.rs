//! Symbolic reverse-mode differentiation (`tf.gradients`): [`Graph::gradients`] adds the
//! nodes computing d(sum of ys)/dx for each x to the same graph, so the passes optimise the
//! forward and backward computations together (CSE shares forward values, fusion forms the
//! backward kernels, memory planning frees an activation after its last gradient use).
//!
//! The walk visits the nodes that lie on a path from some x to some y, users before operands,
//! and asks each node's rule (one per op family, in this folder's files named like `infer/`
//! and `eval/`) for its operands' gradients given the gradient of its value. Contributions of
//! several users are added. Rules express gradients with ordinary catalogue ops; broadcasting
//! is undone by summing over the broadcast axes (`Ctx::sum_to`), and a gradient is given an
//! operand's shape by `broadcast_like` when that shape has `?` dims.
//!
//! Where gradients stop: a `stop_gradient` node and every bool-valued node (comparisons and
//! logical ops: predicates and masks, as TensorFlow registers them non-differentiable) cut
//! the path silently. An op with no gradient on a path that needs one (argmax, a cast to an
//! integer, gather's indices, assign) is an error naming the node and the path's ends.
//!
//! Invariants: the graph is changed only if the whole transformation succeeds (on an error it
//! is restored), and every node added is type-checked by [`Graph::add`], so a rule that builds
//! a wrongly shaped gradient fails here rather than at run time.

mod elementwise;
mod fused;
mod matmul;
mod movement;
mod normalize;
mod reduce;
mod state;
mod window;

#[cfg(test)]
mod tests;

use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, Float, Initializer, Op, ReduceOp, Source, UnaryOp};
use crate::schema::OpFamily;
use crate::shape::{Dim, Shape, TensorType};
use crate::{DType, Error, Result};
use std::collections::{HashMap, HashSet};

/// What [`Graph::gradients_with`] does with an `x` that no `y` depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unconnected {
    /// An error naming the x (the default, so a typo in a variable list is caught).
    #[default]
    Error,
    /// A zero gradient of x's shape (`tf.gradients(..., unconnected_gradients='zero')`).
    Zero,
}

/// Options of [`Graph::gradients_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GradientOptions {
    /// What an x that the ys do not depend on gets.
    pub unconnected: Unconnected,
}

impl Graph {
    /// The gradients of the sum of all elements of `ys` with respect to each of `xs`
    /// (`tf.gradients(ys, xs)`), as new nodes of this graph; `result[i]` has `xs[i]`'s type.
    ///
    /// Errors: a y that is not f32, an x that no y depends on, or a path from an x to a y
    /// through an op without a gradient, each naming the node.
    pub fn gradients(&mut self, ys: &[NodeId], xs: &[NodeId]) -> Result<Vec<NodeId>> {
        self.gradients_with(ys, xs, None, GradientOptions::default())
    }

    /// [`Graph::gradients`] with `grad_ys` (the gradient flowing into each y, of its type;
    /// `None` means ones) and options.
    pub fn gradients_with(
        &mut self,
        ys: &[NodeId],
        xs: &[NodeId],
        grad_ys: Option<&[NodeId]>,
        options: GradientOptions,
    ) -> Result<Vec<NodeId>> {
        // Constants and variables hold their values behind `Arc`s, so the copy is cheap.
        let before = self.clone();
        let result = Backprop::new(self, ys, xs, grad_ys).and_then(|b| b.run(options));
        if result.is_err() {
            *self = before;
        }
        result
    }

    /// The variables that `ys` depend on along paths gradients can follow (not through
    /// `stop_gradient` or a bool value), in topological order: what an optimizer trains and
    /// `kiln grad` differentiates by default.
    pub fn trainable_variables(&self, ys: &[NodeId]) -> Vec<NodeId> {
        let vars: Vec<NodeId> = self
            .topo_order_of(ys.iter().copied())
            .into_iter()
            .filter(|&n| matches!(self.node(n).op, Op::Var(_)))
            .collect();
        let between = between(self, ys, &vars);
        // Walk back from the ys through nodes gradients reach, so a variable whose every path
        // passes through a cut is left out.
        let mut seen = HashSet::new();
        let mut stack: Vec<NodeId> = ys.iter().copied().filter(|y| between.contains(y)).collect();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.inputs(n).into_iter().filter(|i| between.contains(i)));
            }
        }
        vars.into_iter().filter(|v| seen.contains(v)).collect()
    }
}

/// Whether gradients stop at node `n` without an error: `stop_gradient` and bool values.
fn cuts(graph: &Graph, n: NodeId) -> bool {
    let node = graph.node(n);
    node.ty.dtype == DType::Bool || matches!(node.op, Op::StopGradient)
}

/// One differentiation: the graph, its ends and the set of nodes between them.
struct Backprop<'g> {
    cx: Ctx<'g>,
    ys: Vec<NodeId>,
    xs: Vec<NodeId>,
    grad_ys: Option<Vec<NodeId>>,
    /// Nodes on a path from an x to a y (xs and ys included), cut nodes excluded.
    between: HashSet<NodeId>,
}

impl<'g> Backprop<'g> {
    fn new(
        graph: &'g mut Graph,
        ys: &[NodeId],
        xs: &[NodeId],
        grad_ys: Option<&[NodeId]>,
    ) -> Result<Backprop<'g>> {
        let all = ys.iter().chain(xs).chain(grad_ys.unwrap_or(&[]));
        if let Some(id) = all.clone().find(|&&id| graph.get(id).is_none()) {
            return Err(Error::Invalid(format!(
                "gradients: node {id} is not in this graph"
            )));
        }
        if ys.is_empty() {
            return Err(Error::Invalid("gradients: no ys to differentiate".into()));
        }
        for &y in ys {
            let node = graph.node(y);
            if node.ty.dtype != DType::F32 {
                return Err(Error::Op {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!(
                        "gradients: a y must be f32 to be differentiated, got {}",
                        node.ty
                    ),
                });
            }
        }
        if let Some(gys) = grad_ys {
            if gys.len() != ys.len() {
                return Err(Error::Invalid(format!(
                    "gradients: {} grad_ys for {} ys",
                    gys.len(),
                    ys.len()
                )));
            }
            for (&y, &gy) in ys.iter().zip(gys) {
                let (yn, gn) = (graph.node(y), graph.node(gy));
                if yn.ty.dtype != gn.ty.dtype || yn.ty.rank() != gn.ty.rank() {
                    return Err(Error::Invalid(format!(
                        "gradients: grad_y %{} is {} but y %{} is {}",
                        gn.name, gn.ty, yn.name, yn.ty
                    )));
                }
            }
        }
        let between = between(graph, ys, xs);
        Ok(Backprop {
            cx: Ctx::new(graph),
            ys: ys.to_vec(),
            xs: xs.to_vec(),
            grad_ys: grad_ys.map(<[NodeId]>::to_vec),
            between,
        })
    }

    fn run(mut self, options: GradientOptions) -> Result<Vec<NodeId>> {
        let mut pending: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (i, &y) in self.ys.iter().enumerate() {
            if !self.between.contains(&y) {
                continue;
            }
            let seed = match &self.grad_ys {
                Some(g) => g[i],
                None => self.cx.ones_like(y)?,
            };
            pending.entry(y).or_default().push(seed);
        }
        // Users before operands: the reverse of a topological order of the ys' ancestors.
        let order = self.cx.graph.topo_order_of(self.ys.iter().copied());
        let mut total: HashMap<NodeId, NodeId> = HashMap::new();
        for &n in order.iter().rev() {
            let Some(parts) = pending.remove(&n) else {
                continue;
            };
            let g = self.cx.add_n(n, parts)?;
            total.insert(n, g);
            let operands = self.cx.graph.inputs(n);
            let needs: Vec<bool> = operands.iter().map(|o| self.between.contains(o)).collect();
            if !needs.contains(&true) {
                continue;
            }
            let grads = self.rule(n, g, &needs)?;
            for ((&o, need), grad) in operands.iter().zip(&needs).zip(grads) {
                if let (true, Some(grad)) = (need, grad) {
                    pending.entry(o).or_default().push(grad);
                }
            }
        }
        self.xs
            .clone()
            .into_iter()
            .map(|x| match total.get(&x) {
                Some(&g) => Ok(g),
                None => self.unconnected(x, options.unconnected),
            })
            .collect()
    }

    /// The gradients of node `n`'s operands, given `g`, the gradient of its value.
    fn rule(&mut self, n: NodeId, g: NodeId, needs: &[bool]) -> Result<Vec<Option<NodeId>>> {
        let op = self.cx.graph.node(n).op.clone();
        self.cx.scope = format!("gradients/{}_grad", self.cx.graph.node(n).name);
        let grads = match op.family() {
            OpFamily::Elementwise => elementwise::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::Matmul => matmul::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::Window => window::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::Reduce => reduce::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::Normalize => normalize::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::Movement => movement::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::State => state::grad(&mut self.cx, &op, n, g, needs),
            OpFamily::Fused => fused::grad(&mut self.cx, &op, n, g, needs),
        };
        let grads = grads.map_err(|e| match e {
            RuleError::NoGradient(why) => self.no_gradient(n, &why),
            RuleError::Graph(e) => e,
        })?;
        if grads.len() != needs.len() {
            return Err(Error::Invalid(format!(
                "gradients: the rule of {} gave {} gradients for {} operands",
                op.name(),
                grads.len(),
                needs.len()
            )));
        }
        Ok(grads)
    }

    /// The error for a node on a needed path that has no gradient.
    fn no_gradient(&self, n: NodeId, why: &str) -> Error {
        let graph = &*self.cx.graph;
        let node = graph.node(n);
        let names = |ids: &[NodeId]| {
            ids.iter()
                .filter(|&&i| self.between.contains(&i))
                .map(|&i| format!("%{}", graph.node(i).name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Error::Op {
            node: node.name.clone(),
            op: node.op.name(),
            message: format!(
                "has no gradient ({why}), but the path from {} to {} passes through it; cut \
                 the path with stop_gradient if that is intended",
                names(&self.xs),
                names(&self.ys)
            ),
        }
    }

    /// What an x that no y depends on gets.
    fn unconnected(&mut self, x: NodeId, policy: Unconnected) -> Result<NodeId> {
        match policy {
            Unconnected::Zero => self.cx.zeros_like(x),
            Unconnected::Error => {
                let node = self.cx.graph.node(x);
                let ys: Vec<String> = self
                    .ys
                    .iter()
                    .map(|&y| format!("%{}", self.cx.graph.node(y).name))
                    .collect();
                Err(Error::Op {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!(
                        "gradients: {} does not depend on it (or only through stop_gradient or \
                         a bool value), so it has no gradient",
                        ys.join(", ")
                    ),
                })
            }
        }
    }
}

/// The nodes on some path from an x to a y that does not pass through a cut node.
fn between(graph: &Graph, ys: &[NodeId], xs: &[NodeId]) -> HashSet<NodeId> {
    let ancestors: HashSet<NodeId> = graph
        .topo_order_of(ys.iter().copied())
        .into_iter()
        .collect();
    let mut reached = HashSet::new();
    let mut stack: Vec<NodeId> = xs.to_vec();
    while let Some(n) = stack.pop() {
        if !ancestors.contains(&n) || cuts(graph, n) || !reached.insert(n) {
            continue;
        }
        stack.extend(graph.users(n).into_iter().map(|(u, _)| u));
    }
    reached
}

/// Why a rule gave no gradients: the op has none (the caller names the node and the path),
/// or adding a node failed.
pub(crate) enum RuleError {
    /// The op has no gradient; the text says why.
    NoGradient(String),
    /// Adding a gradient node failed.
    Graph(Error),
}

impl From<Error> for RuleError {
    fn from(e: Error) -> RuleError {
        RuleError::Graph(e)
    }
}

/// What a rule returns: per operand its gradient (`None`: no contribution).
pub(crate) type Grads = std::result::Result<Vec<Option<NodeId>>, RuleError>;

/// A rule's refusal.
pub(crate) fn no_gradient(why: impl Into<String>) -> RuleError {
    RuleError::NoGradient(why.into())
}

/// The graph being extended, with the naming scope of the node being differentiated and the
/// small builders every rule uses.
pub(crate) struct Ctx<'g> {
    pub(crate) graph: &'g mut Graph,
    scope: String,
}

impl<'g> Ctx<'g> {
    fn new(graph: &'g mut Graph) -> Ctx<'g> {
        Ctx {
            graph,
            scope: "gradients".into(),
        }
    }

    /// Adds a node named `<scope>/<base>` (made unique).
    pub(crate) fn add(&mut self, base: &str, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = self.graph.unique_name(&format!("{}/{base}", self.scope));
        self.graph.add(name, op, inputs)
    }

    /// The type of node `n`.
    pub(crate) fn ty(&self, n: NodeId) -> TensorType {
        self.graph.node(n).ty.clone()
    }

    /// A scalar f32 constant.
    pub(crate) fn scalar(&mut self, v: f32) -> Result<NodeId> {
        let op = Op::Const(Source {
            ty: TensorType::f32(Shape::scalar()),
            init: Initializer::Fill(Float(v)),
        });
        self.add("const", op, &[])
    }

    /// `op(x)`.
    pub(crate) fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.add(op.name(), Op::Unary(op), &[x])
    }

    /// `op(a, b)` with broadcasting.
    pub(crate) fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add(op.name(), Op::Binary(op), &[a, b])
    }

    /// `a * b`.
    pub(crate) fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `a * s` for a scalar constant `s`.
    pub(crate) fn scale(&mut self, a: NodeId, s: f32) -> Result<NodeId> {
        let c = self.scalar(s)?;
        self.mul(a, c)
    }

    /// `x` broadcast to `like`'s shape, unless it has it already.
    pub(crate) fn broadcast_like(&mut self, x: NodeId, like: NodeId) -> Result<NodeId> {
        let (tx, tl) = (self.ty(x), self.ty(like));
        if tx.shape == tl.shape && tl.shape.is_concrete() {
            return Ok(x);
        }
        self.add("broadcast_like", Op::BroadcastLike, &[x, like])
    }

    /// Ones of `like`'s shape (f32).
    pub(crate) fn ones_like(&mut self, like: NodeId) -> Result<NodeId> {
        self.fill_like("ones_like", 1.0, like)
    }

    /// Zeros of `like`'s shape (f32).
    pub(crate) fn zeros_like(&mut self, like: NodeId) -> Result<NodeId> {
        self.fill_like("zeros_like", 0.0, like)
    }

    /// `value` everywhere in `like`'s shape: a constant when the shape is known, else a scalar
    /// broadcast at run time.
    fn fill_like(&mut self, base: &str, value: f32, like: NodeId) -> Result<NodeId> {
        let shape = self.ty(like).shape;
        if shape.is_concrete() {
            let op = Op::Const(Source {
                ty: TensorType::f32(shape),
                init: Initializer::Fill(Float(value)),
            });
            return self.add(base, op, &[]);
        }
        let v = self.scalar(value)?;
        self.add(base, Op::BroadcastLike, &[v, like])
    }

    /// The sum of the gradient contributions to node `n` (a balanced tree of adds, so a
    /// value with many users does not make a long chain).
    fn add_n(&mut self, _n: NodeId, mut parts: Vec<NodeId>) -> Result<NodeId> {
        while parts.len() > 1 {
            let mut next = Vec::with_capacity(parts.len().div_ceil(2));
            for pair in parts.chunks(2) {
                next.push(match *pair {
                    [a, b] => self.binary(BinaryOp::Add, a, b)?,
                    [a] => a,
                    _ => unreachable!("chunks(2) yields one or two items"),
                });
            }
            parts = next;
        }
        parts
            .pop()
            .ok_or_else(|| Error::Invalid("gradients: no contribution to sum".into()))
    }

    /// `reduce_sum(x; axes, keepdims)`.
    pub(crate) fn reduce_sum(
        &mut self,
        x: NodeId,
        axes: Vec<i64>,
        keepdims: bool,
    ) -> Result<NodeId> {
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes: Some(axes),
            keepdims,
        };
        self.add("reduce_sum", op, &[x])
    }

    /// Undoes broadcasting: `g` (a gradient of a value `x` was broadcast into) summed over the
    /// axes `x` was broadcast along, giving x's shape. Leading axes x lacks are summed away;
    /// axes where x has 1 and `g` does not are summed keeping the axis. An x dim that is `?`
    /// is taken as not broadcast (the usual case: the batch).
    pub(crate) fn sum_to(&mut self, g: NodeId, x: NodeId) -> Result<NodeId> {
        let (tg, tx) = (self.ty(g), self.ty(x));
        let lead = tg.rank().checked_sub(tx.rank()).ok_or_else(|| {
            Error::Invalid(format!(
                "gradients: cannot sum a gradient {tg} down to a value of higher rank {tx}"
            ))
        })?;
        let ones: Vec<i64> = (0..tx.rank())
            .filter(|&i| tx.shape.dim(i) == Some(1) && tg.shape.dim(i + lead) != Some(1))
            .map(|i| (i + lead) as i64)
            .collect();
        let mut out = g;
        if !ones.is_empty() {
            out = self.reduce_sum(out, ones, true)?;
        }
        if lead > 0 {
            out = self.reduce_sum(out, (0..lead as i64).collect(), false)?;
        }
        Ok(out)
    }

    /// `g` reshaped to `x`'s shape; a `?` dim of x becomes `-1` (at most one may be unknown).
    pub(crate) fn reshape_like(&mut self, g: NodeId, x: NodeId) -> Result<NodeId> {
        let tx = self.ty(x);
        if self.ty(g).shape == tx.shape && tx.shape.is_concrete() {
            return Ok(g);
        }
        let shape = self.reshape_dims(tx.shape.dims(), x)?;
        self.add("reshape", Op::Reshape { shape }, &[g])
    }

    /// Reshape dims for `dims` (`?` as -1); an error naming `of` when two are unknown.
    pub(crate) fn reshape_dims(&self, dims: &[Dim], of: NodeId) -> Result<Vec<i64>> {
        if dims.iter().filter(|d| d.is_none()).count() > 1 {
            let node = self.graph.node(of);
            return Err(Error::Op {
                node: node.name.clone(),
                op: node.op.name(),
                message: format!(
                    "gradients: cannot give the gradient the shape {}: it has more than one \
                     unknown dim (fix the placeholders' shapes first)",
                    node.ty
                ),
            });
        }
        Ok(dims.iter().map(|d| d.map_or(-1, |d| d as i64)).collect())
    }
}
