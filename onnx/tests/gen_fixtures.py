"""Builds the ONNX import fixtures: small models made with onnx.helper, run in ONNX Runtime.

For each case NAME it writes, into onnx/tests/fixtures/:

    NAME.onnx               the model (weights from a fixed seed)
    NAME.in.INPUT.npy       one file per graph input (seeded values)
    NAME.out.OUTPUT.npy     one file per graph output, as ONNX Runtime computes it

plus a few models the importer must reject (bad_*.onnx) and one model with external data.
The Rust tests (tests/suite/onnx_import.rs) import every NAME.onnx, run it on kiln's backends and
compare with the .out files. Keep everything small: the whole folder stays well under 2 MB.

    python3 onnx/tests/gen_fixtures.py            # needs onnx, onnxruntime and numpy; no torch
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "benches", "peers"))

import onnx_nets  # noqa: E402  (the three CNNs, shared with the benchmarks)

F = TensorProto.FLOAT


def vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


class Builder:
    """Collects nodes and seeded initializers for one model."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.n = 0

    def w(self, name, shape, std=0.3, mean=0.0):
        data = self.rng.normal(mean, std, size=shape).astype(np.float32)
        self.inits.append(init(name, data))
        return name

    def pos(self, name, shape, lo=0.5, hi=1.5):
        self.inits.append(init(name, self.rng.uniform(lo, hi, size=shape).astype(np.float32)))
        return name

    def const(self, name, arr):
        self.inits.append(init(name, arr))
        return name

    def node(self, op, inputs, outputs=None, **attrs):
        if outputs is None:
            self.n += 1
            outputs = [f"{op.lower()}{self.n}"]
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def model(b, name, inputs, outputs, opset, ir_version=8, check=True):
    graph = helper.make_graph(b.nodes, name, inputs, outputs, initializer=b.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="kiln-fixtures")  # fmt: skip
    m.ir_version = ir_version
    if check:
        m = onnx_nets.typed_outputs(m)
    # The checker wants every output's shape; shape inference cannot give a Reshape to a
    # computed shape one, and such models are checked by ONNX Runtime loading them instead.
    if check and all(o.type.tensor_type.HasField("shape") for o in m.graph.output):
        onnx.checker.check_model(m)
    return m


def feeds_for(m, seed, batch=2, positive=()):
    rng = np.random.default_rng(seed)
    feeds = {}
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim]
        if t.elem_type != F:
            feeds[inp.name] = np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        if inp.name in positive:
            x = np.abs(x) + 0.5
        feeds[inp.name] = x
    return feeds


def save_case(name, m, seed=1, batch=2, positive=(), save_kwargs=None, given=None):
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(m, path, **(save_kwargs or {}))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = feeds_for(m, seed, batch, positive)
    feeds.update(given or {})
    outs = sess.run(None, feeds)
    for k, v in feeds.items():
        np.save(os.path.join(OUT, f"{name}.in.{k}.npy"), v)
    for o, v in zip(sess.get_outputs(), outs):
        np.save(os.path.join(OUT, f"{name}.out.{o.name}.npy"), v)


# ---------------------------------------------------------------- per-op cases


def conv_cases():
    b = Builder(1)
    y = b.node("Conv", ["x", b.w("W", [4, 3, 3, 3]), b.w("B", [4])], ["y"], pads=[1, 1, 1, 1])
    save_case("conv_basic", model(b, "conv_basic", [vi("x", ["N", 3, 8, 8])], [vi(y, None)], 13))

    b = Builder(2)
    b.node("Conv", ["x", b.w("W", [5, 3, 3, 3])], ["y"], strides=[2, 2], pads=[1, 0, 2, 1])
    # kiln (like TensorFlow) has no strided dilated conv: dilation with stride 1.
    b.node("Conv", ["x", b.w("W2", [2, 3, 3, 2])], ["dilated"], dilations=[2, 3], pads=[2, 1, 0, 3])
    save_case("conv_strided", model(b, "conv_strided", [vi("x", [1, 3, 9, 10])],
                                    [vi("y", None), vi("dilated", None)], 11))  # fmt: skip

    for auto in ["SAME_LOWER", "SAME_UPPER"]:
        b = Builder(3)
        b.node("Conv", ["x", b.w("W", [2, 2, 4, 4])], ["y"], strides=[2, 2], auto_pad=auto)
        name = "conv_" + auto.lower()
        save_case(name, model(b, name, [vi("x", [1, 2, 7, 8])], [vi("y", None)], 11))

    b = Builder(4)
    b.node("Conv", ["x", b.w("W", [6, 2, 3, 3]), b.w("B", [6])], ["y"], group=2, pads=[1, 1, 1, 1])
    save_case("conv_grouped", model(b, "conv_grouped", [vi("x", [2, 4, 6, 6])], [vi("y", None)], 13))

    b = Builder(5)
    b.node("Conv", ["x", b.w("W", [8, 1, 3, 3]), b.w("B", [8])], ["y"], group=4, strides=[2, 2],
           pads=[1, 1, 1, 1])  # fmt: skip
    save_case("conv_depthwise", model(b, "conv_depthwise", [vi("x", [2, 4, 7, 7])], [vi("y", None)], 13))


def matmul_cases():
    b = Builder(6)
    b.node("Gemm", ["a", b.w("Bw", [4, 5]), b.w("C", [4])], ["y"], transA=1, transB=1,
           alpha=0.5, beta=2.0)  # fmt: skip
    save_case("gemm", model(b, "gemm", [vi("a", [5, 3])], [vi("y", None)], 13))

    b = Builder(7)
    b.node("Gemm", ["a", b.w("Bw", [5, 4])], ["y"])
    save_case("gemm_noc", model(b, "gemm_noc", [vi("a", [3, 5])], [vi("y", None)], 11))

    b = Builder(8)
    b.node("MatMul", ["a", "b"], ["y2"])
    b.node("MatMul", ["c", b.w("W", [4, 5])], ["y3"])
    b.node("MatMul", ["d", "e"], ["y4"])
    b.node("MatMul", ["v", "b"], ["y1"])
    ins = [vi("a", [3, 4]), vi("b", [4, 5]), vi("c", [2, 3, 4]), vi("d", [2, 3, 4]),
           vi("e", [2, 4, 5]), vi("v", [4])]  # fmt: skip
    outs = [vi(n, None) for n in ["y2", "y3", "y4", "y1"]]
    save_case("matmul", model(b, "matmul", ins, outs, 13))


def elementwise_cases():
    b = Builder(9)
    b.node("Add", ["a", b.w("c4", [4])], ["add"])
    b.node("Sub", ["p", "q"], ["sub"])
    b.node("Mul", ["a", "a2"], ["mul"])
    b.node("Div", ["a", "d"], ["div"])
    b.node("Sum", ["a", "a2", "add"], ["sum"])
    b.node("Max", ["a", "a2", "mul"], ["max"])
    b.node("Min", ["a", "a2"], ["min"])
    ins = [vi("a", [2, 3, 4]), vi("p", [2, 1, 4]), vi("q", [3, 1]), vi("a2", [2, 3, 4]),
           vi("d", [3, 1])]  # fmt: skip
    outs = [vi(n, None) for n in ["add", "sub", "mul", "div", "sum", "max", "min"]]
    save_case("binary", model(b, "binary", ins, outs, 13), positive=("d",))

    b = Builder(10)
    b.node("Relu", ["x"], ["relu"])
    b.node("LeakyRelu", ["x"], ["leaky"], alpha=0.1)
    b.node("Sigmoid", ["x"], ["sigmoid"])
    b.node("Tanh", ["x"], ["tanh"])
    b.node("HardSigmoid", ["x"], ["hsig"], alpha=0.3, beta=0.4)
    b.node("HardSwish", ["x"], ["hswish"])
    b.node("Clip", ["x", b.const("lo", np.float32(0)), b.const("hi", np.float32(6))], ["relu6"])
    b.node("Clip", ["x", b.const("lo2", np.float32(-0.5)), b.const("hi2", np.float32(0.7))],
           ["clip"])  # fmt: skip
    b.node("Clip", ["x", "lo"], ["clip_min"])
    outs = ["relu", "leaky", "sigmoid", "tanh", "hsig", "hswish", "relu6", "clip", "clip_min"]
    save_case("activations", model(b, "activations", [vi("x", [2, 3, 4, 5])],
                                   [vi(n, None) for n in outs], 14), batch=2)  # fmt: skip

    b = Builder(11)
    b.node("Clip", ["x"], ["y"], min=-0.5, max=0.5)
    save_case("clip_opset9", model(b, "clip_opset9", [vi("x", [3, 4])], [vi("y", None)], 9))


def logic_cases():
    b = Builder(21)
    b.node("Greater", ["a", "b"], ["gt"])
    b.node("LessOrEqual", ["a", "b"], ["le"])
    b.node("Less", ["a", "b"], ["lt"])
    b.node("GreaterOrEqual", ["a", "b"], ["ge"])
    b.node("Equal", ["i", "j"], ["eq"])
    b.node("And", ["gt", "eq"], ["both"])
    b.node("Or", ["lt", "eq"], ["either"])
    b.node("Not", ["both"], ["neither"])
    b.node("Where", ["either", "a", "b"], ["picked"])
    b.node("Sign", ["a"], ["sign"])
    I = TensorProto.INT32
    ins = [vi("a", [2, 3, 4]), vi("b", [3, 1]), vi("i", [2, 3, 4], I), vi("j", [4], I)]
    B = TensorProto.BOOL
    outs = [vi(n, None, B) for n in ["gt", "le", "ge", "eq", "both", "either", "neither"]]
    outs += [vi("picked", None), vi("sign", None)]
    rng = np.random.default_rng(21)
    given = {"i": rng.integers(0, 3, size=[2, 3, 4]).astype(np.int32),
             "j": rng.integers(0, 3, size=[4]).astype(np.int32)}  # fmt: skip
    save_case("logic", model(b, "logic", ins, outs, 13), given=given)


def nn_cases():
    b = Builder(12)
    b.node("BatchNormalization", ["x", b.w("s", [3], 0.2, 1.0), b.w("bias", [3]), b.w("m", [3]),
                                  b.pos("v", [3])], ["y"], epsilon=1e-3)  # fmt: skip
    save_case("batchnorm", model(b, "batchnorm", [vi("x", [2, 3, 4, 4])], [vi("y", None)], 9))

    b = Builder(13)
    b.node("MaxPool", ["x"], ["max_ceil"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
           ceil_mode=1)  # fmt: skip
    b.node("MaxPool", ["x"], ["max_plain"], kernel_shape=[2, 2], strides=[2, 2])
    b.node("AveragePool", ["x"], ["avg_excl"], kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1])  # fmt: skip
    b.node("AveragePool", ["x"], ["avg_incl"], kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1], count_include_pad=1)  # fmt: skip
    b.node("AveragePool", ["x"], ["avg_ceil"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    b.node("AveragePool", ["x"], ["avg_ceil_incl"], kernel_shape=[2, 2], strides=[2, 2],
           pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=1)  # fmt: skip
    b.node("GlobalAveragePool", ["x"], ["gap"])
    b.node("GlobalMaxPool", ["x"], ["gmp"])
    outs = ["max_ceil", "max_plain", "avg_excl", "avg_incl", "avg_ceil", "avg_ceil_incl", "gap",
            "gmp"]  # fmt: skip
    save_case("pools", model(b, "pools", [vi("x", [2, 3, 8, 9])], [vi(n, None) for n in outs], 13))

    b = Builder(14)
    b.node("LRN", ["x"], ["y"], size=5, alpha=0.01, beta=0.75, bias=1.5)
    save_case("lrn", model(b, "lrn", [vi("x", [2, 7, 3, 3])], [vi("y", None)], 13))


def shape_cases():
    b = Builder(15)
    b.node("Flatten", ["x"], ["flat1"])
    b.node("Flatten", ["x"], ["flat2"], axis=2)
    b.node("Reshape", ["x", b.const("shp", np.array([0, -1, 4], np.int64))], ["resh"])
    b.node("Transpose", ["x"], ["tr"], perm=[0, 2, 3, 1])
    # The dynamic-batch flatten exporters write: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    s = b.node("Shape", ["x"])
    g = b.node("Gather", [s, b.const("zero", np.array(0, np.int64))], axis=0)
    u = b.node("Unsqueeze", [g, b.const("ax0", np.array([0], np.int64))])
    c = b.node("Concat", [u, b.const("m1", np.array([-1], np.int64))], axis=0)
    b.node("Reshape", ["x", c], ["dyn_flat"])
    outs = ["flat1", "flat2", "resh", "tr", "dyn_flat"]
    save_case("reshapes", model(b, "reshapes", [vi("x", ["batch", 3, 4, 2])],
                                [vi(n, None) for n in outs], 13), batch=3)  # fmt: skip

    b = Builder(16)
    b.node("Concat", ["a", "a"], ["cat"], axis=1)
    b.node("Split", ["cat", b.const("sizes", np.array([1, 3], np.int64))], ["s1", "s2"], axis=1)
    b.node("Slice", ["a", b.const("st", np.array([-3, 1], np.int64)),
                     b.const("en", np.array([100, 3], np.int64)),
                     b.const("axes", np.array([2, 1], np.int64))], ["sl"])  # fmt: skip
    b.node("Pad", ["a", b.const("pads", np.array([0, 1, 0, 2, 0, 0, 1, 1], np.int64)),
                   b.const("pv", np.float32(0.5))], ["pad"])  # fmt: skip
    b.node("Squeeze", ["b", b.const("sq_axes", np.array([2], np.int64))], ["sq"])
    b.node("Unsqueeze", ["sq", b.const("usq_axes", np.array([0, -1], np.int64))], ["usq"])
    outs = ["cat", "s1", "s2", "sl", "pad", "sq", "usq"]
    save_case("movement13", model(b, "movement13", [vi("a", [2, 2, 4, 3]), vi("b", [2, 3, 1, 3])],
                                  [vi(n, None) for n in outs], 13))  # fmt: skip

    b = Builder(17)
    b.node("Split", ["a"], ["p1", "p2"], axis=2, split=[1, 3])
    b.node("Slice", ["a"], ["sl"], starts=[1, 0], ends=[2, -1], axes=[1, 3])
    b.node("Pad", ["a"], ["pad"], pads=[0, 0, 1, 0, 0, 0, 0, 2], value=-1.0)
    b.node("Squeeze", ["b"], ["sq"], axes=[2])
    b.node("Unsqueeze", ["sq"], ["usq"], axes=[1])
    outs = ["p1", "p2", "sl", "pad", "sq", "usq"]
    save_case("movement9", model(b, "movement9", [vi("a", [2, 2, 4, 3]), vi("b", [2, 3, 1, 3])],
                                 [vi(n, None) for n in outs], 9))  # fmt: skip

    b = Builder(18)
    b.node("Split", ["a"], ["e1", "e2", "e3"], axis=1, num_outputs=3)
    save_case("split18", model(b, "split18", [vi("a", [2, 7])], [vi(n, None) for n in ["e1", "e2", "e3"]], 18))


def reduce_cases():
    b = Builder(19)
    b.node("Softmax", ["x"], ["sm_legacy"], axis=1)
    b.node("LogSoftmax", ["x"], ["lsm_legacy"], axis=2)
    b.node("ReduceMean", ["x"], ["mean"], axes=[1, 2])
    b.node("ReduceSum", ["x"], ["sum"], axes=[-1], keepdims=0)
    b.node("ReduceMax", ["x"], ["max_all"], keepdims=0)
    b.node("ArgMax", ["x"], ["argmax_keep"], axis=1)
    b.node("ArgMax", ["x"], ["argmax_drop"], axis=-1, keepdims=0)
    outs = [vi(n, None) for n in ["sm_legacy", "lsm_legacy", "mean", "sum", "max_all"]]
    outs += [vi(n, None, TensorProto.INT64) for n in ["argmax_keep", "argmax_drop"]]
    save_case("reduce11", model(b, "reduce11", [vi("x", [2, 3, 4])], outs, 11))

    b = Builder(20)
    b.node("Softmax", ["x"], ["sm"], axis=1)
    b.node("LogSoftmax", ["x"], ["lsm"])
    b.node("ReduceSum", ["x", b.const("ax", np.array([0, 2], np.int64))], ["sum"])
    b.node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0)
    outs = ["sm", "lsm", "sum", "mean"]
    save_case("reduce13", model(b, "reduce13", [vi("x", [2, 3, 4])], [vi(n, None) for n in outs], 13))

    b = Builder(21)
    b.node("ReduceMean", ["x", b.const("ax", np.array([1], np.int64))], ["mean"])
    b.node("ReduceMax", ["x", b.const("ax2", np.array([-1], np.int64))], ["max"], keepdims=0)
    save_case("reduce18", model(b, "reduce18", [vi("x", [2, 3, 4])], [vi(n, None) for n in ["mean", "max"]], 18))


def misc_cases():
    b = Builder(22)
    b.node("Gather", ["x", b.const("idx", np.array([2, 0, -1], np.int64))], ["g1"], axis=1)
    b.node("Gather", [b.w("table", [5, 3]), "ids"], ["emb"], axis=0)
    b.node("Dropout", ["x"], ["drop"])
    b.node("Identity", ["drop"], ["ident"])
    b.node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([1.5, -2.0, 0.25], np.float32)))
    b.node("Mul", ["x", "k"], ["scaled"])
    b.node("Cast", ["scaled"], ["as_int"], to=TensorProto.INT32)
    b.node("Cast", ["as_int"], ["back"], to=TensorProto.FLOAT)
    ins = [vi("x", [2, 4, 3]), vi("ids", [2, 2], TensorProto.INT64)]
    outs = [vi(n, None) for n in ["g1", "emb", "ident", "scaled", "back"]]
    m = model(b, "misc", ins, outs, 13)
    # x scaled so the casts truncate values of several units; ids valid (one negative).
    x = (np.random.default_rng(5).standard_normal([2, 4, 3]) * 3.0).astype(np.float32)
    save_case("misc", m, given={"x": x, "ids": np.array([[0, 4], [3, -1]], np.int64)})

    b = Builder(23)
    s = b.node("Shape", ["x"])
    f = b.node("ConstantOfShape", [s], value=numpy_helper.from_array(np.array([1.5], np.float32)))
    b.node("Add", ["x", f], ["y"])
    save_case("const_of_shape", model(b, "const_of_shape", [vi("x", [2, 3])], [vi("y", None)], 13))

    # IR version 3 / opset 8: graph inputs list the initializers; one initializer is unused.
    b = Builder(24)
    w = b.w("W", [2, 3, 1, 1])
    b.w("unused", [7])
    b.node("Conv", ["x", w], ["c"])
    b.node("Relu", ["c"], ["y"])
    ins = [vi("x", [1, 3, 4, 4]), vi("W", [2, 3, 1, 1]), vi("unused", [7])]
    save_case("ir3", model(b, "ir3", ins, [vi("y", [1, 2, 4, 4])], 8, ir_version=3))

    # Weights in an external file next to the model.
    b = Builder(25)
    b.node("MatMul", ["x", b.w("W", [6, 4])], ["y"])
    m = model(b, "external", [vi("x", [3, 6])], [vi("y", None)], 13)
    save_case("external", m, save_kwargs=dict(save_as_external_data=True, all_tensors_to_one_file=True,
                                             location="external.weights", size_threshold=0))  # fmt: skip


def bad_cases():
    """Models the importer must reject with a clear error (no ONNX Runtime run)."""
    b = Builder(26)
    b.node("Relu", ["x"], ["r"])
    b.node("Erf", ["r"], ["e"])
    b.node("NonMaxSuppression", ["e"], ["n"], name="nms_node")
    b.nodes.append(helper.make_node("Frobnicate", ["n"], ["y"], domain="com.example", name="frob"))
    m = model(b, "bad_unsupported", [vi("x", [2, 3])], [vi("y", None)], 13, check=False)
    onnx.save(m, os.path.join(OUT, "bad_unsupported.onnx"))

    b = Builder(27)
    b.node("Relu", ["x"], ["y"])
    onnx.save(model(b, "bad_opset", [vi("x", [2])], [vi("y", None)], 5, ir_version=3, check=False),
              os.path.join(OUT, "bad_opset.onnx"))  # fmt: skip

    b = Builder(28)
    b.node("Add", ["x", b.w("c", [4])], ["y"])
    onnx.save(model(b, "bad_shapes", [vi("x", [2, 3])], [vi("y", None)], 13, check=False),
              os.path.join(OUT, "bad_shapes.onnx"))  # fmt: skip

    # External data that is not there.
    b = Builder(29)
    b.node("MatMul", ["x", b.w("W", [3, 2])], ["y"])
    m = model(b, "bad_external", [vi("x", [1, 3])], [vi("y", None)], 13)
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", "missing.weights"), ("offset", "0"), ("length", "24")]:
        e = t.external_data.add()
        e.key, e.value = k, v
    onnx.save(m, os.path.join(OUT, "bad_external.onnx"))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    conv_cases()
    matmul_cases()
    elementwise_cases()
    logic_cases()
    nn_cases()
    shape_cases()
    reduce_cases()
    misc_cases()
    bad_cases()
    # Small nets: 32x32 inputs, few channels, symbolic batch fed with 2.
    save_case("net_resnet18", onnx_nets.resnet18(size=32, widths=(8, 16, 24, 32), classes=10, opset=9), batch=2)
    save_case("net_mobilenetv2", onnx_nets.mobilenet_v2(size=32, width=0.25, classes=10, opset=13), batch=2)
    save_case("net_densenet", onnx_nets.densenet_block(size=16, opset=11), batch=2)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(os.listdir(OUT))} files, {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
