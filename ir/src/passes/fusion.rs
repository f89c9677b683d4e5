//! Shared machinery of the two fusion passes: which nodes form one fused node, and how the
//! group becomes an [`Op::Fused`] node.
//!
//! Grouping walks the nodes in topological order. An elementwise node (unary, binary,
//! bias_add, or an `elementwise` node) absorbs each producer that (a) is not a source,
//! (b) is used by this node alone and is neither a graph output nor a root, (c) has exactly this
//! node's type and is f32, and (d) is elementwise itself or, when main ops are allowed, a main
//! op that takes an epilogue (conv2d, depthwise_conv2d, matmul, max_pool, avg_pool, or a fused
//! node that has one). A group holds at most one main op: when two producers each carry one,
//! the first operand's wins and the other stays a node of its own. With a main op and a type
//! that has unknown dims, a consumer whose other operands are computed values with unknown
//! dims is not absorbed: at run time such an operand could broadcast the main result to a
//! larger shape, which one kernel writing the main result's elements cannot express.
//!
//! Invariants of a group: every member but the root has all its users inside the group, so a
//! group is a tree hanging off its root and replacing it by one node cannot create a cycle;
//! every member has the root's type. The fused node takes the root's name (and so keeps every
//! graph output's name); the other members become dead and are removed.

use super::PassContext;
use super::rewrite::{is_pinned, remove_if_dead, replace_with_new};
use crate::fused::{ExprNode, FusedExpr, FusedOp};
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, DataFormat, Op};
use crate::{DType, Error, Result};
use std::collections::HashMap;

/// Most expression nodes one fused node gets (a bound on one kernel's size, well below
/// [`crate::fused::MAX_NODES`]): a longer chain becomes several fused nodes, one after another.
pub const MAX_GROUP_NODES: usize = 512;

/// Members a fusion's log message names before it abbreviates the rest.
const LOGGED_MEMBERS: usize = 16;

/// How a node takes part in fusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Computed element by element from same-index operand elements (with broadcasting).
    Elementwise,
    /// A main op that accepts an elementwise epilogue.
    Main,
}

fn role(op: &Op) -> Option<Role> {
    // Comparisons, logical ops and select have none: they read or make bool values, which an
    // f32 expression cannot hold, so they stay kernels of their own.
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::BiasAdd { .. } => Some(Role::Elementwise),
        Op::Fused(f) if f.main().is_none() => Some(Role::Elementwise),
        Op::Fused(_) => Some(Role::Main),
        op if FusedOp::accepts_main(op) => Some(Role::Main),
        _ => None,
    }
}

/// One future fused node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    /// The node whose value the fused node computes (and whose name it takes).
    pub root: NodeId,
    /// The main op, if any.
    pub main: Option<NodeId>,
    /// Every member, in topological order (root last).
    pub members: Vec<NodeId>,
}

/// The groups of the graph; main ops join groups only when `with_main`.
fn groups(graph: &Graph, cx: &PassContext, with_main: bool) -> Vec<Group> {
    let order = graph.topo_order();
    let mut fused_into: HashMap<NodeId, NodeId> = HashMap::new();
    // Node (root of an open group) -> the group's main op, if any.
    let mut main_of: HashMap<NodeId, Option<NodeId>> = HashMap::new();
    // Node (root of an open group) -> a bound on its expression's node count.
    let mut size_of: HashMap<NodeId, usize> = HashMap::new();
    for &n in &order {
        match role(&graph.node(n).op) {
            Some(Role::Main) if with_main => {
                main_of.insert(n, Some(n));
                size_of.insert(n, expr_size(graph, n));
            }
            Some(Role::Elementwise) => {
                let open = OpenGroups {
                    main_of: &main_of,
                    size_of: &mut size_of,
                };
                let main = absorb_producers(graph, cx, n, open, &mut fused_into);
                main_of.insert(n, main);
            }
            _ => {}
        }
    }
    // Each member's root, found from the consumers down (reverse topological order), so a
    // long chain costs one step a node rather than a walk to its end.
    let mut root_of: HashMap<NodeId, NodeId> = HashMap::with_capacity(main_of.len());
    for &n in order.iter().rev() {
        if main_of.contains_key(&n) {
            let root = fused_into.get(&n).map_or(n, |next| root_of[next]);
            root_of.insert(n, root);
        }
    }
    let mut members: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let mut roots = Vec::new();
    for &n in &order {
        let Some(&root) = root_of.get(&n) else {
            continue;
        };
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

/// The open groups while grouping: each root's main op and expression size.
struct OpenGroups<'a> {
    main_of: &'a HashMap<NodeId, Option<NodeId>>,
    size_of: &'a mut HashMap<NodeId, usize>,
}

/// A bound on the expression nodes node `n` contributes to a fused expression: its own
/// expression (one node for a plain op, `main` for a main op) plus one per operand it reads.
fn expr_size(graph: &Graph, n: NodeId) -> usize {
    let own = match &graph.node(n).op {
        Op::Fused(f) => f.expr().nodes().len(),
        _ => 1,
    };
    own + graph.inputs(n).len()
}

/// Lets elementwise node `n` absorb its eligible producers while the group's expression stays
/// within [`MAX_GROUP_NODES`] (a producer that would cross it stays the root of a group of its
/// own); returns the group's main op.
fn absorb_producers(
    graph: &Graph,
    cx: &PassContext,
    n: NodeId,
    open: OpenGroups<'_>,
    fused_into: &mut HashMap<NodeId, NodeId>,
) -> Option<NodeId> {
    let OpenGroups { main_of, size_of } = open;
    let mut size = expr_size(graph, n);
    let node = graph.node(n);
    let inputs = graph.inputs(n);
    let mut main: Option<NodeId> = None;
    let mut seen: Vec<NodeId> = Vec::new();
    for &p in inputs.iter() {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        let Some(&pmain) = main_of.get(&p) else {
            continue; // not fusible, or a main op while main ops are not allowed
        };
        let producer = graph.node(p);
        let eligible = !is_pinned(graph, cx, p)
            && producer.ty.dtype == DType::F32
            && producer.ty == node.ty
            && graph.users(p).iter().all(|&(u, _)| u == n);
        if !eligible || (pmain.is_some() && main.is_some()) {
            continue;
        }
        if pmain.is_some() && !broadcast_safe(graph, n, p) {
            continue;
        }
        let psize = size_of.get(&p).copied().unwrap_or(0);
        if size + psize > MAX_GROUP_NODES {
            continue;
        }
        size += psize;
        main = main.or(pmain);
        fused_into.insert(p, n);
    }
    size_of.insert(n, size);
    main
}

/// Whether `n`'s operands other than `p` cannot broadcast `p` (which carries a main op) to a
/// larger shape at run time: certain when `n`'s type is fully known, or when each other operand
/// is a source (declared shapes are known) or has no unknown dim.
fn broadcast_safe(graph: &Graph, n: NodeId, p: NodeId) -> bool {
    if graph.node(n).ty.shape.is_concrete() {
        return true;
    }
    graph.inputs(n).iter().filter(|&&q| q != p).all(|&q| {
        let other = graph.node(q);
        other.op.is_source() || other.ty.shape.is_concrete()
    })
}

/// Replaces group `g` by one fused node named like its root; returns the log message.
fn fuse_group(graph: &mut Graph, cx: &mut PassContext, g: &Group) -> Result<String> {
    let (op, operands) = build(graph, g)?;
    // An NCHW bias is read through a reshape to `[C, 1, ...]` so numpy broadcasting puts it on
    // axis 1 (a constant bias folds into the new shape).
    let mut ids = Vec::with_capacity(operands.len());
    for operand in operands {
        ids.push(match operand {
            FusedOperand::Value(id) => id,
            FusedOperand::ChannelsFirst { bias, trailing } => {
                let name = graph.unique_name(&format!("{}.nchw", graph.node(bias).name));
                let mut shape = vec![-1i64];
                shape.extend(std::iter::repeat_n(1, trailing));
                graph.add(name, Op::Reshape { shape }, &[bias])?
            }
        });
    }
    let operands = ids;
    let root_name = graph.node(g.root).name.clone();
    let temp = graph.unique_name(&format!("{root_name}.fused"));
    let keyword = op.name();
    let new = graph.add(temp, Op::Fused(op), &operands)?;
    // Long groups are logged by their first and last members, so the log stays readable.
    let mut names: Vec<String> = Vec::with_capacity(LOGGED_MEMBERS + 2);
    for (i, &m) in g.members.iter().enumerate() {
        if i < LOGGED_MEMBERS || i + 1 == g.members.len() {
            names.push(format!("%{}", graph.node(m).name));
        } else if i == LOGGED_MEMBERS {
            names.push(format!("({} more)", g.members.len() - LOGGED_MEMBERS - 1));
        }
    }
    replace_with_new(graph, cx, g.root, new)?;
    for &m in g.members.iter().rev() {
        if m != g.root {
            remove_if_dead(graph, cx, m)?;
        }
    }
    Ok(format!(
        "fused {} -> %{root_name} = {keyword}",
        names.join(" + ")
    ))
}

/// An operand of the fused node being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FusedOperand {
    /// The node's value as it is.
    Value(NodeId),
    /// An NCHW bias_add's rank-1 bias, to be reshaped to `[C]` followed by `trailing` ones.
    ChannelsFirst { bias: NodeId, trailing: usize },
}

/// The fused op of group `g` and its operands: the main op's operands first, then every other
/// value the members read from outside the group, in order of first use.
fn build(graph: &Graph, g: &Group) -> Result<(FusedOp, Vec<FusedOperand>)> {
    let root = graph.node(g.root);
    let fail = |message: String| Error::Op {
        node: root.name.clone(),
        op: root.op.name(),
        message,
    };
    let mut operands: Vec<FusedOperand> = Vec::new();
    let mut nodes: Vec<ExprNode> = Vec::new();
    let mut value: HashMap<NodeId, usize> = HashMap::new();
    let mut main_op: Option<Op> = None;
    if let Some(m) = g.main {
        operands = graph
            .inputs(m)
            .iter()
            .map(|&i| FusedOperand::Value(i))
            .collect();
        match &graph.node(m).op {
            Op::Fused(f) => {
                // Its operands keep their positions, so its expression carries over as is.
                main_op = f.main().cloned();
                nodes.extend_from_slice(f.expr().nodes());
            }
            op => {
                main_op = Some(op.clone());
                nodes.push(ExprNode::Main);
            }
        }
        value.insert(m, nodes.len() - 1);
    }
    for &member in &g.members {
        if Some(member) == g.main {
            continue;
        }
        let inputs = graph.inputs(member);
        // An NCHW bias_add reads its bias (operand 1) along axis 1.
        let channels_first = match graph.node(member).op {
            Op::BiasAdd {
                data_format: DataFormat::Nchw,
            } => Some(graph.node(g.root).ty.rank().saturating_sub(2)),
            _ => None,
        };
        // Expression node of this member's operand `i`.
        let mut arg = |i: usize, nodes: &mut Vec<ExprNode>| -> Result<usize> {
            let p = *inputs
                .get(i)
                .ok_or_else(|| fail(format!("member operand {i} is missing")))?;
            if let Some(&v) = value.get(&p) {
                return Ok(v);
            }
            let operand = match channels_first {
                Some(trailing) if i == 1 => FusedOperand::ChannelsFirst { bias: p, trailing },
                _ => FusedOperand::Value(p),
            };
            let k = match operands.iter().position(|&o| o == operand) {
                Some(k) => k,
                None => {
                    operands.push(operand);
                    operands.len() - 1
                }
            };
            nodes.push(ExprNode::Operand(k));
            Ok(nodes.len() - 1)
        };
        let v = match &graph.node(member).op {
            Op::Unary(u) => {
                let x = arg(0, &mut nodes)?;
                nodes.push(ExprNode::Unary(*u, x));
                nodes.len() - 1
            }
            Op::Binary(b) => {
                let x = arg(0, &mut nodes)?;
                let y = arg(1, &mut nodes)?;
                nodes.push(ExprNode::Binary(*b, x, y));
                nodes.len() - 1
            }
            // The rank-1 bias broadcasts along the last axis (NHWC), or is reshaped onto
            // axis 1 (NCHW, see `arg`).
            Op::BiasAdd { .. } => {
                let x = arg(0, &mut nodes)?;
                let y = arg(1, &mut nodes)?;
                nodes.push(ExprNode::Binary(BinaryOp::Add, x, y));
                nodes.len() - 1
            }
            Op::Fused(f) if f.main().is_none() => {
                // Inline its expression; its operand `i` is this member's operand `i`.
                let mut local: Vec<usize> = Vec::with_capacity(f.expr().nodes().len());
                for n in f.expr().nodes() {
                    let v = match *n {
                        ExprNode::Operand(i) => arg(i, &mut nodes)?,
                        ExprNode::Unary(u, x) => {
                            nodes.push(ExprNode::Unary(u, local[x]));
                            nodes.len() - 1
                        }
                        ExprNode::Binary(b, x, y) => {
                            nodes.push(ExprNode::Binary(b, local[x], local[y]));
                            nodes.len() - 1
                        }
                        ExprNode::Main => {
                            return Err(fail("an elementwise node reads `main`".into()));
                        }
                    };
                    local.push(v);
                }
                local[f.expr().result()]
            }
            other => {
                return Err(fail(format!(
                    "{} cannot be part of a fused expression",
                    other.name()
                )));
            }
        };
        value.insert(member, v);
    }
    // The root's value must be the last node (a copy merges with the original when the
    // expression is canonicalised).
    let result = *value
        .get(&g.root)
        .ok_or_else(|| fail("the group lost its root".into()))?;
    if result + 1 != nodes.len() {
        let copy = nodes[result];
        nodes.push(copy);
    }
    let expr = FusedExpr::new(nodes).map_err(&fail)?;
    let op = FusedOp::new(main_op, expr).map_err(&fail)?;
    Ok((op, operands))
}

/// Fuses every group (with a main op when `with_main`, without one otherwise) and repeats until
/// nothing fuses: fusing can leave a value read only by the new node (a diamond's shared value),
/// which the next grouping absorbs, so one run of a fusion pass is a fixed point. Each fusion is
/// logged under `pass`.
pub(super) fn fuse_to_fixed_point(
    graph: &mut Graph,
    cx: &mut PassContext,
    pass: &'static str,
    with_main: bool,
) -> Result<bool> {
    let mut changed = false;
    loop {
        let mut fused = false;
        for g in groups(graph, cx, with_main) {
            if g.main.is_some() != with_main || g.members.len() < 2 {
                continue;
            }
            let message = fuse_group(graph, cx, &g)?;
            cx.record(pass, message);
            fused = true;
        }
        if !fused {
            return Ok(changed);
        }
        changed = true;
    }
}
