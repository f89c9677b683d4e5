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

use super::fusion::{fuse_group, groups};
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
        let mut changed = false;
        // Fusing can leave a value read only by the new node (a diamond's shared value), which
        // the next grouping absorbs; repeat until nothing fuses so one run is a fixed point.
        loop {
            let mut fused = false;
            for g in groups(graph, cx, true) {
                if g.main.is_none() || g.members.len() < 2 {
                    continue;
                }
                let message = fuse_group(graph, cx, &g)?;
                cx.record(self.name(), message);
                fused = true;
            }
            if !fused {
                break;
            }
            changed = true;
        }
        Ok(changed)
    }
}
