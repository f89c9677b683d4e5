"""Golden cases of the contraction, window and elementwise ops (conv2d, depthwise_conv2d, pools,
matmul, unary, binary, bias_add). See gen.py."""

import numpy as np
import tensorflow as tf

from kiln_case import (
    Case, check, f32, kiln_padding, naive_conv, naive_depthwise, naive_grouped_conv, naive_pool, tf_padding,
    to_nchw,
)

# ---------------------------------------------------------------------------------------------
# Convolutions


def conv_case(name, xshape, wshape, strides=(1, 1), padding="SAME", dilations=(1, 1),
              nchw=False, depthwise=False, unknown=(), how="npy", kind="const", tol=None):
    c = Case(name, tol)
    x = c.uniform(xshape)
    w = c.uniform(wshape)
    if how != "npy":
        w = np.round(w, 2)  # short literals
    c.input("x", to_nchw(x) if nchw else x, unknown)
    c.source(kind, "w", w, how)
    if depthwise:
        got = tf.nn.depthwise_conv2d(x, w, [1, *strides, 1], tf_padding(padding), dilations=list(dilations))
        ref = naive_depthwise(x, w, strides, padding, dilations)
    else:
        got = tf.nn.conv2d(x, w, list(strides), tf_padding(padding), dilations=list(dilations))
        ref = naive_grouped_conv(x, w, strides, padding, dilations)
    got = got.numpy()
    check(name, got, ref)
    attrs = {"strides": list(strides), "padding": kiln_padding(padding)}
    if tuple(dilations) != (1, 1):
        attrs["dilations"] = list(dilations)
    if nchw:
        attrs["data_format"] = "NCHW"
        got = to_nchw(got)
    c.op("y", "depthwise_conv2d" if depthwise else "conv2d", ["x", "w"], got, **attrs)
    c.output("y")
    return c


def conv_cases():
    return [
        conv_case("conv2d_same_s1_k3", [1, 5, 5, 2], [3, 3, 2, 4]),
        conv_case("conv2d_valid_s1_k3", [2, 6, 7, 3], [3, 3, 3, 2]),
        conv_case("conv2d_same_s2_odd7", [1, 7, 7, 2], [3, 3, 2, 3], strides=(2, 2)),
        conv_case("conv2d_same_s2_even8", [1, 8, 8, 2], [3, 3, 2, 3], strides=(2, 2)),
        conv_case("conv2d_same_s2_k4_odd13", [1, 13, 13, 1], [4, 4, 1, 2], strides=(2, 2)),
        conv_case("conv2d_same_s1_k2_even_kernel", [1, 6, 5, 2], [2, 2, 2, 2]),
        conv_case("conv2d_valid_s2_odd13", [1, 13, 13, 2], [3, 3, 2, 2], strides=(2, 2), padding="VALID"),
        conv_case("conv2d_same_s3_k5_size31", [1, 31, 31, 1], [5, 5, 1, 2], strides=(3, 3)),
        conv_case("conv2d_same_strides_2x1", [1, 7, 6, 2], [3, 3, 2, 2], strides=(2, 1)),
        conv_case("conv2d_same_dilation2", [1, 9, 9, 2], [3, 3, 2, 2], dilations=(2, 2)),
        conv_case("conv2d_valid_dilation2", [1, 9, 8, 2], [3, 3, 2, 3], padding="VALID", dilations=(2, 2)),
        conv_case("conv2d_same_dilation_2x1", [1, 8, 7, 1], [3, 2, 1, 2], dilations=(2, 1)),
        conv_case("conv2d_explicit_pad", [1, 6, 7, 2], [3, 3, 2, 3], padding=((1, 2), (0, 1))),
        conv_case("conv2d_explicit_pad_s2", [2, 7, 7, 1], [3, 2, 1, 2], strides=(2, 2), padding=((2, 0), (1, 1))),
        conv_case("conv2d_nchw_same", [2, 5, 6, 3], [3, 3, 3, 4], nchw=True),
        conv_case("conv2d_nchw_valid_s2", [1, 9, 9, 2], [3, 3, 2, 3], strides=(2, 2), padding="VALID", nchw=True),
        conv_case("conv2d_nchw_explicit_dilation2", [1, 8, 8, 2], [3, 3, 2, 2], padding=((1, 1), (2, 0)),
                  dilations=(2, 2), nchw=True),
        conv_case("conv2d_pointwise_1x1", [2, 7, 7, 8], [1, 1, 8, 16]),
        conv_case("conv2d_kernel_equals_input_valid", [1, 5, 5, 3], [5, 5, 3, 2], padding="VALID"),
        conv_case("conv2d_rect_kernel_1x5", [1, 7, 13, 2], [1, 5, 2, 3]),
        conv_case("conv2d_size1_spatial", [3, 1, 1, 4], [1, 1, 4, 5], padding="VALID"),
        conv_case("conv2d_prime_31x31_c3_c5", [1, 31, 31, 3], [3, 3, 3, 5]),
        conv_case("conv2d_unknown_batch", [3, 6, 6, 2], [3, 3, 2, 4], unknown=(0,)),
        conv_case("conv2d_var_literal_weights", [1, 4, 4, 1], [2, 2, 1, 2], how="nested", kind="var"),
        conv_case("conv2d_many_channels_32_16", [1, 7, 7, 32], [3, 3, 32, 16]),
        # Grouped (TF 2): x has groups * w's cin channels.
        conv_case("conv2d_grouped_g2_same_s2", [1, 7, 7, 4], [3, 3, 2, 6], strides=(2, 2)),
        conv_case("conv2d_grouped_g4_valid_s2", [2, 8, 7, 8], [3, 3, 2, 8], strides=(2, 2), padding="VALID"),
        conv_case("conv2d_grouped_g4_cin1_same", [1, 6, 6, 4], [3, 3, 1, 4]),
        conv_case("conv2d_grouped_g2_thick_s2", [1, 6, 6, 64], [3, 3, 32, 16], strides=(2, 2)),
        conv_case("conv2d_grouped_g2_pointwise", [1, 5, 5, 6], [1, 1, 3, 4], padding="VALID"),
        conv_case("conv2d_grouped_g2_nchw_s2", [1, 7, 6, 4], [3, 3, 2, 4], strides=(2, 2), nchw=True),
        conv_case("depthwise_same_m1", [1, 7, 7, 3], [3, 3, 3, 1], depthwise=True),
        conv_case("depthwise_valid_m2", [2, 6, 5, 2], [3, 3, 2, 2], padding="VALID", depthwise=True),
        conv_case("depthwise_same_s2_m3_odd", [1, 7, 7, 2], [3, 3, 2, 3], strides=(2, 2), depthwise=True),
        conv_case("depthwise_same_s2_even", [1, 8, 8, 4], [3, 3, 4, 1], strides=(2, 2), depthwise=True),
        conv_case("depthwise_dilation2_m2", [1, 9, 9, 2], [3, 3, 2, 2], dilations=(2, 2), depthwise=True),
        conv_case("depthwise_explicit_pad_m2", [1, 6, 7, 3], [3, 3, 3, 2], padding=((0, 2), (1, 0)), depthwise=True),
        conv_case("depthwise_nchw_m2", [2, 5, 5, 3], [3, 3, 3, 2], nchw=True, depthwise=True),
        conv_case("depthwise_unknown_batch_m1", [2, 13, 13, 4], [5, 5, 4, 1], unknown=(0,), depthwise=True),
    ]


def seed_case():
    # The seed case: one 100x100 grey image, a 5x5 kernel, SAME padding, batch unknown.
    c = Case("seed_conv_100x100_k5_same")
    x = c.input("image", c.uniform([1, 100, 100, 1], 0.0, 1.0), unknown=(0,))
    w = c.var("kernel", c.normal([5, 5, 1, 1]))
    got = tf.nn.conv2d(x, w, 1, "SAME")
    check(c.name, got, naive_conv(x, w, (1, 1), "SAME", (1, 1)))
    c.op("conv", "conv2d", ["image", "kernel"], got, strides=[1, 1], padding="SAME")
    c.output("conv")
    return [c]


# ---------------------------------------------------------------------------------------------
# Pools


def pool_case(name, xshape, ksize, strides, padding, kind, nchw=False, lo=-1.0, hi=1.0, unknown=()):
    c = Case(name)
    x = c.uniform(xshape, lo, hi)
    c.input("x", to_nchw(x) if nchw else x, unknown)
    if isinstance(padding, str):
        fn = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
        got = fn(x, list(ksize), list(strides), padding).numpy()
    else:
        # TF's avg pool has no explicit padding: pad, pool VALID, and divide by the pooled
        # count of real cells (padded cells never count). Max pads with -inf, which never wins.
        pads = tf_padding(padding)
        if kind == "max":
            got = tf.nn.max_pool2d(tf.pad(x, pads, constant_values=-np.inf), list(ksize), list(strides), "VALID")
        else:
            s = tf.nn.avg_pool2d(tf.pad(x, pads), list(ksize), list(strides), "VALID")
            m = tf.nn.avg_pool2d(tf.pad(tf.ones_like(x), pads), list(ksize), list(strides), "VALID")
            got = s / m
        got = got.numpy()
    check(name, got, naive_pool(x, ksize, strides, padding, kind))
    attrs = {"ksize": list(ksize), "strides": list(strides), "padding": kiln_padding(padding)}
    if nchw:
        attrs["data_format"] = "NCHW"
        got = to_nchw(got)
    c.op("y", "max_pool" if kind == "max" else "avg_pool", ["x"], got, **attrs)
    c.output("y")
    return c


def pool_cases():
    return [
        pool_case("max_pool_valid_k2_s2_even", [1, 8, 8, 3], (2, 2), (2, 2), "VALID", "max"),
        pool_case("max_pool_same_k3_s2_odd7", [2, 7, 7, 2], (3, 3), (2, 2), "SAME", "max"),
        pool_case("max_pool_same_k3_s1", [1, 5, 6, 2], (3, 3), (1, 1), "SAME", "max"),
        pool_case("max_pool_same_k2_s2_odd13", [1, 13, 13, 1], (2, 2), (2, 2), "SAME", "max"),
        pool_case("max_pool_same_negative_inputs", [1, 7, 7, 2], (3, 3), (2, 2), "SAME", "max", lo=-3.0, hi=-1.0),
        pool_case("max_pool_nchw_same_s2", [1, 7, 6, 3], (3, 3), (2, 2), "SAME", "max", nchw=True),
        pool_case("max_pool_explicit_pad_negative", [1, 6, 6, 2], (3, 3), (2, 2), ((1, 0), (0, 1)), "max",
                  lo=-2.0, hi=-0.5),
        pool_case("max_pool_rect_k2x3_s1x2", [1, 7, 9, 2], (2, 3), (1, 2), "VALID", "max"),
        pool_case("max_pool_unknown_batch", [3, 6, 6, 2], (2, 2), (2, 2), "SAME", "max", unknown=(0,)),
        pool_case("avg_pool_same_k3_s1_borders", [1, 5, 5, 2], (3, 3), (1, 1), "SAME", "avg"),
        pool_case("avg_pool_valid_k2_s2", [2, 8, 6, 3], (2, 2), (2, 2), "VALID", "avg"),
        pool_case("avg_pool_same_k3_s2_odd7", [1, 7, 7, 2], (3, 3), (2, 2), "SAME", "avg"),
        pool_case("avg_pool_same_k2_s2_odd31", [1, 31, 31, 1], (2, 2), (2, 2), "SAME", "avg"),
        pool_case("avg_pool_nchw_same_k3_s2", [2, 6, 7, 2], (3, 3), (2, 2), "SAME", "avg", nchw=True),
        pool_case("avg_pool_explicit_pad", [1, 6, 5, 2], (3, 3), (2, 1), ((1, 1), (2, 0)), "avg"),
        pool_case("avg_pool_rect_k3x2_s2x1_same", [1, 9, 7, 3], (3, 2), (2, 1), "SAME", "avg"),
        pool_case("avg_pool_global_valid", [2, 7, 7, 4], (7, 7), (1, 1), "VALID", "avg"),
    ]


# ---------------------------------------------------------------------------------------------
# Elementwise


UNARY = {
    "neg": (tf.math.negative, -3, 3),
    "abs": (tf.math.abs, -3, 3),
    "relu": (tf.nn.relu, -3, 3),
    "relu6": (tf.nn.relu6, -8, 9),
    "sigmoid": (tf.math.sigmoid, -8, 8),
    "tanh": (tf.math.tanh, -4, 4),
    "exp": (tf.math.exp, -5, 5),
    "log": (tf.math.log, 0.01, 10),
    "sqrt": (tf.math.sqrt, 0.01, 10),
    "rsqrt": (tf.math.rsqrt, 0.05, 10),
    "square": (tf.math.square, -3, 3),
}

UNARY_SHAPES = [[2, 3, 4], [7], [13, 1], [31], [1, 5, 5, 2]]


def unary_cases():
    out = []
    for i, (op, (fn, lo, hi)) in enumerate(sorted(UNARY.items())):
        shape = UNARY_SHAPES[i % len(UNARY_SHAPES)]
        c = Case("unary_%s" % op)
        x = c.input("x", c.uniform(shape, lo, hi), unknown=(0,) if i % 3 == 0 else ())
        c.op("y", op, ["x"], fn(x))
        c.output("y")
        out.append(c)
    for name, alpha in [("leaky_relu_default_alpha", None), ("leaky_relu_alpha_0.1", 0.1),
                        ("leaky_relu_alpha_0.5", 0.5)]:
        c = Case("unary_" + name)
        x = c.input("x", c.uniform([4, 7], -3, 3))
        attrs = {} if alpha is None else {"alpha": alpha}
        c.op("y", "leaky_relu", ["x"], tf.nn.leaky_relu(x, 0.2 if alpha is None else alpha), **attrs)
        c.output("y")
        out.append(c)
    # IEEE corner cases the catalogue states: log(0) = -inf, log(<0) = NaN, 1/sqrt(0) = inf,
    # exp overflow = inf, saturating sigmoid/tanh, relu/abs of -0 and of large values.
    special = f32([0.0, -1.0, 1e-30, 100.0, -100.0, 1e30, -0.0, 88.0, -88.0, 0.5])
    c = Case("unary_special_values")
    x = c.input("x", special)
    ops = ["log", "sqrt", "rsqrt", "exp", "sigmoid", "tanh", "relu6", "abs", "square"]
    for op in ops:
        with np.errstate(all="ignore"):
            c.op(op, op, ["x"], UNARY[op][0](x))
    c.output(*ops)
    out.append(c)
    return out


BINARY = {
    "add": tf.math.add,
    "sub": tf.math.subtract,
    "mul": tf.math.multiply,
    "div": tf.math.divide,
    "maximum": tf.math.maximum,
    "minimum": tf.math.minimum,
    "pow": tf.math.pow,
}


def binary_case(name, op, ashape, bshape, a_src="input", b_src="input", unknown=()):
    c = Case(name)
    positive = op == "pow"
    a = c.uniform(ashape, 0.1, 3.0) if positive else c.uniform(ashape, -3, 3)
    b = c.uniform(bshape, -2.0, 3.0) if positive else c.uniform(bshape, -3, 3)
    if op == "div":
        b = np.where(np.abs(b) < 0.25, f32(0.5), b).astype(np.float32)  # keep quotients moderate
    for nm, arr, src in [("a", a, a_src), ("b", b, b_src)]:
        if src == "input":
            c.input(nm, arr, unknown if nm == "a" else ())
        else:
            c.const(nm, np.round(arr, 2) if src != "npy" else arr, src)
    c.op("y", op, ["a", "b"], BINARY[op](c["a"], c["b"]))
    c.output("y")
    return c


def binary_cases():
    out = []
    for op in sorted(BINARY):
        out.append(binary_case("binary_%s_same_shape" % op, op, [3, 5], [3, 5]))
    out += [
        binary_case("binary_add_bcast_rank3_rank1", "add", [2, 3, 4], [4]),
        binary_case("binary_sub_bcast_col_row", "sub", [3, 1], [1, 5]),
        binary_case("binary_mul_scalar_matrix", "mul", [], [4, 6], a_src="flat"),
        binary_case("binary_div_bcast_rank3_rank2", "div", [4, 1, 3], [2, 1]),
        binary_case("binary_maximum_bcast_rank3_col", "maximum", [2, 3, 4], [3, 1]),
        binary_case("binary_minimum_matrix_scalar_input", "minimum", [5, 7], []),
        binary_case("binary_pow_bcast_rank2_rank1", "pow", [3, 4], [4], b_src="flat"),
        binary_case("binary_add_size1_dims", "add", [1, 1], [1]),
        binary_case("binary_mul_bcast_both_ways_rank4", "mul", [2, 1, 4, 1], [1, 3, 1, 5]),
        binary_case("binary_sub_unknown_batch_bcast", "sub", [3, 13], [13], b_src="npy", unknown=(0,)),
        binary_case("binary_add_prime_31", "add", [31, 7], [31, 1]),
    ]
    # IEEE corner cases: x/0, 0/0, NaN propagation through maximum/minimum.
    c = Case("binary_special_values")
    a = c.input("a", f32([1.0, -1.0, 0.0, np.nan, 2.0, np.nan, np.inf, -np.inf]))
    b = c.input("b", f32([0.0, 0.0, 0.0, 1.0, np.nan, np.nan, 1.0, np.inf]))
    ops = ["div", "maximum", "minimum", "add", "mul"]
    for op in ops:
        with np.errstate(all="ignore"):
            c.op(op, op, ["a", "b"], BINARY[op](a, b))
    c.output(*ops)
    out.append(c)
    return out


def bias_add_cases():
    out = []
    for name, xshape, fmt in [
        ("bias_add_nhwc", [2, 5, 5, 3], "NHWC"),
        ("bias_add_nchw", [2, 3, 5, 4], "NCHW"),
        ("bias_add_rank2", [4, 7], "NHWC"),
    ]:
        c = Case(name)
        x = c.input("x", c.uniform(xshape), unknown=(0,) if fmt == "NHWC" else ())
        cdim = xshape[1] if fmt == "NCHW" else xshape[-1]
        b = c.const("b", np.round(c.uniform([cdim]), 2), "flat")
        attrs = {"data_format": fmt} if fmt == "NCHW" else {}
        c.op("y", "bias_add", ["x", "b"], tf.nn.bias_add(x, b, data_format=fmt), **attrs)
        c.output("y")
        out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# Contractions


def matmul_case(name, ashape, bshape, ta=False, tb=False, b_const=False, unknown=()):
    c = Case(name)
    a = c.input("a", c.uniform(ashape), unknown)
    b = c.const("b", c.uniform(bshape)) if b_const else c.input("b", c.uniform(bshape))
    attrs = {}
    if ta:
        attrs["transpose_a"] = True
    if tb:
        attrs["transpose_b"] = True
    got = tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb)
    sw = (lambda m, t: np.swapaxes(m, -1, -2) if t else m)
    check(name, got, np.matmul(sw(a.astype(np.float64), ta), sw(b.astype(np.float64), tb)))
    c.op("y", "matmul", ["a", "b"], got, **attrs)
    c.output("y")
    return c


def matmul_cases():
    return [
        matmul_case("matmul_3x4_4x5", [3, 4], [4, 5]),
        matmul_case("matmul_transpose_a", [4, 3], [4, 5], ta=True),
        matmul_case("matmul_transpose_b", [3, 4], [5, 4], tb=True),
        matmul_case("matmul_transpose_both", [4, 3], [5, 4], ta=True, tb=True),
        matmul_case("matmul_prime_7x13_13x31", [7, 13], [13, 31]),
        matmul_case("matmul_row_col_1x13_13x1", [1, 13], [13, 1]),
        matmul_case("matmul_col_row_5x1_1x6", [5, 1], [1, 6]),
        matmul_case("matmul_unknown_batch_const_b", [6, 13], [13, 7], b_const=True, unknown=(0,)),
        matmul_case("matmul_large_k_4x257_257x9", [4, 257], [257, 9]),
        matmul_case("matmul_batched_2x3x4_2x4x5", [2, 3, 4], [2, 4, 5]),
        matmul_case("matmul_batched_transpose_a", [3, 4, 3], [3, 4, 5], ta=True),
        matmul_case("matmul_batched_transpose_b", [2, 7, 4], [2, 6, 4], tb=True),
        matmul_case("matmul_batched_transpose_both", [2, 5, 3], [2, 4, 5], ta=True, tb=True),
        matmul_case("matmul_batched_size1", [1, 1, 3], [1, 3, 1]),
    ]
