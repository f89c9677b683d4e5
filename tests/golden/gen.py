#!/usr/bin/env python3
"""Generates kiln's golden conformance cases, with TensorFlow as the oracle.

Every case is a folder tests/golden/cases/<name>/ holding graph.kiln (the .kiln text format,
`kiln 1`, or `kiln 2` when it uses a version-2 op), inputs/<placeholder>.npy (feeds), expected/<output>.npy (TensorFlow's
result), weight .npy files referenced by npy("...") initialisers, and optionally tolerance.txt.
Feeds and results of index and mask values keep their dtype (int32, int64, bool).

TensorFlow computes every expected value; for the window ops a naive numpy implementation of the
catalogue's semantics (DESIGN.md) cross-checks that TF was called the intended way (layout
transposes, explicit padding), so a wrong TF call fails here instead of producing bad golden data.

Modules: kiln_case.py (the case builder and the naive references), cases_ops.py (contraction,
window and elementwise cases, grouped conv2d included), cases_indexing.py (lrn, argmax, gather,
cast: the cases with i32/i64/bool feeds and outputs), cases_losses.py (cross entropies, one_hot,
gather_grad, and the data of the builder-level training tests in training/), this file (reductions, movement, batch
norm, chained and multi-output graphs, and main).

Deterministic: each case seeds its own numpy generator from a CRC of its name, cases are written
in sorted order, and the cases/ folder is deleted and rewritten on every run.

Usage: pip install tensorflow-cpu numpy && python3 tests/golden/gen.py
"""

import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of tests/golden/

# kiln_case sets TensorFlow's environment (oneDNN off, quiet logs), so it loads before TF.
from kiln_case import Case, f32  # noqa: E402, I001
import cases_grad  # noqa: E402
import cases_backprop  # noqa: E402
import cases_indexing  # noqa: E402
import cases_logic  # noqa: E402
import cases_losses  # noqa: E402
import cases_ops  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parent
CASES = ROOT / "cases"

# ---------------------------------------------------------------------------------------------
# Reductions and softmax


REDUCE = {
    "reduce_sum": tf.math.reduce_sum,
    "reduce_mean": tf.math.reduce_mean,
    "reduce_max": tf.math.reduce_max,
    "reduce_min": tf.math.reduce_min,
}


def reduce_case(name, op, shape, axes, keepdims=False, unknown=()):
    c = Case(name)
    x = c.input("x", c.uniform(shape, -3, 3), unknown)
    attrs = {}
    if axes is not None:
        attrs["axes"] = list(axes)
    if keepdims:
        attrs["keepdims"] = True
    c.op("y", op, ["x"], REDUCE[op](x, axis=axes, keepdims=keepdims), **attrs)
    c.output("y")
    return c


def reduce_cases():
    return [
        reduce_case("reduce_sum_axis1", "reduce_sum", [3, 5, 4], [1]),
        reduce_case("reduce_sum_all", "reduce_sum", [4, 7, 3], None),
        reduce_case("reduce_sum_axes_0_2_keepdims", "reduce_sum", [3, 4, 5], [0, 2], True),
        reduce_case("reduce_sum_size1_axis", "reduce_sum", [4, 1, 3], [1]),
        reduce_case("reduce_sum_spatial_nhwc", "reduce_sum", [2, 13, 13, 3], [1, 2], unknown=(0,)),
        reduce_case("reduce_mean_axes_0_2", "reduce_mean", [3, 4, 5], [0, 2]),
        reduce_case("reduce_mean_all_keepdims", "reduce_mean", [2, 3, 4], None, True),
        reduce_case("reduce_mean_negative_axis", "reduce_mean", [5, 31], [-1]),
        reduce_case("reduce_mean_spatial_keepdims", "reduce_mean", [2, 7, 7, 4], [1, 2], True),
        reduce_case("reduce_max_last_axis", "reduce_max", [3, 4, 7], [-1]),
        reduce_case("reduce_max_all", "reduce_max", [5, 6], None),
        reduce_case("reduce_max_axis0_keepdims", "reduce_max", [6, 5], [0], True),
        reduce_case("reduce_min_negative_axes_keepdims", "reduce_min", [3, 4, 5], [-2, 0], True),
        reduce_case("reduce_min_all", "reduce_min", [2, 3, 4, 5], None),
        reduce_case("reduce_min_middle_axis", "reduce_min", [2, 13, 3], [1]),
    ]


def softmax_case(name, op, shape, axis=None, scale=3.0, offset=0.0):
    c = Case(name)
    x = c.input("x", c.uniform(shape, -scale, scale) + f32(offset))
    fn = tf.nn.softmax if op == "softmax" else tf.nn.log_softmax
    attrs = {} if axis is None else {"axis": axis}
    c.op("y", op, ["x"], fn(x, axis=-1 if axis is None else axis), **attrs)
    c.output("y")
    return c


def softmax_cases():
    return [
        softmax_case("softmax_default_axis", "softmax", [4, 7]),
        softmax_case("softmax_axis0", "softmax", [5, 3], axis=0),
        softmax_case("softmax_axis1_rank3", "softmax", [2, 6, 3], axis=1),
        softmax_case("softmax_negative_axis2", "softmax", [2, 3, 5, 4], axis=-2),
        softmax_case("softmax_large_logits", "softmax", [3, 8], scale=50.0, offset=1000.0),
        softmax_case("softmax_size1_axis", "softmax", [5, 1]),
        softmax_case("softmax_wide_257", "softmax", [2, 257], scale=10.0),
        softmax_case("log_softmax_default_axis", "log_softmax", [4, 7]),
        softmax_case("log_softmax_axis0", "log_softmax", [6, 2], axis=0),
        softmax_case("log_softmax_large_logits", "log_softmax", [3, 8], scale=50.0, offset=-1000.0),
        softmax_case("log_softmax_rank3_axis1", "log_softmax", [2, 5, 3], axis=1),
    ]


# ---------------------------------------------------------------------------------------------
# Data movement


def movement_cases():
    out = []

    def one(name, in_shape, op, tf_fn, unknown=(), **attrs):
        c = Case(name)
        x = c.input("x", c.uniform(in_shape), unknown)
        c.op("y", op, ["x"], tf_fn(x), **attrs)
        c.output("y")
        out.append(c)

    one("reshape_infer_leading", [2, 3, 4], "reshape", lambda x: tf.reshape(x, [-1, 4]), shape=[-1, 4])
    one("reshape_infer_middle", [2, 3, 4], "reshape", lambda x: tf.reshape(x, [4, -1, 2]), shape=[4, -1, 2])
    one("reshape_flatten", [2, 3, 4], "reshape", lambda x: tf.reshape(x, [24]), shape=[24])
    one("reshape_unknown_batch", [3, 3, 4], "reshape", lambda x: tf.reshape(x, [-1, 12]), unknown=(0,),
        shape=[-1, 12])
    one("reshape_add_size1_dims", [6], "reshape", lambda x: tf.reshape(x, [1, 6, 1]), shape=[1, 6, 1])
    one("transpose_rank3", [2, 3, 4], "transpose", lambda x: tf.transpose(x, [2, 0, 1]), perm=[2, 0, 1])
    one("transpose_nhwc_to_nchw", [2, 4, 5, 3], "transpose", lambda x: tf.transpose(x, [0, 3, 1, 2]),
        perm=[0, 3, 1, 2])
    one("transpose_rank2", [7, 13], "transpose", lambda x: tf.transpose(x, [1, 0]), perm=[1, 0])
    one("transpose_identity_perm", [3, 4], "transpose", lambda x: tf.transpose(x, [0, 1]), perm=[0, 1])
    one("slice_basic", [3, 4, 5], "slice", lambda x: tf.slice(x, [1, 0, 2], [1, -1, 2]),
        begin=[1, 0, 2], size=[1, -1, 2])
    one("slice_all_minus1", [4, 5], "slice", lambda x: tf.slice(x, [2, 1], [-1, -1]), begin=[2, 1], size=[-1, -1])
    one("slice_rank4_window", [2, 7, 7, 3], "slice", lambda x: tf.slice(x, [0, 2, 1, 1], [2, 3, 5, 2]),
        begin=[0, 2, 1, 1], size=[2, 3, 5, 2])
    one("pad_default_zero", [3, 4], "pad", lambda x: tf.pad(x, [[1, 2], [0, 3]]), paddings=[[1, 2], [0, 3]])
    one("pad_constant_value", [2, 3], "pad", lambda x: tf.pad(x, [[2, 0], [1, 1]], constant_values=1.5),
        paddings=[[2, 0], [1, 1]], constant_value=1.5)
    one("pad_rank4_spatial", [1, 5, 4, 2], "pad", lambda x: tf.pad(x, [[0, 0], [1, 2], [3, 0], [0, 0]]),
        paddings=[[0, 0], [1, 2], [3, 0], [0, 0]])
    one("pad_nothing", [3, 3], "pad", lambda x: tf.pad(x, [[0, 0], [0, 0]], constant_values=-2.0),
        paddings=[[0, 0], [0, 0]], constant_value=-2.0)

    for name, shapes, axis in [
        ("concat_three_last_axis", [[2, 3], [2, 1], [2, 4]], -1),
        ("concat_three_axis0", [[1, 4], [3, 4], [2, 4]], 0),
        ("concat_rank4_channels_neg", [[1, 3, 3, 2], [1, 3, 3, 5], [1, 3, 3, 1]], -1),
        ("concat_rank3_middle", [[2, 1, 3], [2, 4, 3]], 1),
        ("concat_single_operand", [[3, 2]], 0),
    ]:
        c = Case(name)
        names = ["x%d" % i for i in range(len(shapes))]
        xs = [c.input(n, c.uniform(s)) for n, s in zip(names, shapes)]
        c.op("y", "concat", names, tf.concat(xs, axis), axis=axis)
        c.output("y")
        out.append(c)
    return out


def batch_norm_cases():
    out = []
    for name, xshape, eps, fmt in [
        ("batch_norm_nhwc_default_eps", [2, 4, 4, 3], None, "NHWC"),
        ("batch_norm_nhwc_eps_1e-5", [1, 5, 5, 4], 1e-5, "NHWC"),
        ("batch_norm_nchw", [2, 3, 4, 5], 0.01, "NCHW"),
    ]:
        c = Case(name)
        x = c.input("x", c.uniform(xshape, -2, 2))
        ch = xshape[1] if fmt == "NCHW" else xshape[-1]
        scale = c.const("scale", c.uniform([ch], 0.5, 1.5))
        offset = c.const("offset", np.round(c.uniform([ch]), 2), "flat")
        mean = c.const("mean", c.uniform([ch], -0.5, 0.5))
        var = c.const("variance", c.uniform([ch], 0.01, 2.0))
        bshape = [ch, 1, 1] if fmt == "NCHW" else [ch]
        p = [np.reshape(v, bshape) for v in (mean, var, offset, scale)]
        got = tf.nn.batch_normalization(x, *p, variance_epsilon=0.001 if eps is None else eps)
        attrs = {} if eps is None else {"epsilon": eps}
        if fmt == "NCHW":
            attrs["data_format"] = fmt
        c.op("y", "batch_norm", ["x", "scale", "offset", "mean", "variance"], got, **attrs)
        c.output("y")
        out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# Chained and multi-output graphs (these exercise fusion, folding and memory planning)


def graph_cases():
    out = []

    # conv -> bias_add -> relu -> max_pool -> reshape -> matmul -> softmax
    c = Case("chain_conv_pool_dense_softmax")
    x = c.input("image", c.uniform([2, 8, 8, 1], 0, 1), unknown=(0,))
    c.var("kernel", c.normal([3, 3, 1, 4], 0.5))
    c.const("bias", np.round(c.uniform([4], -0.1, 0.1), 3), "flat")
    c.var("dense", c.normal([64, 10], 0.2))
    y = c.op("conv", "conv2d", ["image", "kernel"], tf.nn.conv2d(x, c["kernel"], 1, "SAME"),
             strides=[1, 1], padding="SAME")
    y = c.op("biased", "bias_add", ["conv", "bias"], tf.nn.bias_add(y, c["bias"]))
    y = c.op("act", "relu", ["biased"], tf.nn.relu(y))
    y = c.op("pool", "max_pool", ["act"], tf.nn.max_pool2d(y, 2, 2, "VALID"), ksize=[2, 2], strides=[2, 2],
             padding="VALID")
    y = c.op("flat", "reshape", ["pool"], tf.reshape(y, [-1, 64]), shape=[-1, 64])
    y = c.op("logits", "matmul", ["flat", "dense"], tf.linalg.matmul(y, c["dense"]))
    c.op("probs", "softmax", ["logits"], tf.nn.softmax(y))
    c.output("probs")
    out.append(c)

    # Fusion patterns: conv + bias + relu6, depthwise + batch_norm + relu (MobileNet blocks).
    c = Case("fuse_conv_bias_relu6_s2")
    x = c.input("x", c.uniform([1, 9, 9, 3]))
    c.const("w", c.normal([3, 3, 3, 8], 0.5))
    c.const("b", c.uniform([8], -0.5, 0.5))
    y = c.op("conv", "conv2d", ["x", "w"], tf.nn.conv2d(x, c["w"], 2, "SAME"), strides=[2, 2], padding="SAME")
    y = c.op("biased", "bias_add", ["conv", "b"], tf.nn.bias_add(y, c["b"]))
    c.op("y", "relu6", ["biased"], tf.nn.relu6(y))
    c.output("y")
    out.append(c)

    c = Case("fuse_depthwise_batchnorm_relu")
    x = c.input("x", c.uniform([1, 7, 7, 4]))
    c.const("w", c.normal([3, 3, 4, 1], 0.5))
    for n, lo, hi in [("scale", 0.5, 1.5), ("offset", -0.5, 0.5), ("mean", -0.2, 0.2), ("variance", 0.1, 1.0)]:
        c.const(n, c.uniform([4], lo, hi))
    y = c.op("dw", "depthwise_conv2d", ["x", "w"], tf.nn.depthwise_conv2d(x, c["w"], [1, 1, 1, 1], "SAME"),
             strides=[1, 1], padding="SAME")
    y = c.op("bn", "batch_norm", ["dw", "scale", "offset", "mean", "variance"],
             tf.nn.batch_normalization(y, c["mean"], c["variance"], c["offset"], c["scale"], 0.001))
    c.op("y", "relu", ["bn"], tf.nn.relu(y))
    c.output("y")
    out.append(c)

    c = Case("fuse_matmul_bias_sigmoid")
    x = c.input("x", c.uniform([5, 13]), unknown=(0,))
    c.var("w", c.normal([13, 7], 0.4))
    c.var("b", c.uniform([7]))
    y = c.op("mm", "matmul", ["x", "w"], tf.linalg.matmul(x, c["w"]))
    y = c.op("biased", "bias_add", ["mm", "b"], tf.nn.bias_add(y, c["b"]))
    c.op("y", "sigmoid", ["biased"], tf.math.sigmoid(y))
    c.output("y")
    out.append(c)

    c = Case("elementwise_cluster_bcast")
    a = c.input("a", c.uniform([3, 4]))
    b = c.input("b", c.uniform([4], 0.5, 2.0))
    y = c.op("t1", "mul", ["a", "b"], a * b)
    y = c.op("t2", "tanh", ["t1"], tf.math.tanh(y))
    y = c.op("t3", "sub", ["t2", "a"], y - a)
    c.op("y", "square", ["t3"], tf.math.square(y))
    c.output("y")
    out.append(c)

    # Multi-output: an intermediate and the final value together; a value used twice.
    c = Case("multi_output_intermediate_and_final")
    x = c.input("x", c.uniform([2, 6, 6, 2]))
    c.const("w", c.normal([3, 3, 2, 3], 0.5))
    y = c.op("conv", "conv2d", ["x", "w"], tf.nn.conv2d(x, c["w"], 1, "VALID"), strides=[1, 1], padding="VALID")
    r = c.op("act", "relu", ["conv"], tf.nn.relu(y))
    c.op("pooled", "avg_pool", ["act"], tf.nn.avg_pool2d(r, 2, 2, "SAME"), ksize=[2, 2], strides=[2, 2],
         padding="SAME")
    c.op("total", "reduce_sum", ["act"], tf.math.reduce_sum(r, axis=[1, 2, 3]), axes=[1, 2, 3])
    c.output("act", "pooled")
    c.output("total")
    out.append(c)

    c = Case("multi_output_branches_concat")
    x = c.input("x", c.uniform([4, 6]))
    e = c.op("e", "exp", ["x"], tf.math.exp(x))
    n = c.op("n", "neg", ["x"], tf.math.negative(x))
    s = c.op("s", "reduce_max", ["x"], tf.math.reduce_max(x, axis=[1], keepdims=True), axes=[1], keepdims=True)
    d = c.op("d", "sub", ["x", "s"], x - s)
    c.op("cat", "concat", ["e", "n", "d"], tf.concat([e, n, d], axis=1), axis=1)
    c.op("sm", "log_softmax", ["x"], tf.nn.log_softmax(x))
    c.output("cat", "sm", "s")
    out.append(c)

    # Constants only on one path (foldable), with fill/ones/zeros initialisers.
    c = Case("multi_output_constant_folding")
    x = c.input("x", c.uniform([2, 3]))
    c.const("half", np.full([2, 3], 0.5, np.float32), "fill(0.5)")
    c.const("one", np.ones([3], np.float32), "ones")
    c.var("zero", np.zeros([2, 3], np.float32), "zeros")
    c.const("two", f32(2.0), "2.0")
    k = c.op("k", "mul", ["half", "two"], c["half"] * c["two"])
    k = c.op("k2", "add", ["k", "one"], k + c["one"])
    c.op("folded", "sqrt", ["k2"], tf.math.sqrt(k))
    c.op("y", "add", ["x", "k2"], x + k)
    c.op("z", "maximum", ["x", "zero"], tf.math.maximum(x, c["zero"]))
    c.output("folded", "y", "z")
    out.append(c)

    # Movement ops between compute ops (layout changes and reshapes inside a chain).
    c = Case("chain_transpose_nchw_conv_back")
    x = c.input("x", c.uniform([1, 6, 6, 2]))
    c.const("w", c.normal([3, 3, 2, 3], 0.5))
    t = c.op("t", "transpose", ["x"], tf.transpose(x, [0, 3, 1, 2]), perm=[0, 3, 1, 2])
    y = tf.transpose(tf.nn.conv2d(x, c["w"], 1, "SAME"), [0, 3, 1, 2])
    y = c.op("conv", "conv2d", ["t", "w"], y, strides=[1, 1], padding="SAME", data_format="NCHW")
    y = c.op("back", "transpose", ["conv"], tf.transpose(y, [0, 2, 3, 1]), perm=[0, 2, 3, 1])
    y = c.op("padded", "pad", ["back"], tf.pad(y, [[0, 0], [1, 1], [0, 2], [0, 0]]),
             paddings=[[0, 0], [1, 1], [0, 2], [0, 0]])
    c.op("y", "slice", ["padded"], tf.slice(y, [0, 1, 1, 0], [1, -1, 5, 2]), begin=[0, 1, 1, 0], size=[1, -1, 5, 2])
    c.output("y")
    out.append(c)

    c = Case("chain_residual_block")
    x = c.input("x", c.uniform([1, 7, 7, 4]))
    c.const("w1", c.normal([3, 3, 4, 4], 0.3))
    c.const("w2", c.normal([1, 1, 4, 4], 0.3))
    y = c.op("c1", "conv2d", ["x", "w1"], tf.nn.conv2d(x, c["w1"], 1, "SAME"), strides=[1, 1], padding="SAME")
    y = c.op("r1", "relu", ["c1"], tf.nn.relu(y))
    y = c.op("c2", "conv2d", ["r1", "w2"], tf.nn.conv2d(y, c["w2"], 1, "SAME"), strides=[1, 1], padding="SAME")
    y = c.op("sum", "add", ["c2", "x"], y + x)
    c.op("y", "reduce_mean", ["sum"], tf.math.reduce_mean(y, axis=[1, 2]), axes=[1, 2])
    c.output("y")
    out.append(c)
    return out


# ---------------------------------------------------------------------------------------------


CASE_FNS = [
    cases_ops.conv_cases, cases_ops.seed_case, cases_ops.pool_cases, cases_ops.unary_cases,
    cases_ops.binary_cases, cases_ops.bias_add_cases, cases_ops.matmul_cases, reduce_cases,
    softmax_cases, movement_cases, batch_norm_cases, graph_cases, cases_indexing.lrn_cases,
    cases_indexing.argmax_cases, cases_indexing.gather_cases, cases_indexing.cast_cases,
    cases_grad.grad_cases,
    cases_logic.compare_cases, cases_logic.logical_cases, cases_logic.select_cases,
    cases_logic.sign_cases, cases_logic.stop_gradient_cases, cases_logic.relu_mask_cases,
    cases_backprop.conv_backprop_cases, cases_backprop.pool_grad_cases,
    cases_backprop.depthwise_backprop_cases,
    cases_losses.loss_cases,
]


def main():
    cases = [c for fn in CASE_FNS for c in fn()]
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SystemExit("duplicate case names: %s" % dupes)
    if CASES.exists():
        shutil.rmtree(CASES)
    CASES.mkdir(parents=True)
    for c in sorted(cases, key=lambda c: c.name):
        c.write(CASES / c.name)
    training = CASES.parent / "training"
    if training.exists():
        shutil.rmtree(training)
    cases_losses.write_batch_norm_training(training / "batch_norm_training")
    cases_losses.write_xent_gradients(training / "xent_gradients")
    size = sum(p.stat().st_size for p in CASES.rglob("*") if p.is_file())
    print("wrote %d cases to %s (%.1f KB)" % (len(cases), CASES, size / 1024))


if __name__ == "__main__":
    main()
