"""Golden cases of lrn, argmax, gather and cast: the ops whose operands or results may be i32,
i64 or bool. See gen.py.

Where the catalogue and TensorFlow 2.21 (CPU) differ, the data stays inside the range where they
agree, and a numpy cross-check of the catalogue's rule guards it:
- argmax: TF skips NaNs, the catalogue lets the first NaN win; inputs here hold no NaN. Ties are
  deliberate (first index wins in both).
- gather: TF rejects negative indices, the catalogue counts them from the end; a case with
  negative indices stores TF's result for the equivalent non-negative ones.
- cast float -> int: TF returns INT_MIN out of range and for NaN, the catalogue saturates and maps
  NaN to 0; inputs here are finite and in range.
"""

import numpy as np
import tensorflow as tf

from kiln_case import Case, check, f32

# ---------------------------------------------------------------------------------------------
# lrn


def naive_lrn(x, r, bias, alpha, beta):
    x = x.astype(np.float64)
    c = x.shape[-1]
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - r), min(c - 1, ch + r)
        s = np.sum(x[..., lo:hi + 1] ** 2, axis=-1)
        out[..., ch] = x[..., ch] / (bias + alpha * s) ** beta
    return out


def lrn_case(name, shape, r=None, bias=None, alpha=None, beta=None):
    c = Case(name)
    x = c.input("x", c.uniform(shape, -2, 2))
    args = {"depth_radius": r, "bias": bias, "alpha": alpha, "beta": beta}
    given = {k: v for k, v in args.items() if v is not None}
    defaults = {"depth_radius": 5, "bias": 1.0, "alpha": 1.0, "beta": 0.5}
    full = {**defaults, **given}
    got = tf.nn.local_response_normalization(x, **full)
    check(name, got, naive_lrn(x, full["depth_radius"], full["bias"], full["alpha"], full["beta"]))
    c.op("y", "lrn", ["x"], got, **given)
    c.output("y")
    return c


def lrn_cases():
    return [
        lrn_case("lrn_defaults", [1, 3, 3, 8]),
        lrn_case("lrn_alexnet_r2", [2, 4, 4, 7], r=2, bias=2.0, alpha=1e-4, beta=0.75),
        lrn_case("lrn_r1_beta1_16ch", [1, 2, 3, 16], r=1, bias=0.5, alpha=0.3, beta=1.0),
        lrn_case("lrn_radius_exceeds_channels", [1, 2, 2, 3], r=4, alpha=0.5),
    ]


# ---------------------------------------------------------------------------------------------
# argmax


def argmax_case(name, make, axis, output_type=None):
    """`make(rng)` builds x from the case's own generator."""
    c = Case(name)
    x = c.input("x", make(c.rng))
    tf_type = tf.int32 if output_type == "i32" else tf.int64
    got = tf.math.argmax(x, axis=axis, output_type=tf_type)
    # numpy's argmax is the catalogue's rule (first index of the maximum) on NaN-free data.
    check(name, got, np.argmax(x, axis=axis))
    attrs = {"axis": axis}
    if output_type is not None:
        attrs["output_type"] = output_type
    c.op("y", "argmax", ["x"], got, **attrs)
    c.output("y")
    return c


def argmax_cases():
    def ties(rng):
        return f32(rng.integers(0, 3, size=[4, 5, 6]))  # three values only: many ties

    def uniform(*shape):
        return lambda rng: f32(rng.uniform(-1, 1, size=shape))

    return [
        argmax_case("argmax_i64_middle_axis", uniform(3, 5, 4), 1),
        argmax_case("argmax_i32_last_axis_ties", ties, -1, "i32"),
        argmax_case("argmax_i64_axis0_ties", ties, 0, "i64"),
        argmax_case("argmax_i32_rank4_negative_axis", uniform(2, 3, 4, 5), -3, "i32"),
        argmax_case("argmax_int32_input_axis0", lambda rng: rng.integers(-3, 3, size=[5, 4]).astype(np.int32), 0),
    ]


# ---------------------------------------------------------------------------------------------
# gather


def gather_case(name, params_shape, indices, axis=None, idx_input=False, tf_indices=None, int_params=False):
    """`indices` as an i32/i64 numpy array: a const literal, or a placeholder with idx_input.
    `tf_indices` replaces them in TF's call (TF rejects negative indices)."""
    c = Case(name)
    if int_params:
        params = c.rng.integers(-100, 100, size=params_shape).astype(np.int32)
    else:
        params = c.uniform(params_shape)
    p = c.input("params", params)
    if idx_input:
        c.input("indices", indices)
    else:
        c.const("indices", indices, "flat")
    ref = indices if tf_indices is None else tf_indices
    got = tf.gather(p, ref, axis=0 if axis is None else axis)
    check(name, f32(got), f32(np.take(params, indices, axis=0 if axis is None else axis)))
    attrs = {} if axis is None else {"axis": axis}
    c.op("y", "gather", ["params", "indices"], got, **attrs)
    c.output("y")
    return c


def gather_cases():
    neg = np.array([[-1, 0], [-3, 2]], np.int64)
    return [
        gather_case("gather_axis0_i32_const_repeats", [5, 3], np.array([4, 0, 2, 4], np.int32)),
        gather_case("gather_axis1_i64_input_2d_indices", [2, 6, 3], np.array([[5, 1], [0, 5]], np.int64), axis=1,
                    idx_input=True),
        gather_case("gather_axis1_i32_input", [4, 5], np.array([3, 3, 0], np.int32), axis=1, idx_input=True),
        gather_case("gather_scalar_index_last_axis", [3, 4, 2], np.array(1, np.int32), axis=-1),
        gather_case("gather_negative_indices_axis0", [3, 2, 2], neg, tf_indices=neg % 3),
        gather_case("gather_int32_params", [6, 2], np.array([5, 0, 3], np.int64), int_params=True),
    ]


# ---------------------------------------------------------------------------------------------
# cast


def cast_cases():
    out = []

    # f32 -> i32 -> f32: truncation toward zero, both directions checked.
    c = Case("cast_f32_i32_f32_roundtrip")
    x = f32(c.rng.uniform(-50, 50, size=[3, 7]))
    x[0, :4] = [2.5, -2.5, 0.999, -0.999]
    x = c.input("x", x)
    i = c.op("as_int", "cast", ["x"], tf.cast(x, tf.int32), to="i32")
    check(c.name, f32(i), f32(np.trunc(x)))
    c.op("back", "cast", ["as_int"], tf.cast(i, tf.float32), to="f32")
    c.output("as_int", "back")
    out.append(c)

    # f32 -> bool (x != 0, -0.0 is false) -> f32.
    c = Case("cast_f32_bool_f32")
    x = f32(c.rng.uniform(-1, 1, size=[4, 5]))
    x[1, :] = [0.0, -0.0, 1e-30, -1e-30, 0.0]
    x = c.input("x", x)
    b = c.op("mask", "cast", ["x"], tf.cast(x, tf.bool), to="bool")
    check(c.name, f32(b), f32(x != 0))
    c.op("y", "cast", ["mask"], tf.cast(b, tf.float32), to="f32")
    c.output("mask", "y")
    out.append(c)

    # i64 input -> f32 and -> i32 (in range, so no wrapping); i32 -> i64 -> bool.
    c = Case("cast_i64_input_to_f32_and_i32")
    x = c.input("x", c.rng.integers(-100000, 100000, size=[6]).astype(np.int64))
    c.op("f", "cast", ["x"], tf.cast(x, tf.float32), to="f32")
    c.op("i", "cast", ["x"], tf.cast(x, tf.int32), to="i32")
    c.output("f", "i")
    out.append(c)

    c = Case("cast_i32_i64_bool")
    x = c.rng.integers(-2, 3, size=[2, 5]).astype(np.int32)
    x = c.input("x", x)
    w = c.op("wide", "cast", ["x"], tf.cast(x, tf.int64), to="i64")
    c.op("nonzero", "cast", ["wide"], tf.cast(w, tf.bool), to="bool")
    c.output("nonzero")
    out.append(c)

    # An embedding lookup: argmax picks rows of a table (argmax -> gather -> relu).
    c = Case("chain_argmax_gather_relu")
    logits = c.input("logits", f32(c.rng.uniform(-1, 1, size=[4, 6])))
    c.const("table", f32(c.rng.uniform(-1, 1, size=[6, 3])))
    idx = c.op("idx", "argmax", ["logits"], tf.math.argmax(logits, axis=1, output_type=tf.int32), axis=1,
               output_type="i32")
    rows = c.op("rows", "gather", ["table", "idx"], tf.gather(c["table"], idx))
    c.op("y", "relu", ["rows"], tf.nn.relu(rows))
    c.output("y")
    out.append(c)
    return out
