//! Sources have no operands, so no rule runs for them; an assign's value is the variable's
//! new value, which TensorFlow does not differentiate through either.

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::Op;

pub(super) fn grad(_cx: &mut Ctx<'_>, op: &Op, _n: NodeId, _g: NodeId, _needs: &[bool]) -> Grads {
    Err(no_gradient(format!(
        "{} updates a variable; its value is not differentiated",
        op.name()
    )))
}
