//! The graph: a petgraph `StableDiGraph` of named nodes. Edges point from operand to user and
//! carry the operand's position, so a node's inputs are its incoming edges ordered by port.
//!
//! Invariants kept by every method here: names are unique and valid, every node's `ty` is what
//! `infer` computes from its op and operand types, and the graph is acyclic (a node's operands
//! exist before it is added; rewiring through [`Graph::replace_uses`] is checked).

use crate::infer::infer;
use crate::op::{Initializer, Op};
use crate::shape::{Shape, TensorType};
use crate::{Error, Result};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A node's handle. Ids stay valid while the node exists (removing others never moves it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

impl NodeId {
    /// The raw index (stable for the node's lifetime; for display and dense maps).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0.index())
    }
}

/// One node: its name (without `%`), its op, and the inferred type of its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique name, as the user gave it (without the `%`).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The inferred type of the value; dims may be `?`.
    pub ty: TensorType,
}

/// How many of a replaced node's nearest ancestors [`Graph::depends_on`] collects to cut its
/// walk short.
const NEAR_ANCESTORS: usize = 64;

/// Operand lists are short: four inline slots cover all but concat.
pub type Operands = SmallVec<[NodeId; 4]>;

/// A computation graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, usize>,
    by_name: HashMap<String, NodeId>,
    /// For a base name `b`: every `b_1 .. b_{k-1}` is taken, where `k` is the value (absent:
    /// 1), so [`Graph::unique_name`] starts there instead of at 1 (builders name thousands of
    /// nodes `relu_1`, `relu_2`, ...).
    taken_below: HashMap<String, usize>,
    outputs: Vec<NodeId>,
}

/// `("b", k)` for a name `b_k` with `k` a positive number written without leading zeros (a
/// name [`Graph::unique_name`] may generate).
fn numbered(name: &str) -> Option<(&str, usize)> {
    let (base, suffix) = name.rsplit_once('_')?;
    let k: usize = suffix.parse().ok()?;
    (k > 0 && k.to_string() == suffix).then_some((base, k))
}

/// Whether `name` is in the .kiln name set: letters, digits and `_ . - /`, not empty.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node, checking its name, arity and operand types; returns its id.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        if !is_valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        if self.by_name.contains_key(&name) {
            return Err(Error::DuplicateName(name));
        }
        let ty = self.infer_node(&name, &op, inputs)?;
        let id = NodeId(self.g.add_node(Node {
            name: name.clone(),
            op,
            ty,
        }));
        for (port, input) in inputs.iter().enumerate() {
            self.g.add_edge(input.0, id.0, port);
        }
        self.index_name(name, id);
        Ok(id)
    }

    /// Checks arity and operand ids and infers the type `op` would have with these operands.
    pub fn infer_node(&self, name: &str, op: &Op, inputs: &[NodeId]) -> Result<TensorType> {
        if !op.arity().accepts(inputs.len()) {
            return Err(Error::Arity {
                node: name.to_string(),
                op: op.name(),
                expected: op.arity(),
                got: inputs.len(),
            });
        }
        let mut types = Vec::with_capacity(inputs.len());
        for &i in inputs {
            let n = self.get(i).ok_or_else(|| {
                Error::Invalid(format!("node %{name}: operand {i} is not in this graph"))
            })?;
            types.push(&n.ty);
        }
        for (k, &target) in inputs.iter().enumerate().take(op.updated_variables()) {
            let target = self.node(target);
            if !matches!(target.op, Op::Var(_)) {
                return Err(Error::Op {
                    node: name.to_string(),
                    op: op.name(),
                    message: format!(
                        "operand {k} must be a variable, got %{} ({})",
                        target.name,
                        target.op.name()
                    ),
                });
            }
        }
        if op.updated_variables() > 1 {
            let written = &inputs[..op.updated_variables()];
            if let Some((k, &v)) = written
                .iter()
                .enumerate()
                .find(|&(k, v)| written[..k].contains(v))
            {
                return Err(Error::Op {
                    node: name.to_string(),
                    op: op.name(),
                    message: format!(
                        "operand {k} writes %{} a second time; the variables an update writes \
                         must be distinct",
                        self.node(v).name
                    ),
                });
            }
        }
        infer(op, &types).map_err(|message| Error::Op {
            node: name.to_string(),
            op: op.name(),
            message,
        })
    }

    /// A name not yet used: `base`, else the first free of `base_1`, `base_2`, ...
    pub fn unique_name(&self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        let first = self.taken_below.get(base).copied().unwrap_or(1);
        (first..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.by_name.contains_key(n))
            .expect("an unbounded range always yields an unused name")
    }

    /// Indexes `name` for `id`, advancing [`Graph::unique_name`]'s start for its base.
    fn index_name(&mut self, name: String, id: NodeId) {
        if let Some((base, k)) = numbered(&name)
            && self.taken_below.get(base).copied().unwrap_or(1) == k
        {
            let mut next = k + 1;
            while self.by_name.contains_key(&format!("{base}_{next}")) {
                next += 1;
            }
            self.taken_below.insert(base.to_string(), next);
        }
        self.by_name.insert(name, id);
    }

    /// Drops `name` from the index, so [`Graph::unique_name`] may hand it out again.
    fn unindex_name(&mut self, name: &str) {
        self.by_name.remove(name);
        if let Some((base, k)) = numbered(name)
            && let Some(first) = self.taken_below.get_mut(base)
        {
            *first = (*first).min(k);
        }
    }

    /// The node (panics if `id` is not in this graph; use [`Graph::get`] to check).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    /// The node, if `id` is in this graph.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.g.node_weight(id.0)
    }

    /// Changes how a constant's or variable's value is made (e.g. to read it from a weights
    /// file). An initialiser that carries a value must carry one of the node's type.
    pub fn set_initializer(&mut self, id: NodeId, init: Initializer) -> Result<()> {
        let node = &mut self.g[id.0];
        let (Op::Const(src) | Op::Var(src)) = &mut node.op else {
            return Err(Error::Invalid(format!(
                "%{} is a {}, not a constant or variable",
                node.name,
                node.op.name()
            )));
        };
        let carried = match &init {
            Initializer::Literal(t)
            | Initializer::Npy { value: t, .. }
            | Initializer::Safetensors { value: t, .. } => Some(t.ty()),
            _ => None,
        };
        if let Some(ty) = carried.filter(|ty| *ty != src.ty) {
            return Err(Error::Invalid(format!(
                "%{} is {}, cannot initialise it with a {ty} value",
                node.name, src.ty
            )));
        }
        src.init = init;
        Ok(())
    }

    /// The node named `name` (without `%`).
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// The node named `name`, or an [`Error::UnknownName`].
    pub fn lookup(&self, name: &str) -> Result<NodeId> {
        self.find(name)
            .ok_or_else(|| Error::UnknownName(name.to_string()))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Node ids in insertion order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    /// The node's operands, in order.
    pub fn inputs(&self, id: NodeId) -> Operands {
        let mut edges: SmallVec<[(usize, NodeId); 4]> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        edges.sort_unstable_by_key(|&(port, _)| port);
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that use `id`, with the operand position, sorted.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, usize)> {
        let mut users: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(id.0, Direction::Outgoing)
            .map(|e| (NodeId(e.target()), *e.weight()))
            .collect();
        users.sort_unstable();
        users
    }

    /// The graph's declared outputs, in order.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// Declares `id` a graph output (appended; duplicates are kept once).
    pub fn add_output(&mut self, id: NodeId) {
        if !self.outputs.contains(&id) {
            self.outputs.push(id);
        }
    }

    /// Replaces the list of outputs.
    pub fn set_outputs(&mut self, outputs: Vec<NodeId>) {
        self.outputs = outputs;
    }

    /// Placeholders, in insertion order.
    pub fn placeholders(&self) -> Vec<NodeId> {
        self.node_ids()
            .filter(|&i| matches!(self.node(i).op, Op::Input(_)))
            .collect()
    }

    /// Variables, in insertion order.
    pub fn variables(&self) -> Vec<NodeId> {
        self.node_ids()
            .filter(|&i| matches!(self.node(i).op, Op::Var(_)))
            .collect()
    }

    /// All nodes, operands before users (ties broken by insertion order, so it is deterministic).
    pub fn topo_order(&self) -> Vec<NodeId> {
        self.topo_order_of(self.node_ids())
    }

    /// The nodes `roots` depend on (themselves included), operands before users.
    pub fn topo_order_of(&self, roots: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
        // Iterative post-order DFS; the graph is acyclic by construction.
        let mut order = Vec::new();
        let mut done: HashSet<NodeId> = HashSet::new();
        let mut roots: Vec<NodeId> = roots.into_iter().collect();
        roots.sort_unstable();
        for root in roots {
            let mut stack = vec![(root, false)];
            while let Some((n, expanded)) = stack.pop() {
                if expanded {
                    if done.insert(n) {
                        order.push(n);
                    }
                    continue;
                }
                if done.contains(&n) {
                    continue;
                }
                stack.push((n, true));
                for i in self.inputs(n).into_iter().rev() {
                    if !done.contains(&i) {
                        stack.push((i, false));
                    }
                }
            }
        }
        order
    }

    /// Whether `node` depends on `ancestor` (is computed from it, directly or not).
    ///
    /// The walk from `node` towards its operands stops at sources and at the nearest
    /// `NEAR_ANCESTORS` ancestors of `ancestor` (none of which can depend on it in an acyclic
    /// graph). A pass's rewrite builds `node` from values near `ancestor`, so checking it costs
    /// the size of the rewritten part rather than of the graph above it.
    pub fn depends_on(&self, node: NodeId, ancestor: NodeId) -> bool {
        let mut known_above: HashSet<NodeId> = HashSet::new();
        let mut queue: std::collections::VecDeque<NodeId> =
            self.inputs(ancestor).into_iter().collect();
        while let Some(n) = queue.pop_front() {
            if known_above.len() >= NEAR_ANCESTORS {
                break;
            }
            if known_above.insert(n) {
                queue.extend(self.inputs(n));
            }
        }
        let mut seen: HashSet<NodeId> = HashSet::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if n == ancestor {
                return true;
            }
            if known_above.contains(&n) || !seen.insert(n) {
                continue;
            }
            stack.extend(self.inputs(n));
        }
        false
    }

    /// Points every use of `old` (and the output list) at `new`, which must have the same type
    /// and must not depend on `old`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let (o, n) = (self.node(old), self.node(new));
        if o.ty.dtype != n.ty.dtype || o.ty.rank() != n.ty.rank() {
            return Err(Error::Invalid(format!(
                "cannot replace %{} ({}) by %{} ({}): types differ",
                o.name, o.ty, n.name, n.ty
            )));
        }
        if self.depends_on(new, old) {
            return Err(Error::Invalid(format!(
                "cannot replace %{} by %{}: it depends on it",
                o.name, n.name
            )));
        }
        for (user, port) in self.users(old) {
            let edge = self
                .g
                .edges_connecting(old.0, user.0)
                .find(|e| *e.weight() == port)
                .map(|e| e.id())
                .expect("users() lists only existing edges");
            self.g.remove_edge(edge);
            self.g.add_edge(new.0, user.0, port);
        }
        for out in &mut self.outputs {
            if *out == old {
                *out = new;
            }
        }
        Ok(())
    }

    /// Replaces node `old` by `new` everywhere: every use and the output list point at `new`,
    /// `old` is removed, and if `old` was a graph output `new` takes over its name (graph
    /// outputs keep their user-given names through every pass). Passes use this for every
    /// rewrite.
    pub fn substitute(&mut self, old: NodeId, new: NodeId) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let was_output = self.outputs.contains(&old);
        self.replace_uses(old, new)?;
        let removed = self.remove(old)?;
        if was_output {
            self.rename(new, removed.name)?;
        }
        Ok(())
    }

    /// Removes a node that nothing uses and that is not an output.
    pub fn remove(&mut self, id: NodeId) -> Result<Node> {
        let node = self.node(id);
        if !self.users(id).is_empty() || self.outputs.contains(&id) {
            return Err(Error::Invalid(format!(
                "cannot remove %{}: it is still used",
                node.name
            )));
        }
        let node = self
            .g
            .remove_node(id.0)
            .expect("node() above proved it exists");
        self.unindex_name(&node.name);
        Ok(node)
    }

    /// Renames a node (e.g. to give a graph output its user-facing name back after a pass).
    pub fn rename(&mut self, id: NodeId, name: impl Into<String>) -> Result<()> {
        let name = name.into();
        if !is_valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        if self.by_name.get(&name).is_some_and(|&other| other != id) {
            return Err(Error::DuplicateName(name));
        }
        let old = std::mem::replace(&mut self.g[id.0].name, name.clone());
        self.unindex_name(&old);
        self.index_name(name, id);
        Ok(())
    }

    /// A new graph holding only the nodes `roots` depend on, with placeholders' shapes replaced
    /// where `input_shapes` gives one and every type re-inferred (so shapes only known at run
    /// time are checked here). Names are kept; returns the graph and the old -> new id map.
    pub fn extract(
        &self,
        roots: &[NodeId],
        input_shapes: &HashMap<NodeId, Shape>,
    ) -> Result<(Graph, HashMap<NodeId, NodeId>)> {
        let mut sub = Graph::new();
        let mut map = HashMap::new();
        for id in self.topo_order_of(roots.iter().copied()) {
            let node = self.node(id);
            let mut op = node.op.clone();
            if let (Op::Input(ty), Some(shape)) = (&mut op, input_shapes.get(&id)) {
                ty.shape = shape.clone();
            }
            let inputs: Operands = self.inputs(id).iter().map(|i| map[i]).collect();
            map.insert(id, sub.add(node.name.clone(), op, &inputs)?);
        }
        sub.outputs = self
            .outputs
            .iter()
            .filter_map(|o| map.get(o).copied())
            .collect();
        Ok((sub, map))
    }

    /// Checks the invariants: names unique and indexed, types equal to what inference gives,
    /// outputs present. Passes call this after every rewrite in debug and test builds.
    pub fn verify(&self) -> Result<()> {
        for id in self.node_ids() {
            let node = self.node(id);
            if self.by_name.get(&node.name) != Some(&id) {
                return Err(Error::Invalid(format!(
                    "%{} is not indexed by its name",
                    node.name
                )));
            }
            let ty = self.infer_node(&node.name, &node.op, &self.inputs(id))?;
            if ty != node.ty {
                return Err(Error::Op {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!("recorded type {} but inference gives {}", node.ty, ty),
                });
            }
        }
        if self.by_name.len() != self.len() {
            return Err(Error::Invalid("name index out of date".into()));
        }
        for &o in &self.outputs {
            if self.get(o).is_none() {
                return Err(Error::Invalid(format!("output {o} is not in the graph")));
            }
        }
        Ok(())
    }
}
