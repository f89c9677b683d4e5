//! `fuse-epilogues`: a conv2d, depthwise_conv2d, matmul, max_pool or avg_pool and the
//! elementwise ops only it feeds (bias_add, add of a bias or a skip connection, any
//! activation or chain of elementwise ops) become one `fused_<main>` node, whose kernel applies
//! the epilogue in registers before storing. Weights may be constants or variables: fusion
//! changes no values (the fused node evaluates the same ops in the same order). Grouping rules
//! are in `fusion.rs`.
//!
//! ```text
//! %c = conv2d(%x, %w, padding="SAME"); %b = bias_add(%c, %bias); %y = relu(%b)
//!   -> %y = fused_conv2d(%x, %w, %bias, padding="SAME", expr="relu(add(main, $2))")
//! ```

use super::fusion::fuse_to_fixed_point;
use super::{Pass, PassContext};
use crate::Result;
use crate::graph::Graph;

/// Fuses main ops with their elementwise epilogues.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseEpilogues;

impl Pass for FuseEpilogues {
    fn name(&self) -> &'static str {
        "fuse-epilogues"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        fuse_to_fixed_point(graph, cx, self.name(), true)
    }
}
