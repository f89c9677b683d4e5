//! `fuse-elementwise`: a chain or tree of elementwise ops (unary, binary with broadcasting,
//! NHWC bias_add) whose inner values nothing else reads becomes one `elementwise` node: one
//! kernel, one pass over memory, no intermediate stored. Grouping rules are in `fusion.rs`;
//! main ops are left to `fuse-epilogues`, which runs first.
//!
//! ```text
//! %m = mul(%a, %b); %s = add(%m, %c); %y = relu(%s)
//!   -> %y = elementwise(%a, %b, %c, expr="relu(add(mul($0, $1), $2))")
//! ```

use super::fusion::{fuse_group, groups};
use super::{Pass, PassContext};
use crate::Result;
use crate::graph::Graph;

/// Fuses trees of elementwise ops into one node.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseElementwise;

impl Pass for FuseElementwise {
    fn name(&self) -> &'static str {
        "fuse-elementwise"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut changed = false;
        // Fusing can leave a value read only by the new node (a diamond's shared value), which
        // the next grouping absorbs; repeat until nothing fuses so one run is a fixed point.
        loop {
            let mut fused = false;
            for g in groups(graph, cx, false) {
                if g.main.is_some() || g.members.len() < 2 {
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
