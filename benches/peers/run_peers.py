"""Runs the benchmark workloads in ONNX Runtime and in kiln (`kiln bench --json`) in one go.

Absolute times drift between machines and between runs (memory-bound W6 by up to 1.9x), so a
kiln number means something only next to a peer number from the same run; this script makes
both in one process run, workload by workload, and prints

    workload | kiln ms | ORT ms | ORT/kiln | ...

where ORT/kiln above 1 means kiln is faster. `--json-out FILE` writes the same as JSON.

ONNX Runtime: 2 intra-op threads (`--threads`), ORT_ENABLE_ALL, sequential execution, feeds
created once before timing, median of `--runs` single runs after `--warmup` runs. Each workload
is timed both with `InferenceSession.run` (ORT's usual Python path, what BASELINES.md quotes)
and with I/O binding (inputs bound once, output preallocated), which removes the per-run output
allocation and most Python binding cost. The ratio uses the plain `run`; the I/O-bound time is
shown beside it.

kiln: `KILN bench GRAPH --json --backend cpu --threads T --runs N --warmup W [--batch B]` per
workload, as a child process; its own median is used.

With `--suites N` everything is timed N times, kiln and ORT back to back per workload; the
times shown are medians over the suites, the ratio the median of the suites' own ratios (on a
shared host the load moves both engines' times within minutes: a ratio of medians taken
minutes apart swung MobileNet-v2 at batch 8 between 0.90 and 1.14 on one Zen 5).

Imported nets (R18-*, MNV2-*): ResNet-18 and MobileNet-v2 at 224x224 (onnx_nets.py) are built
into a temporary folder, imported with `KILN import NET.onnx -o NET.kiln`, and both engines run
the same .onnx weights at batch 1 and 8 (kiln on the imported NCHW graph, whose layout pass
picks the CPU layout). `--only R18-1,MNV2-8` picks some; nothing big is written to the repo. The ORT session is dropped (and its
thread pool with it) before kiln runs so the two never compete for the cores.

Model zoo (SQZ-1, SHUF-1, INCV1-1, INCV2-1, DN121-1, R50-1): SqueezeNet 1.0, ShuffleNet,
Inception v1 and v2, DenseNet-121 and ResNet-50 at batch 1, the graphs ONNX ships as its
"light" model tests with seeded random weights (onnx_zoo.py), built and imported the same way.
`--zoo` runs only these, `--no-zoo` all but these.

Each row also shows kiln's compile time (`compile_ms`: the first run's compilation of the
loaded graph) beside ONNX Runtime's session creation (InferenceSession from the serialized
model: parse, graph optimisation, kernel creation, weight prepacking).

Layouts differ: kiln's graphs are NHWC, the ONNX models NCHW (each engine's native layout);
see onnx_models.py. Needs `pip install onnxruntime onnx numpy`; nothing in cargo needs Python.

    python benches/peers/run_peers.py                       # kiln at target/release/kiln
    python benches/peers/run_peers.py --kiln path/to/kiln --runs 100 --json-out peers.json
    python benches/peers/run_peers.py --no-kiln             # ONNX Runtime only
    python benches/peers/run_peers.py --zoo --runs 20       # the model-zoo CNNs only
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import shutil
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

import onnx_models
import onnx_nets
import onnx_zoo

HERE = os.path.dirname(os.path.abspath(__file__))
GRAPHS = os.path.join(os.path.dirname(HERE), "graphs")
REPO = os.path.dirname(os.path.dirname(HERE))

_CONV3X3_64 = 2 * 56 * 56 * 64 * 64 * 9


class Workload:
    """One row of the table: an ONNX model, the matching .kiln graph and the batch to run."""

    def __init__(self, key, what, model, batch, flops):
        self.key = key
        self.what = what
        self.model = model  # name in onnx_models.MODELS and of benches/graphs/MODEL.kiln
        self.batch = batch  # value for the graph's unknown dims, or None when it has none
        self.flops = flops  # multiply-adds count 2; None where GFLOP/s means nothing

    imported_dir = None  # set for imported nets: where NET.onnx and NET.kiln live

    @property
    def graph(self):
        if self.model in NETS:
            return os.path.join(Workload.imported_dir or "", self.model + ".kiln")
        return os.path.join(GRAPHS, self.model + ".kiln")

    def onnx_model(self):
        if self.model in NETS:
            return onnx.load(os.path.join(Workload.imported_dir, self.model + ".onnx"))
        return onnx_models.MODELS[self.model]()


# Whole nets at 224x224, imported from ONNX (the batch dim is symbolic).
NETS = {
    "resnet18": lambda: onnx_nets.resnet18(size=224),
    "mobilenet_v2": lambda: onnx_nets.mobilenet_v2(size=224, grouped=False),
}
# Multiply-adds per image count 2 (ResNet-18: 1.82 GMAC; MobileNet-v2: 0.30 GMAC).
_NET_FLOPS = {"resnet18": 2 * 1.82e9, "mobilenet_v2": 2 * 0.30e9}

# ONNX model-zoo CNNs with seeded random weights (onnx_zoo.py), batch 1 (their input is fixed
# at [1,3,224,224]). Their FLOPs are counted from the model when it is built.
ZOO = {
    "SQZ": ("SqueezeNet 1.0", "squeezenet"),
    "SHUF": ("ShuffleNet", "shufflenet"),
    "INCV1": ("Inception v1", "inception_v1"),
    "INCV2": ("Inception v2", "inception_v2"),
    "DN121": ("DenseNet-121", "densenet121"),
    "R50": ("ResNet-50", "resnet50"),
}
NETS.update({net: (lambda net=net: onnx_zoo.zoo_model(net)) for _, net in ZOO.values()})


WORKLOADS = [
    Workload("W1", "seed conv 1x100x100x1, 5x5, SAME", "w1_seed_conv", 1, 2 * 100 * 100 * 25),
    Workload("W2", "conv 3x3 64->64 + bias + relu, 1x56x56x64", "w2_conv3x3", 1, _CONV3X3_64),
    Workload("W3", "same as W2, batch 8", "w2_conv3x3", 8, 8 * _CONV3X3_64),
    Workload(
        "W4",
        "small CNN, batch 16, 32x32x3 -> 10",
        "w4_small_cnn",
        16,
        16 * 2 * 9 * (32 * 32 * 3 * 32 + 32 * 32 * 32 * 32 + 16 * 16 * 32 * 64) + 16 * 2 * 64 * 10,
    ),
    Workload("W5", "matmul 1024^3 + bias + relu", "w5_matmul", None, 2 * 1024**3),
    Workload("W6", "relu(a*b+c)*0.5 on 4M floats", "w6_elementwise", None, None),
    Workload("W7", "one-element add (fixed cost per run)", "w7_tiny_add", None, None),
    Workload("resnet", "ResNet basic block, 1x56x56x64", "resnet_block", 1, 2 * _CONV3X3_64),
] + [
    Workload(f"{key}-{b}", f"{what} 224x224 (imported ONNX), batch {b}", net, b, b * _NET_FLOPS[net])
    for key, what, net in [("R18", "ResNet-18", "resnet18"), ("MNV2", "MobileNet-v2", "mobilenet_v2")]
    for b in (1, 8)
]  # fmt: skip
ZOO_WORKLOADS = [
    Workload(f"{key}-1", f"{what} 224x224 (ONNX model zoo, random weights), batch 1", net, 1, None)
    for key, (what, net) in ZOO.items()
]
WORKLOADS += ZOO_WORKLOADS


def prepare_nets(workloads, args, run_kiln):
    """Builds the nets the workloads use into a temporary folder, imports them with kiln and
    fills in the zoo workloads' FLOPs; returns the folder (the caller removes it) or None when
    no net is needed."""
    nets = sorted({w.model for w in workloads if w.model in NETS})
    if not nets:
        return None
    tmp = tempfile.mkdtemp(prefix="kiln-peers-")
    Workload.imported_dir = tmp
    for net in nets:
        path = os.path.join(tmp, net + ".onnx")
        model = NETS[net]()
        onnx.save(model, path)
        for w in workloads:
            if w.model == net and w.flops is None:
                w.flops = w.batch * onnx_zoo.model_flops(model)
        del model
        if run_kiln:
            cmd = [args.kiln, "import", path, "-o", os.path.join(tmp, net + ".kiln")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"kiln import {net} failed: {proc.stderr.strip()}", file=sys.stderr)
    return tmp


def ort_session(model_bytes, threads):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the zoo models carry an unused initializer ORT warns about
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def ort_feeds(sess, batch, seed):
    """Uniform [-1, 1) feeds; symbolic dims (the batch) become `batch`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in inp.shape]
        if any(d is None for d in shape):
            raise ValueError(f"input {inp.name} has a symbolic dim but the workload no batch")
        feeds[inp.name] = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return feeds


def time_runs(fn, runs, warmup):
    """Median, min and max of `runs` single calls of `fn` after `warmup` calls, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def bench_ort(w, args):
    # Serialized before the clock starts: session creation (parse, graph optimisation, kernel
    # creation, weight prepacking) is what is timed, next to kiln's compile time.
    model_bytes = w.onnx_model().SerializeToString()
    t0 = time.perf_counter()
    sess = ort_session(model_bytes, args.threads)
    create_ms = (time.perf_counter() - t0) * 1e3
    del model_bytes
    feeds = ort_feeds(sess, w.batch, seed=7)
    outputs = [o.name for o in sess.get_outputs()]
    result = time_runs(lambda: sess.run(outputs, feeds), args.runs, args.warmup)
    result["session_ms"] = create_ms

    if not args.no_iobinding:
        # Inputs bound once; outputs preallocated with the shapes a plain run produced.
        shapes = [o.shape for o in sess.run(outputs, feeds)]
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
        keep = []  # the OrtValues must outlive the binding
        for name, shape in zip(outputs, shapes):
            out = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32)
            keep.append(out)
            binding.bind_ortvalue_output(name, out)
        bound = time_runs(lambda: sess.run_with_iobinding(binding), args.runs, args.warmup)
        result["iobinding_median_ms"] = bound["median_ms"]
        del binding, keep
    # Drop the session now: its thread pool must not spin while kiln runs.
    del sess
    gc.collect()
    return result


def bench_kiln(w, args):
    """Runs `kiln bench --json`; returns its JSON object, or {"error": ...}."""
    cmd = [
        args.kiln, "bench", w.graph, "--json", "--backend", "cpu",
        "--threads", str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup),
    ]  # fmt: skip
    if w.batch is not None:
        cmd += ["--batch", str(w.batch)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.kiln_timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{' '.join(cmd)}: {e}"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    # One JSON object on one line; take the last such line in case of notes before it.
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError as e:
                return {"error": f"bad JSON from kiln bench ({e}): {line[:200]}"}
    return {"error": "kiln bench --json printed no JSON object: " + proc.stdout[:200]}


def gflops(flops, ms):
    return None if flops is None or not ms else flops / (ms * 1e-3) / 1e9


def fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}g}"


def machine():
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def median_of(results, key):
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kiln",
        default=os.path.join(REPO, "target", "release", "kiln"),
        help="the kiln binary (default: target/release/kiln in this repository)",
    )
    parser.add_argument("--no-kiln", action="store_true", help="run ONNX Runtime only")
    parser.add_argument("--no-iobinding", action="store_true", help="skip the I/O-binding runs")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per workload")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--suites", type=int, default=1,
                        help="repeat everything; take medians (the ratio: of each suite's)")  # fmt: skip
    parser.add_argument("--only", help="comma-separated workload keys, e.g. W1,W5,resnet")
    zoo = parser.add_mutually_exclusive_group()
    zoo.add_argument("--zoo", action="store_true", help="only the model-zoo CNNs (SQZ-1 ... R50-1)")
    zoo.add_argument("--no-zoo", action="store_true", help="skip the model-zoo CNNs")
    parser.add_argument("--kiln-timeout", type=float, default=300, help="seconds per kiln bench")
    parser.add_argument("--json-out", help="also write the results as JSON to this file")
    args = parser.parse_args()

    workloads = WORKLOADS
    if args.zoo:
        workloads = ZOO_WORKLOADS
    elif args.no_zoo:
        workloads = [w for w in WORKLOADS if w not in ZOO_WORKLOADS]
    if args.only:
        keys = {k.strip().lower() for k in args.only.split(",")}
        workloads = [w for w in workloads if w.key.lower() in keys]
        unknown = keys - {w.key.lower() for w in WORKLOADS}
        if unknown:
            sys.exit(f"unknown workload(s) {sorted(unknown)}; known: "
                     + ", ".join(w.key for w in WORKLOADS))  # fmt: skip
    if not workloads:
        sys.exit("no workload selected (--only names none of the --zoo / --no-zoo set)")
    run_kiln = not args.no_kiln
    if run_kiln and not os.path.isfile(args.kiln):
        print(f"note: no kiln binary at {args.kiln} (build it with `cargo build --release`, or "
              "pass --kiln PATH); running ONNX Runtime only", file=sys.stderr)  # fmt: skip
        run_kiln = False

    tmp = prepare_nets(workloads, args, run_kiln)
    rows = []
    for w in workloads:
        ort_runs, kiln_runs = [], []
        for _ in range(args.suites):
            if run_kiln:
                kiln_runs.append(bench_kiln(w, args))
            ort_runs.append(bench_ort(w, args))
        kiln_ok = [k for k in kiln_runs if "error" not in k]
        row = {
            "workload": w.key,
            "what": w.what,
            "graph": w.model + ".kiln (imported)" if w.model in NETS else os.path.relpath(w.graph, REPO),
            "batch": w.batch,
            "flops": w.flops,
            "ort_ms": median_of(ort_runs, "median_ms"),
            "ort_min_ms": median_of(ort_runs, "min_ms"),
            "ort_iobinding_ms": median_of(ort_runs, "iobinding_median_ms"),
            "ort_session_ms": median_of(ort_runs, "session_ms"),
            "kiln_ms": median_of(kiln_ok, "median_ms"),
            "kiln_min_ms": median_of(kiln_ok, "min_ms"),
            "kiln_compile_ms": median_of(kiln_ok, "compile_ms"),
            "kiln_arena_bytes": median_of(kiln_ok, "arena_bytes"),
            "kiln_error": next((k["error"] for k in kiln_runs if "error" in k), None),
        }
        # Each suite times kiln and ORT back to back: on a shared host the time of day moves
        # both, so the ratio is taken within each suite, then the median of those.
        pairs = [
            o["median_ms"] / k["median_ms"]
            for k, o in zip(kiln_runs, ort_runs)
            if "error" not in k and k.get("median_ms") and o.get("median_ms")
        ]
        row["ratio_ort_over_kiln"] = statistics.median(pairs) if pairs else None
        row["suite_ratios"] = pairs
        row["ort_gflops"] = gflops(w.flops, row["ort_ms"])
        row["kiln_gflops"] = gflops(w.flops, row["kiln_ms"])
        rows.append(row)
        print(f"  {w.key}: kiln {fmt(row['kiln_ms'])} ms, ORT {fmt(row['ort_ms'])} ms",
              file=sys.stderr)  # fmt: skip

    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)

    header = ["workload", "kiln ms", "ORT ms", "ORT/kiln", "ORT io-bind ms",
              "kiln GFLOP/s", "ORT GFLOP/s", "kiln compile ms", "ORT session ms"]  # fmt: skip
    table = [header]
    for r in rows:
        table.append([
            r["workload"], fmt(r["kiln_ms"]), fmt(r["ort_ms"]), fmt(r["ratio_ort_over_kiln"], 3),
            fmt(r["ort_iobinding_ms"]), fmt(r["kiln_gflops"], 3), fmt(r["ort_gflops"], 3),
            fmt(r["kiln_compile_ms"]), fmt(r["ort_session_ms"]),
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"ONNX Runtime {ort.__version__}, {args.threads} threads, median of {args.runs} runs "
          f"after {args.warmup} warmup, {args.suites} suite(s); {machine()['cpu']}")  # fmt: skip
    for i, row in enumerate(table):
        print(" | ".join(c.ljust(wd) if j == 0 else c.rjust(wd)
                         for j, (c, wd) in enumerate(zip(row, widths))))  # fmt: skip
        if i == 0:
            print("-+-".join("-" * wd for wd in widths))
    for r in rows:
        if r["kiln_error"]:
            print(f"kiln failed on {r['workload']}: {r['kiln_error']}", file=sys.stderr)

    if args.json_out:
        report = {
            "machine": machine(),
            "onnxruntime": ort.__version__,
            "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup,
            "suites": args.suites,
            "kiln": args.kiln if run_kiln else None,
            "results": rows,
        }
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if run_kiln and any(r["kiln_error"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
