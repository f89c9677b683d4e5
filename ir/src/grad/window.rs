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
use crate::op::{ConvAttrs, Op};
use crate::{Error, Result};

pub(super) fn grad(cx: &mut Ctx<'_>, op: &Op, n: NodeId, g: NodeId, needs: &[bool]) -> Grads {
    let operands = cx.graph.inputs(n);
    let x = operands[0];
    match op {
        Op::Conv2d(attrs) | Op::DepthwiseConv2d(attrs) => {
            let depthwise = matches!(op, Op::DepthwiseConv2d(_));
            let w = operands[1];
            let dx = match needs[0] {
                true => Some(backprop_input(
                    cx,
                    depthwise,
                    input_shape(cx, n, x)?,
                    attrs,
                    w,
                    g,
                )?),
                false => None,
            };
            let dw = match needs[1] {
                true => Some(backprop_filter(
                    cx,
                    depthwise,
                    filter_shape(cx, n, w)?,
                    attrs,
                    x,
                    g,
                )?),
                false => None,
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
        // backprop_input(w, dy): dw = backprop_filter(g, dy), ddy = conv(g, w).
        Op::Conv2dBackpropInput { attrs, .. } | Op::DepthwiseConv2dBackpropInput { attrs, .. } => {
            let depthwise = matches!(op, Op::DepthwiseConv2dBackpropInput { .. });
            let (w, dy) = (operands[0], operands[1]);
            let dw = match needs[0] {
                true => Some(backprop_filter(
                    cx,
                    depthwise,
                    filter_shape(cx, n, w)?,
                    attrs,
                    g,
                    dy,
                )?),
                false => None,
            };
            let ddy = match needs[1] {
                true => Some(forward(cx, depthwise, attrs, g, w)?),
                false => None,
            };
            Ok(vec![dw, ddy])
        }
        // backprop_filter(x, dy): dx = backprop_input(g, dy), ddy = conv(x, g).
        Op::Conv2dBackpropFilter { attrs, .. }
        | Op::DepthwiseConv2dBackpropFilter { attrs, .. } => {
            let depthwise = matches!(op, Op::DepthwiseConv2dBackpropFilter { .. });
            let dy = operands[1];
            let dx = match needs[0] {
                true => Some(backprop_input(
                    cx,
                    depthwise,
                    input_shape(cx, n, x)?,
                    attrs,
                    g,
                    dy,
                )?),
                false => None,
            };
            let ddy = match needs[1] {
                true => Some(forward(cx, depthwise, attrs, x, g)?),
                false => None,
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

/// `conv2d(x, w)` or `depthwise_conv2d(x, w)`.
fn forward(
    cx: &mut Ctx<'_>,
    depthwise: bool,
    attrs: &ConvAttrs,
    x: NodeId,
    w: NodeId,
) -> Result<NodeId> {
    let op = if depthwise {
        Op::DepthwiseConv2d(*attrs)
    } else {
        Op::Conv2d(*attrs)
    };
    cx.add(op.name(), op, &[x, w])
}

/// The (depthwise) convolution's input gradient from filter `w` and output gradient `dy`.
fn backprop_input(
    cx: &mut Ctx<'_>,
    depthwise: bool,
    input_shape: [i64; 4],
    attrs: &ConvAttrs,
    w: NodeId,
    dy: NodeId,
) -> Result<NodeId> {
    let attrs = *attrs;
    let op = if depthwise {
        Op::DepthwiseConv2dBackpropInput { input_shape, attrs }
    } else {
        Op::Conv2dBackpropInput { input_shape, attrs }
    };
    cx.add(op.name(), op, &[w, dy])
}

/// The (depthwise) convolution's filter gradient from input `x` and output gradient `dy`.
fn backprop_filter(
    cx: &mut Ctx<'_>,
    depthwise: bool,
    filter_shape: [usize; 4],
    attrs: &ConvAttrs,
    x: NodeId,
    dy: NodeId,
) -> Result<NodeId> {
    let attrs = *attrs;
    let op = if depthwise {
        Op::DepthwiseConv2dBackpropFilter {
            filter_shape,
            attrs,
        }
    } else {
        Op::Conv2dBackpropFilter {
            filter_shape,
            attrs,
        }
    };
    cx.add(op.name(), op, &[x, dy])
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
