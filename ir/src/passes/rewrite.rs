//! The graph-editing helpers the passes share: describing a node for the rewrite log, reading
//! constants (and frozen variables) as values, and replacing or removing nodes while keeping
//! graph outputs and the run's roots (`PassContext::roots`) under their names.
//!
//! Invariant: every helper leaves the graph valid (operand types unchanged, no dangling use),
//! and none removes a pinned node, a side-effecting node, a placeholder or a variable.

use super::PassContext;
use crate::eval::{shared_source_value, source_value};
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::HashSet;
use std::sync::Arc;

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
        .flat_map(|i| {
            let k = graph.node(i).op.updated_variables();
            graph.inputs(i).into_iter().take(k)
        })
        .collect();
    graph
        .variables()
        .into_iter()
        .filter(|v| !written.contains(v))
        .collect()
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

/// Like [`source_of`], but a value the initialiser already holds is shared, not copied (for
/// large weights read once, e.g. to scale them into a new constant).
pub(crate) fn shared_source_of(
    graph: &Graph,
    id: NodeId,
    frozen: &HashSet<NodeId>,
) -> Option<Arc<Tensor>> {
    match &graph.get(id)?.op {
        Op::Const(src) => shared_source_value(src).ok(),
        Op::Var(src) if frozen.contains(&id) => shared_source_value(src).ok(),
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
