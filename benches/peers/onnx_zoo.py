"""ONNX model-zoo CNNs with seeded random weights, for the peer benchmarks.

The `onnx` pip package ships the graphs of nine model-zoo networks as its "light" model tests
(onnx/backend/test/data/light/light_NAME.onnx: IR version 3, opset 9, input [1,3,224,224]);
onnx/tests/real/ keeps byte-for-byte copies (onnx/tests/real/gen_real.py), and this module
reads those, falling back to the onnx package's folder. Their weights are not stored: each is a
ConstantOfShape node (every weight 0.02), which makes every channel equal and lets an engine
fold whole layers. `zoo_model` replaces each with a seeded random initializer of the same
shape, so both engines see the real architecture with real, dense weights:

- a conv filter [O, I/g, kh, kw]: normal, std sqrt(gain / (I/g * kh * kw)), gain 2 (He) where
  the conv feeds a ReLU (through batch norms), else 1;
- any other weight of rank 2 or more (Gemm's [N, K], inception_v1's [1, 1, 1000, 1024]
  classifier before its Reshape): normal with std sqrt(1 / K), K the last dim;
- 1-d parameters by the role of their first user: batch-norm scale normal(1, 0.1), variance
  uniform(0.5, 1.5), bias and mean normal(0, 0.1); the scale and shift of inception_v2's and
  densenet121's unfolded batch norms (Unsqueeze then Mul / Add) normal(1, 0.1) and normal(0,
  0.1); conv and Gemm biases normal(0, 0.01).

The values mean nothing; the scales keep activations far from overflow and from denormals
(which would slow one engine or the other): on uniform [-1, 1) input the final logits have a
standard deviation of 0.2 to 4 (squeezenet, the Inceptions, densenet121), and of a few hundred in
resnet50 and shufflenet, whose residual sums add variance that batch norms with random
statistics do not take out. The result is IR version 7
with the initializers not listed as graph inputs, so both engines may treat them as constants
(with IR 3 ONNX Runtime must treat an initializer listed as an input as overridable, and would
neither fold nor prepack it).

    python benches/peers/onnx_zoo.py --out /tmp/kiln-zoo     # writes NAME.onnx, prints GFLOP
"""

import argparse
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

HERE = os.path.dirname(os.path.abspath(__file__))
REAL = os.path.join(os.path.dirname(os.path.dirname(HERE)), "onnx", "tests", "real")
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")

# The zoo architectures issue 11 names, by their light-test name.
ZOO = ["squeezenet", "shufflenet", "inception_v1", "inception_v2", "densenet121", "resnet50"]


def light_model(name):
    """The light test's graph: this repository's copy, else the onnx package's."""
    for path in (os.path.join(REAL, f"{name}.onnx"), os.path.join(LIGHT, f"light_{name}.onnx")):
        if os.path.isfile(path):
            return onnx.load(path)
    raise FileNotFoundError(f"no {name}.onnx in {REAL} nor light_{name}.onnx in {LIGHT}")


def _first_user(graph, name):
    """(op_type, input index) of the first node reading `name`, and that node's outputs."""
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i == name:
                return n.op_type, k, list(n.output)
    return "", 0, []


def _feeds_relu(graph, name):
    """Whether `name` reaches a Relu through batch norms only (a conv's output): He's gain 2
    only makes up for the half a ReLU drops, and would double the variance elsewhere."""
    op, _, outs = _first_user(graph, name)
    while op == "BatchNormalization":
        op, _, outs = _first_user(graph, outs[0])
    return op == "Relu"


def _vector_params(graph, out, rng, dims):
    """Seeded values for a 1-d parameter, chosen by what reads it (see the module docstring)."""
    op, k, outs = _first_user(graph, out)
    if op == "Unsqueeze":  # unfolded batch norm: Unsqueeze(s) feed a Mul (scale) or an Add (shift)
        op, k, _ = _first_user(graph, outs[0])
        while op == "Unsqueeze":
            op, k, outs = _first_user(graph, outs[0])
        return rng.normal(1.0 if op == "Mul" else 0.0, 0.1, dims)
    if op == "BatchNormalization":
        if k == 1:
            return rng.normal(1.0, 0.1, dims)
        if k == 4:
            return rng.uniform(0.5, 1.5, dims)
        return rng.normal(0.0, 0.1, dims)
    return rng.normal(0.0, 0.01, dims)


def zoo_model(name, seed=0):
    """The light model `name` with every ConstantOfShape weight replaced by a seeded random
    initializer of the same shape."""
    model = light_model(name)
    rng = np.random.default_rng(seed)
    g = model.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes, weights, dropped = [], [], set()
    for n in g.node:
        if n.op_type != "ConstantOfShape":
            nodes.append(n)
            continue
        dims = [int(d) for d in shapes[n.input[0]]]
        dropped.add(n.input[0])
        out = n.output[0]
        op, k, _ = _first_user(g, out)
        if len(dims) == 1:
            data = _vector_params(g, out, rng, dims)
        elif op == "Conv" and k == 1 and len(dims) == 4:
            gain = 2.0 if _feeds_relu(g, _first_user(g, out)[2][0]) else 1.0
            data = rng.normal(0.0, np.sqrt(gain / (dims[1] * dims[2] * dims[3])), dims)
        else:
            data = rng.normal(0.0, np.sqrt(1.0 / dims[-1]), dims)
        weights.append(numpy_helper.from_array(data.astype(np.float32), out))
    del g.node[:]
    g.node.extend(nodes)
    inits = [i for i in g.initializer if i.name not in dropped] + weights
    del g.initializer[:]
    g.initializer.extend(inits)
    feeds = [i for i in g.input if i.name not in shapes]
    del g.input[:]
    g.input.extend(feeds)
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _dims(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def model_flops(model):
    """FLOPs of the convolutions and matrix products (a multiply-add counts 2) at the model's
    own input shape, from ONNX shape inference; raises if a shape is unknown."""
    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes = {v.name: _dims(v) for v in list(g.value_info) + list(g.input) + list(g.output)}
    shapes.update({i.name: list(i.dims) for i in g.initializer})
    total = 0
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out, w = shapes.get(n.output[0]), shapes.get(n.input[1])
        if not out or not w or 0 in out:
            raise ValueError(f"{n.op_type} {n.name or n.output[0]}: shape unknown ({out}, {w})")
        if n.op_type == "Conv":
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))  # out elems x (I/g * kh * kw)
        else:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            k = w[-1] if n.op_type == "Gemm" and trans_b else w[-2]
            total += 2 * int(np.prod(out)) * k
    return total


def main():
    parser = argparse.ArgumentParser(description="Write the zoo models with random weights.")
    parser.add_argument("--out", required=True, help="folder to write NAME.onnx files into")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in ZOO:
        model = zoo_model(name)
        path = os.path.join(args.out, name + ".onnx")
        onnx.save(model, path)
        print(f"{path}: {model_flops(model) / 1e9:.3f} GFLOP")


if __name__ == "__main__":
    main()
