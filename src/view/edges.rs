//! A graph's edges by position in a topological order: what the scope tree and the page model
//! both read.

use kiln_ir::{Graph, NodeId};
use std::collections::HashMap;

/// The nodes of a graph numbered by their place in a topological order, with their operands,
/// their consumers and the graph's outputs, all by number.
pub struct Edges {
    /// A node's number.
    pub index: HashMap<NodeId, usize>,
    /// Each node's operands, in operand order.
    pub inputs: Vec<Vec<usize>>,
    /// Each node's distinct consumers, in order.
    pub consumers: Vec<Vec<usize>>,
    /// The graph's outputs.
    pub outputs: Vec<usize>,
}

impl Edges {
    /// The edges of `graph` with its nodes numbered as in `order`.
    pub fn new(graph: &Graph, order: &[NodeId]) -> Edges {
        let index: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let inputs: Vec<Vec<usize>> = order
            .iter()
            .map(|&id| {
                graph
                    .inputs(id)
                    .iter()
                    .filter_map(|i| index.get(i).copied())
                    .collect()
            })
            .collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
        for (v, ins) in inputs.iter().enumerate() {
            for &u in ins {
                if !consumers[u].contains(&v) {
                    consumers[u].push(v);
                }
            }
        }
        let outputs: Vec<usize> = graph
            .outputs()
            .iter()
            .filter_map(|o| index.get(o).copied())
            .collect();
        Edges {
            index,
            inputs,
            consumers,
            outputs,
        }
    }
}
