"""kiln's compile time next to ONNX Runtime's session creation, in one run, alternating rounds.

    python benches/peers/compile_time.py --rounds 5 --kiln target/release/kiln [--kiln OTHER ...]

Each round creates an ORT session for ResNet-18 and ResNet-50 (batch 1, 2 threads, as
run_peers.py does) and runs `kiln bench --json` with every given kiln binary on the same models
(imported once into a temporary folder) and on W4, the binaries' order reversed every other
round. Prints, per model and engine, the median and min over the rounds of kiln's compile_ms
its compile_breakdown_ms and compile_cpu_ms (where the binary reports it), ORT's session creation (wall and process CPU time), and the run
time. Compare only numbers of one run: the machines are shared and absolute times drift.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_nets  # noqa: E402
import onnx_zoo  # noqa: E402
from run_peers import ort_session  # noqa: E402

W4 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "graphs", "w4_small_cnn.kiln")


def kiln_bench(kiln, graph, batch, runs, threads):
    cmd = [kiln, "bench", graph, "--json", "--threads", str(threads), "--batch", str(batch),
           "--runs", str(runs), "--warmup", "2"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kiln", action="append", required=True, help="a kiln binary (repeatable)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="timed runs of each network (W4: 50)")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="kiln-compile-time-")
    try:
        models = {}
        for key, make in [("R18", lambda: onnx_nets.resnet18(size=224)),
                          ("R50", lambda: onnx_zoo.zoo_model("resnet50"))]:  # fmt: skip
            path = os.path.join(tmp, key + ".onnx")
            onnx.save(make(), path)
            subprocess.run([args.kiln[0], "import", path, "-o", path[:-5] + ".kiln"],
                           check=True, capture_output=True)  # fmt: skip
            models[key] = (path[:-5] + ".kiln", path, 1, args.runs)
        models["W4"] = (W4, None, 16, 50)
        labels = [f"kiln{i}" if len(args.kiln) > 1 else "kiln" for i in range(len(args.kiln))]
        results = {}

        def add(key, value):
            results.setdefault(key, []).append(value)

        for r in range(args.rounds):
            order = list(zip(args.kiln, labels))
            if r % 2:
                order.reverse()
            for m, (graph, onnx_path, batch, runs) in models.items():
                if onnx_path:
                    with open(onnx_path, "rb") as f:
                        data = f.read()
                    c0, t0 = time.process_time(), time.perf_counter()
                    sess = ort_session(data, args.threads)
                    add((m, "ORT", "session_ms"), (time.perf_counter() - t0) * 1e3)
                    add((m, "ORT", "session_cpu_ms"), (time.process_time() - c0) * 1e3)
                    del sess, data
                for kiln, label in order:
                    j = kiln_bench(kiln, graph, batch, runs, args.threads)
                    add((m, label, "compile_ms"), j["compile_ms"])
                    if j.get("compile_cpu_ms") is not None:
                        add((m, label, "compile_cpu_ms"), j["compile_cpu_ms"])
                    for phase, ms in j["compile_breakdown_ms"].items():
                        add((m, label, phase), ms)
                    add((m, label, "run_median_ms"), j["median_ms"])
                    cpu = j["cpu"]
        print(f"cpu: {cpu}; {args.rounds} rounds, {args.threads} threads; load {os.getloadavg()}")
        for i, (kiln, label) in enumerate(zip(args.kiln, labels)):
            print(f"{label}: {kiln}")
        print(f"{'model':5} {'engine':6} {'what':14} {'median':>9} {'min':>9}")
        for (m, who, what), v in sorted(results.items()):
            print(f"{m:5} {who:6} {what:14} {statistics.median(v):9.2f} {min(v):9.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
