"""Golden cases of the comparisons, logical ops, select, sign and stop_gradient (format
version 3): the ops with bool operands or results that masks and losses are written with.
See gen.py.

Comparisons follow IEEE (NaN compares false, except under not_equal), as tf.math.less and
friends do; inputs hold NaN, signed zeros and infinities on purpose, and ties, so every
comparison sees equal operands. select is tf.where (v2): cond, a and b broadcast together.
sign is tf.sign: sign(-0) = 0 and sign(NaN) = NaN. A numpy cross-check guards each TF call.
"""

import numpy as np
import tensorflow as tf

from kiln_case import Case, f32

# The format version that introduced these ops (TRAINING_SINCE in ir/src/schema.rs).
VERSION = "kiln 3"


def check(name, got, want):
    """Like kiln_case.check, with NaN matching NaN (these ops pass NaN through)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6, atol=0, equal_nan=True):
        raise AssertionError("%s: TF result disagrees with the numpy reference" % name)


def version3(fn):
    """Cases of `fn` with the header `kiln 3` (Case.op lowers it to `kiln 2` for a `cast`)."""
    def cases():
        out = fn()
        for c in out:
            c.lines[0] = VERSION
        return out
    cases.__name__ = fn.__name__
    return cases

COMPARE = {
    "equal": (tf.math.equal, np.equal),
    "not_equal": (tf.math.not_equal, np.not_equal),
    "less": (tf.math.less, np.less),
    "less_equal": (tf.math.less_equal, np.less_equal),
    "greater": (tf.math.greater, np.greater),
    "greater_equal": (tf.math.greater_equal, np.greater_equal),
}


def case(name):
    return Case(name)


def special_f32(c, shape):
    """Values in [-2, 2] rounded to halves (so operands tie often), with NaN, ±0 and ±inf."""
    x = f32(np.round(c.rng.uniform(-2, 2, size=shape) * 2) / 2)
    flat = x.reshape(-1)
    flat[:5] = [np.nan, -0.0, 0.0, np.inf, -np.inf][: min(5, flat.size)]
    return x


def compare_case(name, op, a, b, unknown=()):
    c = case(name)
    a = c.input("a", a, unknown)
    b = c.input("b", b)
    tf_fn, np_fn = COMPARE[op]
    got = tf_fn(a, b)
    check(name, got.numpy().astype(np.float32), np_fn(a, b).astype(np.float32))
    c.op("y", op, ["a", "b"], got)
    c.output("y")
    return c


@version3
def compare_cases():
    out = []
    for op in COMPARE:
        c = Case("tmp")  # only for its generator
        c.rng = np.random.default_rng(len(op))
        # f32 with NaN/±0/±inf, broadcasting [3,1,4] against [5,1].
        a = special_f32(c, [3, 1, 4])
        b = special_f32(c, [5, 1])
        out.append(compare_case("%s_f32_nan_broadcast" % op, op, a, b, unknown=(0,)))
        # Same shapes, element by element: a NaN against itself, -0 against +0.
        a = special_f32(c, [2, 7])
        b = a.copy()
        b[1] = special_f32(c, [7])[::-1]
        out.append(compare_case("%s_f32_same_shape" % op, op, a, b))
    ints = np.random.default_rng(7)
    a32 = ints.integers(-3, 4, size=[4, 3]).astype(np.int32)
    out.append(compare_case("less_i32_row_broadcast", "less", a32,
                            np.array([-1, 0, 2], dtype=np.int32)))
    out.append(compare_case("equal_i32_scalar", "equal", a32, np.array(1, dtype=np.int32)))
    big = np.array([[2**40, -2**40, 5], [7, 2**62, -1]], dtype=np.int64)
    out.append(compare_case("greater_equal_i64", "greater_equal", big,
                            np.array([[2**40], [2**62 - 1]], dtype=np.int64)))
    out.append(compare_case("not_equal_i64", "not_equal", big, big[:, ::-1].copy()))
    p = np.array([[True, False, True]])
    q = np.array([[True], [False]])
    out.append(compare_case("equal_bool_broadcast", "equal", p, q))
    out.append(compare_case("not_equal_bool_broadcast", "not_equal", p, q))
    return out


@version3
def logical_cases():
    out = []
    rng = np.random.default_rng(11)
    for op, tf_fn, np_fn in [("logical_and", tf.math.logical_and, np.logical_and),
                             ("logical_or", tf.math.logical_or, np.logical_or)]:
        c = case("%s_broadcast" % op)
        a = c.input("a", rng.random([2, 1, 5]) < 0.5)
        b = c.input("b", rng.random([3, 5]) < 0.5)
        got = tf_fn(a, b)
        check(c.name, f32(got), f32(np_fn(a, b)))
        c.op("y", op, ["a", "b"], got)
        c.output("y")
        out.append(c)
    c = case("logical_not")
    x = c.input("x", rng.random([4, 6]) < 0.5)
    got = tf.math.logical_not(x)
    check(c.name, f32(got), f32(~x))
    c.op("y", "logical_not", ["x"], got)
    c.output("y")
    out.append(c)
    # A mask from comparisons: (x > 0) && !(x >= 1) || x == -1 on f32 data.
    c = case("logical_mask_chain")
    x = c.input("x", f32(np.round(rng.uniform(-2, 2, size=[3, 8]) * 2) / 2))
    zero = c.const("zero", f32(0.0), how="flat")
    one = c.const("one", f32(1.0), how="flat")
    minus = c.const("minus_one", f32(-1.0), how="flat")
    pos = c.op("pos", "greater", ["x", "zero"], tf.math.greater(x, zero))
    big = c.op("big", "greater_equal", ["x", "one"], tf.math.greater_equal(x, one))
    small = c.op("small", "logical_not", ["big"], tf.math.logical_not(big))
    inside = c.op("inside", "logical_and", ["pos", "small"], tf.math.logical_and(pos, small))
    neg1 = c.op("neg1", "equal", ["x", "minus_one"], tf.math.equal(x, minus))
    got = c.op("y", "logical_or", ["inside", "neg1"], tf.math.logical_or(inside, neg1))
    check(c.name, f32(got), f32(((x > 0) & ~(x >= 1)) | (x == -1)))
    c.output("y")
    out.append(c)
    return out


def select_case(name, cond, a, b, unknown=()):
    c = case(name)
    cond = c.input("cond", cond)
    a = c.input("a", a, unknown)
    b = c.input("b", b)
    got = tf.where(cond, a, b)
    check(name, f32(got), f32(np.where(cond, a, b)))
    c.op("y", "select", ["cond", "a", "b"], got)
    c.output("y")
    return c


@version3
def select_cases():
    rng = np.random.default_rng(13)
    nan_a = f32(rng.uniform(-1, 1, size=[3, 1]))
    nan_a[1, 0] = np.nan
    out = [
        select_case("select_f32_same_shape", rng.random([4, 5]) < 0.5,
                    f32(rng.uniform(-1, 1, size=[4, 5])), f32(rng.uniform(-1, 1, size=[4, 5]))),
        select_case("select_f32_three_way_broadcast", rng.random([2, 1, 1]) < 0.5, nan_a,
                    f32(rng.uniform(-1, 1, size=[4])), unknown=(0,)),
        select_case("select_scalar_cond", np.array(False), f32(rng.uniform(-1, 1, size=[3])),
                    f32(rng.uniform(-1, 1, size=[2, 3]))),
        select_case("select_i32", rng.random([5]) < 0.5,
                    rng.integers(-9, 9, size=[2, 5]).astype(np.int32),
                    rng.integers(-9, 9, size=[5]).astype(np.int32)),
        select_case("select_i64", rng.random([3, 1]) < 0.5,
                    np.array([2**40, -3], dtype=np.int64),
                    np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int64)),
        select_case("select_bool", rng.random([2, 3]) < 0.5, rng.random([3]) < 0.5,
                    rng.random([2, 3]) < 0.5),
    ]
    # select(greater(a, b), a, b): maximum without NaN, written as a user would.
    c = case("select_greater_is_max")
    a = c.input("a", f32(rng.uniform(-1, 1, size=[3, 4])), unknown=(0,))
    b = c.input("b", f32(rng.uniform(-1, 1, size=[4])))
    g = c.op("g", "greater", ["a", "b"], tf.math.greater(a, b))
    got = c.op("y", "select", ["g", "a", "b"], tf.where(g, a, b))
    check(c.name, f32(got), f32(np.maximum(a, b)))
    c.output("y")
    out.append(c)
    return out


@version3
def sign_cases():
    out = []
    c = case("sign_special_values")
    x = special_f32(c, [3, 7])
    x[2, :3] = [1e-30, -1e-30, 3.5]
    x = c.input("x", x)
    got = c.op("y", "sign", ["x"], tf.math.sign(x))
    check(c.name, f32(got), f32(np.where(x == 0, 0.0, np.sign(x))))
    c.output("y")
    out.append(c)
    # sign fused with its neighbours: |x| * sign(x) + relu(sign(x - 0.25)) is one elementwise
    # kernel after fuse-elementwise.
    c = case("sign_fused_chain")
    x = c.input("x", f32(c.rng.uniform(-1, 1, size=[2, 9, 5])), unknown=(0,))
    q = c.const("q", f32(0.25), how="flat")
    s = c.op("s", "sign", ["x"], tf.math.sign(x))
    ax = c.op("ax", "abs", ["x"], tf.math.abs(x))
    back = c.op("back", "mul", ["ax", "s"], ax * s)
    shifted = c.op("shifted", "sub", ["x", "q"], x - q)
    s2 = c.op("s2", "sign", ["shifted"], tf.math.sign(shifted))
    r = c.op("r", "relu", ["s2"], tf.nn.relu(s2))
    got = c.op("y", "add", ["back", "r"], back + r)
    check(c.name, f32(got), f32(x + (x > 0.25)))
    c.output("y")
    out.append(c)
    return out


@version3
def stop_gradient_cases():
    c = case("stop_gradient_identity")
    x = c.input("x", f32(c.rng.uniform(-1, 1, size=[3, 4])))
    i = c.input("i", np.arange(6, dtype=np.int32).reshape(2, 3))
    sg = c.op("sg", "stop_gradient", ["x"], tf.stop_gradient(x))
    c.op("y", "mul", ["sg", "x"], sg * x)
    c.op("yi", "stop_gradient", ["i"], tf.stop_gradient(i))
    c.output("y", "yi", "sg")
    return [c]


@version3
def relu_mask_cases():
    """The ReLU mask a user writes: x * cast(greater(x, 0), f32)."""
    c = case("relu_mask_from_greater")
    x = c.input("x", special_f32(c, [4, 6]))
    zero = c.const("zero", f32(0.0), how="flat")
    g = c.op("g", "greater", ["x", "zero"], tf.math.greater(x, zero))
    m = c.op("m", "cast", ["g"], tf.cast(g, tf.float32), to="f32")
    got = c.op("y", "mul", ["x", "m"], x * m)
    check(c.name, f32(got), f32(x * (x > 0)))
    c.output("y")
    return [c]
