//! The `reference` backend: runs a graph node by node through the reference evaluator.
//!
//! It is slow and obviously correct; it defines what every other backend must compute and is
//! what the session uses when asked for `reference`. Constants are materialised once at compile
//! time; feeds and variables are borrowed, never copied.

use crate::backend::{Backend, CompileRequest, Executable};
use crate::eval::{eval_op, source_value};
use crate::graph::{Graph, NodeId};
use crate::lower::interp::committed_part;
use crate::op::Op;
use crate::{Error, Result, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;

/// The reference evaluator as a [`Backend`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceBackend;

impl Backend for ReferenceBackend {
    fn name(&self) -> &str {
        "reference"
    }

    fn compile(&self, request: &CompileRequest<'_>) -> Result<Box<dyn Executable>> {
        let graph = request.graph.clone();
        let roots: Vec<NodeId> = request
            .fetches
            .iter()
            .chain(&request.targets)
            .copied()
            .collect();
        let order = graph.topo_order_of(roots);
        let mut constants = HashMap::new();
        for &id in &order {
            let node = graph.node(id);
            if let Op::Const(src) = &node.op {
                let value = source_value(src).map_err(|message| eval_error(&graph, id, message))?;
                constants.insert(id, value);
            }
        }
        let position = |ids: &[NodeId]| -> HashMap<NodeId, usize> {
            ids.iter().enumerate().map(|(i, &id)| (id, i)).collect()
        };
        Ok(Box::new(ReferenceExecutable {
            feed_slot: position(&request.feeds),
            var_slot: position(&request.variables),
            fetches: request.fetches.clone(),
            graph,
            order,
            constants,
        }))
    }
}

struct ReferenceExecutable {
    graph: Graph,
    order: Vec<NodeId>,
    constants: HashMap<NodeId, Tensor>,
    feed_slot: HashMap<NodeId, usize>,
    var_slot: HashMap<NodeId, usize>,
    fetches: Vec<NodeId>,
}

fn eval_error(graph: &Graph, id: NodeId, message: String) -> Error {
    let node = graph.node(id);
    Error::Eval {
        node: node.name.clone(),
        op: node.op.name(),
        message,
    }
}

impl Executable for ReferenceExecutable {
    /// The evaluator is plain single-threaded loops.
    fn uses_threads(&self) -> bool {
        false
    }

    fn run(&self, feeds: &[&Tensor], variables: &mut [Tensor]) -> Result<Vec<Tensor>> {
        let mut values: HashMap<NodeId, Cow<'_, Tensor>> = HashMap::with_capacity(self.order.len());
        let mut updates: Vec<(usize, Tensor)> = Vec::new();
        for &id in &self.order {
            let node = self.graph.node(id);
            let missing =
                |what: &str| Error::Invalid(format!("no {what} given for %{}", node.name));
            let value = match &node.op {
                Op::Input(_) => {
                    let slot = self.feed_slot.get(&id).ok_or_else(|| missing("feed"))?;
                    Cow::Borrowed(*feeds.get(*slot).ok_or_else(|| missing("feed"))?)
                }
                Op::Var(_) => {
                    let slot = self
                        .var_slot
                        .get(&id)
                        .ok_or_else(|| missing("variable value"))?;
                    Cow::Borrowed(
                        variables
                            .get(*slot)
                            .ok_or_else(|| missing("variable value"))?,
                    )
                }
                Op::Const(_) => Cow::Borrowed(&self.constants[&id]),
                op => {
                    let inputs = self.graph.inputs(id);
                    let args: Vec<&Tensor> = inputs.iter().map(|i| values[i].as_ref()).collect();
                    let out = eval_op(op, &args).map_err(|m| eval_error(&self.graph, id, m))?;
                    // Operand i < k of an op writing k variables gets the i-th new value.
                    for (i, var) in inputs.iter().take(op.updated_variables()).enumerate() {
                        let slot = self.var_slot.get(var).ok_or_else(|| missing("variable"))?;
                        let dims = self.graph.node(*var).ty.shape.to_dims().unwrap_or_default();
                        let numel: usize = dims.iter().product();
                        let value = committed_part(out.clone(), i * numel, &dims)?;
                        updates.push((*slot, value));
                    }
                    Cow::Owned(out)
                }
            };
            values.insert(id, value);
        }
        let outputs = self
            .fetches
            .iter()
            .map(|f| values[f].clone().into_owned())
            .collect();
        drop(values);
        for (slot, value) in updates {
            variables[slot] = value;
        }
        Ok(outputs)
    }
}
