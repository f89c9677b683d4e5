//! `compose-movement`: a chain of `transpose` and `reshape` nodes that moves the same elements
//! around more than once becomes at most one transpose between two reshapes.
//!
//! Transposes and reshapes only move elements, so any chain of them is one permutation of its
//! input's elements. ShuffleNet's channel shuffle, once `select-layout` has made it NHWC, is
//! `transpose(NHWC->NCHW)`, `reshape`, `transpose(group <-> channel)`, `reshape`,
//! `transpose(NCHW->NHWC)`: three full copies of the activation where one suffices
//! (`reshape [.., g, c/g]`, swap the last two axes, `reshape [.., c]`). The chain is composed
//! by tracking its input's axes as *atoms* (factors of the input dims): a transpose permutes
//! whole axes, a reshape regroups consecutive atoms into its dims, splitting an atom in two when
//! a dim boundary falls inside it (an input dim of 112 seen as 4 x 28 splits into atoms 4 and
//! 28). The result is `reshape(x, atoms in input order)`, `transpose(their order at the end)`,
//! `reshape(output dims)`, with atoms adjacent in both orders merged again and size-1 atoms
//! dropped. A reshape whose dims do not split the atoms evenly (neither divides the other)
//! stops the composition: nothing changes.
//!
//! Exact: the rewrite computes the same permutation of the same elements, so every value is
//! bit-identical for every dtype. It fires only when the chain had at least two transposes
//! (so it strictly removes copies), every dim is known, and the intermediate nodes are used
//! only by the chain and are neither outputs nor roots (they are removed).

use super::rewrite::{describe, remove_if_dead, replace_with_new};
use super::{Pass, PassContext};
use crate::Result;
use crate::graph::{Graph, NodeId};
use crate::op::Op;

/// Composes chains of transposes and reshapes into at most one transpose.
#[derive(Clone, Copy, Debug, Default)]
pub struct ComposeMovement;

impl Pass for ComposeMovement {
    fn name(&self) -> &'static str {
        "compose-movement"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut changed = false;
        // Last nodes first, so a whole chain is taken at once from its end.
        let mut order = graph.topo_order();
        order.reverse();
        for end in order {
            if graph.get(end).is_none() {
                continue;
            }
            let Some((chain, x)) = chain_ending_at(graph, cx, end) else {
                continue;
            };
            let transposes = chain
                .iter()
                .filter(|&&id| matches!(graph.node(id).op, Op::Transpose { .. }))
                .count();
            if transposes < 2 {
                continue;
            }
            let Some(in_dims) = graph.node(x).ty.shape.to_dims() else {
                continue;
            };
            let mut steps = Vec::with_capacity(chain.len());
            for &id in &chain {
                let Some(dims) = graph.node(id).ty.shape.to_dims() else {
                    break;
                };
                steps.push(match &graph.node(id).op {
                    Op::Transpose { perm } => Step::Transpose(perm.clone()),
                    _ => Step::Reshape(dims.to_vec()),
                });
            }
            if steps.len() != chain.len() {
                continue;
            }
            let Some(composed) = compose(&in_dims, &steps) else {
                continue;
            };
            let before = chain
                .iter()
                .map(|&id| describe(graph, id))
                .collect::<Vec<_>>()
                .join("; ");
            let name = graph.node(end).name.clone();
            let out_dims: Vec<i64> = graph
                .node(end)
                .ty
                .shape
                .to_dims()
                .map(|d| d.iter().map(|&v| v as i64).collect())
                .unwrap_or_default();
            let mut cur = x;
            let mut made = Vec::new();
            let moves = composed.perm.iter().enumerate().any(|(i, &p)| i != p);
            if moves && composed.atoms != in_dims.as_slice() {
                let shape = composed.atoms.iter().map(|&v| v as i64).collect();
                cur = graph.add(graph.unique_name(&name), Op::Reshape { shape }, &[cur])?;
                made.push(cur);
            }
            if moves {
                let op = Op::Transpose {
                    perm: composed.perm.clone(),
                };
                cur = graph.add(graph.unique_name(&name), op, &[cur])?;
                made.push(cur);
            }
            let out_atoms: Vec<usize> = composed.perm.iter().map(|&p| composed.atoms[p]).collect();
            if made.is_empty()
                || out_atoms
                    .iter()
                    .map(|&v| v as i64)
                    .ne(out_dims.iter().copied())
            {
                let op = Op::Reshape { shape: out_dims };
                cur = graph.add(graph.unique_name(&name), op, &[cur])?;
                made.push(cur);
            }
            let after = made
                .iter()
                .map(|&id| describe(graph, id))
                .collect::<Vec<_>>()
                .join("; ");
            replace_with_new(graph, cx, end, cur)?;
            for &id in chain.iter().rev().skip(1) {
                remove_if_dead(graph, cx, id)?;
            }
            cx.record(self.name(), format!("{before} -> {after}"));
            changed = true;
        }
        Ok(changed)
    }
}

/// The longest chain of transpose/reshape nodes ending at `end` whose earlier nodes feed only
/// the next one and are not pinned, in order, with the chain's input.
fn chain_ending_at(graph: &Graph, cx: &PassContext, end: NodeId) -> Option<(Vec<NodeId>, NodeId)> {
    let movement =
        |id: NodeId| matches!(graph.node(id).op, Op::Transpose { .. } | Op::Reshape { .. });
    if !movement(end) {
        return None;
    }
    let mut chain = vec![end];
    let mut x = graph.inputs(end)[0];
    while movement(x) && graph.users(x).len() == 1 && !super::rewrite::is_pinned(graph, cx, x) {
        chain.push(x);
        x = graph.inputs(x)[0];
    }
    chain.reverse();
    Some((chain, x))
}

/// One step of a chain, with what it needs to be composed.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Output axis `i` is input axis `perm[i]`.
    Transpose(Vec<usize>),
    /// The step's output dims.
    Reshape(Vec<usize>),
}

/// A chain as `reshape(x, atoms)`, `transpose(perm)` (then a reshape to the chain's output
/// dims, which the caller knows).
#[derive(Clone, Debug, PartialEq)]
struct Composed {
    /// The input's dims factored into atoms, in input order (size-1 atoms dropped, atoms
    /// adjacent in both orders merged).
    atoms: Vec<usize>,
    /// Output atom `i` is input atom `perm[i]`.
    perm: Vec<usize>,
}

/// Composes `steps` applied to a tensor of `in_dims`; `None` when a reshape does not split the
/// atoms evenly, a step does not fit the rank, or a dim is 0.
fn compose(in_dims: &[usize], steps: &[Step]) -> Option<Composed> {
    if in_dims.contains(&0) {
        return None;
    }
    // Atom sizes by id; `order` lists the atom ids of the input, outer to inner.
    let mut size: Vec<usize> = in_dims.to_vec();
    let mut order: Vec<usize> = (0..in_dims.len()).collect();
    // The current tensor: each axis a group of atom ids, outer to inner.
    let mut axes: Vec<Vec<usize>> = (0..in_dims.len()).map(|a| vec![a]).collect();
    for step in steps {
        match step {
            Step::Transpose(perm) => {
                if perm.len() != axes.len() {
                    return None;
                }
                axes = perm
                    .iter()
                    .map(|&p| axes.get(p).cloned())
                    .collect::<Option<_>>()?;
            }
            Step::Reshape(dims) => {
                let mut flat: Vec<usize> = axes.concat();
                let mut groups: Vec<Vec<usize>> = Vec::with_capacity(dims.len());
                // Regroup from the innermost atom outwards.
                for &d in dims.iter().rev() {
                    let mut group = Vec::new();
                    let mut left = d;
                    while left > 1 {
                        let atom = flat.pop()?;
                        let s = size[atom];
                        if left.is_multiple_of(s) {
                            group.push(atom);
                            left /= s;
                        } else if s.is_multiple_of(left) {
                            // Split the atom into (outer s / left, inner left): in the input
                            // order and in the flattened current order alike.
                            let (outer, inner) = (size.len(), size.len() + 1);
                            size.push(s / left);
                            size.push(left);
                            let at = order.iter().position(|&a| a == atom)?;
                            order.splice(at..=at, [outer, inner]);
                            flat.push(outer);
                            group.push(inner);
                            left = 1;
                        } else {
                            return None;
                        }
                    }
                    // Size-1 atoms belong to no dim in particular: keep them in this one.
                    while flat.last().is_some_and(|&a| size[a] == 1) {
                        group.extend(flat.pop());
                    }
                    group.reverse();
                    groups.push(group);
                }
                if flat.iter().any(|&a| size[a] != 1) {
                    return None;
                }
                groups.reverse();
                axes = groups;
            }
        }
    }
    // Drop size-1 atoms, then merge atoms adjacent in both orders.
    let out: Vec<usize> = axes
        .concat()
        .into_iter()
        .filter(|&a| size[a] != 1)
        .collect();
    let order: Vec<usize> = order.into_iter().filter(|&a| size[a] != 1).collect();
    let pos = |a: usize| order.iter().position(|&b| b == a);
    // Runs of output atoms that are consecutive input atoms.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &a in &out {
        match runs.last_mut() {
            Some(run) if pos(*run.last()?)? + 1 == pos(a)? => run.push(a),
            _ => runs.push(vec![a]),
        }
    }
    // Input order of the runs (each run starts at a distinct input position).
    let mut by_input: Vec<usize> = (0..runs.len()).collect();
    by_input.sort_by_key(|&r| pos(runs[r][0]));
    let atoms = by_input
        .iter()
        .map(|&r| runs[r].iter().map(|&a| size[a]).product())
        .collect();
    let perm = (0..runs.len())
        .map(|r| by_input.iter().position(|&q| q == r))
        .collect::<Option<Vec<usize>>>()?;
    Some(Composed { atoms, perm })
}

#[cfg(test)]
mod tests {
    use super::{Composed, Step, compose};

    /// ShuffleNet's NHWC channel shuffle (112 channels, 4 groups of 28) is one swap of the two
    /// channel factors.
    #[test]
    fn compose_movement_shuffle_is_one_swap() {
        let steps = [
            Step::Transpose(vec![0, 3, 1, 2]),
            Step::Reshape(vec![1, 4, 28, 56, 56]),
            Step::Transpose(vec![0, 2, 1, 3, 4]),
            Step::Reshape(vec![1, 112, 56, 56]),
            Step::Transpose(vec![0, 2, 3, 1]),
        ];
        let got = compose(&[1, 56, 56, 112], &steps).unwrap();
        assert_eq!(
            got,
            Composed {
                atoms: vec![3136, 4, 28],
                perm: vec![0, 2, 1],
            }
        );
    }

    /// Transposes that undo each other across a reshape compose to no transpose at all.
    #[test]
    fn compose_movement_round_trip_is_identity() {
        let steps = [
            Step::Transpose(vec![0, 3, 1, 2]),
            Step::Reshape(vec![2, 6, 15]),
            Step::Reshape(vec![2, 6, 3, 5]),
            Step::Transpose(vec![0, 2, 3, 1]),
        ];
        let got = compose(&[2, 3, 5, 6], &steps).unwrap();
        assert_eq!(got.perm, vec![0]);
        assert_eq!(got.atoms, vec![180]);
    }

    /// A reshape whose dims cut across atoms unevenly (6 x 4 read as 4 x 6) is not composed.
    #[test]
    fn compose_movement_gives_up_on_uneven_regrouping() {
        let steps = [
            Step::Transpose(vec![1, 0]),
            Step::Reshape(vec![6, 4]),
            Step::Transpose(vec![1, 0]),
        ];
        assert_eq!(compose(&[6, 4], &steps), None);
    }
}
