//! Gradients of convolutions and pools, through the backward window ops (TensorFlow's
//! `_Conv2DGrad`, `_DepthwiseConv2dNativeGrad`, `_MaxPoolGrad`, `_AvgPoolGrad`): the input
//! gradient of a convolution is `*_backprop_input(w, g)`, the filter gradient
//! `*_backprop_filter(x, g)`; a max pool sends `g` to each window's maximum, an average pool
//! spreads it over each window's unpadded cells. The input's shape is an attribute of these
//! ops; a `?` batch is written `-1` (taken from `g` at run time).
//!
//! The backward ops are linear in each operand, so their own gradients are the other window
//! ops (TensorFlow's `_Conv2DBackpropInputGrad` and friends): backprop_input(w, dy) sends `g`
//! to dy as `conv2d(g, w)` and to w as `backprop_filter(g, dy)`; backprop_filter(x, dy) sends
//! it to x as `backprop_input(g, dy)` and to dy as `conv2d(x, g)`; avg_pool_grad's is
//! `avg_pool(g)`. max_pool_grad has none (it would need TensorFlow's MaxPoolGradGrad).

use super::{Ctx, Grads, no_gradient};
use crate::graph::NodeId;
use crate::op::Op;
use crate::{Error, Result};

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let operands = cx.graph.inputs(n);
    let x = operands[0];
    match op {
        Op::Conv2d(attrs) | Op::DepthwiseConv2d(attrs) => {
            let depthwise = matches!(op, Op::DepthwiseConv2d(_));
            let w = operands[1];
            let dx = if needs[0] {
                let input_shape = input_shape(cx, n, x)?;
                let (name, op) = if depthwise {
                    let op = Op::DepthwiseConv2dBackpropInput {
                        input_shape,
                        attrs: *attrs,
                    };
                    ("depthwise_conv2d_backprop_input", op)
                } else {
                    let op = Op::Conv2dBackpropInput {
                        input_shape,
                        attrs: *attrs,
                    };
                    ("conv2d_backprop_input", op)
                };
                Some(cx.add(name, op, &[w, g])?)
            } else {
                None
            };
            let dw = if needs[1] {
                let filter_shape = filter_shape(cx, n, w)?;
                let (name, op) = if depthwise {
                    let op = Op::DepthwiseConv2dBackpropFilter {
                        filter_shape,
                        attrs: *attrs,
                    };
                    ("depthwise_conv2d_backprop_filter", op)
                } else {
                    let op = Op::Conv2dBackpropFilter {
                        filter_shape,
                        attrs: *attrs,
                    };
                    ("conv2d_backprop_filter", op)
                };
                Some(cx.add(name, op, &[x, g])?)
            } else {
                None
            };
            Ok(vec![dx, dw])
        }
        Op::MaxPool(attrs) => {
            let dx = cx.add("max_pool_grad", Op::MaxPoolGrad(*attrs), &[x, n, g])?;
            Ok(vec![Some(dx)])
        }
        Op::AvgPool(attrs) => {
            let op = Op::AvgPoolGrad {
                orig_input_shape: input_shape(cx, n, x)?,
                attrs: *attrs,
            };
            Ok(vec![Some(cx.add("avg_pool_grad", op, &[g])?)])
        }
        Op::Conv2dBackpropInput { attrs, .. } | Op::DepthwiseConv2dBackpropInput { attrs, .. } => {
            let depthwise = matches!(op, Op::DepthwiseConv2dBackpropInput { .. });
            let (w, dy) = (operands[0], operands[1]);
            let dw = if needs[0] {
                let filter_shape = filter_shape(cx, n, w)?;
                let op = if depthwise {
                    Op::DepthwiseConv2dBackpropFilter {
                        filter_shape,
                        attrs: *attrs,
                    }
                } else {
                    Op::Conv2dBackpropFilter {
                        filter_shape,
                        attrs: *attrs,
                    }
                };
                Some(cx.add(op.name(), op, &[g, dy])?)
            } else {
                None
            };
            let ddy = if needs[1] {
                let op = if depthwise {
                    Op::DepthwiseConv2d(*attrs)
                } else {
                    Op::Conv2d(*attrs)
                };
                Some(cx.add(op.name(), op, &[g, w])?)
            } else {
                None
            };
            Ok(vec![dw, ddy])
        }
        Op::Conv2dBackpropFilter { attrs, .. }
        | Op::DepthwiseConv2dBackpropFilter { attrs, .. } => {
            let depthwise = matches!(op, Op::DepthwiseConv2dBackpropFilter { .. });
            let dy = operands[1];
            let dx = if needs[0] {
                let input_shape = input_shape(cx, n, x)?;
                let op = if depthwise {
                    Op::DepthwiseConv2dBackpropInput {
                        input_shape,
                        attrs: *attrs,
                    }
                } else {
                    Op::Conv2dBackpropInput {
                        input_shape,
                        attrs: *attrs,
                    }
                };
                Some(cx.add(op.name(), op, &[g, dy])?)
            } else {
                None
            };
            let ddy = if needs[1] {
                let op = if depthwise {
                    Op::DepthwiseConv2d(*attrs)
                } else {
                    Op::Conv2d(*attrs)
                };
                Some(cx.add(op.name(), op, &[x, g])?)
            } else {
                None
            };
            Ok(vec![dx, ddy])
        }
        Op::AvgPoolGrad { attrs, .. } => {
            Ok(vec![Some(cx.add("avg_pool", Op::AvgPool(*attrs), &[g])?)])
        }
        other => Err(no_gradient(format!(
            "{} is itself a gradient; its second derivative (TensorFlow's MaxPoolGradGrad) is \
             not supported",
            other.name()
        ))),
    }
}

/// x's shape for a backward op's attribute: its batch may be `?` (written -1), every other
/// dim must be known.
fn input_shape(cx: &Ctx<'_>, n: NodeId, x: NodeId) -> Result<[i64; 4]> {
    let t = cx.ty(x);
    let dims = t.shape.dims();
    let mut out = [0i64; 4];
    if dims.len() != 4 {
        return Err(unknown(cx, n, &format!("a rank-4 input, got {t}")));
    }
    for (i, d) in dims.iter().enumerate() {
        out[i] = match (i, d) {
            (_, Some(d)) => *d as i64,
            (0, None) => -1,
            _ => {
                return Err(unknown(
                    cx,
                    n,
                    &format!("the input's dims past the batch, got {t}"),
                ));
            }
        };
    }
    Ok(out)
}

/// A filter's shape, which must be known.
fn filter_shape(cx: &Ctx<'_>, n: NodeId, w: NodeId) -> Result<[usize; 4]> {
    let t = cx.ty(w);
    match t.shape.to_dims().as_deref() {
        Some(&[a, b, c, d]) => Ok([a, b, c, d]),
        _ => Err(unknown(
            cx,
            n,
            &format!("a filter of known rank-4 shape, got {t}"),
        )),
    }
}

fn unknown(cx: &Ctx<'_>, n: NodeId, what: &str) -> Error {
    let node = cx.graph.node(n);
    Error::Op {
        node: node.name.clone(),
        op: node.op.name(),
        message: format!("gradients: the gradient needs {what}"),
    }
}
