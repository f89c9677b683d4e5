"""TensorFlow's gradients and optimizer trajectories for a small CNN, the data `kiln grad` and
`kiln train` are checked against (tests/suite/training.rs).

The model, written here for TensorFlow and independently as `cnn.kiln` text: 16 images 8x8x1 ->
conv 3x3 SAME 1->4 + bias + relu -> max_pool 2x2 -> reshape [-1, 64] -> dense 64->3 (+ bias) ->
loss = mean of sparse_softmax_cross_entropy_with_logits over the integer labels. Everything is
built in tf.compat.v1 graph mode and trained with tf.compat.v1.train's optimizers, full batch.

Writes, under tests/golden/training_cnn/:
  cnn.kiln                      the forward graph and the loss; variables read <var>.npy
  x.npy, labels.npy             the data (f32[16,8,8,1], i32[16])
  w1.npy, b1.npy, w2.npy, b2.npy  the initial weights
  grad_<var>.npy                TF's gradient of the loss w.r.t. each variable at the start
  <opt>/<var>.npy               each variable after 20 steps of <opt> (sgd, momentum, nesterov,
                                adam, with the hyperparameters in OPTIMIZERS)
  <opt>/loss.npy                f32[20]: the loss each step computed (before its update)
Run: python3 tests/golden/train_cnn.py (CI only reads the files).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN reorders float sums; the plain Eigen kernels keep the data reproducible across machines.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_cnn")
STEPS = 20
CLASSES = 3

# The hyperparameters tests/suite/training.rs passes to `kiln train` (keep them in step).
OPTIMIZERS = {
    "sgd": lambda: tf1.train.GradientDescentOptimizer(0.1),
    "momentum": lambda: tf1.train.MomentumOptimizer(0.05, 0.9),
    "nesterov": lambda: tf1.train.MomentumOptimizer(0.05, 0.9, use_nesterov=True),
    "adam": lambda: tf1.train.AdamOptimizer(0.01),
}

KILN = """kiln 3
# A small CNN and its loss, written to match tests/golden/train_cnn.py's TensorFlow model.
input %x : f32[?,8,8,1]
input %labels : i32[?]
var %w1 : f32[3,3,1,4] = npy("w1.npy")
var %b1 : f32[4] = npy("b1.npy")
var %w2 : f32[64,3] = npy("w2.npy")
var %b2 : f32[3] = npy("b2.npy")
%conv = conv2d(%x, %w1, strides=[1,1], padding="SAME")
%biased = bias_add(%conv, %b1)
%hidden = relu(%biased)
%pool = max_pool(%hidden, ksize=[2,2], strides=[2,2], padding="VALID")
%flat = reshape(%pool, shape=[-1, 64])
%dense = matmul(%flat, %w2)
%logits = add(%dense, %b2)
%xent = sparse_softmax_cross_entropy_with_logits(%logits, %labels)
%loss = reduce_mean(%xent)
output %loss
"""


def data():
    rng = np.random.default_rng(20261207)
    arrays = {
        "x": rng.normal(0.0, 1.0, (16, 8, 8, 1)).astype(np.float32),
        "labels": rng.integers(0, CLASSES, 16).astype(np.int32),
        "w1": rng.normal(0.0, 0.5, (3, 3, 1, 4)).astype(np.float32),
        "b1": rng.normal(0.0, 0.1, (4,)).astype(np.float32),
        "w2": rng.normal(0.0, 0.3, (64, CLASSES)).astype(np.float32),
        "b2": rng.normal(0.0, 0.1, (CLASSES,)).astype(np.float32),
    }
    return arrays


VARS = ["w1", "b1", "w2", "b2"]


def model(arrays):
    """The TensorFlow graph: variables, loss (in the current default graph)."""
    v = {n: tf1.get_variable(n, initializer=arrays[n], use_resource=True) for n in VARS}
    x = tf.constant(arrays["x"])
    labels = tf.constant(arrays["labels"])
    conv = tf.nn.conv2d(x, v["w1"], strides=[1, 1, 1, 1], padding="SAME")
    hidden = tf.nn.relu(tf.nn.bias_add(conv, v["b1"]))
    pool = tf.nn.max_pool2d(hidden, ksize=2, strides=2, padding="VALID")
    flat = tf.reshape(pool, [-1, 64])
    logits = tf.matmul(flat, v["w2"]) + v["b2"]
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return v, tf.reduce_mean(xent)


def gradients(arrays):
    graph = tf.Graph()
    with graph.as_default():
        v, loss = model(arrays)
        grads = tf.gradients(loss, [v[n] for n in VARS])
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            for name, g in zip(VARS, sess.run(grads)):
                np.save(os.path.join(OUT, f"grad_{name}.npy"), g.astype(np.float32))


def trajectory(arrays, case):
    graph = tf.Graph()
    with graph.as_default():
        v, loss = model(arrays)
        train = OPTIMIZERS[case]().minimize(loss)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            losses = [sess.run([loss, train])[0] for _ in range(STEPS)]
            folder = os.path.join(OUT, case)
            os.makedirs(folder, exist_ok=True)
            np.save(os.path.join(folder, "loss.npy"), np.array(losses, np.float32))
            for name in VARS:
                np.save(os.path.join(folder, f"{name}.npy"), sess.run(v[name]).astype(np.float32))
            return losses


def main():
    os.makedirs(OUT, exist_ok=True)
    arrays = data()
    for name, value in arrays.items():
        np.save(os.path.join(OUT, f"{name}.npy"), value)
    with open(os.path.join(OUT, "cnn.kiln"), "w") as f:
        f.write(KILN)
    gradients(arrays)
    for case in OPTIMIZERS:
        losses = trajectory(arrays, case)
        print(f"{case}: loss {losses[0]:.5f} -> {losses[-1]:.5f}")
    print(f"wrote gradients and {len(OPTIMIZERS)} trajectories of {STEPS} steps to {OUT}")


if __name__ == "__main__":
    main()
