//! `kiln view`: a self-contained interactive HTML page of a graph. Name scopes fold and
//! unfold, nodes show their op and type and, on click, attributes, FLOPs, operands and
//! consumers; an optimised graph links each rewritten node to what it came from, and a
//! profiled one colours nodes by their share of the run time.
//!
//! - [`edges`]: the graph's operands and consumers by position, read by the two below;
//! - [`scopes`]: the tree of name scopes and which are folded by default;
//! - [`layout`]: the layered layout (computed here, not in the browser);
//! - `scope_layouts`: the layout of every scope's items, deepest first;
//! - `model`: what the page shows of every node and scope, as JSON;
//! - [`page`]: the HTML, with `viewer.js` and `viewer.css` inline.

pub mod edges;
pub(crate) mod json;
pub mod layout;
mod model;
mod page;
mod scope_layouts;
pub mod scopes;

pub use model::{Extras, NodeTimes};
pub use page::page;

use kiln_ir::backend::KernelTime;

impl NodeTimes {
    /// Mean milliseconds per run of each kernel, by the node it stores (the kernel's name),
    /// from times summed over `runs` runs.
    pub fn from_kernels(times: &[KernelTime], runs: usize) -> NodeTimes {
        let mut out = NodeTimes::default();
        for t in times {
            let ms = t.nanos as f64 / runs.max(1) as f64 / 1e6;
            let entry = out
                .by_node
                .entry(t.kernel.clone())
                .or_insert_with(|| (0.0, t.ops_text()));
            entry.0 += ms;
            out.total_ms += ms;
        }
        out
    }
}
