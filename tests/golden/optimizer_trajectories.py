"""Expected trajectories of kiln's optimizers, computed by TensorFlow's tf.compat.v1.train.

A variable w (f32[2,3]) minimises loss = sum((w * x - y)^2) for 20 steps with each optimizer;
the gradient is TensorFlow's own (tf.gradients). Writes, under tests/golden/optimizer/:
  w0.npy, x.npy, y.npy          the start value and the data
  <case>.npy                    f32[20, 2, 3]: w after each step
  <case>_slots.npy              the slots after the last step, stacked (Momentum: accum;
                                Adam: m, v), and for Adam <case>_powers.npy: beta1/2_power
Run: python3 tests/golden/optimizer_trajectories.py (CI only reads the files).
"""
import os

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimizer")
STEPS = 20

W0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], np.float32)
X = np.array([[1.0, 2.0, -0.5], [0.3, -1.5, 1.2]], np.float32)
Y = np.array([[2.0, -1.0, 0.5], [1.0, 0.8, -2.0]], np.float32)

CASES = {
    "sgd": lambda: tf1.train.GradientDescentOptimizer(0.05),
    "momentum": lambda: tf1.train.MomentumOptimizer(0.02, 0.9),
    "nesterov": lambda: tf1.train.MomentumOptimizer(0.02, 0.9, use_nesterov=True),
    "adam": lambda: tf1.train.AdamOptimizer(0.1),
}
SLOTS = {"momentum": ["momentum"], "nesterov": ["momentum"], "adam": ["m", "v"]}


def run(case):
    graph = tf.Graph()
    with graph.as_default():
        w = tf1.get_variable("w", initializer=W0, use_resource=True)
        loss = tf.reduce_sum(tf.square(w * X - Y))
        opt = CASES[case]()
        train = opt.minimize(loss)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            traj = []
            for _ in range(STEPS):
                sess.run(train)
                traj.append(sess.run(w))
            np.save(os.path.join(OUT, f"{case}.npy"), np.stack(traj).astype(np.float32))
            if case in SLOTS:
                slots = [sess.run(opt.get_slot(w, s)) for s in SLOTS[case]]
                np.save(os.path.join(OUT, f"{case}_slots.npy"), np.stack(slots).astype(np.float32))
            if case == "adam":
                powers = sess.run(list(opt._get_beta_accumulators()))
                np.save(os.path.join(OUT, "adam_powers.npy"), np.array(powers, np.float32))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, value in [("w0", W0), ("x", X), ("y", Y)]:
        np.save(os.path.join(OUT, f"{name}.npy"), value)
    for case in CASES:
        run(case)
    print(f"wrote {len(CASES)} trajectories of {STEPS} steps to {OUT}")


if __name__ == "__main__":
    main()
