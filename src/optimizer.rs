//! Optimizers with `tf.compat.v1.train` semantics and defaults: [`GradientDescentOptimizer`],
//! [`MomentumOptimizer`] (optionally Nesterov) and [`AdamOptimizer`] (beta1 0.9, beta2 0.999,
//! epsilon 1e-8, bias correction folded into the learning rate).
//!
//! [`Optimizer::apply_gradients`] adds to the graph one fused update node per variable
//! (`apply_gradient_descent`, `apply_momentum`, `apply_adam`: one kernel writes the variable and
//! its slots, see [`kiln_ir::Op::ApplyGradientDescent`]) and returns ONE train target, a
//! `group` of every update, to pass to [`crate::Session::run_with_targets`]. Slot variables are
//! ordinary variables named like TensorFlow's (`<var>/Momentum`, `<var>/Adam`, `<var>/Adam_1`,
//! and Adam's non-slot `beta1_power` / `beta2_power`), zero-initialised (the powers start at
//! beta1 and beta2), so [`crate::Session::save_variables`] checkpoints them and a restored
//! session resumes training exactly.
//!
//! Ordering: every kernel of a run reads start-of-run variable values and updates are
//! committed when the run ends, so Adam's `beta*_power *= beta*` assigns, which TF1 runs after
//! the variable updates, see the old powers in the updates exactly as in TF1, and so does the
//! `global_step` increment.

use crate::Graph;
use kiln_ir::{DType, Error, NodeId, Op, Result, Tensor};

/// An optimizer: turns `(gradient, variable)` pairs into one train target.
pub trait Optimizer {
    /// Adds the update of every variable by its gradient (and the increment of `global_step`,
    /// if given) and returns one node that runs them all when passed as a target.
    ///
    /// Errors: an empty list, a `var` that is not a variable, a gradient whose type is not the
    /// variable's, or a `global_step` that is not an f32 scalar variable, each naming the node.
    fn apply_gradients(
        &self,
        graph: &mut Graph,
        grads_and_vars: &[(NodeId, NodeId)],
        global_step: Option<NodeId>,
    ) -> Result<NodeId>;

    /// `optimizer.minimize(loss)`: the gradient of `loss` with respect to every variable it
    /// depends on ([`kiln_ir::Graph::trainable_variables`]), added by [`Graph::gradients`],
    /// and one update of each; returns the train target to pass to `Session::run_with_targets`.
    ///
    /// ```
    /// use kiln::optimizer::{GradientDescentOptimizer, Optimizer};
    /// use kiln::{Graph, Session, Tensor};
    ///
    /// let mut g = Graph::new();
    /// let w = g.var("w", Tensor::scalar(3.0))?;
    /// let loss = g.square(w)?; // d/dw = 2w
    /// let train = GradientDescentOptimizer::new(0.25).minimize(&mut g, loss)?;
    /// let sess = Session::new(&g)?;
    /// sess.run_with_targets(&[], &[], &[train])?; // w = 3 - 0.25 * 6
    /// assert_eq!(sess.variable(w)?.as_f32(), Some(&[1.5][..]));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn minimize(&self, graph: &mut Graph, loss: NodeId) -> Result<NodeId> {
        self.minimize_with(graph, loss, None, None)
    }

    /// [`Optimizer::minimize`] over the variables `var_list` (default: every variable the loss
    /// depends on), incrementing `global_step` if given.
    fn minimize_with(
        &self,
        graph: &mut Graph,
        loss: NodeId,
        var_list: Option<&[NodeId]>,
        global_step: Option<NodeId>,
    ) -> Result<NodeId> {
        let vars = match var_list {
            Some(v) => v.to_vec(),
            None => graph.trainable_variables(&[loss]),
        };
        if vars.is_empty() {
            return Err(kiln_ir::Error::Invalid(format!(
                "minimize: %{} depends on no variable, so there is nothing to train",
                graph.node(loss).name
            )));
        }
        let grads = graph.gradients(&[loss], &vars)?;
        let pairs: Vec<(NodeId, NodeId)> = grads.into_iter().zip(vars).collect();
        self.apply_gradients(graph, &pairs, global_step)
    }
}

/// The `global_step` variable (created once, zero-initialised, as
/// `tf.train.get_or_create_global_step`): an existing node named `global_step` is returned if
/// it is an f32 scalar variable, and is an error otherwise.
///
/// It is f32, where TensorFlow uses int64, because kiln's `assign_add` is f32-only on every
/// backend; f32 counts every step exactly up to 2^24 (16,777,216).
pub fn global_step(graph: &mut Graph) -> Result<NodeId> {
    match graph.find("global_step") {
        Some(id) => {
            check_global_step(graph, id)?;
            Ok(id)
        }
        None => graph.var("global_step", Tensor::scalar(0.0)),
    }
}

fn check_global_step(graph: &Graph, id: NodeId) -> Result<()> {
    let node = graph.node(id);
    if matches!(node.op, Op::Var(_)) && node.ty.dtype == DType::F32 && node.ty.rank() == 0 {
        return Ok(());
    }
    Err(Error::Op {
        node: node.name.clone(),
        op: node.op.name(),
        message: format!(
            "a global step must be an f32 scalar variable (f32[]), got {}",
            node.ty
        ),
    })
}

/// Plain gradient descent: `var -= learning_rate * grad` (`tf.compat.v1.train.GradientDescentOptimizer`).
#[derive(Clone, Debug, PartialEq)]
pub struct GradientDescentOptimizer {
    learning_rate: f32,
}

impl GradientDescentOptimizer {
    /// Gradient descent with this learning rate.
    pub fn new(learning_rate: f32) -> Self {
        GradientDescentOptimizer { learning_rate }
    }
}

impl Optimizer for GradientDescentOptimizer {
    fn apply_gradients(
        &self,
        graph: &mut Graph,
        grads_and_vars: &[(NodeId, NodeId)],
        global_step: Option<NodeId>,
    ) -> Result<NodeId> {
        let mut step = Step::new(graph, "GradientDescent", grads_and_vars, global_step)?;
        let lr = step.scalar(graph, "learning_rate", self.learning_rate)?;
        for &(grad, var) in grads_and_vars {
            let name = step.update_name(graph, var);
            let update = graph.named(&name).apply_gradient_descent(var, lr, grad)?;
            step.updates.push(update);
        }
        step.finish(graph)
    }
}

/// Momentum: `accum = accum * momentum + grad; var -= lr * accum`, or with Nesterov
/// `var -= lr * grad + lr * momentum * accum` (`tf.compat.v1.train.MomentumOptimizer`). The
/// slot `<var>/Momentum` holds `accum`.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentumOptimizer {
    learning_rate: f32,
    momentum: f32,
    use_nesterov: bool,
}

impl MomentumOptimizer {
    /// Momentum with this learning rate and momentum, not Nesterov (TF's default).
    pub fn new(learning_rate: f32, momentum: f32) -> Self {
        MomentumOptimizer {
            learning_rate,
            momentum,
            use_nesterov: false,
        }
    }

    /// Uses Nesterov momentum or not.
    pub fn nesterov(mut self, use_nesterov: bool) -> Self {
        self.use_nesterov = use_nesterov;
        self
    }
}

impl Optimizer for MomentumOptimizer {
    fn apply_gradients(
        &self,
        graph: &mut Graph,
        grads_and_vars: &[(NodeId, NodeId)],
        global_step: Option<NodeId>,
    ) -> Result<NodeId> {
        let mut step = Step::new(graph, "Momentum", grads_and_vars, global_step)?;
        let lr = step.scalar(graph, "learning_rate", self.learning_rate)?;
        let momentum = step.scalar(graph, "momentum", self.momentum)?;
        for &(grad, var) in grads_and_vars {
            let accum = zeros_slot(graph, var, "Momentum")?;
            let name = step.update_name(graph, var);
            let update = graph.named(&name).apply_momentum(
                var,
                accum,
                lr,
                grad,
                momentum,
                self.use_nesterov,
            )?;
            step.updates.push(update);
        }
        step.finish(graph)
    }
}

/// Adam as TF1 computes it (`tf.compat.v1.train.AdamOptimizer`): `lr_t = lr * sqrt(1 -
/// beta2^t) / (1 - beta1^t)`, `m = beta1 m + (1 - beta1) g`, `v = beta2 v + (1 - beta2) g^2`,
/// `var -= lr_t m / (sqrt(v) + epsilon)`. Slots `<var>/Adam` (m) and `<var>/Adam_1` (v); the
/// powers `beta1_power` / `beta2_power` are variables multiplied by beta1 / beta2 once per step.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamOptimizer {
    learning_rate: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
}

impl AdamOptimizer {
    /// Adam with this learning rate and TF1's defaults: beta1 0.9, beta2 0.999, epsilon 1e-8.
    pub fn new(learning_rate: f32) -> Self {
        AdamOptimizer {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// Sets the decay of the first-moment estimate.
    pub fn beta1(mut self, beta1: f32) -> Self {
        self.beta1 = beta1;
        self
    }

    /// Sets the decay of the second-moment estimate.
    pub fn beta2(mut self, beta2: f32) -> Self {
        self.beta2 = beta2;
        self
    }

    /// Sets the constant added to `sqrt(v)`.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }
}

impl Optimizer for AdamOptimizer {
    fn apply_gradients(
        &self,
        graph: &mut Graph,
        grads_and_vars: &[(NodeId, NodeId)],
        global_step: Option<NodeId>,
    ) -> Result<NodeId> {
        let mut step = Step::new(graph, "Adam", grads_and_vars, global_step)?;
        let beta1_power = non_slot(graph, "beta1_power", self.beta1)?;
        let beta2_power = non_slot(graph, "beta2_power", self.beta2)?;
        let lr = step.scalar(graph, "learning_rate", self.learning_rate)?;
        let beta1 = step.scalar(graph, "beta1", self.beta1)?;
        let beta2 = step.scalar(graph, "beta2", self.beta2)?;
        let epsilon = step.scalar(graph, "epsilon", self.epsilon)?;
        for &(grad, var) in grads_and_vars {
            let m = zeros_slot(graph, var, "Adam")?;
            let v = zeros_slot(graph, var, "Adam_1")?;
            let name = step.update_name(graph, var);
            let update = graph.named(&name).apply_adam(
                var,
                m,
                v,
                beta1_power,
                beta2_power,
                lr,
                beta1,
                beta2,
                epsilon,
                grad,
            )?;
            step.updates.push(update);
        }
        // TF1's `_finish`: each power times its beta, once per step (reads see the old power).
        for (power, beta) in [(beta1_power, beta1), (beta2_power, beta2)] {
            let next = graph.mul(power, beta)?;
            step.updates.push(graph.assign(power, next)?);
        }
        step.finish(graph)
    }
}

/// What one `apply_gradients` call builds: its name scope and its update nodes.
struct Step {
    scope: String,
    updates: Vec<NodeId>,
    global_step: Option<NodeId>,
}

impl Step {
    /// Checks the pairs and the global step; the scope is `name`, made unique.
    fn new(
        graph: &Graph,
        name: &str,
        grads_and_vars: &[(NodeId, NodeId)],
        global_step: Option<NodeId>,
    ) -> Result<Step> {
        if grads_and_vars.is_empty() {
            return Err(Error::Invalid(format!(
                "{name}: apply_gradients needs at least one (gradient, variable) pair"
            )));
        }
        for &(grad, var) in grads_and_vars {
            for id in [grad, var] {
                if graph.get(id).is_none() {
                    return Err(Error::Invalid(format!(
                        "{name}: node {id} is not in this graph"
                    )));
                }
            }
            let node = graph.node(var);
            if !matches!(node.op, Op::Var(_)) {
                return Err(Error::Op {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!(
                        "{name} can only update variables; got a {} paired with gradient %{}",
                        node.op.name(),
                        graph.node(grad).name
                    ),
                });
            }
        }
        if let Some(id) = global_step {
            if graph.get(id).is_none() {
                return Err(Error::Invalid(format!(
                    "{name}: global step {id} is not in this graph"
                )));
            }
            check_global_step(graph, id)?;
        }
        Ok(Step {
            scope: graph.unique_name(name),
            updates: Vec::new(),
            global_step,
        })
    }

    /// An f32 scalar constant `<scope>/<name>`.
    fn scalar(&self, graph: &mut Graph, name: &str, value: f32) -> Result<NodeId> {
        let name = graph.unique_name(&format!("{}/{name}", self.scope));
        graph.constant(&name, Tensor::scalar(value))
    }

    /// `<scope>/update_<var>`, as TF names its update ops.
    fn update_name(&self, graph: &Graph, var: NodeId) -> String {
        let var = &graph.node(var).name;
        graph.unique_name(&format!("{}/update_{var}", self.scope))
    }

    /// The train target: a group of every update and the global step's increment.
    fn finish(mut self, graph: &mut Graph) -> Result<NodeId> {
        if let Some(gs) = self.global_step {
            let one = graph.scalar(1.0)?;
            self.updates.push(graph.assign_add(gs, one)?);
        }
        let name = self.scope.clone();
        graph.named(&name).group(&self.updates)
    }
}

/// The slot `<var>/<slot>`: a zero variable of `var`'s type, made once (an existing variable of
/// that name and type is reused, as TF's slot creator does).
fn zeros_slot(graph: &mut Graph, var: NodeId, slot: &str) -> Result<NodeId> {
    let node = graph.node(var);
    let name = format!("{}/{slot}", node.name);
    let ty = node.ty.clone();
    if let Some(id) = graph.find(&name) {
        let existing = graph.node(id);
        if matches!(existing.op, Op::Var(_)) && existing.ty == ty {
            return Ok(id);
        }
    }
    let dims = ty.shape.to_dims().ok_or_else(|| Error::Op {
        node: node.name.clone(),
        op: node.op.name(),
        message: format!("a variable needs known dims for its slot, got {ty}"),
    })?;
    let zeros = Tensor::zeros_of(ty.dtype, &dims);
    graph.var(&name, zeros)
}

/// The non-slot variable `name` (Adam's `beta1_power` / `beta2_power`) starting at `init`,
/// shared by every variable an optimizer updates; an existing f32 scalar variable is reused.
fn non_slot(graph: &mut Graph, name: &str, init: f32) -> Result<NodeId> {
    if let Some(id) = graph.find(name) {
        let existing = graph.node(id);
        if matches!(existing.op, Op::Var(_))
            && existing.ty.dtype == DType::F32
            && existing.ty.rank() == 0
        {
            return Ok(id);
        }
    }
    graph.var(name, Tensor::scalar(init))
}
