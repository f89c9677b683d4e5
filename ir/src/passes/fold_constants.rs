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
//!
//! The small graph-editing helpers at the bottom are shared with `simplify-algebra` and
//! `fold-batch-norm`.

use super::{Pass, PassContext};
use crate::eval::{eval_op, source_value};
use crate::graph::{Graph, NodeId};
use crate::op::{Initializer, Op, Source};
use crate::tensor::Tensor;
use crate::{Error, Result};
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

/// `%a = add(%c1, %c2)`: the node as a .kiln statement, without attributes.
pub(crate) fn describe(graph: &Graph, id: NodeId) -> String {
    let node = graph.node(id);
    let operands: Vec<String> = graph
        .inputs(id)
        .iter()
        .map(|&i| format!("%{}", graph.node(i).name))
        .collect();
    format!(
        "%{} = {}({})",
        node.name,
        node.op.name(),
        operands.join(", ")
    )
}

/// Variables that may be read as constants: none unless `cx.freeze_variables`, else every
/// variable that no assign writes.
pub(crate) fn frozen_variables(graph: &Graph, cx: &PassContext) -> HashSet<NodeId> {
    if !cx.freeze_variables {
        return HashSet::new();
    }
    let written: HashSet<NodeId> = graph
        .node_ids()
        .filter(|&i| matches!(graph.node(i).op, Op::Assign(_)))
        .filter_map(|i| graph.inputs(i).first().copied())
        .collect();
    graph
        .variables()
        .into_iter()
        .filter(|v| !written.contains(v))
        .collect()
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

/// The value of a constant, or of a variable in `frozen`; `None` for anything else or for a
/// source whose initialiser cannot be materialised (left for run time to report).
pub(crate) fn source_of(graph: &Graph, id: NodeId, frozen: &HashSet<NodeId>) -> Option<Tensor> {
    match &graph.get(id)?.op {
        Op::Const(src) => source_value(src).ok(),
        Op::Var(src) if frozen.contains(&id) => source_value(src).ok(),
        _ => None,
    }
}

/// Whether `id` is a graph output or a root of the run (its id and name must survive).
pub(crate) fn is_pinned(graph: &Graph, cx: &PassContext, id: NodeId) -> bool {
    cx.roots.contains(&id) || graph.outputs().contains(&id)
}

/// Replaces `old` by the freshly made `new` (which no one else refers to yet): uses and
/// outputs move to `new`, `old` is removed, `new` takes `old`'s name and its place in
/// `cx.roots`.
pub(crate) fn replace_with_new(
    graph: &mut Graph,
    cx: &mut PassContext,
    old: NodeId,
    new: NodeId,
) -> Result<()> {
    let name = graph.node(old).name.clone();
    graph.substitute(old, new)?;
    graph.rename(new, name)?;
    if cx.roots.remove(&old) {
        cx.roots.insert(new);
    }
    Ok(())
}

/// Replaces `old` by an existing node `x` of the same type. When `old` is pinned (output or
/// root), `x` takes over its name, which is only done for an unpinned, non-source `x` (never
/// rename a placeholder or another output); otherwise nothing happens and `false` is returned.
pub(crate) fn replace_with_existing(
    graph: &mut Graph,
    cx: &mut PassContext,
    old: NodeId,
    x: NodeId,
) -> Result<bool> {
    let (o, n) = (graph.node(old), graph.node(x));
    if o.ty != n.ty {
        return Err(Error::Invalid(format!(
            "cannot replace %{} ({}) by %{} ({}): types differ",
            o.name, o.ty, n.name, n.ty
        )));
    }
    if is_pinned(graph, cx, old) {
        if n.op.is_source() || is_pinned(graph, cx, x) {
            return Ok(false);
        }
        replace_with_new(graph, cx, old, x)?;
    } else {
        graph.substitute(old, x)?;
    }
    Ok(true)
}

/// Removes `id` and then its operands, recursively, while they have no users, are not pinned,
/// have no side effect and are not placeholders or variables (session state).
pub(crate) fn remove_if_dead(graph: &mut Graph, cx: &PassContext, id: NodeId) -> Result<()> {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        let Some(node) = graph.get(id) else { continue };
        if !graph.users(id).is_empty()
            || is_pinned(graph, cx, id)
            || node.op.has_side_effect()
            || matches!(node.op, Op::Input(_) | Op::Var(_))
        {
            continue;
        }
        let inputs = graph.inputs(id);
        graph.remove(id)?;
        stack.extend(inputs);
    }
    Ok(())
}
