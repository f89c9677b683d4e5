"""The benchmark workloads as ONNX models, for comparing kiln with ONNX Runtime.

Each builder returns an `onnx.ModelProto` doing the same arithmetic on the same shapes as the
matching graph in `benches/graphs/`, and takes an optional dict of initializer values by name
(ONNX layout; for checking the models against kiln's graphs with identical weights). Layouts differ on purpose: the .kiln graphs are NHWC
(TensorFlow's layout, kiln's default) and these models are NCHW (ONNX's layout, the one ONNX
Runtime's kernels are written for). Transposing NHWC inputs to NCHW inside the model would
charge ONNX Runtime for a copy no ONNX user pays, so each engine gets its native layout and the
same FLOPs. Weights are seeded normal samples from numpy's generator; the values differ from
kiln's (ChaCha8) but have the same scale, which is all timing depends on.

The batch dim is symbolic (`N`) where the .kiln graph's is `?`, and fixed otherwise.

Run as a script to write every model to a folder:

    python benches/peers/onnx_models.py --out /tmp/kiln-onnx
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX Runtime 1.17+ runs opset 17 and IR version 8; newer values gain nothing here.
OPSET = 17
IR_VERSION = 8


def _given(weights, name, shape):
    """The caller's value for initializer `name` (ONNX layout), checked against `shape`."""
    data = np.asarray(weights[name], dtype=np.float32)
    if list(data.shape) != list(shape):
        raise ValueError(f"weight {name}: shape {list(data.shape)}, expected {list(shape)}")
    return numpy_helper.from_array(data, name)


def _init(weights, name, shape, std, seed, mean=0.0):
    """A float32 initializer: `weights[name]` if given, else seeded normal samples."""
    if weights and name in weights:
        return _given(weights, name, shape)
    rng = np.random.default_rng(seed)
    data = rng.normal(mean, std, size=shape).astype(np.float32)
    return numpy_helper.from_array(data, name)


def _uniform_init(weights, name, shape, lo, hi, seed):
    """A float32 initializer: `weights[name]` if given, else seeded uniform samples in [lo, hi)."""
    if weights and name in weights:
        return _given(weights, name, shape)
    rng = np.random.default_rng(seed)
    data = rng.uniform(lo, hi, size=shape).astype(np.float32)
    return numpy_helper.from_array(data, name)


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(name, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kiln-benches",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _conv(x, w, b, y, pads):
    """A stride-1 Conv; `pads` is the per-side padding (SAME for an odd kernel)."""
    inputs = [x, w] if b is None else [x, w, b]
    return helper.make_node("Conv", inputs, [y], pads=[pads] * 4, strides=[1, 1])


def w1_seed_conv(weights=None):
    """W1: [N,1,100,100] conv 5x5, one input and one output channel, SAME (pads 2)."""
    nodes = [_conv("image", "kernel", None, "y", 2)]
    return _model(
        "w1_seed_conv",
        nodes,
        [_value("image", ["N", 1, 100, 100])],
        [_value("y", ["N", 1, 100, 100])],
        [_init(weights, "kernel", [1, 1, 5, 5], 0.2, 1)],
    )


def w2_conv3x3(weights=None):
    """W2/W3: [N,64,56,56] conv 3x3 64->64 SAME + bias + relu (bias as Conv's third input)."""
    nodes = [
        _conv("x", "w", "b", "conv", 1),
        helper.make_node("Relu", ["conv"], ["y"]),
    ]
    return _model(
        "w2_conv3x3",
        nodes,
        [_value("x", ["N", 64, 56, 56])],
        [_value("y", ["N", 64, 56, 56])],
        [_init(weights, "w", [64, 64, 3, 3], 0.059, 2), _init(weights, "b", [64], 0.1, 3)],
    )


def w4_small_cnn(weights=None):
    """W4: [N,3,32,32] -> 3 convs (+bias+relu), 2x2 max pool, global average pool, dense, softmax."""
    nodes = [
        _conv("image", "w1", "b1", "conv1", 1),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        _conv("relu1", "w2", "b2", "conv2", 1),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("MaxPool", ["relu2"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        _conv("pool", "w3", "b3", "conv3", 1),
        helper.make_node("Relu", ["conv3"], ["relu3"]),
        # kiln: reduce_mean over H and W; ONNX's idiom is GlobalAveragePool + Flatten.
        helper.make_node("GlobalAveragePool", ["relu3"], ["gap4"]),
        helper.make_node("Flatten", ["gap4"], ["gap"], axis=1),
        helper.make_node("MatMul", ["gap", "wd"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "bd"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [
        _init(weights, "w1", [32, 3, 3, 3], 0.27, 11),
        _init(weights, "b1", [32], 0.1, 12),
        _init(weights, "w2", [32, 32, 3, 3], 0.083, 13),
        _init(weights, "b2", [32], 0.1, 14),
        _init(weights, "w3", [64, 32, 3, 3], 0.083, 15),
        _init(weights, "b3", [64], 0.1, 16),
        _init(weights, "wd", [64, 10], 0.18, 17),
        _init(weights, "bd", [10], 0.1, 18),
    ]
    return _model(
        "w4_small_cnn",
        nodes,
        [_value("image", ["N", 3, 32, 32])],
        [_value("probs", ["N", 10])],
        inits,
    )


def w5_matmul(weights=None):
    """W5: [1024,1024] x [1024,1024] + bias + relu (ORT fuses MatMul+Add+Relu into one Gemm)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["biased"]),
        helper.make_node("Relu", ["biased"], ["y"]),
    ]
    return _model(
        "w5_matmul",
        nodes,
        [_value("x", [1024, 1024])],
        [_value("y", [1024, 1024])],
        [_init(weights, "w", [1024, 1024], 0.044, 21), _init(weights, "b", [1024], 0.1, 22)],
    )


def w6_elementwise(weights=None):
    """W6: relu(a*b+c)*0.5 on [2048,2048] (4M floats); a, b and c are inputs."""
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "c"], ["abc"]),
        helper.make_node("Relu", ["abc"], ["r"]),
        helper.make_node("Mul", ["r", "half"], ["y"]),
    ]
    half = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")
    shape = [2048, 2048]
    return _model(
        "w6_elementwise",
        nodes,
        [_value("a", shape), _value("b", shape), _value("c", shape)],
        [_value("y", shape)],
        [half],
    )


def w7_tiny_add(weights=None):
    """W7: a one-element add of two inputs: the fixed cost of one run."""
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    return _model(
        "w7_tiny_add",
        nodes,
        [_value("a", [1]), _value("b", [1])],
        [_value("y", [1])],
        [],
    )


def resnet_block(weights=None):
    """A ResNet basic block on [N,64,56,56]: conv, BN, relu, conv, BN, skip add, relu."""
    nodes = [
        _conv("x", "w1", None, "conv1", 1),
        helper.make_node(
            "BatchNormalization",
            ["conv1", "gamma1", "beta1", "mean1", "var1"],
            ["bn1"],
            epsilon=0.001,
        ),
        helper.make_node("Relu", ["bn1"], ["relu1"]),
        _conv("relu1", "w2", None, "conv2", 1),
        helper.make_node(
            "BatchNormalization",
            ["conv2", "gamma2", "beta2", "mean2", "var2"],
            ["bn2"],
            epsilon=0.001,
        ),
        helper.make_node("Add", ["bn2", "x"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["y"]),
    ]
    inits = [
        _init(weights, "w1", [64, 64, 3, 3], 0.059, 31),
        _init(weights, "gamma1", [64], 0.1, 32, mean=1.0),
        _init(weights, "beta1", [64], 0.1, 33),
        _init(weights, "mean1", [64], 0.1, 34),
        _uniform_init(weights, "var1", [64], 0.5, 1.5, 35),
        _init(weights, "w2", [64, 64, 3, 3], 0.059, 36),
        _init(weights, "gamma2", [64], 0.1, 37, mean=1.0),
        _init(weights, "beta2", [64], 0.1, 38),
        _init(weights, "mean2", [64], 0.1, 39),
        _uniform_init(weights, "var2", [64], 0.5, 1.5, 40),
    ]
    return _model(
        "resnet_block",
        nodes,
        [_value("x", ["N", 64, 56, 56])],
        [_value("y", ["N", 64, 56, 56])],
        inits,
    )


# Builder per model name; the names match the .kiln files in benches/graphs/.
MODELS = {
    "w1_seed_conv": w1_seed_conv,
    "w2_conv3x3": w2_conv3x3,
    "w4_small_cnn": w4_small_cnn,
    "w5_matmul": w5_matmul,
    "w6_elementwise": w6_elementwise,
    "w7_tiny_add": w7_tiny_add,
    "resnet_block": resnet_block,
}


def main():
    parser = argparse.ArgumentParser(description="Write the benchmark workloads as .onnx files.")
    parser.add_argument("--out", required=True, help="folder to write NAME.onnx files into")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, build in MODELS.items():
        path = os.path.join(args.out, name + ".onnx")
        onnx.save(build(), path)
        print(path)


if __name__ == "__main__":
    main()
