#!/usr/bin/env python3
"""Time one training step in kiln and in TensorFlow, side by side in one run.

Two networks, both NHWC, float32, built from one description so both sides run the same layers
and shapes:

- digits: the CNN of examples/train_digits.rs (8x8x1 -> conv 3x3 16 + relu, 2x2 max pool,
  conv 3x3 32 + relu, 2x2 max pool, dense 128 -> 10), batch 64;
- resnet18: ResNet-18 at 224x224x3 (7x7/2 conv, 3x3/2 max pool, 8 basic blocks, global average
  pool, dense 512 -> 1000), batch 8. Batch normalisation is in training form on both sides,
  written out as batch statistics (mean and variance over N, H, W; epsilon 1e-3) times a
  trainable scale plus offset; moving averages are not kept on either side. Padding is SAME
  everywhere (TensorFlow's rule, asymmetric on the stride-2 layers), on both sides.

The loss is the mean over the batch of -sum(labels * log_softmax(logits)) against dense labels.
The step is one optimizer update of every weight: SGD (lr 0.01, `var.assign_sub(lr * grad)`,
what tf.compat.v1.train.GradientDescentOptimizer does) or Adam (tf.keras' Adam, epsilon 1e-8 as
tf.compat.v1's). kiln: `kiln bench GRAPH --train loss --optimizer ...` on a .kiln file this
script writes (a temporary folder), timed by kiln's own clock around `Session::run_with_targets`
(loss fetched). TensorFlow: a `tf.function` computing the loss under a GradientTape and applying
the update, returning the loss, timed with perf_counter around the call (`.numpy()` of the loss
included, as kiln returns it). Both use `--threads` threads (TF: intra-op threads, inter-op 1).
Both: inputs made before timing, `--warmup` steps, then the median of `--runs` steps.

ONNX Runtime training is not timed: see benches/README.md.

    python3 benches/peers/train_peers.py [--kiln target/release/kiln] [--runs 20] [--only digits]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


class KilnText:
    """Writes the network as .kiln text; every method returns the name of its result."""

    def __init__(self, image_shape, classes):
        self.lines = ["kiln 3"]
        self.count = 0
        self.seed = 0
        h, w, c = image_shape
        self.lines.append(f"input %images : f32[?,{h},{w},{c}]")
        self.lines.append(f"input %labels : f32[?,{classes}]")
        self.images = "%images"
        self.labels = "%labels"

    def fresh(self, stem):
        self.count += 1
        return f"%{stem}{self.count}"

    def op(self, stem, text):
        name = self.fresh(stem)
        self.lines.append(f"{name} = {text}")
        return name

    def weight(self, stem, dims, std):
        self.seed += 1
        name = self.fresh(stem)
        dims_text = ",".join(str(d) for d in dims)
        init = "zeros" if std == 0 else ("ones" if std is None else f"normal(0, {std:.6g}, {self.seed})")
        self.lines.append(f"var {name} : f32[{dims_text}] = {init}")
        return name

    def conv(self, x, k, cin, cout, stride, bias):
        w = self.weight("w", [k, k, cin, cout], (2.0 / (k * k * cin)) ** 0.5)
        y = self.op("conv", f'conv2d({x}, {w}, strides=[{stride},{stride}], padding="SAME")')
        if bias:
            y = self.op("bias", f"bias_add({y}, {self.weight('b', [cout], 0)})")
        return y

    def batch_norm(self, x, c):
        gamma = self.weight("gamma", [c], None)
        beta = self.weight("beta", [c], 0)
        mean = self.op("mean", f"reduce_mean({x}, axes=[0,1,2], keepdims=true)")
        centred = self.op("centred", f"sub({x}, {mean})")
        squared = self.op("sq", f"square({centred})")
        var = self.op("var", f"reduce_mean({squared}, axes=[0,1,2], keepdims=true)")
        eps = self.fresh("eps")
        self.lines.append(f"const {eps} : f32[1] = [0.001]")
        inv = self.op("inv", f"rsqrt({self.op('vareps', f'add({var}, {eps})')})")
        y = self.op("norm", f"mul({centred}, {inv})")
        return self.op("bn", f"add({self.op('scaled', f'mul({y}, {gamma})')}, {beta})")

    def relu(self, x):
        return self.op("relu", f"relu({x})")

    def add(self, a, b):
        return self.op("add", f"add({a}, {b})")

    def max_pool(self, x, k, stride):
        return self.op(
            "pool", f'max_pool({x}, ksize=[{k},{k}], strides=[{stride},{stride}], padding="SAME")'
        )

    def global_avg_pool(self, x):
        return self.op("gap", f"reduce_mean({x}, axes=[1,2])")

    def flatten(self, x, n):
        return self.op("flat", f"reshape({x}, shape=[-1,{n}])")

    def dense(self, x, n_in, n_out):
        w = self.weight("w", [n_in, n_out], (2.0 / n_in) ** 0.5)
        y = self.op("mm", f"matmul({x}, {w})")
        return self.op("logits", f"bias_add({y}, {self.weight('b', [n_out], 0)})")

    def loss(self, logits):
        log_p = self.op("logp", f"log_softmax({logits}, axis=-1)")
        picked = self.op("picked", f"mul({self.labels}, {log_p})")
        per_sample = self.op("persample", f"reduce_sum({picked}, axes=[1])")
        mean = self.op("meanloss", f"reduce_mean({per_sample}, axes=[0])")
        self.lines.append(f"%loss = neg({mean})")
        self.lines.append("output %loss")
        return "%loss"

    def text(self):
        return "\n".join(self.lines) + "\n"


class TfNet:
    """The same layers as tf ops on tf.Variables, for a tf.function; built on the first call."""

    def __init__(self, tf, image_shape, classes):
        self.tf = tf
        self.vars = []
        self.reused = None  # during a trace: the index of the next variable to reuse
        self.images = None
        self.labels = None

    def weight(self, dims, std):
        tf = self.tf
        if self.reused is not None:
            self.reused += 1
            return self.vars[self.reused - 1]
        if std == 0:
            init = tf.zeros(dims)
        elif std is None:
            init = tf.ones(dims)
        else:
            init = tf.random.normal(dims, stddev=std, seed=len(self.vars) + 1)
        v = tf.Variable(init)
        self.vars.append(v)
        return v

    def conv(self, x, k, cin, cout, stride, bias):
        w = self.weight([k, k, cin, cout], (2.0 / (k * k * cin)) ** 0.5)
        y = self.tf.nn.conv2d(x, w, strides=stride, padding="SAME")
        if bias:
            y = self.tf.nn.bias_add(y, self.weight([cout], 0))
        return y

    def batch_norm(self, x, c):
        gamma, beta = self.weight([c], None), self.weight([c], 0)
        mean = self.tf.reduce_mean(x, axis=[0, 1, 2], keepdims=True)
        centred = x - mean
        var = self.tf.reduce_mean(self.tf.square(centred), axis=[0, 1, 2], keepdims=True)
        return centred * self.tf.math.rsqrt(var + 1e-3) * gamma + beta

    def relu(self, x):
        return self.tf.nn.relu(x)

    def add(self, a, b):
        return a + b

    def max_pool(self, x, k, stride):
        return self.tf.nn.max_pool2d(x, k, stride, "SAME")

    def global_avg_pool(self, x):
        return self.tf.reduce_mean(x, axis=[1, 2])

    def flatten(self, x, n):
        return self.tf.reshape(x, [-1, n])

    def dense(self, x, n_in, n_out):
        w = self.weight([n_in, n_out], (2.0 / n_in) ** 0.5)
        return self.tf.nn.bias_add(self.tf.matmul(x, w), self.weight([n_out], 0))

    def loss(self, logits):
        log_p = self.tf.nn.log_softmax(logits, axis=-1)
        return -self.tf.reduce_mean(self.tf.reduce_sum(self.labels * log_p, axis=1))


def digits(net):
    """examples/train_digits.rs's CNN."""
    x = net.relu(net.conv(net.images, 3, 1, 16, 1, bias=True))
    x = net.max_pool(x, 2, 2)
    x = net.relu(net.conv(x, 3, 16, 32, 1, bias=True))
    x = net.max_pool(x, 2, 2)
    x = net.flatten(x, 128)
    return net.loss(net.dense(x, 128, 10))


def resnet18(net):
    """ResNet-18 (basic blocks [2, 2, 2, 2]), batch norm after every conv, no conv biases."""
    x = net.relu(net.batch_norm(net.conv(net.images, 7, 3, 64, 2, bias=False), 64))
    x = net.max_pool(x, 3, 2)
    cin = 64
    for stage, cout in enumerate([64, 128, 256, 512]):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = net.relu(net.batch_norm(net.conv(x, 3, cin, cout, stride, bias=False), cout))
            y = net.batch_norm(net.conv(y, 3, cout, cout, 1, bias=False), cout)
            if stride != 1 or cin != cout:
                x = net.batch_norm(net.conv(x, 1, cin, cout, stride, bias=False), cout)
            x = net.relu(net.add(x, y))
            cin = cout
    x = net.global_avg_pool(x)
    return net.loss(net.dense(x, 512, 1000))


NETS = {
    # name: (builder, image shape, classes, batch)
    "digits": (digits, (8, 8, 1), 10, 64),
    "resnet18": (resnet18, (224, 224, 3), 1000, 8),
}


def time_kiln(kiln, folder, name, args):
    build, image_shape, classes, batch = NETS[name]
    text = KilnText(image_shape, classes)
    build(text)
    path = os.path.join(folder, f"{name}_train.kiln")
    with open(path, "w") as f:
        f.write(text.text())
    cmd = [
        kiln, "bench", path, "--train", "loss", "--optimizer", args.optimizer,
        "--batch", str(batch), "--threads", str(args.threads), "--runs", str(args.runs),
        "--warmup", str(args.warmup), "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_tf(tf, name, args):
    build, image_shape, classes, batch = NETS[name]
    net = TfNet(tf, image_shape, classes)
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(-1, 1, (batch, *image_shape)).astype(np.float32))
    labels = tf.constant(rng.uniform(-1, 1, (batch, classes)).astype(np.float32))
    net.images, net.labels = images, labels
    build(net)  # creates the variables eagerly, outside the tf.function
    if args.optimizer == "adam":
        opt = tf.keras.optimizers.Adam(learning_rate=0.001, epsilon=1e-8)
    else:
        opt = None

    @tf.function
    def step(images, labels):
        net.images, net.labels, net.reused = images, labels, 0
        with tf.GradientTape() as tape:
            loss = build(net)
        grads = tape.gradient(loss, net.vars)
        if opt is None:
            for v, g in zip(net.vars, grads):
                v.assign_sub(0.01 * g)
        else:
            opt.apply_gradients(zip(grads, net.vars))
        return loss

    times = []
    for i in range(args.warmup + args.runs):
        start = time.perf_counter()
        step(images, labels).numpy()
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kiln", default="target/release/kiln")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--only", default="digits,resnet18")
    p.add_argument("--no-tf", action="store_true")
    p.add_argument("--keep", metavar="DIR", help="write the .kiln graphs here and keep them")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in NETS:
            sys.exit(f"--only {n}: expected one of {', '.join(NETS)}")

    tf = None
    if not args.no_tf:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or temporary
        os.makedirs(folder, exist_ok=True)
        for name in names:
            k = time_kiln(args.kiln, folder, name, args)
            t = time_tf(tf, name, args) if tf else None
            rows.append((name, NETS[name][3], k, t))
    cpu = rows[0][2]["cpu"] if rows else "?"
    print(f"cpu {cpu}; {args.threads} threads; {args.optimizer}; median of {args.runs} steps "
          f"after {args.warmup} warmup; kiln FMA peak {rows[0][2]['fma_peak_gflops']:.1f} GFLOP/s"
          if rows else "")
    print(f"{'net':<10} {'batch':>5} {'kiln ms':>9} {'TF ms':>9} {'TF/kiln':>8} "
          f"{'arena MB step':>14} {'arena MB fwd':>13} {'step/fwd':>9}")
    for name, batch, k, t in rows:
        step_mb = k["arena_bytes"] / 2**20
        fwd_mb = (k["forward_arena_bytes"] or 0) / 2**20
        ratio = f"{t / k['median_ms']:.2f}" if t else "-"
        tf_ms = f"{t:.3f}" if t else "-"
        print(f"{name:<10} {batch:>5} {k['median_ms']:>9.3f} {tf_ms:>9} {ratio:>8} "
              f"{step_mb:>14.1f} {fwd_mb:>13.1f} {step_mb / max(fwd_mb, 1e-9):>9.2f}")


if __name__ == "__main__":
    main()
