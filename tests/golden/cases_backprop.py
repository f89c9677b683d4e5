"""Golden cases of the backward window ops (format version 3): conv2d_backprop_input and
conv2d_backprop_filter (one case computes both), their depthwise equivalents, max_pool_grad and
avg_pool_grad. See gen.py.

TensorFlow computes each gradient with GradientTape over the forward op and `dy` as the output
gradient, i.e. through its Conv2DBackpropInput / Conv2DBackpropFilter / MaxPoolGrad /
AvgPoolGrad kernels. TF's CPU kernels refuse two variants, which are computed from TF ops that
are mathematically the same: a grouped convolution is one TF gradient per group (its channel
blocks are independent), and a dilated one goes through tf.nn.atrous_conv2d. Each conv case is
also checked against the adjoint identity <conv(x,w), dy> == <x, dx> == <w, dw> in float64, so a
wrong TF call stops the script. NCHW cases compute in NHWC and transpose, as the forward cases do.
"""

import numpy as np
import tensorflow as tf

from kiln_case import (
    Case, check, f32, kiln_padding, naive_depthwise, naive_grouped_conv, naive_pool, tf_padding, to_nchw,
)

VERSION = "kiln 3"  # TRAINING_SINCE in ir/src/schema.rs


def _conv_group_grads(x, w, dy, strides, padding, dilations):
    """(dx, dw) of an ungrouped NHWC conv2d by GradientTape."""
    x, w, dy = tf.constant(x), tf.constant(w), tf.constant(dy)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        tape.watch(w)
        if tuple(dilations) != (1, 1):
            assert tuple(strides) == (1, 1) and dilations[0] == dilations[1] and isinstance(padding, str)
            y = tf.nn.atrous_conv2d(x, w, dilations[0], padding)
        else:
            y = tf.nn.conv2d(x, w, list(strides), tf_padding(padding))
    dx = tape.gradient(y, x, output_gradients=dy).numpy()
    dw = tape.gradient(y, w, output_gradients=dy).numpy()
    return dx, dw


def conv_grads(x, w, dy, strides, padding, dilations):
    """(dx, dw) of a possibly grouped NHWC conv2d: one TF gradient per channel group."""
    ci, co = w.shape[2], w.shape[3]
    groups = x.shape[3] // ci
    per = co // groups
    parts = [
        _conv_group_grads(x[..., g * ci:(g + 1) * ci], w[..., g * per:(g + 1) * per],
                          dy[..., g * per:(g + 1) * per], strides, padding, dilations)
        for g in range(groups)
    ]
    return np.concatenate([p[0] for p in parts], axis=3), np.concatenate([p[1] for p in parts], axis=3)


def backprop_case(name, xshape, wshape, strides=(1, 1), padding="SAME", dilations=(1, 1), nchw=False,
                  unknown_batch=False):
    c = Case(name)
    c.lines[0] = VERSION
    x, w = c.uniform(xshape), c.uniform(wshape)
    y = naive_grouped_conv(x, w, strides, padding, dilations)
    dy = c.uniform(y.shape)
    dx, dw = conv_grads(x, w, dy, strides, padding, dilations)
    # The adjoint identity, in float64: a wrong TF call (layout, padding) fails here.
    lhs = np.sum(y.astype(np.float64) * dy)
    for what, a, b in (("dx", x, dx), ("dw", w, dw)):
        rhs = np.sum(a.astype(np.float64) * b)
        if abs(lhs - rhs) > 1e-3 * (1 + abs(lhs)):
            raise SystemExit("%s: <conv(x,w),dy> = %g but <%s> gives %g" % (name, lhs, what, rhs))
    unknown = (0,) if unknown_batch else ()
    layout = to_nchw if nchw else (lambda a: a)
    c.input("x", layout(x), unknown)
    c.input("w", w)
    c.input("dy", layout(f32(dy)), unknown)
    attrs = {"strides": list(strides), "padding": kiln_padding(padding)}
    if tuple(dilations) != (1, 1):
        attrs["dilations"] = list(dilations)
    if nchw:
        attrs["data_format"] = "NCHW"
    in_shape = list(layout(x).shape)
    if unknown_batch:
        in_shape[0] = -1
    c.op("dx", "conv2d_backprop_input", ["w", "dy"], layout(dx), input_shape=in_shape, **attrs)
    c.op("dw", "conv2d_backprop_filter", ["x", "dy"], dw, filter_shape=list(w.shape), **attrs)
    c.output("dx", "dw")
    return c


def conv_backprop_cases():
    return [
        backprop_case("conv2d_backprop_same_s1_k3", [1, 5, 5, 2], [3, 3, 2, 4]),
        backprop_case("conv2d_backprop_same_s2_odd7", [2, 7, 7, 3], [3, 3, 3, 4], strides=(2, 2)),
        backprop_case("conv2d_backprop_same_s2_even8", [1, 8, 8, 2], [3, 3, 2, 3], strides=(2, 2)),
        backprop_case("conv2d_backprop_same_s2_k4_odd13", [1, 13, 13, 1], [4, 4, 1, 2], strides=(2, 2)),
        backprop_case("conv2d_backprop_same_strides_2x1", [1, 7, 6, 2], [3, 3, 2, 2], strides=(2, 1)),
        backprop_case("conv2d_backprop_valid_s2_unread_tail", [1, 9, 8, 2], [3, 3, 2, 3], strides=(2, 2),
                      padding="VALID"),
        backprop_case("conv2d_backprop_explicit_pad", [1, 6, 7, 2], [3, 3, 2, 3], padding=((1, 2), (0, 1))),
        backprop_case("conv2d_backprop_explicit_pad_s2", [2, 7, 7, 1], [3, 2, 1, 2], strides=(2, 2),
                      padding=((2, 0), (1, 1))),
        backprop_case("conv2d_backprop_same_dilation2", [1, 9, 9, 2], [3, 3, 2, 2], dilations=(2, 2)),
        backprop_case("conv2d_backprop_valid_dilation2", [1, 9, 8, 2], [3, 3, 2, 3], padding="VALID",
                      dilations=(2, 2)),
        backprop_case("conv2d_backprop_grouped_g2_same_s2", [1, 7, 7, 4], [3, 3, 2, 6], strides=(2, 2)),
        backprop_case("conv2d_backprop_grouped_g4_valid_s2", [2, 8, 7, 8], [3, 3, 2, 8], strides=(2, 2),
                      padding="VALID"),
        backprop_case("conv2d_backprop_nchw_same_s2", [2, 7, 6, 3], [3, 3, 3, 4], strides=(2, 2), nchw=True),
        backprop_case("conv2d_backprop_nchw_grouped_g2_s2", [1, 7, 6, 4], [3, 3, 2, 4], strides=(2, 2),
                      nchw=True),
        backprop_case("conv2d_backprop_nchw_valid_dilation2", [1, 9, 9, 2], [3, 3, 2, 2], padding="VALID",
                      dilations=(2, 2), nchw=True),
        backprop_case("conv2d_backprop_unknown_batch", [3, 6, 6, 2], [3, 3, 2, 4], unknown_batch=True),
        backprop_case("conv2d_backprop_thick_16_32", [1, 8, 8, 16], [3, 3, 16, 32]),
        backprop_case("conv2d_backprop_pointwise_1x1", [2, 5, 5, 8], [1, 1, 8, 16], padding="VALID"),
    ]


def _pool_forward(x, ksize, strides, padding, kind):
    """The forward pool of NHWC `x` in TF ops (explicit padding as the forward cases do it)."""
    if isinstance(padding, str):
        fn = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
        return fn(x, list(ksize), list(strides), padding)
    pads = tf_padding(padding)
    if kind == "max":
        return tf.nn.max_pool2d(tf.pad(x, pads, constant_values=-np.inf), list(ksize), list(strides), "VALID")
    s = tf.nn.avg_pool2d(tf.pad(x, pads), list(ksize), list(strides), "VALID")
    m = tf.nn.avg_pool2d(tf.pad(tf.ones_like(x), pads), list(ksize), list(strides), "VALID")
    return s / m


def pool_grad_case(name, xshape, ksize, strides, padding, kind, nchw=False, lo=-1.0, hi=1.0, ties=False,
                   unknown_batch=False):
    c = Case(name)
    c.lines[0] = VERSION
    x = c.uniform(xshape, lo, hi)
    if ties:
        x = f32(np.round(x * 2) / 2)  # few distinct values: windows with tied maxima
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = _pool_forward(xt, ksize, strides, padding, kind)
    check(name, y.numpy(), naive_pool(x, ksize, strides, padding, kind))
    g = c.uniform(y.shape)
    dx = tape.gradient(y, xt, output_gradients=tf.constant(g)).numpy()
    lhs, rhs = np.sum(y.numpy().astype(np.float64) * g), np.sum(x.astype(np.float64) * dx)
    if abs(lhs - rhs) > 1e-3 * (1 + abs(lhs)):
        raise SystemExit("%s: <pool(x), g> = %g but <x, dx> = %g" % (name, lhs, rhs))
    layout = to_nchw if nchw else (lambda a: a)
    unknown = (0,) if unknown_batch else ()
    attrs = {"ksize": list(ksize), "strides": list(strides), "padding": kiln_padding(padding)}
    if nchw:
        attrs["data_format"] = "NCHW"
    c.input("g", layout(g), unknown)
    if kind == "max":
        c.input("x", layout(x), unknown)
        c.op("y", "max_pool", ["x"], layout(y.numpy()), **attrs)
        c.op("dx", "max_pool_grad", ["x", "y", "g"], layout(dx), **attrs)
    else:
        shape = list(layout(x).shape)
        if unknown_batch:
            shape[0] = -1
        c.op("dx", "avg_pool_grad", ["g"], layout(dx), orig_input_shape=shape, **attrs)
    c.output("dx")
    return c


def pool_grad_cases():
    m, a = "max", "avg"
    return [
        pool_grad_case("max_pool_grad_valid_k2_s2", [1, 8, 8, 3], (2, 2), (2, 2), "VALID", m),
        pool_grad_case("max_pool_grad_same_k3_s2_odd7", [2, 7, 7, 2], (3, 3), (2, 2), "SAME", m),
        pool_grad_case("max_pool_grad_same_k3_s1_overlap", [1, 5, 6, 2], (3, 3), (1, 1), "SAME", m),
        pool_grad_case("max_pool_grad_same_k2_s2_odd13", [1, 13, 13, 1], (2, 2), (2, 2), "SAME", m),
        pool_grad_case("max_pool_grad_same_negative", [1, 7, 7, 2], (3, 3), (2, 2), "SAME", m, lo=-3.0, hi=-1.0),
        pool_grad_case("max_pool_grad_ties_k3_s1", [1, 6, 6, 2], (3, 3), (1, 1), "SAME", m, ties=True),
        pool_grad_case("max_pool_grad_ties_k2_s2", [2, 6, 5, 2], (2, 2), (2, 2), "SAME", m, ties=True),
        pool_grad_case("max_pool_grad_nchw_same_s2", [1, 7, 6, 3], (3, 3), (2, 2), "SAME", m, nchw=True),
        pool_grad_case("max_pool_grad_explicit_negative", [1, 6, 6, 2], (3, 3), (2, 2), ((1, 0), (0, 1)), m,
                       lo=-3.0, hi=-1.0),
        pool_grad_case("max_pool_grad_rect_k2x3_s1x2", [1, 7, 9, 2], (2, 3), (1, 2), "VALID", m),
        pool_grad_case("max_pool_grad_unknown_batch", [3, 6, 6, 2], (2, 2), (2, 2), "SAME", m, unknown_batch=True),
        pool_grad_case("avg_pool_grad_valid_k2_s2", [1, 8, 8, 3], (2, 2), (2, 2), "VALID", a),
        pool_grad_case("avg_pool_grad_same_k3_s1_borders", [1, 5, 6, 2], (3, 3), (1, 1), "SAME", a),
        pool_grad_case("avg_pool_grad_same_k3_s2_odd7", [2, 7, 7, 2], (3, 3), (2, 2), "SAME", a),
        pool_grad_case("avg_pool_grad_same_k2_s2_odd13", [1, 13, 13, 1], (2, 2), (2, 2), "SAME", a),
        pool_grad_case("avg_pool_grad_nchw_same_k3_s2", [1, 7, 6, 3], (3, 3), (2, 2), "SAME", a, nchw=True),
        pool_grad_case("avg_pool_grad_explicit_pad", [1, 6, 6, 2], (3, 3), (2, 2), ((1, 0), (0, 1)), a),
        pool_grad_case("avg_pool_grad_rect_k3x2_s2x1_same", [1, 7, 6, 2], (3, 2), (2, 1), "SAME", a),
        pool_grad_case("avg_pool_grad_unknown_batch", [3, 6, 6, 2], (2, 2), (2, 2), "SAME", a, unknown_batch=True),
    ]


def depthwise_backprop_case(name, xshape, wshape, strides=(1, 1), padding="SAME", dilations=(1, 1), nchw=False,
                            unknown_batch=False):
    c = Case(name)
    c.lines[0] = VERSION
    x, w = c.uniform(xshape), c.uniform(wshape)
    xt, wt = tf.constant(x), tf.constant(w)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        tape.watch(wt)
        y = tf.nn.depthwise_conv2d(xt, wt, [1, *strides, 1], tf_padding(padding), dilations=list(dilations))
    check(name, y.numpy(), naive_depthwise(x, w, strides, padding, dilations))
    dy = c.uniform(y.shape)
    dx = tape.gradient(y, xt, output_gradients=tf.constant(dy)).numpy()
    dw = tape.gradient(y, wt, output_gradients=tf.constant(dy)).numpy()
    lhs = np.sum(y.numpy().astype(np.float64) * dy)
    for what, a, b in (("dx", x, dx), ("dw", w, dw)):
        rhs = np.sum(a.astype(np.float64) * b)
        if abs(lhs - rhs) > 1e-3 * (1 + abs(lhs)):
            raise SystemExit("%s: <depthwise(x,w),dy> = %g but <%s> gives %g" % (name, lhs, what, rhs))
    unknown = (0,) if unknown_batch else ()
    layout = to_nchw if nchw else (lambda a: a)
    c.input("x", layout(x), unknown)
    c.input("w", w)
    c.input("dy", layout(dy), unknown)
    attrs = {"strides": list(strides), "padding": kiln_padding(padding)}
    if tuple(dilations) != (1, 1):
        attrs["dilations"] = list(dilations)
    if nchw:
        attrs["data_format"] = "NCHW"
    in_shape = list(layout(x).shape)
    if unknown_batch:
        in_shape[0] = -1
    c.op("dx", "depthwise_conv2d_backprop_input", ["w", "dy"], layout(dx), input_shape=in_shape, **attrs)
    c.op("dw", "depthwise_conv2d_backprop_filter", ["x", "dy"], dw, filter_shape=list(w.shape), **attrs)
    c.output("dx", "dw")
    return c


def depthwise_backprop_cases():
    return [
        depthwise_backprop_case("depthwise_backprop_same_m1", [1, 7, 7, 3], [3, 3, 3, 1]),
        depthwise_backprop_case("depthwise_backprop_valid_m2", [2, 6, 5, 2], [3, 3, 2, 2], padding="VALID"),
        depthwise_backprop_case("depthwise_backprop_same_s2_m3_odd", [1, 7, 7, 2], [3, 3, 2, 3], strides=(2, 2)),
        depthwise_backprop_case("depthwise_backprop_same_s2_even", [1, 8, 8, 4], [3, 3, 4, 1], strides=(2, 2)),
        depthwise_backprop_case("depthwise_backprop_dilation2_m2", [1, 9, 9, 2], [3, 3, 2, 2], dilations=(2, 2)),
        depthwise_backprop_case("depthwise_backprop_explicit_pad_m2", [1, 6, 7, 3], [3, 3, 3, 2],
                                padding=((0, 2), (1, 0))),
        depthwise_backprop_case("depthwise_backprop_nchw_m2_s2", [2, 5, 5, 3], [3, 3, 3, 2], strides=(2, 2),
                                nchw=True),
        depthwise_backprop_case("depthwise_backprop_unknown_batch_k5", [2, 13, 13, 4], [5, 5, 4, 1],
                                unknown_batch=True),
    ]
