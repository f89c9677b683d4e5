//! The `kiln` command line, run as a user runs it: exit codes, messages and files written.

use kiln::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const GRAPH: &str = "kiln 1
input %x : f32[?,3]
const %w : f32[3,2] = [[1, 0], [0, 1], [1, 1]]
%y = matmul(%x, %w)
%out/relu = relu(%y)
output %out/relu, %y
";

fn write_graph(dir: &Path) -> String {
    let path = dir.join("g.kiln");
    std::fs::write(&path, GRAPH).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn check_prints_types_and_rejects_bad_files() {
    let dir = scratch("check");
    let g = write_graph(&dir);
    let out = kiln(&["check", &g]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("%y : f32[?,2]"), "{stdout}");

    let bad = dir.join("bad.kiln");
    std::fs::write(&bad, "kiln 1\ninput %x : f32[2]\n%y = frobnicate(%x)\n").unwrap();
    let out = kiln(&["check", bad.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.kiln:3:") && stderr.contains("frobnicate"),
        "{stderr}"
    );
}

#[test]
fn run_writes_one_npy_per_output() {
    let dir = scratch("run");
    let g = write_graph(&dir);
    let x = dir.join("x.npy");
    kiln::npy::write(
        &x,
        &Tensor::from_vec(&[2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap(),
    )
    .unwrap();
    let out_dir = dir.join("results/nested");
    let feed = format!("x={}", x.display());
    let out = kiln(&[
        "run",
        &g,
        "--feed",
        &feed,
        "--out",
        out_dir.to_str().unwrap(),
        "--backend",
        "reference",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("%out/relu f32[2,2] = [[4, 1], [0, 0]]"),
        "{stdout}"
    );
    let relu = kiln::npy::read(out_dir.join("out_relu.npy"))
        .unwrap()
        .tensor;
    let y = kiln::npy::read(out_dir.join("y.npy")).unwrap().tensor;
    assert_eq!(y.f32s().unwrap(), &[4.0, 1.0, -10.0, -1.0]);
    assert_eq!(relu.f32s().unwrap(), &[4.0, 1.0, 0.0, 0.0]);
}

#[test]
fn run_converts_f64_feeds_with_a_note() {
    let dir = scratch("f64");
    let g = write_graph(&dir);
    let x = dir.join("x64.npy");
    // A hand-made f64 .npy: header then little-endian doubles.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in [1.0f64, 2.0, 3.0] {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(&x, bytes).unwrap();
    let out = kiln(&["run", &g, "--feed", &format!("%x={}", x.display())]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("f64"), "{stderr}");
    assert!(stdout.contains("%y f32[1,2]"), "{stdout}");
}

#[test]
fn run_rejects_bad_feeds_and_backends() {
    let dir = scratch("badfeed");
    let g = write_graph(&dir);
    let ints = dir.join("ints.npy");
    kiln::npy::write(&ints, &Tensor::zeros_of(kiln::DType::I64, &[2, 3])).unwrap();
    let truncated = dir.join("trunc.npy");
    let full = dir.join("full.npy");
    kiln::npy::write(&full, &Tensor::zeros(&[2, 3])).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
    let wrong_dim = dir.join("wrong.npy");
    kiln::npy::write(&wrong_dim, &Tensor::zeros(&[2, 4])).unwrap();

    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (vec![format!("x={}", ints.display())], &["i64", "f32"]),
        (vec![format!("x={}", truncated.display())], &["x"]),
        (
            vec![format!("x={}", wrong_dim.display())],
            &["[2,4]", "[?,3]"],
        ),
        (vec![format!("nope={}", full.display())], &["nope", "%x"]),
        (vec![], &["%x", "missing"]),
        (
            vec![format!("x={}", dir.join("absent.npy").display())],
            &["absent.npy"],
        ),
    ];
    for (feeds, words) in cases {
        let mut args = vec!["run".to_string(), g.clone()];
        for f in &feeds {
            args.push("--feed".into());
            args.push(f.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kiln(&args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{feeds:?} should fail");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for w in words {
            assert!(stderr.contains(w), "{feeds:?}: expected {w:?} in {stderr}");
        }
    }
    let out = kiln(&["run", &g, "--backend", "tpu"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("unknown backend"));
}

#[test]
fn dump_parses_back_and_dot_draws() {
    let dir = scratch("dump");
    let g = write_graph(&dir);
    let out = kiln(&["dump", &g]);
    assert!(out.status.success());
    let dumped = text(&out).0;
    let again = kiln::Graph::parse(&dumped).unwrap();
    assert_eq!(again.to_text(), dumped, "print -> parse -> print is stable");
    let dot_file = dir.join("g.dot");
    let out = kiln(&["dot", &g, "-o", dot_file.to_str().unwrap()]);
    assert!(out.status.success());
    let dot = std::fs::read_to_string(dot_file).unwrap();
    assert!(
        dot.starts_with("digraph") && dot.contains("matmul"),
        "{dot}"
    );
}

#[test]
fn binary_garbage_and_empty_files_are_errors() {
    let dir = scratch("garbage");
    for (name, bytes) in [
        ("empty.kiln", &b""[..]),
        ("bin.kiln", &b"\x00\xff\xfe\x01kiln"[..]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = kiln(&["check", p.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{name}");
        assert!(
            stderr.starts_with("error:") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

const CNN: &str = "kiln 1
input %x : f32[?,9,9,4]
const %w : f32[3,3,4,8] = normal(0, 0.3, 7)
const %b : f32[8] = uniform(-1, 1, 8)
const %d : f32[8,5] = normal(0, 0.5, 9)
%c = conv2d(%x, %w, padding=\"SAME\", strides=[2,2])
%cb = bias_add(%c, %b)
%r = relu(%cb)
%g = reduce_mean(%r, axes=[1,2])
%y = matmul(%g, %d)
output %y, %r
";

/// Runs `graph` with `x` on `backend` (extra environment variables applied) and returns the
/// outputs written.
fn run_outputs(dir: &Path, backend: &str, env: &[(&str, &str)]) -> Vec<Tensor> {
    let g = dir.join("cnn.kiln");
    let out = dir.join(format!("out-{backend}-{}", env.len()));
    let feed = format!("x={}", dir.join("x.npy").display());
    let status = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            g.to_str().unwrap(),
            "--feed",
            &feed,
            "--backend",
            backend,
        ])
        .args(["--out", out.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status).1);
    ["y", "r"]
        .iter()
        .map(|n| {
            kiln::npy::read(out.join(format!("{n}.npy")))
                .unwrap()
                .tensor
        })
        .collect()
}

#[test]
fn portable_cpu_path_matches_the_reference() {
    let dir = scratch("portable");
    std::fs::write(dir.join("cnn.kiln"), CNN).unwrap();
    kiln::npy::write(
        dir.join("x.npy"),
        &Tensor::uniform(&[3, 9, 9, 4], -1.0, 1.0, 5),
    )
    .unwrap();
    let want = run_outputs(&dir, "reference", &[]);
    for env in [&[][..], &[("KILN_CPU_FEATURES", "none")][..]] {
        let got = run_outputs(&dir, "cpu", env);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.dims(), w.dims());
            for (a, b) in g.f32s().unwrap().iter().zip(w.f32s().unwrap()) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{env:?}: {a} vs {b}"
                );
            }
        }
    }
}

/// An NCHW conv + bias + relu with a constant-only scale subgraph (folds) and a dead branch.
const OPTIMIZABLE: &str = "kiln 1
input %x : f32[?,3,8,8]
const %w : f32[3,3,3,4] = normal(0, 0.5, 11)
const %b : f32[4] = [0.1, -0.2, 0.3, -0.4]
const %two : f32[] = 2
const %three : f32[] = 3
%k = mul(%two, %three)
%kk = sqrt(%k)
%c = conv2d(%x, %w, padding=\"SAME\", data_format=\"NCHW\")
%cb = bias_add(%c, %b, data_format=\"NCHW\")
%r = relu(%cb)
%s = mul(%r, %kk)
%unused = exp(%s)
output %s
";

#[test]
fn dump_optimize_fuses_folds_and_computes_the_same() {
    let dir = scratch("optimize");
    let g = dir.join("g.kiln");
    std::fs::write(&g, OPTIMIZABLE).unwrap();
    let out = kiln(&["dump", g.to_str().unwrap(), "--optimize"]);
    let (dumped, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // Fused, folded, converted to NHWC, dead code gone, the output's name kept.
    assert!(dumped.contains("fused_conv2d"), "{dumped}");
    for gone in ["%k =", "%kk =", "%unused", "NCHW", "bias_add", "= relu("] {
        assert!(!dumped.contains(gone), "{gone} left in\n{dumped}");
    }
    assert!(dumped.contains("output %s"), "{dumped}");
    let optimized = kiln::Graph::parse(&dumped).unwrap();
    let original = kiln::Graph::parse(OPTIMIZABLE).unwrap();
    assert!(optimized.len() < original.len(), "{dumped}");

    // Both graphs, run by the CLI on the reference backend, agree.
    let opt = dir.join("opt.kiln");
    std::fs::write(&opt, &dumped).unwrap();
    kiln::npy::write(
        dir.join("x.npy"),
        &Tensor::uniform(&[2, 3, 8, 8], -1.0, 1.0, 3),
    )
    .unwrap();
    let feed = format!("x={}", dir.join("x.npy").display());
    let mut results = Vec::new();
    for (graph, out_dir) in [(&g, "a"), (&opt, "b")] {
        let out_dir = dir.join(out_dir);
        let out = kiln(&[
            "run",
            graph.to_str().unwrap(),
            "--feed",
            &feed,
            "--backend",
            "reference",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out).1);
        results.push(kiln::npy::read(out_dir.join("s.npy")).unwrap().tensor);
    }
    let (a, b) = (results[0].f32s().unwrap(), results[1].f32s().unwrap());
    assert_eq!(a.len(), 2 * 4 * 8 * 8);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
    }

    // explain shows the decisions.
    let out = kiln(&["explain", g.to_str().unwrap()]);
    let (log, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for needle in [
        "select-layout",
        "conv2d NCHW -> NHWC",
        "fuse-epilogues",
        "fold-constants",
    ] {
        assert!(log.contains(needle), "{needle} missing from\n{log}");
    }
}

/// Two outputs whose file names collide (`%x/y` and `%x_y` both map to `x_y.npy`) used to be
/// written one over the other with exit code 0; now the run fails before writing anything.
#[test]
fn run_refuses_outputs_that_share_a_file() {
    let dir = scratch("collide");
    let g = dir.join("g.kiln");
    std::fs::write(
        &g,
        "kiln 1\ninput %x : f32[2]\n%x/y = relu(%x)\n%x_y = neg(%x)\noutput %x/y, %x_y\n",
    )
    .unwrap();
    kiln::npy::write(dir.join("x.npy"), &Tensor::ones(&[2])).unwrap();
    let out_dir = dir.join("out");
    let feed = format!("x={}", dir.join("x.npy").display());
    let out = kiln(&[
        "run",
        g.to_str().unwrap(),
        "--feed",
        &feed,
        "--backend",
        "reference",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("%x/y") && stderr.contains("%x_y") && stderr.contains("x_y.npy"),
        "{stderr}"
    );
    assert!(!out_dir.join("x_y.npy").exists());
}

/// `--out DIR` used to write through a symlink already in DIR (here to a file outside it);
/// now the link is refused and its target is untouched.
#[cfg(unix)]
#[test]
fn run_refuses_to_write_through_a_symlink() {
    let dir = scratch("symlink-out");
    let g = write_graph(&dir);
    kiln::npy::write(dir.join("x.npy"), &Tensor::ones(&[1, 3])).unwrap();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("y.npy")).unwrap();
    let feed = format!("x={}", dir.join("x.npy").display());
    let out = kiln(&[
        "run",
        &g,
        "--feed",
        &feed,
        "--backend",
        "reference",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("y.npy") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

/// `kiln import m.onnx -o m.onnx` used to overwrite the model, and `-o w.safetensors` wrote
/// the graph text over its own weights file; both are refused and leave the files as they
/// were. A normal import leaves exactly the graph and its weights (no temporary files).
#[test]
fn import_refuses_to_overwrite_its_model_or_weights() {
    let dir = scratch("import-overwrite");
    let model = dir.join("m.onnx");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/tests/fixtures/conv_same_lower.onnx");
    std::fs::copy(&fixture, &model).unwrap();
    let original = std::fs::read(&model).unwrap();
    let m = model.to_str().unwrap();

    let out = kiln(&["import", m, "-o", m]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), original);

    let weights = dir.join("w.safetensors");
    let out = kiln(&["import", m, "-o", weights.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(".kiln"), "{stderr}");
    assert!(!weights.exists());

    let out = kiln(&["import", m, "-o", dir.join("g.kiln").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["g.kiln", "g.safetensors", "m.onnx"]);
    assert_eq!(std::fs::read(&model).unwrap(), original);
}

/// `--runs 0` used to run once and report "over 1 runs", `--threads 100000` ran for minutes
/// and `--batch 18446744073709551615` panicked with "capacity overflow": each is now a clear
/// error before anything runs.
#[test]
fn bench_rejects_counts_it_cannot_honour() {
    let dir = scratch("bench-counts");
    let g = write_graph(&dir);
    for (flag, value, expected) in [
        ("--runs", "0", "must be at least 1"),
        ("--threads", "0", "must be at least 1"),
        ("--batch", "0", "must be at least 1"),
        ("--threads", "100000", "at most 1024 threads"),
        (
            "--batch",
            "18446744073709551615",
            "more than this machine can allocate",
        ),
    ] {
        let out = kiln(&["bench", &g, "--backend", "reference", flag, value]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(expected) && !stderr.contains("panicked"),
            "{flag} {value}: {stderr}"
        );
    }
}

/// A matmul with a bias and relu: one kernel whose ops the profile must name.
const DENSE_GRAPH: &str = "kiln 1
input %x : f32[?,3]
const %w : f32[3,4] = [[1, 0, 2, -1], [0, 1, 1, 1], [1, 1, -3, 0]]
const %b : f32[4] = [0.5, -0.5, 1, 0]
%y = matmul(%x, %w)
%z = bias_add(%y, %b)
%r = relu(%z)
output %r
";

/// Every number following `"key":` in `json`, in order (`null` is skipped).
fn json_numbers(json: &str, key: &str) -> Vec<f64> {
    let pattern = format!("\"{key}\":");
    json.match_indices(&pattern)
        .filter_map(|(at, _)| {
            let rest = &json[at + pattern.len()..];
            let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// `kiln bench --json` with a cache folder; returns the JSON line.
fn bench_json(graph: &str, cache: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("XDG_CACHE_HOME", cache)
        .args(["bench", graph, "--backend", "cpu", "--json", "--runs", "3"])
        .args(["--threads", "1"])
        .args(extra)
        .output()
        .expect("the kiln binary runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout.trim().to_string()
}

/// `kiln bench --callers 3` runs one session from three threads at once, each doing `--runs`
/// runs, and reports the total runs per second; `--callers 0` is refused.
#[test]
fn bench_callers_share_one_session() {
    let dir = scratch("bench-callers");
    let g = dir.join("dense.kiln");
    std::fs::write(&g, DENSE_GRAPH).unwrap();
    let g = g.to_str().unwrap();
    let json = bench_json(g, &dir.join("cache"), &["--callers", "3"]);
    assert_eq!(json_numbers(&json, "runs"), [9.0], "{json}");
    assert_eq!(json_numbers(&json, "callers"), [3.0], "{json}");
    let rate = json_numbers(&json, "runs_per_s");
    assert!(rate.len() == 1 && rate[0] > 0.0, "{json}");
    let out = kiln(&["bench", g, "--callers", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'--callers <CALLERS>': must be at least 1"),
        "{stderr}"
    );
}

/// `kiln bench --json --profile` reports the CPU, its measured FMA peak (read back from the
/// cache on later runs), the compile time by phase, and per kernel its ops, time share,
/// GFLOP/s and share of the peak.
#[test]
fn bench_reports_peak_compile_phases_and_kernel_ops() {
    let dir = scratch("bench-peak");
    let g = dir.join("dense.kiln");
    std::fs::write(&g, DENSE_GRAPH).unwrap();
    let g = g.to_str().unwrap();
    let cache = dir.join("cache");
    let json = bench_json(g, &cache, &["--profile"]);

    let peak = json_numbers(&json, "fma_peak_gflops");
    assert!(
        peak.len() == 1 && peak[0].is_finite() && peak[0] > 0.0,
        "{json}"
    );
    assert!(!json.contains("\"cpu\":\"\""), "{json}");
    let compile = json_numbers(&json, "compile_ms")[0];
    let phases: Vec<f64> = ["passes", "lowering", "packing", "codegen", "other"]
        .iter()
        .map(|p| json_numbers(&json, p)[0])
        .collect();
    assert!(phases.iter().all(|&t| t >= 0.0), "{json}");
    assert!(phases[3] > 0.0, "code generation takes time: {json}");
    let sum: f64 = phases.iter().sum();
    assert!(
        (sum - compile).abs() < 0.01,
        "phases sum {sum} != {compile}: {json}"
    );
    // The process's CPU time over the compilation (user + system, every thread).
    let cpu = json_numbers(&json, "compile_cpu_ms");
    assert!(cpu.len() == 1 && cpu[0] >= 0.0, "{json}");

    let profile = &json[json.find("\"kernels\":[").expect("a kernels array")..];
    let shares = json_numbers(profile, "share");
    assert!(!shares.is_empty(), "{json}");
    let total: f64 = shares.iter().sum();
    assert!((total - 1.0).abs() < 1e-3, "shares sum to {total}: {json}");
    assert!(!profile.contains("\"ops\":[]"), "{json}");
    assert!(
        profile.contains("\"ops\":[\"matmul\",\"add\",\"relu\"]"),
        "the fused kernel names its ops: {json}"
    );
    // ... and the source nodes it computes, not only its own name.
    assert!(
        profile.contains(
            "\"name\":\"r\",\"ops\":[\"matmul\",\"add\",\"relu\"],\"nodes\":[\"y\",\"z\",\"r\"]"
        ),
        "{json}"
    );
    assert_eq!(json_numbers(&json, "kernel_count"), [1.0], "{json}");
    assert!(
        json_numbers(profile, "peak_share")
            .iter()
            .all(|&p| p >= 0.0)
    );
    // Each kernel's rate times its time gives back its FLOPs; together, the graph's.
    let kernel_flops: f64 = json_numbers(profile, "gflops")
        .iter()
        .zip(json_numbers(profile, "ms"))
        .map(|(g, ms)| g * ms * 1e6)
        .sum();
    let graph_flops = json_numbers(&json, "flops")[0];
    assert_eq!(graph_flops, 2.0 * 3.0 * 4.0 + 4.0 + 4.0, "{json}");
    assert!(
        (kernel_flops / graph_flops - 1.0).abs() < 0.05,
        "kernels {kernel_flops} vs graph {graph_flops}: {json}"
    );

    // The peak was cached: an edited cache entry is what the next bench reports.
    let file = cache.join("kiln/fma_peak.tsv");
    let cached = std::fs::read_to_string(&file).unwrap();
    let edited: String = cached
        .lines()
        .map(|l| {
            let (key, _) = l.rsplit_once('\t').unwrap();
            format!("{key}\t4321.5\n")
        })
        .collect();
    std::fs::write(&file, edited).unwrap();
    let json = bench_json(g, &cache, &[]);
    assert_eq!(json_numbers(&json, "fma_peak_gflops"), [4321.5], "{json}");

    // A cache folder that cannot be created (a file stands in its way) means measuring.
    let blocked = dir.join("not-a-folder");
    std::fs::write(&blocked, "").unwrap();
    let json = bench_json(g, &blocked, &[]);
    let peak = json_numbers(&json, "fma_peak_gflops");
    assert!(
        peak.len() == 1 && peak[0] > 0.0 && peak[0] != 4321.5,
        "{json}"
    );
}

#[test]
fn run_and_check_refuse_file_references_outside_the_graph_folder() {
    let top = scratch("confine");
    let dir = top.join("graph");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = top.join("secret.npy");
    kiln::npy::write(&secret, &Tensor::from_vec(&[2], vec![4.0, 2.0]).unwrap()).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("link.npy")).unwrap();
    let out_dir = top.join("out");
    for (tag, init) in [
        ("abs", format!("npy({:?})", secret.display().to_string())),
        ("dotdot", "npy(\"../secret.npy\")".to_string()),
        ("symlink", "npy(\"link.npy\")".to_string()),
        ("st", "safetensors(\"../secret.npy\", \"w\")".to_string()),
    ] {
        let g = dir.join(format!("{tag}.kiln"));
        std::fs::write(
            &g,
            format!("kiln 2\nconst %w : f32[2] = {init}\noutput %w\n"),
        )
        .unwrap();
        let out = kiln(&["check", g.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{tag}: check accepted it");
        assert!(
            stderr.contains("does not resolve to a file inside"),
            "{tag}: {stderr}"
        );
        let out = kiln(&[
            "run",
            g.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{tag}: run accepted it: {stdout}");
        assert!(
            stderr.contains(&format!("{tag}.kiln:2:")),
            "{tag}: {stderr}"
        );
        assert!(
            !stdout.contains('4') && !stderr.contains("4.0"),
            "{tag}: {stdout}{stderr}"
        );
        let written = std::fs::read_dir(&out_dir).map_or(0, |d| d.count());
        assert_eq!(written, 0, "{tag}: run wrote {written} file(s)");
    }
}

#[test]
fn check_gives_a_fast_error_for_a_fifo_reference() {
    let dir = scratch("fifo");
    let made = Command::new("mkfifo").arg(dir.join("w.npy")).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let g = dir.join("g.kiln");
    std::fs::write(
        &g,
        "kiln 1\nconst %w : f32[2] = npy(\"w.npy\")\noutput %w\n",
    )
    .unwrap();
    // Opening the FIFO for reading would block forever; the check refuses it first.
    let out = kiln(&["check", g.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("g.kiln:2:") && stderr.contains("is not a regular file"),
        "{stderr}"
    );
}

const LINEAR: &str = "kiln 2
input %x : f32[?,3]
input %y : f32[?,1]
var %w : f32[3,1] = [[0.5], [-1], [2]]
var %b : f32[1] = [0.25]
input %other : f32[2]
%p = matmul(%x, %w)
%q = bias_add(%p, %b)
%d = sub(%q, %y)
%sq = square(%d)
%loss = reduce_mean(%sq)
%pick = argmax(%q, axis=0)
%picked = cast(%pick, to=\"f32\")
%picked_sum = reduce_sum(%picked)
%bad = add(%loss, %picked_sum)
output %loss
";

#[test]
fn grad_adds_outputs_that_run_and_match_the_formula() {
    let dir = scratch("grad");
    let g = dir.join("lin.kiln");
    std::fs::write(&g, LINEAR).unwrap();
    let out_graph = dir.join("lin_grad.kiln");
    let out = kiln(&[
        "grad",
        g.to_str().unwrap(),
        "--loss",
        "%loss",
        "-o",
        out_graph.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("%grad/w, %grad/b"),
        "default --wrt is the variables: {stderr}"
    );
    let x = Tensor::from_vec(&[4, 3], (0..12).map(|i| i as f32 * 0.25 - 1.0).collect()).unwrap();
    let y = Tensor::from_vec(&[4, 1], vec![1.0, -1.0, 0.5, 2.0]).unwrap();
    kiln::npy::write(dir.join("x.npy"), &x).unwrap();
    kiln::npy::write(dir.join("y.npy"), &y).unwrap();
    let res = dir.join("res");
    let feed_x = format!("x={}", dir.join("x.npy").display());
    let feed_y = format!("y={}", dir.join("y.npy").display());
    let out = kiln(&[
        "run",
        out_graph.to_str().unwrap(),
        "--feed",
        &feed_x,
        "--feed",
        &feed_y,
        "--out",
        res.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    // d/dw mean((xw + b - y)^2) = 2/N x^T r, d/db = 2/N sum(r), r = xw + b - y.
    let (xs, ys) = (x.as_f32().unwrap(), y.as_f32().unwrap());
    let w = [0.5f32, -1.0, 2.0];
    let r: Vec<f32> = (0..4)
        .map(|i| (0..3).map(|k| xs[i * 3 + k] * w[k]).sum::<f32>() + 0.25 - ys[i])
        .collect();
    let gw: Vec<f32> = (0..3)
        .map(|k| (0..4).map(|i| xs[i * 3 + k] * r[i]).sum::<f32>() * 2.0 / 4.0)
        .collect();
    let gb = r.iter().sum::<f32>() * 2.0 / 4.0;
    let read = |n: &str| kiln::npy::read(res.join(n)).unwrap().tensor;
    let want_w = Tensor::from_vec(&[3, 1], gw).unwrap();
    let want_b = Tensor::from_vec(&[1], vec![gb]).unwrap();
    kiln::ir::compare::assert_close(
        &read("grad_w.npy"),
        &want_w,
        kiln::ir::compare::Tolerance::KERNEL,
        "grad_w",
    );
    kiln::ir::compare::assert_close(
        &read("grad_b.npy"),
        &want_b,
        kiln::ir::compare::Tolerance::KERNEL,
        "grad_b",
    );
}

#[test]
fn grad_errors_name_the_node() {
    let dir = scratch("grad-errors");
    let g = dir.join("lin.kiln");
    std::fs::write(&g, LINEAR).unwrap();
    let g = g.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--loss", "lossy"],
            &["--loss %lossy", "no node has this name", "%loss"],
        ),
        (
            &["--loss", "loss", "--wrt", "other"],
            &["%other", "does not depend on it"],
        ),
        (
            &["--loss", "bad", "--wrt", "w"],
            &["%picked", "has no gradient", "stop_gradient"],
        ),
        (
            &["--loss", "loss", "-o", g],
            &["refusing to overwrite the input graph"],
        ),
    ];
    for (args, wants) in cases {
        let mut all = vec!["grad", g];
        all.extend_from_slice(args);
        let out = kiln(&all);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
        }
    }
}

/// A dense layer with a trainable weight and a scalar loss.
const TRAINABLE_GRAPH: &str = "kiln 3
input %x : f32[?,3]
var %w : f32[3,4] = normal(0, 1, 7)
%y = matmul(%x, %w)
%sq = square(%y)
%loss = reduce_mean(%sq)
output %loss
";

/// `kiln bench --train LOSS` times the train step and reports its arena next to the forward
/// pass's; an unknown loss or optimizer is a clear error before anything runs.
#[test]
fn bench_train_times_the_step_and_rejects_unknown_names() {
    let dir = scratch("bench-train");
    let g = dir.join("dense.kiln");
    std::fs::write(&g, TRAINABLE_GRAPH).unwrap();
    let g = g.to_str().unwrap();
    let cache = dir.join("cache");
    for optimizer in ["sgd", "momentum", "adam"] {
        let json = bench_json(
            g,
            &cache,
            &["--train", "loss", "--optimizer", optimizer, "--batch", "5"],
        );
        assert!(json.contains("\"train\":\"loss\""), "{json}");
        let step = json_numbers(&json, "arena_bytes");
        let forward = json_numbers(&json, "forward_arena_bytes");
        assert!(
            step.len() == 1 && forward.len() == 1 && forward[0] > 0.0 && step[0] >= forward[0],
            "{json}"
        );
    }
    for (args, expected) in [
        (
            ["--train", "nosuch", "--optimizer", "sgd"],
            "--train %nosuch: no node has this name",
        ),
        (
            ["--train", "loss", "--optimizer", "rmsprop"],
            "--optimizer rmsprop: expected sgd, momentum or adam",
        ),
    ] {
        let mut all = vec!["bench", g, "--backend", "reference"];
        all.extend(args);
        let out = kiln(&all);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

/// `kiln` with `args`, run in `dir` (for relative paths such as a file named `-`).
fn kiln_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// `kiln dump big.kiln | head -1` used to panic ("failed printing to stdout: Broken pipe")
/// with exit code 101 once the output outgrew the pipe; now it ends quietly with exit 0.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("closed-stdout");
    let mut text = String::from("kiln 1\ninput %x0 : f32[2]\n");
    for i in 0..4000 {
        text += &format!("%x{} = relu(%x{i})\n", i + 1);
    }
    text += "output %x4000\n";
    let g = dir.join("big.kiln");
    std::fs::write(&g, text).unwrap();
    for verb in ["dump", "check", "dot"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([verb, g.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is dropped here: the pipe is closed after one line, as `head -1` does.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!first.is_empty(), "{verb}");
        assert_eq!(out.status.code(), Some(0), "{verb}: {stderr}");
        assert!(!stderr.contains("panicked"), "{verb}: {stderr}");
    }
}

/// `-o -` is standard output (it used to create a file named `-`); `run` takes `-o` as well as
/// `--out`, and refuses `-o -` since it writes a folder of files.
#[test]
fn dash_o_dash_is_stdout_and_run_takes_o() {
    let dir = scratch("dash-o");
    let g = write_graph(&dir);
    let out = kiln_in(&dir, &["dot", &g, "-o", "-"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("digraph"), "{stdout}");
    let out = kiln_in(&dir, &["grad", &g, "--loss", "y", "--wrt", "x", "-o", "-"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("output") && stdout.contains("grad/x"),
        "{stdout}"
    );
    assert!(!dir.join("-").exists(), "no file named - is created");

    let x = dir.join("x.npy");
    kiln::npy::write(&x, &Tensor::from_vec(&[1, 3], vec![1.0, 2.0, 3.0]).unwrap()).unwrap();
    let feed = format!("x={}", x.display());
    for flag in ["-o", "--out", "--output"] {
        let folder = dir.join(format!("out{flag}"));
        let out = kiln(&["run", &g, "--feed", &feed, flag, folder.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert!(out.status.success(), "{flag}: {stderr}");
        assert!(folder.join("y.npy").exists(), "{flag}");
        assert!(stderr.contains("wrote 2 file(s)"), "{stderr}");
    }
    let out = kiln_in(&dir, &["run", &g, "--feed", &feed, "-o", "-"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("without -o it prints"), "{stderr}");
    let out = kiln_in(&dir, &["import", "m.onnx", "-o", "-"]);
    assert!(
        text(&out).1.contains("name a .kiln file"),
        "{:?}",
        text(&out)
    );
}

/// Pass flags without `--optimize` used to be ignored silently, and `explain --optimize` did
/// nothing: both are refused, naming the flags.
#[test]
fn pass_flags_need_optimize() {
    let dir = scratch("pass-flags");
    let g = write_graph(&dir);
    for (args, expected) in [
        (
            &["dump", &g, "--freeze"][..],
            "--freeze only applies to the pass pipeline: add --optimize",
        ),
        (
            &["dot", &g, "--disable", "fuse-epilogues", "--backend", "cpu"][..],
            "--backend, --disable only applies to the pass pipeline",
        ),
        (
            &["explain", &g, "--optimize"][..],
            "explain always runs the pass pipeline",
        ),
    ] {
        let out = kiln(args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = kiln(&[
        "dump",
        &g,
        "--optimize",
        "--freeze",
        "--disable",
        "fuse-epilogues",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// `dump/explain/dot` optimise for the shapes `--batch` and `--shape` give, and say which
/// shapes they used; a shape that does not fit the placeholder is refused.
#[test]
fn optimized_views_take_input_shapes() {
    let dir = scratch("view-shapes");
    let g = write_graph(&dir);
    let out = kiln(&["dump", &g, "--optimize", "--batch", "4"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("input %x : f32[4,3]"), "{stdout}");
    assert!(
        stdout.contains("%y = matmul(%x, %w)  # f32[4,2]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# input shapes: %x f32[4,3] (--batch 4)"),
        "{stdout}"
    );
    // The dump with the note still parses.
    let dumped = dir.join("dumped.kiln");
    std::fs::write(&dumped, &stdout).unwrap();
    assert!(kiln(&["check", dumped.to_str().unwrap()]).status.success());

    let out = kiln(&["explain", &g, "--shape", "%x=7,3"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.starts_with("input shapes: %x f32[7,3] (--shape)\n"),
        "{stdout}"
    );
    let out = kiln(&["dot", &g, "--optimize"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.starts_with("// input shapes: %x f32[?,3] (unknown dims left open"),
        "{stdout}"
    );
    for (shape, expected) in [
        (
            "x=2",
            "%x is declared f32[?,3]; the shape must have its rank (2)",
        ),
        ("x=2,4", "its known dims"),
        (
            "y=2,3",
            "the graph has no placeholder %y (placeholders: %x)",
        ),
        ("x=2,0", "`0` is not a dim"),
        ("x", "expected NAME=d0,d1,..."),
    ] {
        let out = kiln(&["dump", &g, "--shape", shape]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{shape}");
        assert!(stderr.contains(expected), "{shape}: {stderr}");
    }
    // A skip-add of two convolutions fuses into one of them only when the batch is known (with
    // `?` the add could broadcast): the views used to show one kernel more than a run has.
    let skip = dir.join("skip.kiln");
    std::fs::write(
        &skip,
        "kiln 1\ninput %x : f32[?,8,8,4]\ninput %s : f32[?,8,8,4]\nvar %w : f32[3,3,4,4] = zeros\n\
         %c = conv2d(%x, %w, padding=\"SAME\")\n%t = conv2d(%s, %w, padding=\"SAME\")\n\
         %a = add(%c, %t)\n%r = relu(%a)\noutput %r\n",
    )
    .unwrap();
    let skip = skip.to_str().unwrap();
    let last_line = |args: &[&str]| text(&kiln(args)).0.lines().last().unwrap_or("").to_string();
    assert_eq!(last_line(&["explain", skip]), "6 nodes after optimisation");
    assert_eq!(
        last_line(&["explain", skip, "--batch", "2"]),
        "5 nodes after optimisation"
    );
    let out = kiln(&["dump", skip, "--optimize", "--batch", "2"]);
    assert!(
        text(&out).0.contains("%r = fused_conv2d("),
        "{:?}",
        text(&out)
    );

    let out = kiln(&["explain", &g, "--batch", "0"]);
    assert!(
        text(&out).1.contains("must be at least 1"),
        "{:?}",
        text(&out)
    );
}

/// The ONNX fixtures shipped with the importer.
fn onnx_fixture(name: &str) -> String {
    format!("{}/onnx/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every verb reads .onnx files through the importer (they answered "invalid UTF-8 (byte
/// 0x..)"), and `run` computes what the ONNX model's expected output says.
#[test]
fn every_verb_reads_onnx() {
    let dir = scratch("onnx-verbs");
    let model = onnx_fixture("conv_basic.onnx");
    let feed = format!("x={}", onnx_fixture("conv_basic.in.x.npy"));
    for args in [
        &["check", &model][..],
        &["dump", &model, "--optimize"][..],
        &["dot", &model][..],
        &["explain", &model, "--batch", "2"][..],
        &["bench", &model, "--runs", "1", "--backend", "reference"][..],
    ] {
        let out = kiln(args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stdout.is_empty() && !stderr.contains("UTF-8"), "{args:?}");
    }
    // Under another extension it is read as .kiln text, and the error says what to do.
    let renamed = dir.join("model.pb");
    std::fs::copy(&model, &renamed).unwrap();
    let out = kiln(&["check", renamed.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("invalid UTF-8")
            && stderr
                .contains("an ONNX model is read through the importer when its name ends in .onnx"),
        "{stderr}"
    );
    let folder = dir.join("out");
    let out = kiln(&[
        "run",
        &model,
        "--feed",
        &feed,
        "-o",
        folder.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let got = kiln::npy::read(folder.join("y.npy")).unwrap().tensor;
    let want = kiln::npy::read(onnx_fixture("conv_basic.out.y.npy"))
        .unwrap()
        .tensor;
    let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
}

/// `kiln run --restore CKPT --threads N --targets NAME,...` runs the named nodes with the
/// checkpoint's variables, prints small values in full and says what it computed.
#[test]
fn run_restores_targets_and_prints_small_values() {
    let dir = scratch("run-restore");
    let g = dir.join("v.kiln");
    std::fs::write(
        &g,
        "kiln 1\ninput %x : f32[2]\nvar %v : f32[2] = [1, 1]\n%y = mul(%x, %v)\n%z = add(%y, %v)\noutput %z\n",
    )
    .unwrap();
    let graph = kiln::Graph::load(&g).unwrap();
    let session = kiln::Session::new(&graph).unwrap();
    session
        .set_variable(
            graph.lookup("v").unwrap(),
            Tensor::from_vec(&[2], vec![3.0, -0.5]).unwrap(),
        )
        .unwrap();
    let ckpt = dir.join("v.safetensors");
    session.save_variables(&ckpt).unwrap();
    let x = dir.join("x.npy");
    kiln::npy::write(&x, &Tensor::from_vec(&[2], vec![2.0, 4.0]).unwrap()).unwrap();
    let (g, x) = (g.to_str().unwrap(), format!("x={}", x.display()));

    let out = kiln(&["run", g, "--feed", &x, "--restore", ckpt.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "%z f32[2] = [9, -2.5]\n");
    assert!(
        stderr.contains("computed 1 node(s); nothing written"),
        "{stderr}"
    );

    let out = kiln(&[
        "run",
        g,
        "--feed",
        &x,
        "--targets",
        "%y,z",
        "--threads",
        "2",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "%y f32[2] = [2, 4]\n%z f32[2] = [3, 5]\n");

    for (args, expected) in [
        (
            &["--targets", "w"][..],
            "--targets %w: no node has this name",
        ),
        (&["--targets", "y,"][..], "--targets y,: an empty name"),
        (&["--threads", "0"][..], "must be at least 1"),
        (&["--restore", "missing.safetensors"][..], "--restore: "),
    ] {
        let out = kiln(&[&["run", g, "--feed", &x][..], args].concat());
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `check` warns when a graph declares no outputs (run and bench would have nothing to do),
/// and a `kiln 1` file using a version-2 op is refused as docs/FORMAT.md says.
#[test]
fn check_warns_without_outputs_and_enforces_versions() {
    let dir = scratch("check-outputs");
    let g = dir.join("none.kiln");
    std::fs::write(&g, "kiln 1\ninput %x : f32[2]\n%y = relu(%x)\n").unwrap();
    let out = kiln(&["check", g.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("ok: 2 nodes; no outputs"), "{stdout}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("declares no outputs"),
        "{stderr}"
    );
    let out = kiln(&["run", g.to_str().unwrap()]);
    assert!(text(&out).1.contains("--targets NAME"), "{:?}", text(&out));

    let v1 = dir.join("v1.kiln");
    std::fs::write(
        &v1,
        "kiln 1\ninput %x : f32[2]\n%y = cast(%x, to=i32)\noutput %y\n",
    )
    .unwrap();
    let out = kiln(&["check", v1.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("v1.kiln:3:6: `cast` needs format version 2"),
        "{stderr}"
    );
}

/// `kiln bench` reports the standard deviation and p90 beside the median, and shows progress
/// on a terminal only (under `script`, a pseudo-terminal) so logs get no carriage returns.
#[test]
fn bench_reports_spread_and_progress_on_a_terminal() {
    let dir = scratch("bench-spread");
    let g = write_graph(&dir);
    let out = kiln(&["bench", &g, "--backend", "reference", "--runs", "5"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("std dev ") && stdout.contains(" p90 "),
        "{stdout}"
    );
    assert!(
        !stderr.contains('\r'),
        "no progress off a terminal: {stderr:?}"
    );
    let out = kiln(&[
        "bench",
        &g,
        "--backend",
        "reference",
        "--runs",
        "5",
        "--json",
    ]);
    let json = text(&out).0;
    let (median, p90, max) = (
        json_numbers(&json, "median_ms")[0],
        json_numbers(&json, "p90_ms")[0],
        json_numbers(&json, "max_ms")[0],
    );
    assert!(median <= p90 && p90 <= max, "{json}");
    assert!(json_numbers(&json, "std_dev_ms")[0] >= 0.0, "{json}");

    let has_script = Command::new("script").arg("--version").output().is_ok();
    if has_script {
        let command = format!(
            "{} bench {g} --backend reference --runs 3",
            env!("CARGO_BIN_EXE_kiln")
        );
        let out = Command::new("script")
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .args(["-qec", &command, "/dev/null"])
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&out.stdout);
        // 1 compiling run, 3 warm-up runs, 3 timed runs; the line is cleared before the report.
        assert!(all.contains("\u{1b}[Kruns 1/7"), "{all:?}");
        assert!(all.contains("\r\u{1b}[Kgraph "), "{all:?}");
    }
}

/// A misspelt `KILN_CPU_FEATURES` used to read "backend cpu does not support node %(program)
/// ()"; it names the variable and the values it takes, which are the family names `kiln bench`
/// prints (avx512, avx2, portable) as well as native and none.
#[test]
fn cpu_features_errors_name_the_variable() {
    let dir = scratch("cpu-features");
    let g = write_graph(&dir);
    let x = dir.join("x.npy");
    kiln::npy::write(&x, &Tensor::from_vec(&[1, 3], vec![1.0, 2.0, 3.0]).unwrap()).unwrap();
    let feed = format!("x={}", x.display());
    let run = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_CPU_FEATURES", value)
            .args(["run", &g, "--feed", &feed, "--backend", "cpu"])
            .output()
            .unwrap()
    };
    let out = run("avx512x");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("KILN_CPU_FEATURES: unknown value 'avx512x': expected native, avx512, avx2, none (or portable)"),
        "{stderr}"
    );
    assert!(!stderr.contains("(program)"), "{stderr}");
    for value in ["avx512", "avx2", "portable", "none", "native"] {
        let out = run(value);
        assert!(out.status.success(), "{value}: {:?}", text(&out));
        assert!(text(&out).0.contains("%y f32[1,2] = [[4, 5]]"), "{value}");
    }
}

/// A conv2d whose filter reads a whole fraction of the input's channels is grouped
/// (TensorFlow's rule); `check` and `dump` say so with the group count, and a plain conv gets
/// no note.
#[test]
fn check_and_dump_show_grouped_convolutions() {
    let dir = scratch("grouped");
    let g = dir.join("g.kiln");
    std::fs::write(
        &g,
        "kiln 1\ninput %x : f32[?,5,5,8]\nvar %w : f32[3,3,2,8] = zeros\nvar %v : f32[1,1,8,8] = zeros\n\
         %y = conv2d(%x, %w, padding=\"SAME\")\n%z = conv2d(%y, %v, padding=\"VALID\")\noutput %z\n",
    )
    .unwrap();
    let g = g.to_str().unwrap();
    let out = kiln(&["check", g]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("%y : f32[?,5,5,8] = conv2d (grouped: 4 groups of 2 input channels)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("%z : f32[?,5,5,8] = conv2d\n"), "{stdout}");
    for args in [
        &["dump", g][..],
        &["dump", g, "--optimize", "--batch", "2"][..],
    ] {
        let out = kiln(args);
        let (stdout, _) = text(&out);
        let y = stdout.lines().find(|l| l.starts_with("%y = ")).unwrap();
        assert!(
            y.ends_with("(grouped: 4 groups of 2 input channels)"),
            "{args:?}: {stdout}"
        );
        let z = stdout.lines().find(|l| l.starts_with("%z = ")).unwrap();
        assert!(!z.contains("grouped"), "{args:?}: {stdout}");
    }
}

/// The examples print errors with Display (`error: /nonexistent.kiln: ...`), not as the Debug
/// value (`Io { path: .. }`) a `main` returning `Result` prints. `cargo test` builds the
/// examples beside the binaries; a narrower build that did not is told so.
#[test]
fn examples_print_display_errors() {
    let examples = Path::new(env!("CARGO_BIN_EXE_kiln"))
        .parent()
        .unwrap()
        .join("examples");
    let example = examples.join("run_kiln_file");
    if !example.exists() {
        eprintln!("skipped: {} is not built", example.display());
        return;
    }
    let out = Command::new(&example)
        .arg("/nonexistent/graph.kiln")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("/nonexistent/graph.kiln"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Io {") && !stderr.contains("path:"),
        "{stderr}"
    );
}

/// `--profile` names the nodes of the graph as written that each kernel computes (the column
/// used to repeat the kernel's name): a node computed by an earlier kernel is not listed again,
/// and a constant subgraph folded at compile time (`%wt`) is listed by none.
#[test]
fn profile_lists_the_source_nodes_of_each_kernel() {
    let dir = scratch("profile-nodes");
    let g = dir.join("p.kiln");
    std::fs::write(
        &g,
        "kiln 1\ninput %x : f32[?,3]\nconst %w : f32[2,3] = [[1, 0, 1], [0, 1, 1]]\n\
         %wt = transpose(%w, perm=[1, 0])\n%y = matmul(%x, %wt)\n%r = relu(%y)\n\
         %sm = softmax(%r)\n%out = mul(%sm, %sm)\noutput %out, %r\n",
    )
    .unwrap();
    let x = dir.join("x.npy");
    kiln::npy::write(&x, &Tensor::from_vec(&[1, 3], vec![1.0, 2.0, 3.0]).unwrap()).unwrap();
    let feed = format!("x={}", x.display());
    let out = kiln(&[
        "run",
        g.to_str().unwrap(),
        "--feed",
        &feed,
        "--profile",
        "--backend",
        "cpu",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let row = |kernel: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{kernel} ")))
            .unwrap_or_else(|| panic!("no kernel {kernel}: {stdout}"))
            .to_string()
    };
    assert!(row("r").ends_with("  matmul+relu: %y %r"), "{stdout}");
    assert!(row("out").ends_with("  softmax+mul: %sm %out"), "{stdout}");
    assert!(!stdout.contains("%wt"), "{stdout}");
}
