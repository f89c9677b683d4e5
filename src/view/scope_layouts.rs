//! The layout of every scope: its items (the nodes drawn directly in it and the scopes
//! directly inside it) laid out as one layered graph, an edge between two items wherever a
//! node inside one feeds a node inside the other. Scopes are laid out deepest first, so an
//! unfolded child's size is known when its parent is laid out; a folded child is as big as its
//! box. The page stacks these layouts for whatever fold state the user chooses.

use super::layout::{Layout, layered};
use super::model::{SCOPE_HEADER, SCOPE_PAD};
use super::scopes::ScopeTree;
use std::collections::HashMap;

/// One item of a scope's layout: a node drawn in it or a scope directly inside it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Item {
    Node(usize),
    Scope(usize),
}

impl ScopeTree {
    /// Whether node `v` is drawn inside scope `s`, at any depth.
    fn within(&self, v: usize, s: usize) -> bool {
        let mut at = Some(self.scope_of[v]);
        while let Some(a) = at {
            if a == s {
                return true;
            }
            at = self.scopes[a].parent;
        }
        false
    }
}

/// The layout of every scope's items, deepest scopes first so that each unfolded child's
/// size is known when its parent is laid out; a folded child is as big as its box.
pub(super) fn scope_layouts(
    tree: &ScopeTree,
    inputs: &[Vec<usize>],
    sizes: &[(f64, f64)],
    folded_sizes: &[(f64, f64)],
) -> Vec<(Vec<Item>, Layout)> {
    let count = tree.scopes.len();
    // The chain of scopes above each node, innermost first.
    let chains: Vec<Vec<usize>> = (0..tree.scope_of.len())
        .map(|v| {
            let mut chain = Vec::new();
            let mut at = Some(tree.scope_of[v]);
            while let Some(a) = at {
                chain.push(a);
                at = tree.scopes[a].parent;
            }
            chain
        })
        .collect();
    // Nodes inside each scope at any depth (drawn ones only).
    let mut inside: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (v, chain) in chains.iter().enumerate() {
        if tree.host[v].is_none() {
            for &s in chain {
                inside[s].push(v);
            }
        }
    }
    let depth = |s: usize| {
        let mut d = 0;
        let mut at = tree.scopes[s].parent;
        while let Some(a) = at {
            d += 1;
            at = tree.scopes[a].parent;
        }
        d
    };
    let mut by_depth: Vec<usize> = (0..count).collect();
    by_depth.sort_by_key(|&s| std::cmp::Reverse(depth(s)));

    let mut unfolded_size = vec![(0.0, 0.0); count];
    let mut results: Vec<Option<(Vec<Item>, Layout)>> = vec![None; count];
    let mut slot = vec![usize::MAX; tree.scope_of.len()];
    for s in by_depth {
        let scope = &tree.scopes[s];
        let items: Vec<Item> = scope
            .nodes
            .iter()
            .map(|&v| Item::Node(v))
            .chain(scope.children.iter().map(|&c| Item::Scope(c)))
            .collect();
        let mut item_of_scope = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if let Item::Scope(c) = item {
                item_of_scope.insert(*c, i);
            }
        }
        // Each node inside maps to the item of this scope that holds it.
        for &v in &inside[s] {
            let chain = &chains[v];
            let at = chain.iter().position(|&a| a == s).unwrap_or(0);
            slot[v] = if at == 0 {
                items
                    .iter()
                    .position(|&it| it == Item::Node(v))
                    .unwrap_or(usize::MAX)
            } else {
                item_of_scope
                    .get(&chain[at - 1])
                    .copied()
                    .unwrap_or(usize::MAX)
            };
        }
        let mut edges = Vec::new();
        for &v in &inside[s] {
            for &u in &inputs[v] {
                if tree.host[u].is_none() && tree.within(u, s) && slot[u] != slot[v] {
                    edges.push((slot[u], slot[v]));
                }
            }
        }
        let item_sizes: Vec<(f64, f64)> = items
            .iter()
            .map(|item| match *item {
                Item::Node(v) => sizes[v],
                Item::Scope(c) if tree.scopes[c].folded => folded_sizes[c],
                Item::Scope(c) => unfolded_size[c],
            })
            .collect();
        let layout = layered(&item_sizes, &edges);
        unfolded_size[s] = (
            layout.width + 2.0 * SCOPE_PAD,
            layout.height + SCOPE_HEADER + 2.0 * SCOPE_PAD,
        );
        results[s] = Some((items, layout));
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or((Vec::new(), layered(&[], &[]))))
        .collect()
}
