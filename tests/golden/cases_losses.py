"""Golden cases of the losses and their helpers (format version 3): the softmax cross entropies
(dense and sparse), one_hot, and gather_grad (checked against TF's gradient of tf.gather's
params, repeated indices adding). Also writes the data of the tests that need the Rust builder
and Graph::gradients, so are not graph-file cases (tests/golden/training/, read by
tests/suite/losses.rs): TF's cross-entropy gradients and training-mode batch normalisation."""

import numpy as np
import tensorflow as tf
from kiln_case import Case, check, f32

TRAINING_SINCE = 3


def case(name, tol=None):
    c = Case(name, tol)
    c.lines[0] = "kiln %d" % TRAINING_SINCE
    return c


def log_softmax64(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# softmax cross entropy


def xent_case(name, shape, scale=3.0, unknown=()):
    c = case(name)
    logits = c.input("logits", c.uniform(shape) * scale, unknown)
    raw = c.uniform(shape, 0.05, 1.0)
    labels = c.input("labels", f32(raw / raw.sum(axis=-1, keepdims=True)), unknown)
    got = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    check(name, got, -(labels * log_softmax64(logits)).sum(axis=-1))
    c.op("loss", "softmax_cross_entropy_with_logits", ["logits", "labels"], got)
    c.output("loss")
    return c


def sparse_case(name, shape, dtype, scale=3.0):
    c = case(name)
    logits = c.input("logits", c.uniform(shape) * scale)
    labels = c.input("labels", c.rng.integers(0, shape[-1], size=shape[:-1]).astype(dtype))
    got = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    want = -np.take_along_axis(log_softmax64(logits), labels[..., None].astype(np.int64), -1)[..., 0]
    check(name, got, want)
    c.op("loss", "sparse_softmax_cross_entropy_with_logits", ["logits", "labels"], got)
    c.output("loss")
    return c


def xent_cases():
    return [
        xent_case("xent_batch5_classes7", [5, 7]),
        xent_case("xent_large_logits", [3, 6], scale=400.0),
        xent_case("xent_rank3", [2, 3, 4]),
        xent_case("xent_unknown_batch", [4, 10], unknown=(0,)),
        sparse_case("sparse_xent_i32", [6, 5], np.int32),
        sparse_case("sparse_xent_i64_large_logits", [4, 9], np.int64, scale=300.0),
        sparse_case("sparse_xent_rank3_i32", [2, 3, 4], np.int32),
    ]


# ---------------------------------------------------------------------------------------------
# one_hot


def one_hot_cases():
    out = []
    for name, idx, depth, on, off, axis in [
        ("one_hot_default_last_axis", np.array([0, 3, 1, 3], np.int32), 4, None, None, None),
        ("one_hot_out_of_range_and_negative", np.array([[2, -1], [5, 0]], np.int64), 3, None, None, None),
        ("one_hot_axis0_on_off", np.array([1, 0, 2], np.int32), 3, 2.5, -1.0, 0),
        ("one_hot_axis1_rank2", np.array([[0, 1, 2], [2, 2, 0]], np.int64), 4, None, None, 1),
    ]:
        c = case(name)
        c.input("indices", idx)
        kw = {k: v for k, v in (("on_value", on), ("off_value", off), ("axis", axis)) if v is not None}
        got = tf.one_hot(idx, depth, dtype=tf.float32, **kw)
        c.op("y", "one_hot", ["indices"], got, depth=depth, **kw)
        c.output("y")
        out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# gather_grad: TF's gradient of tf.gather's params (GradientTape), repeated indices adding


def gather_grad_case(name, params_shape, indices, axis=0):
    c = case(name)
    params = tf.constant(c.uniform(params_shape))
    gathered_shape = tf.gather(params, indices, axis=axis).shape
    g = c.input("g", c.uniform(gathered_shape))
    c.input("indices", indices)
    with tf.GradientTape() as tape:
        tape.watch(params)
        y = tf.reduce_sum(tf.gather(params, indices, axis=axis) * g)
    got = tf.convert_to_tensor(tape.gradient(y, params))
    c.op("d_params", "gather_grad", ["g", "indices"], got, axis=axis, size=params_shape[axis])
    c.output("d_params")
    return c


def gather_grad_cases():
    return [
        gather_grad_case("gather_grad_axis0_repeats", [5, 3], np.array([4, 0, 4, 4, 1], np.int32)),
        gather_grad_case("gather_grad_axis1_2d_indices", [2, 6, 3], np.array([[5, 1], [5, 5]], np.int64), axis=1),
        gather_grad_case("gather_grad_last_axis_scalar_index", [3, 4], np.array(2, np.int32), axis=1),
    ]


def loss_cases():
    return xent_cases() + one_hot_cases() + gather_grad_cases()


# ---------------------------------------------------------------------------------------------
# batch_norm_training data (read by tests/suite/losses.rs)


def write_batch_norm_training(root):
    """x, scale, offset and the moving statistics, then TF's training-mode output, the moving
    averages after one update (fused_batch_norm with exponential_avg_factor = 1 - momentum)
    and the gradients of sum(y * g) with respect to x, scale and offset (GradientTape)."""
    rng = np.random.default_rng(7)
    momentum, epsilon = 0.9, 0.001
    x = f32(rng.uniform(-2, 2, size=[4, 5, 3, 6]))
    scale = f32(rng.uniform(0.5, 1.5, size=[6]))
    offset = f32(rng.uniform(-1, 1, size=[6]))
    moving_mean = f32(rng.uniform(-0.5, 0.5, size=[6]))
    moving_variance = f32(rng.uniform(0.5, 2.0, size=[6]))
    g = f32(rng.uniform(-1, 1, size=x.shape))
    xt, st, ot = tf.constant(x), tf.constant(scale), tf.constant(offset)
    with tf.GradientTape() as tape:
        tape.watch([xt, st, ot])
        y, new_mean, new_var = tf.compat.v1.nn.fused_batch_norm(
            xt, st, ot, mean=moving_mean, variance=moving_variance, epsilon=epsilon, is_training=True,
            exponential_avg_factor=1.0 - momentum)
        total = tf.reduce_sum(y * g)
    dx, dscale, doffset = tape.gradient(total, [xt, st, ot])
    n = x.size // x.shape[-1]
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    check("batch_norm_training y", y, (x - mean) / np.sqrt(var + epsilon) * scale + offset)
    check("batch_norm_training moving variance", new_var,
          moving_variance * momentum + var * n / (n - 1) * (1 - momentum))
    root.mkdir(parents=True)
    arrays = dict(x=x, scale=scale, offset=offset, moving_mean=moving_mean, moving_variance=moving_variance,
                  g=g, y=y, new_moving_mean=new_mean, new_moving_variance=new_var, dx=dx, dscale=dscale,
                  doffset=doffset, momentum=f32(momentum), epsilon=f32(epsilon))
    for k, v in arrays.items():
        np.save(root / ("%s.npy" % k), f32(v))


def write_xent_gradients(root):
    """Logits, dense labels (rows summing to 1), sparse labels and an incoming gradient g, with
    TF's gradients (GradientTape) of sum(g * loss) for both cross entropies."""
    rng = np.random.default_rng(11)
    logits = f32(rng.uniform(-3, 3, size=[5, 7]))
    raw = rng.uniform(0.05, 1.0, size=[5, 7])
    labels = f32(raw / raw.sum(axis=-1, keepdims=True))
    sparse = rng.integers(0, 7, size=[5]).astype(np.int32)
    g = f32(rng.uniform(-1, 1, size=[5]))
    lt, lb = tf.constant(logits), tf.constant(labels)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([lt, lb])
        dense = tf.reduce_sum(g * tf.nn.softmax_cross_entropy_with_logits(labels=lb, logits=lt))
        sp = tf.reduce_sum(g * tf.nn.sparse_softmax_cross_entropy_with_logits(labels=sparse, logits=lt))
    d_logits, d_labels = tape.gradient(dense, [lt, lb])
    d_logits_sparse = tape.gradient(sp, lt)
    root.mkdir(parents=True)
    arrays = dict(logits=logits, labels=labels, g=g, d_logits=d_logits, d_labels=d_labels,
                  d_logits_sparse=d_logits_sparse)
    for k, v in arrays.items():
        np.save(root / ("%s.npy" % k), f32(v))
    np.save(root / "sparse_labels.npy", sparse)
