//! Name scopes: the `/`-separated prefixes of node names (`block1/conv`) that ONNX and
//! TensorFlow models use, as a tree of foldable blocks.
//!
//! Imported models often name computed values by number (`r14`) and only their weights by
//! scope (`conv2_1/x1_w_0`), so a node without a scope of its own takes the common scope of
//! the weights it reads, else that of its only computed operand when it is that operand's
//! only consumer (the relu after a batch norm joins the batch norm's block); an unscoped
//! constant, variable or placeholder takes the common scope of its consumers. Scopes holding a
//! single item are dissolved into their parent. The default view shows every node whose name
//! has no scope (a top-level node by its name), so a scope it was placed in opens unfolded;
//! then it unfolds scopes breadth first while it shows at most [`VISIBLE_BUDGET`] boxes
//! (always unfolding a scope that holds most of the graph, so a model wrapped in one outer
//! scope does not open as one box).

use super::edges::Edges;
use kiln_ir::{Graph, NodeId, Op};

/// The most boxes the default view unfolds scopes up to.
pub const VISIBLE_BUDGET: usize = 60;

/// One scope of the tree; scope 0 is the whole graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// The full path (`block1/conv`); empty for the root.
    pub path: String,
    /// The enclosing scope (`None` for the root).
    pub parent: Option<usize>,
    /// The nodes drawn directly in it, by index into the graph's topological order.
    pub nodes: Vec<usize>,
    /// The scopes directly in it.
    pub children: Vec<usize>,
    /// Every node inside, at any depth, parameters drawn inside their consumer included.
    pub total: usize,
    /// Whether the default view shows it folded.
    pub folded: bool,
}

/// The scope tree of a graph's nodes, given in topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeTree {
    /// Scope 0 is the root; a child comes after its parent.
    pub scopes: Vec<Scope>,
    /// The scope each node is drawn in (its host's, for a parameter drawn inside its host).
    pub scope_of: Vec<usize>,
    /// For a constant or variable read by one node only: that node, whose box shows it.
    pub host: Vec<Option<usize>>,
}

/// The scope part of a name: everything before the last `/`.
fn own_scope(name: &str) -> Option<&str> {
    name.rsplit_once('/')
        .map(|(scope, _)| scope)
        .filter(|s| !s.is_empty())
}

/// The longest common prefix of scope paths, cut at a `/` boundary.
fn common_scope<'a>(mut scopes: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = scopes.next() else {
        return String::new();
    };
    let mut common: Vec<&str> = first.split('/').collect();
    for s in scopes {
        let matching = common
            .iter()
            .zip(s.split('/'))
            .take_while(|(a, b)| *a == b)
            .count();
        common.truncate(matching);
    }
    common.join("/")
}

fn is_parameter(op: &Op) -> bool {
    matches!(op, Op::Const(_) | Op::Var(_))
}

impl ScopeTree {
    /// Builds the tree for `order` (the graph's nodes in topological order) and its `edges`.
    pub fn new(graph: &Graph, order: &[NodeId], edges: &Edges) -> ScopeTree {
        let n = order.len();
        let Edges {
            inputs,
            consumers,
            outputs,
            ..
        } = edges;
        let op = |v: usize| &graph.node(order[v]).op;
        let name = |v: usize| graph.node(order[v]).name.as_str();

        let host: Vec<Option<usize>> = (0..n)
            .map(|v| {
                (is_parameter(op(v)) && consumers[v].len() == 1 && !outputs.contains(&v))
                    .then(|| consumers[v][0])
            })
            .collect();

        // A scope only one name uses (`r174/matmul`, an importer's helper) groups nothing.
        let mut uses: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for v in 0..n {
            let mut scope = own_scope(name(v));
            while let Some(s) = scope {
                *uses.entry(s).or_default() += 1;
                scope = own_scope(s);
            }
        }
        let own = |v: usize| own_scope(name(v)).filter(|s| uses.get(s).is_some_and(|&k| k > 1));

        // Scopes of computed nodes, in topological order.
        let mut path: Vec<Option<String>> = vec![None; n];
        for v in 0..n {
            if let Some(s) = own(v) {
                path[v] = Some(s.to_string());
                continue;
            }
            if is_parameter(op(v)) || matches!(op(v), Op::Input(_)) {
                continue;
            }
            let weight_scopes: Vec<&str> = inputs[v]
                .iter()
                .filter(|&&u| is_parameter(op(u)))
                .filter_map(|&u| own(u))
                .collect();
            if !weight_scopes.is_empty() {
                path[v] = Some(common_scope(weight_scopes.into_iter()));
                continue;
            }
            let computed: Vec<usize> = inputs[v]
                .iter()
                .copied()
                .filter(|&u| !is_parameter(op(u)))
                .collect();
            if let [u] = computed[..]
                && consumers[u].len() == 1
            {
                path[v] = path[u].clone();
            }
        }
        // Still unscoped computed nodes (a residual add reads two blocks) join the common
        // scope of their scoped computed neighbours, down then up the graph.
        let sweep: Vec<usize> = (0..n).chain((0..n).rev()).collect();
        for v in sweep {
            if path[v].is_some() || is_parameter(op(v)) || matches!(op(v), Op::Input(_)) {
                continue;
            }
            let near: Vec<&str> = inputs[v]
                .iter()
                .chain(&consumers[v])
                .filter(|&&u| !is_parameter(op(u)))
                .filter_map(|&u| path[u].as_deref())
                .collect();
            if !near.is_empty() {
                let common = common_scope(near.into_iter());
                if !common.is_empty() {
                    path[v] = Some(common);
                }
            }
        }
        // Unscoped sources: the common scope of their consumers.
        for v in (0..n).rev() {
            if path[v].is_none() && (is_parameter(op(v)) || matches!(op(v), Op::Input(_))) {
                let scopes: Vec<&str> = consumers[v]
                    .iter()
                    .map(|&c| path[c].as_deref().unwrap_or(""))
                    .collect();
                if !scopes.is_empty() {
                    path[v] = Some(common_scope(scopes.into_iter()));
                }
            }
        }
        let mut tree = ScopeTree {
            scopes: vec![Scope {
                path: String::new(),
                parent: None,
                nodes: Vec::new(),
                children: Vec::new(),
                total: 0,
                folded: false,
            }],
            scope_of: vec![0; n],
            host,
        };
        let mut by_path = std::collections::HashMap::new();
        by_path.insert(String::new(), 0usize);
        for v in 0..n {
            let scope_path = match tree.host[v] {
                Some(h) => path[h].clone(),
                None => path[v].clone(),
            };
            let s = tree.intern(scope_path.as_deref().unwrap_or(""), &mut by_path);
            tree.scope_of[v] = s;
            if tree.host[v].is_none() {
                tree.scopes[s].nodes.push(v);
            }
        }
        tree.dissolve_single_items();
        for v in 0..n {
            let mut s = Some(tree.scope_of[v]);
            while let Some(i) = s {
                tree.scopes[i].total += 1;
                s = tree.scopes[i].parent;
            }
        }
        // A node whose own name has no usable scope is a top-level node by its name: the
        // default view shows it (and so every scope it was placed in is open).
        let mut open = vec![false; tree.scopes.len()];
        for v in 0..n {
            if own(v).is_none() {
                let mut at = Some(tree.scope_of[v]);
                while let Some(a) = at.filter(|&a| !open[a]) {
                    open[a] = true;
                    at = tree.scopes[a].parent;
                }
            }
        }
        tree.choose_folds(n, &open);
        tree
    }

    /// The scope for `path`, created with its ancestors if new.
    fn intern(
        &mut self,
        path: &str,
        by_path: &mut std::collections::HashMap<String, usize>,
    ) -> usize {
        if let Some(&s) = by_path.get(path) {
            return s;
        }
        let parent = match path.rsplit_once('/') {
            Some((up, _)) => self.intern(up, by_path),
            None => 0,
        };
        let s = self.scopes.len();
        self.scopes.push(Scope {
            path: path.to_string(),
            parent: Some(parent),
            nodes: Vec::new(),
            children: Vec::new(),
            total: 0,
            folded: false,
        });
        self.scopes[parent].children.push(s);
        by_path.insert(path.to_string(), s);
        s
    }

    /// Moves the one item of a scope holding one item (a node or a scope) into its parent,
    /// deepest scopes first, and drops the empty scopes left behind (renumbering them).
    fn dissolve_single_items(&mut self) {
        let mut alive = vec![true; self.scopes.len()];
        // Children come after parents, so reverse order visits the deepest first.
        for s in (1..self.scopes.len()).rev() {
            let items = self.scopes[s].nodes.len() + self.scopes[s].children.len();
            if items > 1 {
                continue;
            }
            let Some(parent) = self.scopes[s].parent else {
                continue;
            };
            alive[s] = false;
            let nodes = std::mem::take(&mut self.scopes[s].nodes);
            let children = std::mem::take(&mut self.scopes[s].children);
            let siblings = &mut self.scopes[parent].children;
            siblings.retain(|&c| c != s);
            siblings.extend(&children);
            self.scopes[parent].nodes.extend(&nodes);
            for c in children {
                self.scopes[c].parent = Some(parent);
            }
            for v in 0..self.scope_of.len() {
                if self.scope_of[v] == s {
                    self.scope_of[v] = parent;
                }
            }
        }
        let mut renumber = vec![usize::MAX; self.scopes.len()];
        let mut kept = Vec::new();
        for (s, scope) in std::mem::take(&mut self.scopes).into_iter().enumerate() {
            if alive[s] {
                renumber[s] = kept.len();
                kept.push(scope);
            }
        }
        for scope in &mut kept {
            scope.parent = scope.parent.map(|p| renumber[p]);
            scope.children.iter_mut().for_each(|c| *c = renumber[*c]);
            scope.nodes.sort_unstable();
        }
        self.scope_of.iter_mut().for_each(|s| *s = renumber[*s]);
        self.scopes = kept;
    }

    /// Folds every scope but the root and the `open` ones, then unfolds any scope holding more
    /// than half the graph, and scopes breadth first while the view stays within
    /// [`VISIBLE_BUDGET`] boxes.
    fn choose_folds(&mut self, n: usize, open: &[bool]) {
        for (s, scope) in self.scopes.iter_mut().enumerate() {
            scope.folded = s != 0 && !open[s];
        }
        let items = |s: &Scope| s.nodes.len() + s.children.len();
        // Boxes shown with the open scopes unfolded, and the folded scopes they show.
        let mut visible = 0;
        let mut queue = std::collections::VecDeque::new();
        let mut walk = vec![0usize];
        while let Some(s) = walk.pop() {
            visible += self.scopes[s].nodes.len();
            for &c in &self.scopes[s].children {
                if self.scopes[c].folded {
                    visible += 1;
                    queue.push_back(c);
                } else {
                    walk.push(c);
                }
            }
        }
        while let Some(s) = queue.pop_front() {
            let grows = items(&self.scopes[s]) - 1;
            if self.scopes[s].total * 2 > n || visible + grows <= VISIBLE_BUDGET {
                self.scopes[s].folded = false;
                visible += grows;
                queue.extend(self.scopes[s].children.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> (Graph, ScopeTree) {
        let g = kiln_ir::text::parse(text, None).unwrap();
        let order = g.topo_order();
        let t = ScopeTree::new(&g, &order, &Edges::new(&g, &order));
        (g, t)
    }

    fn scope_of(g: &Graph, t: &ScopeTree, name: &str) -> String {
        let order = g.topo_order();
        let v = order
            .iter()
            .position(|&id| g.node(id).name == name)
            .unwrap();
        t.scopes[t.scope_of[v]].path.clone()
    }

    #[test]
    fn unnamed_nodes_join_their_weights_and_producers_scopes() {
        let (g, t) = tree(
            "kiln 1
input %x : f32[1,4]
const %a/fc/w : f32[4,4] = ones
const %a/fc/b : f32[4] = zeros
%r1 = matmul(%x, %a/fc/w)
%r2 = bias_add(%r1, %a/fc/b)
%r3 = relu(%r2)
const %b/fc/w : f32[4,4] = ones
const %b/fc/b : f32[4] = zeros
%r5 = matmul(%x, %b/fc/w)
%r6 = bias_add(%r5, %b/fc/b)
%r4 = add(%r3, %r6)
%r7 = relu(%r4)
output %r7
",
        );
        assert_eq!(scope_of(&g, &t, "r1"), "a/fc");
        assert_eq!(scope_of(&g, &t, "r2"), "a/fc");
        assert_eq!(scope_of(&g, &t, "r3"), "a/fc");
        assert_eq!(scope_of(&g, &t, "r6"), "b/fc");
        // Reading two blocks, the add stays outside both, and so does its relu.
        assert_eq!(scope_of(&g, &t, "r4"), "");
        assert_eq!(scope_of(&g, &t, "r7"), "");
        // The weights are drawn inside their only consumer.
        let order = g.topo_order();
        let w = order
            .iter()
            .position(|&id| g.node(id).name == "a/fc/w")
            .unwrap();
        assert!(t.host[w].is_some());
        // `a` held only `a/fc`, so `a/fc` took its place; the small graph shows unfolded.
        let paths: Vec<&str> = t.scopes.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["", "a/fc", "b/fc"]);
        assert!(t.scopes.iter().all(|s| !s.folded));
    }

    #[test]
    fn a_scope_that_one_name_uses_groups_nothing() {
        let (g, t) = tree(
            "kiln 1
input %a/x : f32[2]
%b/y = relu(%a/x)
%b/z = neg(%b/y)
output %b/z
",
        );
        // `a` names one node: the placeholder joins its consumer's scope.
        assert_eq!(scope_of(&g, &t, "a/x"), "b");
        assert_eq!(scope_of(&g, &t, "b/z"), "b");
    }

    #[test]
    fn big_graphs_open_folded_within_the_budget() {
        let mut text = String::from("kiln 1\ninput %x : f32[4]\n%h = neg(%x)\n");
        let mut last = "h".to_string();
        for b in 0..40 {
            for k in 0..5 {
                let name = format!("block{b}/op{k}");
                text.push_str(&format!("%{name} = relu(%{last})\n"));
                last = name;
            }
        }
        text.push_str(&format!("output %{last}\n"));
        let (_, t) = tree(&text);
        assert_eq!(t.scopes.len(), 41);
        // The stem joins the first block it feeds: 40 blocks at the top, and that block
        // opens, since %x and %h are top-level by their names.
        assert_eq!(t.scopes[0].nodes.len() + t.scopes[0].children.len(), 40);
        let block0 = t.scopes.iter().find(|s| s.path == "block0").unwrap();
        assert!(!block0.folded && block0.nodes.len() == 7);
        let items = |s: &Scope| s.nodes.len() + s.children.len();
        let opened: Vec<&Scope> = t.scopes[1..].iter().filter(|s| !s.folded).collect();
        let shown = 40 + opened.iter().map(|s| items(s) - 1).sum::<usize>();
        assert!(shown <= VISIBLE_BUDGET, "{shown}");
        // Breadth first: no folded block would still fit.
        assert!(!opened.is_empty());
        assert!(shown + 4 > VISIBLE_BUDGET, "{shown}");
    }

    #[test]
    fn common_scope_cuts_at_slashes() {
        assert_eq!(common_scope(["ab/c", "ab/cd"].into_iter()), "ab");
        assert_eq!(common_scope(["x", "y"].into_iter()), "");
    }
}
