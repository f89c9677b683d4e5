//! Gradients of convolutions and pools, through the backward window ops.

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::Op;

pub(super) fn grad(_cx: &mut Ctx<'_>, op: &Op, _n: NodeId, _g: NodeId, _needs: &[bool]) -> Grads {
    Err(no_gradient(format!("{} needs the backward window ops", op.name())))
}
