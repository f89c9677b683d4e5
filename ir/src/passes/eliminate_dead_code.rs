//! `eliminate-dead-code`: removes every node no run can need.
//!
//! A node is live when a graph output, a node of [`PassContext::roots`] or a side-effect node
//! (an assign) depends on it, itself included. Everything else is removed, placeholders and
//! variables too (the session maps feeds and variable values by name after the passes, so a
//! feed for a removed placeholder is simply not passed). Dead nodes are removed users first, so
//! each removal sees a node nothing uses any more. Side-effect nodes and the variables they
//! write are always live by this rule.

use super::{Pass, PassContext};
use crate::graph::{Graph, NodeId};
use crate::{Op, Result};
use std::collections::HashSet;

/// Removes nodes that no output, root or side effect depends on.
#[derive(Clone, Copy, Debug, Default)]
pub struct EliminateDeadCode;

impl Pass for EliminateDeadCode {
    fn name(&self) -> &'static str {
        "eliminate-dead-code"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut roots: Vec<NodeId> = graph.outputs().to_vec();
        // A root that is no longer in the graph (replaced by a pass) keeps nothing alive.
        roots.extend(cx.roots.iter().copied().filter(|&r| graph.get(r).is_some()));
        roots.extend(
            graph
                .node_ids()
                .filter(|&id| graph.node(id).op.has_side_effect()),
        );
        let live: HashSet<NodeId> = graph.topo_order_of(roots).into_iter().collect();
        let mut changed = false;
        // Reverse topological order: a dead node's users are all dead (a live user would make
        // it live) and come later in topological order, so they are gone before it is removed.
        for id in graph.topo_order().into_iter().rev() {
            if live.contains(&id) {
                continue;
            }
            let node = graph.remove(id)?;
            let what = match node.op {
                Op::Input(_) => "unused placeholder",
                Op::Var(_) => "unused variable",
                Op::Const(_) => "unused constant",
                _ => "unused",
            };
            cx.record(
                self.name(),
                format!("removed %{} ({}): {what}", node.name, node.op.name()),
            );
            changed = true;
        }
        Ok(changed)
    }
}
