//! Fusion grouping: which graph nodes become one kernel.
//!
//! Walking the nodes in topological order, an elementwise node (unary, binary, bias_add) absorbs
//! each producer that (a) is not a source, (b) is used by this node alone and is neither fetched
//! nor a target, (c) has exactly this node's dims (so no producer value is recomputed for
//! broadcast copies) and is f32, and (d) is either elementwise itself or a main op that accepts
//! an epilogue. A group holds at most one main op: when two producers each carry one, the first
//! operand's wins and the other is materialised.
//!
//! Invariants of the result: every non-source node is in exactly one group; every member but
//! the root has all its users inside the group, so a group is a tree hanging off its root and
//! merging can never create a cycle between kernels (an edge leaving the group leaves from the
//! root, and a path back into the group would be a cycle in the graph); every member has the
//! root's dims. Groups come in the order of their roots, which is a valid kernel order because
//! every member, and so everything a group reads, precedes its root.

use crate::DType;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use std::collections::{HashMap, HashSet};

/// One future kernel: a root (whose value is stored), at most one main op and the fused nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Group {
    /// The node whose value the kernel stores.
    pub root: NodeId,
    /// The non-elementwise node the group is built around, if any.
    pub main: Option<NodeId>,
    /// Every node of the group, in topological order (root last).
    pub members: Vec<NodeId>,
}

/// Whether the op can be part of an elementwise epilogue.
pub(super) fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::BiasAdd { .. })
}

/// Whether a group whose main op is `op` may take an epilogue (not an assign: its output must
/// stay the variable's new value).
fn accepts_epilogue(op: &Op) -> bool {
    !matches!(op, Op::Assign(_))
}

/// Groups the non-source nodes of `order` (a topological order of the nodes the run needs).
/// `pinned` nodes (fetches and targets) are always materialised; `dims` holds every node's
/// concrete dims.
pub(super) fn group(
    graph: &Graph,
    order: &[NodeId],
    pinned: &HashSet<NodeId>,
    dims: &HashMap<NodeId, Vec<usize>>,
) -> Vec<Group> {
    let in_run: HashSet<NodeId> = order.iter().copied().collect();
    // Producer -> the consumer whose group absorbed it.
    let mut fused_into: HashMap<NodeId, NodeId> = HashMap::new();
    // Root of a still-open group -> its main op, if any.
    let mut main_of: HashMap<NodeId, Option<NodeId>> = HashMap::new();

    for &n in order {
        let node = graph.node(n);
        if node.op.is_source() {
            continue;
        }
        if !is_elementwise(&node.op) {
            main_of.insert(n, Some(n));
            continue;
        }
        let mut main: Option<NodeId> = None;
        let mut seen: Vec<NodeId> = Vec::new();
        for p in graph.inputs(n) {
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            if !can_absorb(graph, &in_run, pinned, dims, p, n) {
                continue;
            }
            let Some(&pmain) = main_of.get(&p) else {
                continue;
            };
            if pmain.is_some() && main.is_some() {
                // Two main ops cannot share a kernel: materialise this producer.
                continue;
            }
            main = main.or(pmain);
            fused_into.insert(p, n);
        }
        main_of.insert(n, main);
    }

    // Collect members: a node's group root is found by following `fused_into` to the end.
    let mut members: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let mut roots = Vec::new();
    for &n in order {
        if graph.node(n).op.is_source() {
            continue;
        }
        let mut root = n;
        while let Some(&next) = fused_into.get(&root) {
            root = next;
        }
        members.entry(root).or_default().push(n);
        if root == n {
            roots.push(n);
        }
    }
    roots
        .into_iter()
        .map(|root| Group {
            root,
            main: main_of.get(&root).copied().flatten(),
            members: members.remove(&root).unwrap_or_default(),
        })
        .collect()
}

/// Whether consumer `n` may absorb producer `p` (conditions (a)-(d) of the module docs, except
/// the one-main-op rule, which the caller applies).
fn can_absorb(
    graph: &Graph,
    in_run: &HashSet<NodeId>,
    pinned: &HashSet<NodeId>,
    dims: &HashMap<NodeId, Vec<usize>>,
    p: NodeId,
    n: NodeId,
) -> bool {
    let producer = graph.node(p);
    if producer.op.is_source() || pinned.contains(&p) || producer.ty.dtype != DType::F32 {
        return false;
    }
    let only_user = graph
        .users(p)
        .iter()
        .filter(|(u, _)| in_run.contains(u))
        .all(|&(u, _)| u == n);
    let same_dims = dims.get(&p).is_some() && dims.get(&p) == dims.get(&n);
    let kind_ok = is_elementwise(&producer.op) || accepts_epilogue(&producer.op);
    only_user && same_dims && kind_ok
}
