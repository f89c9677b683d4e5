"""Whole CNNs as ONNX models built with onnx.helper: ResNet-18, MobileNet-v2 and a DenseNet block.

Shared by the ONNX import fixtures (onnx/tests/gen_fixtures.py: 32x32 inputs, few channels) and
the peer benchmarks (run_peers.py: 224x224, the real widths). Weights are seeded He-normal
samples and batch norms have seeded statistics, so activations stay of order 1 through the
depth; the values mean nothing, the arithmetic is the real one. Every model's batch dim is
symbolic (`N`).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def typed_outputs(m):
    """`m` with shapeless graph outputs given the types ONNX shape inference finds (the checker
    wants output shapes; writing them by hand for every case is error-prone)."""
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {v.name: v.type for v in inferred.graph.value_info}
    types.update({v.name: v.type for v in inferred.graph.output if v.type.tensor_type.HasField("shape")})
    for out in m.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in types:
            out.type.CopyFrom(types[out.name])
    return m


class Net:
    """Nodes and initializers of one model, with seeded weights and generated names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], {}

    def name(self, base):
        self.count[base] = self.count.get(base, 0) + 1
        return f"{base}{self.count[base]}"

    def tensor(self, name, data):
        self.inits.append(numpy_helper.from_array(np.asarray(data), name))
        return name

    def node(self, op, inputs, base=None, **attrs):
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, group=1, bias=False):
        base = self.name("conv")
        fan_in = cin // group * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), size=(cout, cin // group, k, k))
        inputs = [x, self.tensor(base + ".weight", w.astype(np.float32))]
        if bias:
            inputs.append(self.tensor(base + ".bias", self.rng.normal(0, 0.1, cout).astype(np.float32)))
        p = k // 2
        self.nodes.append(helper.make_node("Conv", inputs, [base], name=base, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[p, p, p, p],
                                           group=group))  # fmt: skip
        return base

    def bn(self, x, c):
        base = self.name("bn")
        r = self.rng
        params = [
            self.tensor(base + ".gamma", r.normal(1.0, 0.1, c).astype(np.float32)),
            self.tensor(base + ".beta", r.normal(0.0, 0.1, c).astype(np.float32)),
            self.tensor(base + ".mean", r.normal(0.0, 0.1, c).astype(np.float32)),
            self.tensor(base + ".var", r.uniform(0.5, 1.5, c).astype(np.float32)),
        ]
        self.nodes.append(helper.make_node("BatchNormalization", [x] + params, [base], name=base,
                                           epsilon=1e-5))  # fmt: skip
        return base

    def dense(self, x, cin, cout):
        base = self.name("fc")
        w = self.rng.normal(0, np.sqrt(1.0 / cin), size=(cout, cin)).astype(np.float32)
        b = self.rng.normal(0, 0.1, cout).astype(np.float32)
        inputs = [x, self.tensor(base + ".weight", w), self.tensor(base + ".bias", b)]
        self.nodes.append(helper.make_node("Gemm", inputs, [base], name=base, transB=1))
        return base

    def model(self, name, size, out, opset):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            initializer=self.inits,
        )  # fmt: skip
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="kiln-nets")  # fmt: skip
        m.ir_version = 7
        onnx.checker.check_model(typed_outputs(m))
        return m


def resnet18(size=224, widths=(64, 128, 256, 512), classes=1000, opset=9):
    """ResNet-18: 7x7/2 stem, 3x3/2 max pool, four stages of two basic blocks, GAP, FC, softmax."""
    n = Net(18)
    x = n.node("Relu", [n.bn(n.conv("image", 3, widths[0], 7, 2), widths[0])])
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = widths[0]
    for stage, c in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = n.node("Relu", [n.bn(n.conv(x, cin, c, 3, stride), c)])
            y = n.bn(n.conv(y, c, c, 3), c)
            skip = x if stride == 1 and cin == c else n.bn(n.conv(x, cin, c, 1, stride), c)
            x = n.node("Relu", [n.node("Add", [y, skip])])
            cin = c
    x = n.node("Flatten", [n.node("GlobalAveragePool", [x])], axis=1)
    probs = n.node("Softmax", [n.dense(x, cin, classes)], axis=1)
    return n.model("resnet18", size, probs, opset)


def _relu6(n, x, opset):
    if opset >= 11:
        lo = n.tensor(n.name("zero"), np.array(0.0, np.float32))
        hi = n.tensor(n.name("six"), np.array(6.0, np.float32))
        return n.node("Clip", [x, lo, hi])
    return n.node("Clip", [x], min=0.0, max=6.0)


def mobilenet_v2(size=224, width=1.0, classes=1000, opset=13, grouped=True):
    """MobileNet-v2: inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear
    projection) with Clip(0, 6) activations, a dynamic-batch flatten (Shape, Gather, Unsqueeze,
    Concat, Reshape) and a classifier. With `grouped`, the last block's projection is a
    2-group conv (kiln's grouped conv2d rather than depthwise)."""

    def ch(c):
        return max(8, int(c * width + 4) // 8 * 8)

    n = Net(2)
    c0 = ch(32)
    x = _relu6(n, n.bn(n.conv("image", 3, c0, 3, 2), c0), opset)
    cin = c0
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip
    for si, (t, c, reps, s) in enumerate(settings):
        cout = ch(c)
        for r in range(reps):
            stride = s if r == 0 else 1
            hidden = cin * t
            y = x
            if t != 1:
                y = _relu6(n, n.bn(n.conv(y, cin, hidden, 1), hidden), opset)
            y = _relu6(n, n.bn(n.conv(y, hidden, hidden, 3, stride, group=hidden), hidden), opset)
            groups = 2 if grouped and si == len(settings) - 1 else 1
            y = n.bn(n.conv(y, hidden, cout, 1, group=groups), cout)
            x = n.node("Add", [x, y]) if stride == 1 and cin == cout else y
            cin = cout
    last = max(1280, ch(1280)) if width >= 1.0 else ch(1280)
    x = _relu6(n, n.bn(n.conv(x, cin, last, 1), last), opset)
    x = n.node("GlobalAveragePool", [x])
    # The dynamic-batch flatten exporters write.
    shape = n.node("Shape", [x])
    batch = n.node("Gather", [shape, n.tensor("idx0", np.array(0, np.int64))], axis=0)
    if opset >= 13:
        batch = n.node("Unsqueeze", [batch, n.tensor("axes0", np.array([0], np.int64))])
    else:
        batch = n.node("Unsqueeze", [batch], axes=[0])
    target = n.node("Concat", [batch, n.tensor("minus1", np.array([-1], np.int64))], axis=0)
    x = n.node("Reshape", [x, target])
    logits = n.dense(x, last, classes)
    return n.model("mobilenet_v2", size, logits, opset)


def densenet_block(size=16, growth=8, layers=4, classes=10, opset=11):
    """A DenseNet block: each layer (BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv) concatenates its
    `growth` new channels to all before it; then a transition (BN, ReLU, 1x1 conv, 2x2
    average pool), global average pool, classifier and softmax."""
    n = Net(121)
    c = 2 * growth
    x = n.node("Relu", [n.bn(n.conv("image", 3, c, 3, bias=True), c)])
    for _ in range(layers):
        y = n.node("Relu", [n.bn(x, c)])
        y = n.conv(y, c, 4 * growth, 1)
        y = n.node("Relu", [n.bn(y, 4 * growth)])
        y = n.conv(y, 4 * growth, growth, 3)
        x = n.node("Concat", [x, y], axis=1)
        c += growth
    x = n.node("Relu", [n.bn(x, c)])
    x = n.conv(x, c, c // 2, 1)
    x = n.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = n.node("Flatten", [n.node("GlobalAveragePool", [x])])
    probs = n.node("Softmax", [n.dense(x, c // 2, classes)], axis=1)
    return n.model("densenet_block", size, probs, opset)
