//! `fuse-elementwise`: a chain or tree of elementwise ops (unary, binary with broadcasting,
//! NHWC bias_add) whose inner values nothing else reads becomes one `elementwise` node: one
//! kernel, one pass over memory, no intermediate stored. Grouping rules are in `fusion.rs`;
//! main ops are left to `fuse-epilogues`, which runs first.
//!
//! ```text
//! %m = mul(%a, %b); %s = add(%m, %c); %y = relu(%s)
//!   -> %y = elementwise(%a, %b, %c, expr="relu(add(mul($0, $1), $2))")
//! ```

use super::fusion::fuse_to_fixed_point;
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
        fuse_to_fixed_point(graph, cx, self.name(), false)
    }
}
