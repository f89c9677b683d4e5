"""Gradient goldens: for each differentiable op and each attribute variant that changes the
arithmetic, TensorFlow's GradientTape gradient of a weighted sum of the op's result.

A gradient case is an ordinary case (graph.kiln with `output %loss`, inputs/, expected/loss.npy)
plus `gradients.txt`: the loss's name on the first line and the names to differentiate with
respect to, comma-separated, on the second. The conformance test adds the gradient outputs as
`kiln grad` does (`grad/<name>`) and compares them with expected/grad_<name>.npy on every
backend. The loss is `reduce_sum(y * seed)` with a random constant `seed` (broadcast over the
batch), so the elements of the op's result get different incoming gradients.
"""

import numpy as np
import tensorflow as tf
from kiln_case import Case, f32


class GradCase(Case):
    """A case whose forward graph is written op by op while TF computes it under a tape."""

    def __init__(self, name, tol=None):
        super().__init__(name, tol)
        self.tape = tf.GradientTape(persistent=True)
        self.tape.__enter__()
        self.tensors = {}
        self.wrt = []

    def x(self, name, arr, kind="input", unknown=()):
        """A value to differentiate with respect to: a placeholder or a variable."""
        if kind == "input":
            arr = self.input(name, arr, unknown)
        else:
            arr = self.var(name, arr)
        t = tf.constant(arr)
        self.tape.watch(t)
        self.tensors[name] = t
        self.wrt.append(name)
        return t

    def fixed(self, name, arr):
        """A constant operand that is not differentiated."""
        arr = self.const(name, arr)
        self.tensors[name] = tf.constant(arr)
        return self.tensors[name]

    def apply(self, name, op, operands, fn, **attrs):
        """`%name = op(operands)` with TF value `fn(*operand tensors)`."""
        t = fn(*[self.tensors[o] for o in operands])
        self.tensors[name] = t
        self.op(name, op, operands, t.numpy(), **attrs)
        return t

    def finish(self, y):
        """loss = reduce_sum(y * seed); expected loss and gradients."""
        # The seed broadcasts over the batch, so a graph whose batch is `?` runs at any batch.
        shape = list(self.tensors[y].shape)
        seed = self.fixed("seed", self.uniform(shape[1:] if len(shape) > 1 else shape, -1.0, 1.0))
        self.apply("weighted", "mul", [y, "seed"], lambda a, b: a * b)
        loss = self.apply("loss", "reduce_sum", ["weighted"], tf.math.reduce_sum)
        self.tape.__exit__(None, None, None)
        del seed
        self.output("loss")
        grads = self.tape.gradient(loss, [self.tensors[x] for x in self.wrt])
        for x, g in zip(self.wrt, grads):
            if g is None:
                raise SystemExit("%s: TF gives no gradient for %s" % (self.name, x))
            self.files["expected/grad_%s.npy" % x] = f32(tf.convert_to_tensor(g))
        return self

    def write(self, folder):
        super().write(folder)
        (folder / "gradients.txt").write_text("loss\n%s\n" % ", ".join(self.wrt))


def unary_cases():
    # Ranges avoid the kinks (0 for relu, 0 and 6 for relu6) by more than a rounding error.
    specs = [
        ("neg", tf.math.negative, (-2, 2), {}),
        ("sigmoid", tf.math.sigmoid, (-4, 4), {}),
        ("tanh", tf.math.tanh, (-3, 3), {}),
        ("exp", tf.math.exp, (-2, 2), {}),
        ("log", tf.math.log, (0.2, 3), {}),
        ("sqrt", tf.math.sqrt, (0.2, 3), {}),
        ("rsqrt", tf.math.rsqrt, (0.2, 3), {}),
        ("square", tf.math.square, (-2, 2), {}),
    ]
    cases = []
    for op, fn, (lo, hi), attrs in specs:
        c = GradCase("grad_%s" % op)
        c.x("x", c.uniform([3, 7], lo, hi))
        c.apply("y", op, ["x"], fn, **attrs)
        cases.append(c.finish("y"))
    return cases


BINARY = {
    "add": tf.math.add,
    "sub": tf.math.subtract,
    "mul": tf.math.multiply,
    "div": tf.math.divide,
}


def binary_cases():
    cases = []
    shapes = [("same", [2, 3, 4], [2, 3, 4]), ("bcast", [2, 3, 4], [3, 1]),
              ("rank", [4], [2, 3, 4])]
    for op, fn in BINARY.items():
        for label, sa, sb in shapes:
            c = GradCase("grad_%s_%s" % (op, label))
            c.x("a", c.uniform(sa, 0.5, 2.0))
            c.x("b", c.uniform(sb, 0.5, 2.0))
            c.apply("y", op, ["a", "b"], fn)
            cases.append(c.finish("y"))
    return cases


def bias_add_cases():
    cases = []
    for fmt, shape, ch in [("NHWC", [2, 3, 4, 5], 5), ("NCHW", [2, 3, 4, 5], 3)]:
        c = GradCase("grad_bias_add_%s" % fmt.lower())
        c.x("x", c.uniform(shape))
        c.x("b", c.uniform([ch]))
        attrs = {} if fmt == "NHWC" else {"data_format": fmt}
        c.apply("y", "bias_add", ["x", "b"],
                lambda x, b: tf.nn.bias_add(x, b, data_format=fmt), **attrs)
        cases.append(c.finish("y"))
    return cases


def matmul_cases():
    cases = []
    for ta, tb in [(False, False), (False, True), (True, False), (True, True)]:
        for batch in [None, 3]:
            m, k, n = 4, 5, 6
            sa = [k, m] if ta else [m, k]
            sb = [n, k] if tb else [k, n]
            if batch:
                sa, sb = [batch] + sa, [batch] + sb
            name = "grad_matmul%s%s%s" % ("_ta" if ta else "", "_tb" if tb else "",
                                          "_batched" if batch else "")
            c = GradCase(name)
            c.x("a", c.uniform(sa))
            c.x("b", c.uniform(sb))
            attrs = {}
            if ta:
                attrs["transpose_a"] = True
            if tb:
                attrs["transpose_b"] = True
            c.apply("y", "matmul", ["a", "b"],
                    lambda a, b: tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb), **attrs)
            cases.append(c.finish("y"))
    return cases


def reduce_cases():
    fns = {"reduce_sum": tf.math.reduce_sum, "reduce_mean": tf.math.reduce_mean}
    cases = []
    for op, fn in fns.items():
        for label, axes, keep in [("all", None, False), ("axis1", [1], False),
                                  ("axes_keep", [0, -1], True), ("last", [2], False)]:
            c = GradCase("grad_%s_%s" % (op, label))
            c.x("x", c.uniform([2, 3, 4]))
            attrs = {}
            if axes is not None:
                attrs["axes"] = axes
            if keep:
                attrs["keepdims"] = True
            c.apply("y", op, ["x"], lambda x: fn(x, axis=axes, keepdims=keep), **attrs)
            cases.append(c.finish("y"))
    # A mean over a batch the graph leaves unknown: the count is taken at run time.
    c = GradCase("grad_reduce_mean_unknown_batch")
    c.x("x", c.uniform([5, 3]), unknown=(0,))
    c.apply("y", "reduce_mean", ["x"], tf.math.reduce_mean)
    c.apply("z", "reshape", ["y"], lambda y: tf.reshape(y, [1]), shape=[1])
    cases.append(c.finish("z"))
    return cases


def softmax_cases():
    cases = []
    for op, fn in [("softmax", tf.nn.softmax), ("log_softmax", tf.nn.log_softmax)]:
        for axis in [-1, 1]:
            c = GradCase("grad_%s_axis%d" % (op, axis))
            c.x("x", c.uniform([2, 5, 3], -2, 2))
            attrs = {} if axis == -1 else {"axis": axis}
            c.apply("y", op, ["x"], lambda x: fn(x, axis=axis), **attrs)
            cases.append(c.finish("y"))
    return cases


def movement_cases():
    cases = []
    c = GradCase("grad_reshape")
    c.x("x", c.uniform([2, 3, 4]))
    c.apply("y", "reshape", ["x"], lambda x: tf.reshape(x, [4, 6]), shape=[4, -1])
    cases.append(c.finish("y"))

    c = GradCase("grad_transpose")
    c.x("x", c.uniform([2, 3, 4]))
    c.apply("y", "transpose", ["x"], lambda x: tf.transpose(x, [2, 0, 1]), perm=[2, 0, 1])
    cases.append(c.finish("y"))

    c = GradCase("grad_concat_axis1")
    c.x("a", c.uniform([2, 3, 4]))
    c.x("b", c.uniform([2, 5, 4]))
    c.apply("y", "concat", ["a", "b"], lambda a, b: tf.concat([a, b], 1), axis=1)
    cases.append(c.finish("y"))

    c = GradCase("grad_slice")
    c.x("x", c.uniform([3, 4, 5]))
    c.apply("y", "slice", ["x"], lambda x: tf.slice(x, [1, 0, 2], [2, -1, 2]),
            begin=[1, 0, 2], size=[2, -1, 2])
    cases.append(c.finish("y"))

    c = GradCase("grad_pad")
    c.x("x", c.uniform([2, 3]))
    c.apply("y", "pad", ["x"], lambda x: tf.pad(x, [[1, 0], [2, 3]], constant_values=1.5),
            paddings=[[1, 0], [2, 3]], constant_value=1.5)
    cases.append(c.finish("y"))
    return cases


def batch_norm_cases():
    cases = []
    for fmt in ["NHWC", "NCHW"]:
        c = GradCase("grad_batch_norm_%s" % fmt.lower())
        ch = 5 if fmt == "NHWC" else 3
        c.x("x", c.uniform([2, 3, 4, 5]))
        c.x("scale", c.uniform([ch], 0.5, 1.5))
        c.x("offset", c.uniform([ch]))
        c.x("mean", c.uniform([ch]))
        c.x("variance", c.uniform([ch], 0.5, 1.5))

        def bn(x, scale, offset, mean, variance):
            shape = [1, 1, 1, ch] if fmt == "NHWC" else [1, ch, 1, 1]
            r = lambda v: tf.reshape(v, shape)  # noqa: E731
            return tf.nn.batch_normalization(x, r(mean), r(variance), r(offset), r(scale), 0.001)

        attrs = {} if fmt == "NHWC" else {"data_format": fmt}
        c.apply("y", "batch_norm", ["x", "scale", "offset", "mean", "variance"], bn, **attrs)
        cases.append(c.finish("y"))
    return cases


def lrn_cases():
    c = GradCase("grad_lrn")
    c.lines[0] = "kiln 2"
    c.x("x", c.uniform([1, 3, 3, 9]))
    c.apply("y", "lrn", ["x"],
            lambda x: tf.nn.local_response_normalization(x, 2, 1.5, 0.3, 0.75),
            depth_radius=2, bias=1.5, alpha=0.3, beta=0.75)
    return [c.finish("y")]


def network_cases():
    """A small dense network with variables: the gradients an optimizer step uses."""
    c = GradCase("grad_dense_net_variables")
    c.fixed("x", c.uniform([6, 5]))
    c.x("w1", c.normal([5, 8], 0.5), kind="var")
    c.x("b1", c.uniform([8], -0.1, 0.1), kind="var")
    c.x("w2", c.normal([8, 3], 0.5), kind="var")
    c.apply("h", "matmul", ["x", "w1"], tf.linalg.matmul)
    c.apply("hb", "bias_add", ["h", "b1"], tf.nn.bias_add)
    c.apply("t", "tanh", ["hb"], tf.math.tanh)
    c.apply("logits", "matmul", ["t", "w2"], tf.linalg.matmul)
    c.apply("y", "log_softmax", ["logits"], tf.nn.log_softmax)
    return [c.finish("y")]


def grad_cases():
    return (unary_cases() + binary_cases() + bias_add_cases() + matmul_cases() + reduce_cases()
            + softmax_cases() + movement_cases() + batch_norm_cases() + lrn_cases()
            + network_cases() + training_op_cases())


def away_from_zero(c, shape, lo=0.1, hi=2.0):
    """Values with |x| in [lo, hi): no element near a kink at 0."""
    mag = c.uniform(shape, lo, hi)
    sign = np.where(c.uniform(shape) < 0, -1.0, 1.0).astype(np.float32)
    return f32(mag * sign)


def kinked_unary_cases():
    cases = []
    specs = [
        ("abs", tf.math.abs, {}, lambda c, s: away_from_zero(c, s)),
        ("relu", tf.nn.relu, {}, lambda c, s: away_from_zero(c, s)),
        # relu6: values around 0 and 6, none near either kink.
        ("relu6", tf.nn.relu6, {},
         lambda c, s: f32(np.where(c.uniform(s) < 0, away_from_zero(c, s), 6.0 + away_from_zero(c, s)))),
        ("leaky_relu", lambda x: tf.nn.leaky_relu(x, 0.2), {}, lambda c, s: away_from_zero(c, s)),
        ("sign", tf.math.sign, {}, lambda c, s: away_from_zero(c, s)),
    ]
    for op, fn, attrs, make in specs:
        c = GradCase("grad_%s" % op)
        if op == "sign":
            c.lines[0] = "kiln 3"
        c.x("x", make(c, [3, 7]))
        c.apply("y", op, ["x"], fn, **attrs)
        cases.append(c.finish("y"))
    return cases


def max_min_pow_select_cases():
    cases = []
    for op, fn in [("maximum", tf.math.maximum), ("minimum", tf.math.minimum)]:
        for label, sa, sb in [("same", [2, 3, 4], [2, 3, 4]), ("bcast", [2, 3, 4], [3, 1])]:
            c = GradCase("grad_%s_%s" % (op, label))
            c.x("a", c.uniform(sa))
            c.x("b", c.uniform(sb))
            c.apply("y", op, ["a", "b"], fn)
            cases.append(c.finish("y"))
    c = GradCase("grad_pow")
    c.x("a", c.uniform([3, 4], 0.5, 2.0))
    c.x("b", c.uniform([4], -1.5, 1.5))
    c.apply("y", "pow", ["a", "b"], tf.math.pow)
    cases.append(c.finish("y"))
    # a <= 0: TF's exponent gradient is 0 there (log masked), kiln's too.
    c = GradCase("grad_pow_nonpositive_base")
    c.x("a", f32([[-1.5, 0.0, 2.0], [0.5, -0.25, 3.0]]))
    c.x("b", f32([2.0, 3.0, 1.5]))
    c.apply("y", "pow", ["a", "b"], tf.math.pow)
    cases.append(c.finish("y"))
    for op, fn in [("reduce_max", tf.math.reduce_max), ("reduce_min", tf.math.reduce_min)]:
        for label, axes, keep in [("axis1", [1], False), ("all", None, False), ("keep", [0, 2], True)]:
            c = GradCase("grad_%s_%s" % (op, label))
            c.x("x", c.uniform([2, 3, 4]))
            attrs = {}
            if axes is not None:
                attrs["axes"] = axes
            if keep:
                attrs["keepdims"] = True
            c.apply("y", op, ["x"], lambda x: fn(x, axis=axes, keepdims=keep), **attrs)
            cases.append(c.finish("y"))
    # Ties share the gradient equally.
    c = GradCase("grad_reduce_max_ties")
    c.x("x", f32([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, -1.0]]))
    c.apply("y", "reduce_max", ["x"], lambda x: tf.math.reduce_max(x, axis=1), axes=[1])
    cases.append(c.finish("y"))
    c = GradCase("grad_select_bcast")
    c.lines[0] = "kiln 3"
    cond = c.uniform([3, 1]) > 0
    c.input("cond", cond)
    c.tensors["cond"] = tf.constant(cond)
    c.x("a", c.uniform([3, 4]))
    c.x("b", c.uniform([4]))
    c.apply("y", "select", ["cond", "a", "b"], tf.where)
    cases.append(c.finish("y"))
    return cases


def conv(x, w, strides, padding, dilations, nchw, depthwise):
    """TF's convolution as kiln defines it, built so that TF's CPU gradients exist: NCHW by
    transposes, dilation through atrous convolution, groups as one conv per group."""
    if nchw:
        x = tf.transpose(x, [0, 2, 3, 1])
    pad = padding if isinstance(padding, str) else [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]
    if depthwise:
        y = tf.nn.depthwise_conv2d(x, w, [1, strides[0], strides[1], 1], pad, dilations=dilations)
    elif dilations != (1, 1):
        y = tf.nn.atrous_conv2d(x, w, dilations[0], pad)
    else:
        groups = x.shape[3] // w.shape[2]
        xs = tf.split(x, groups, axis=3)
        ws = tf.split(w, groups, axis=3)
        y = tf.concat([tf.nn.conv2d(a, b, [1, strides[0], strides[1], 1], pad)
                       for a, b in zip(xs, ws)], axis=3)
    if nchw:
        y = tf.transpose(y, [0, 3, 1, 2])
    return y


def conv_cases():
    specs = [
        ("same_s1", [2, 5, 5, 2], [3, 3, 2, 4], {}),
        ("same_s2_odd", [1, 7, 7, 2], [3, 3, 2, 3], {"strides": (2, 2)}),
        ("same_s2_even", [1, 8, 8, 2], [3, 3, 2, 3], {"strides": (2, 2)}),
        ("valid_s2", [1, 9, 8, 2], [3, 3, 2, 2], {"strides": (2, 2), "padding": "VALID"}),
        ("explicit", [1, 6, 7, 2], [3, 3, 2, 3], {"padding": ((1, 2), (0, 1))}),
        ("dilation2", [1, 9, 9, 2], [3, 3, 2, 2], {"dilations": (2, 2)}),
        ("grouped_g2", [1, 6, 6, 4], [3, 3, 2, 6], {}),
        ("nchw", [1, 5, 6, 3], [3, 3, 3, 2], {"nchw": True}),
        ("unknown_batch", [3, 6, 6, 2], [3, 3, 2, 4], {"unknown": (0,)}),
    ]
    cases = []
    for depthwise in [False, True]:
        for label, xs, ws, o in specs:
            if depthwise and label.startswith("grouped"):
                continue
            strides = o.get("strides", (1, 1))
            padding = o.get("padding", "SAME")
            dilations = o.get("dilations", (1, 1))
            nchw = o.get("nchw", False)
            if depthwise:
                ws = [ws[0], ws[1], xs[3], 2]
            name = "grad_%s_%s" % ("depthwise" if depthwise else "conv2d", label)
            c = GradCase(name)
            x = c.uniform(xs)
            if nchw:
                x = f32(np.transpose(x, [0, 3, 1, 2]))
            c.x("x", x, unknown=o.get("unknown", ()))
            c.x("w", c.normal(ws, 0.5))
            attrs = {"strides": list(strides),
                     "padding": padding if isinstance(padding, str) else [list(p) for p in padding]}
            if dilations != (1, 1):
                attrs["dilations"] = list(dilations)
            if nchw:
                attrs["data_format"] = "NCHW"
            op = "depthwise_conv2d" if depthwise else "conv2d"
            c.apply("y", op, ["x", "w"],
                    lambda x, w: conv(x, w, strides, padding, dilations, nchw, depthwise), **attrs)
            cases.append(c.finish("y"))
    return cases


def pool_cases():
    cases = []
    for kind, fn in [("max_pool", tf.nn.max_pool2d), ("avg_pool", tf.nn.avg_pool2d)]:
        for label, k, s, padding in [("k2_s2_valid", 2, 2, "VALID"), ("k3_s2_same_odd", 3, 2, "SAME"),
                                     ("k3_s1_same", 3, 1, "SAME")]:
            c = GradCase("grad_%s_%s" % (kind, label))
            # A permutation of distinct values: no ties for max pool.
            x = f32(c.rng.permutation(2 * 7 * 7 * 3).reshape(2, 7, 7, 3) / 50.0 - 1.0)
            c.x("x", x)
            c.apply("y", kind, ["x"], lambda x: fn(x, k, s, padding), ksize=[k, k],
                    strides=[s, s], padding=padding)
            cases.append(c.finish("y"))
    return cases


def cross_entropy_cases():
    cases = []
    c = GradCase("grad_softmax_cross_entropy")
    c.lines[0] = "kiln 3"
    c.x("logits", c.uniform([4, 5], -3, 3))
    labels = c.uniform([4, 5], 0.1, 1.0)
    c.x("labels", f32(labels / labels.sum(axis=1, keepdims=True)))
    c.apply("y", "softmax_cross_entropy_with_logits", ["logits", "labels"],
            lambda a, b: tf.nn.softmax_cross_entropy_with_logits(labels=b, logits=a))
    cases.append(c.finish("y"))
    c = GradCase("grad_sparse_softmax_cross_entropy")
    c.lines[0] = "kiln 3"
    c.x("logits", c.uniform([4, 5], -3, 3))
    labels = np.array([0, 4, 2, 2], dtype=np.int32)
    c.input("labels", labels)
    c.tensors["labels"] = tf.constant(labels)
    c.apply("y", "sparse_softmax_cross_entropy_with_logits", ["logits", "labels"],
            lambda a, b: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=b, logits=a))
    cases.append(c.finish("y"))
    c = GradCase("grad_gather_repeated")
    c.lines[0] = "kiln 2"
    c.x("params", c.uniform([5, 3]))
    idx = np.array([4, 0, 4, 2, 4], dtype=np.int64)
    c.input("indices", idx)
    c.tensors["indices"] = tf.constant(idx)
    c.apply("y", "gather", ["params", "indices"], lambda p, i: tf.gather(p, i))
    cases.append(c.finish("y"))
    return cases


def training_op_cases():
    return (kinked_unary_cases() + max_min_pow_select_cases() + conv_cases() + pool_cases()
            + cross_entropy_cases())
