//! Real networks nobody on this project wrote: ONNX's own "light" model tests (ResNet-50,
//! DenseNet-121, Inception v1/v2, ShuffleNet, SqueezeNet, AlexNet, ZFNet-512, VGG-19; IR
//! version 3, opset 9), copied with their expected outputs into onnx/tests/real/ by
//! onnx/tests/real/gen_real.py. Each is imported with kiln, run on the CPU backend (the two
//! smallest also on the reference backend) on ONNX's test-runner input, and compared with the
//! output ONNX stores beside the model. Import, compile and run times are printed per model
//! (`cargo test --test suite -- onnx_real:: --nocapture`).
//!
//! What is compared. The weights of these models are all 0.02 (ConstantOfShape), so every
//! classifier logit is equal and the stored softmax output is exactly 1/1000 whatever the
//! network computed. So the test also compares the tensor feeding the final Softmax with ONNX
//! Runtime's value of it (`NAME_logits_ort.npy`), which depends on every layer (DenseNet-121
//! ends in a Conv, so its stored output already does). Constant weights also make every
//! channel equal, hiding channel-order bugs (skipping ShuffleNet's channel shuffle moves its
//! logits by 1e-6 of their range); `NAME_varied.onnx` (three models) replaces them with seeded
//! sums of products of random factors (see gen_real.py's `varied`), checked against ONNX
//! Runtime's outputs: there, reversing the input's channels moves the logits by 0.09 to 0.7 of
//! their range and a spatially flipped kernel by 0.01 to 0.2.
//!
//! Tolerances (`kiln::ir::compare`, which also checks dims, dtype and NaN/inf placement), per
//! element, `want` being ONNX's value:
//! - stored outputs: |kiln - want| <= 1e-6 + 1e-3 |want| (softmax probabilities near 1e-3, so
//!   effectively relative; ONNX's own runner uses rtol 1e-3, atol 1e-7);
//! - logits: |kiln - want| <= 1e-3 |want| + 1e-4 max|want|: they reach 1e31 (VGG-19) after 20
//!   to 120 layers of f32 sums taken in another order than ONNX Runtime's, and the varied
//!   models' logits cross zero, where only a bound relative to the whole tensor makes sense;
//! - varied softmax outputs: |kiln - want| <= 1e-5 + 1e-3 |want|, probabilities near 0 being
//!   exp(-100) and below.

use kiln::ir::compare::{Tolerance, check_close};
use kiln::{BackendKind, Graph, Session, Tensor};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn real_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/tests/real")
}

fn npy(file: &str) -> Tensor {
    let path = real_dir().join(file);
    kiln::npy::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .tensor
}

/// A model and the ONNX name of the tensor its final Softmax reads (as gen_real.py prints).
struct Model {
    /// The file stem in onnx/tests/real/.
    name: &'static str,
    /// The Softmax input, `None` for densenet121, which ends in a Conv.
    logits: Option<&'static str>,
}

const fn model(name: &'static str, logits: Option<&'static str>) -> Model {
    Model { name, logits }
}

/// All nine light models, smallest first. None is excluded: in a debug build the largest,
/// VGG-19 (575 MB of weights generated at import), imports, compiles and runs in about 4 s,
/// the process peaking at 1.7 GB resident (the CPU session keeps about two more copies of
/// the weights beside the imported graph's).
const LIGHT: &[Model] = &[
    model("squeezenet", Some("r65")),
    model("shufflenet", Some("r201")),
    model("inception_v1", Some("r143")),
    model("inception_v2", Some("r507")),
    model("resnet50", Some("r174")),
    model("densenet121", None),
    model("bvlc_alexnet", Some("r24")),
    model("zfnet512", Some("r20")),
    model("vgg19", Some("r46")),
];

/// The varied-weights copies (gen_real.py's `VARIED`).
const VARIED: &[Model] = &[
    model("squeezenet_varied", Some("r65")),
    model("shufflenet_varied", Some("r201")),
    model("inception_v1_varied", Some("r143")),
];

/// Checks `got` against `want` with `kiln::ir::compare` (dims, dtype, NaN/inf placement,
/// values within `tol`); returns the max absolute and relative (to |want|, over elements with
/// want != 0) errors for the summary line.
fn compare(what: &str, got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(f64, f64), String> {
    check_close(got, want, tol).map_err(|m| format!("{what}: {m}"))?;
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (a, b) in g.iter().zip(&w).filter(|(_, b)| b.is_finite()) {
        let d = (a - b).abs();
        max_abs = max_abs.max(d);
        if *b != 0.0 {
            max_rel = max_rel.max(d / b.abs());
        }
    }
    Ok((max_abs, max_rel))
}

/// Imports and runs `m` on `backend`, checks the output against `NAME_output_0.npy` (ONNX's
/// stored output) or `NAME_output_ort.npy` (ONNX Runtime's, for varied copies) and the logits
/// against `NAME_logits_ort.npy`; returns a one-line summary with times and errors.
fn run_model(m: &Model, backend: BackendKind) -> Result<String, String> {
    let name = m.name;
    let varied = name.ends_with("_varied");
    let t = Instant::now();
    let graph = Graph::from_onnx(real_dir().join(format!("{name}.onnx")))
        .map_err(|e| format!("import: {e}"))?;
    let import = t.elapsed();
    let ir = graph.ir();
    let [input] = ir.placeholders()[..] else {
        return Err(format!(
            "{} placeholders, expected 1",
            ir.placeholders().len()
        ));
    };
    let input_name = ir.node(input).name.clone();
    let out_name = graph
        .output_names()
        .first()
        .cloned()
        .ok_or("no graph output")?;
    let mut fetches = vec![out_name.as_str()];
    fetches.extend(m.logits);
    let x = npy("input_0.npy");
    let sess =
        Session::with_backend(&graph, backend.clone()).map_err(|e| format!("session: {e}"))?;
    let t = Instant::now();
    let outs = sess
        .run_named(&[(input_name.as_str(), &x)], &fetches)
        .map_err(|e| format!("run: {e}"))?;
    let total = t.elapsed();
    let compile = sess.last_compile().map_or(Duration::ZERO, |c| c.time);
    let (want, atol) = if varied {
        (npy(&format!("{name}_output_ort.npy")), 1e-5)
    } else {
        (npy(&format!("{name}_output_0.npy")), 1e-6)
    };
    let (oa, or) = compare(&out_name, &outs[0], &want, Tolerance::new(atol, 1e-3, 0.0))?;
    let mut line = format!(
        "{name} on {backend}: import {:.2} s, compile {:.2} s, run {:.2} s; output max abs \
         {oa:.2e} rel {or:.2e}",
        import.as_secs_f64(),
        compile.as_secs_f64(),
        total.saturating_sub(compile).as_secs_f64()
    );
    if let Some(logits) = m.logits {
        let want = npy(&format!("{name}_logits_ort.npy"));
        let scale = want.to_f64_vec().iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let (la, lr) = compare(logits, &outs[1], &want, Tolerance::new(0.0, 1e-3, 1e-4))?;
        line += &format!("; logits (max |v| {scale:.2e}) max abs {la:.2e} rel {lr:.2e}");
    }
    Ok(line)
}

/// Runs every model, printing a summary line each; fails listing every model that differs.
fn run_all(models: &[Model], backend: BackendKind) {
    let mut failures = Vec::new();
    for m in models {
        match run_model(m, backend.clone()) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => failures.push(format!("{} on {backend}: {e}", m.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} models differ:\n{}",
        failures.len(),
        models.len(),
        failures.join("\n")
    );
}

#[test]
fn light_models_match_onnx_on_cpu() {
    run_all(LIGHT, BackendKind::Cpu);
}

#[test]
fn varied_models_match_onnx_runtime_on_cpu() {
    run_all(VARIED, BackendKind::Cpu);
}

/// The reference backend runs plain loops (about 1 GFLOP here takes seconds in a debug
/// build), so it gets only SqueezeNet (0.35 GFLOP) and ShuffleNet (0.14 GFLOP), each with
/// constant and varied weights.
#[test]
fn smallest_models_match_on_reference() {
    let models = [&LIGHT[0], &LIGHT[1], &VARIED[0], &VARIED[1]];
    let mut failures = Vec::new();
    for m in models {
        match run_model(m, BackendKind::Reference) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => failures.push(format!("{}: {e}", m.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The stored input is what ONNX's test runner feeds: `arange(n).reshape(shape) / n` as f32
/// (`generate_dummy_data(x, seed=0, random=False)`), computed here independently.
#[test]
fn input_is_the_onnx_runner_dummy_data() {
    let x = npy("input_0.npy");
    assert_eq!(x.dims(), [1, 3, 224, 224]);
    let n = 3 * 224 * 224;
    let v = x.to_f64_vec();
    for (i, &got) in v.iter().enumerate() {
        // numpy divides in f64, then rounds to f32.
        let want = f64::from((i as f64 / n as f64) as f32);
        assert_eq!(got, want, "element {i}");
    }
}
