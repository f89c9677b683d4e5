//! `eliminate-common-subexpressions`: merges nodes that compute the same value.
//!
//! Two nodes are equivalent when their ops are equal (`Op` is `Eq + Hash`, floats by bits) and
//! their operands are pairwise equivalent; constants are equivalent when their whole [`Source`]
//! (type and initialiser, so the same value) is equal. Placeholders and variables are never
//! merged (each is distinct state), nor are side-effect nodes (each assign must run).
//!
//! Classes are found in one topological sweep before anything changes, so a chain of
//! duplicates (`a1 = f(x); b1 = g(a1)` next to `a2 = f(x); b2 = g(a2)`) merges in one run.
//! Each class keeps one representative: its first graph output or root if it has one, else its
//! first node. Every other member is substituted by it, except members that are outputs or
//! roots themselves: those keep their node and name (two equal outputs stay two outputs), and
//! their users still merge with the representative's users. Equivalent nodes compute equal
//! expression trees, so none depends on another and each substitution is acyclic.
//!
//! [`Source`]: crate::op::Source

use super::{Pass, PassContext};
use crate::graph::{Graph, NodeId};
use crate::{Op, Result};
use std::collections::{HashMap, HashSet};

/// Merges nodes with equal ops and equivalent operands.
#[derive(Clone, Copy, Debug, Default)]
pub struct EliminateCommonSubexpressions;

/// Nodes that must keep their identity and name: graph outputs and the context's roots.
fn protected(graph: &Graph, cx: &PassContext) -> HashSet<NodeId> {
    graph
        .outputs()
        .iter()
        .chain(cx.roots.iter())
        .copied()
        .collect()
}

impl Pass for EliminateCommonSubexpressions {
    fn name(&self) -> &'static str {
        "eliminate-common-subexpressions"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let protected = protected(graph, cx);
        // class[node] = index of its class; members[class] = its nodes in topological order.
        let mut class: HashMap<NodeId, usize> = HashMap::new();
        let mut members: Vec<Vec<NodeId>> = Vec::new();
        let mut by_key: HashMap<(Op, Vec<usize>), usize> = HashMap::new();
        for id in graph.topo_order() {
            let op = &graph.node(id).op;
            let mergeable = !matches!(op, Op::Input(_) | Op::Var(_)) && !op.has_side_effect();
            let c = if mergeable {
                // Topological order: every operand already has a class.
                let operands: Vec<usize> = graph.inputs(id).iter().map(|i| class[i]).collect();
                *by_key
                    .entry((op.clone(), operands))
                    .or_insert(members.len())
            } else {
                members.len()
            };
            if c == members.len() {
                members.push(Vec::new());
            }
            members[c].push(id);
            class.insert(id, c);
        }
        let mut changed = false;
        for nodes in members.iter().filter(|m| m.len() > 1) {
            let keep = nodes
                .iter()
                .copied()
                .find(|n| protected.contains(n))
                .unwrap_or(nodes[0]);
            for &old in nodes {
                if old == keep || protected.contains(&old) {
                    continue;
                }
                let (old_name, op) = {
                    let n = graph.node(old);
                    (n.name.clone(), n.op.name())
                };
                graph.substitute(old, keep)?;
                cx.record(
                    self.name(),
                    format!(
                        "merged %{old_name} into %{} (equal {op})",
                        graph.node(keep).name
                    ),
                );
                changed = true;
            }
        }
        Ok(changed)
    }
}
