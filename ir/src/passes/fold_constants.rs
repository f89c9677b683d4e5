//! `fold-constants`: evaluates nodes whose operands are all known before any kernel runs and
//! replaces each by a `const` holding its value.
//!
//! Known operands are `const` nodes and, when [`PassContext::freeze_variables`] is set, `var`
//! nodes that no assign in the graph writes. Values come from the reference evaluator
//! ([`crate::eval`]), so a folded graph computes exactly what the reference computes.
//!
//! Invariants: a folded constant never exceeds [`PassContext::fold_budget_bytes`] (so folding
//! `transpose(W)` of a big weight never duplicates it); sources and side-effecting nodes are
//! never folded; the new constant takes the folded node's name, so graph outputs and fetched
//! roots keep theirs. Constants left without users by a fold are removed (variables and
//! placeholders are session state and are never removed here). A node whose evaluation fails
//! is left alone so the error surfaces at run time under the node's name.

use super::rewrite::{describe, frozen_variables, remove_if_dead, replace_with_new, source_of};
use super::{Pass, PassContext};
use crate::Result;
use crate::eval::eval_op;
use crate::graph::{Graph, NodeId};
use crate::op::{Initializer, Op, Source};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Replaces nodes computable from constants (and frozen variables) by constants.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let frozen = frozen_variables(graph, cx);
        // Values of the known nodes seen so far (sources materialised lazily, folds added).
        let mut known: HashMap<NodeId, Arc<Tensor>> = HashMap::new();
        let mut changed = false;
        for id in graph.topo_order() {
            let Some(node) = graph.get(id) else { continue };
            if node.op.is_source() || node.op.has_side_effect() {
                continue;
            }
            let inputs = graph.inputs(id);
            if inputs.is_empty() {
                continue;
            }
            // Check the size first so that a fold over budget is never even computed.
            let bytes = node
                .ty
                .shape
                .numel()
                .map(|n| n.saturating_mul(node.ty.dtype.size_bytes()));
            if bytes.is_none_or(|b| b > cx.fold_budget_bytes) {
                continue;
            }
            let mut args = Vec::with_capacity(inputs.len());
            for &i in &inputs {
                match known_value(graph, i, &frozen, &mut known) {
                    Some(v) => args.push(v),
                    None => break,
                }
            }
            if args.len() != inputs.len() {
                continue;
            }
            let refs: Vec<&Tensor> = args.iter().map(|a| a.as_ref()).collect();
            let Ok(value) = eval_op(&node.op, &refs) else {
                continue;
            };
            if value.ty() != node.ty {
                continue;
            }
            let value = Arc::new(value);
            let message = format!("folded {} -> const {}", describe(graph, id), value.ty());
            let source = Source {
                ty: value.ty(),
                init: Initializer::Literal(value.clone()),
            };
            let name = node.name.clone();
            let folded = graph.add(graph.unique_name(&name), Op::Const(source), &[])?;
            replace_with_new(graph, cx, id, folded)?;
            known.insert(folded, value);
            cx.record(self.name(), message);
            for i in inputs {
                remove_if_dead(graph, cx, i)?;
            }
            changed = true;
        }
        Ok(changed)
    }
}

/// The value of `id` if it is a constant or a frozen variable (cached in `known`).
fn known_value(
    graph: &Graph,
    id: NodeId,
    frozen: &HashSet<NodeId>,
    known: &mut HashMap<NodeId, Arc<Tensor>>,
) -> Option<Arc<Tensor>> {
    if let Some(v) = known.get(&id) {
        return Some(v.clone());
    }
    let v = Arc::new(source_of(graph, id, frozen)?);
    known.insert(id, v.clone());
    Some(v)
}
