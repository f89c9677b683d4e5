//! Training through the `kiln` binary, checked against TensorFlow: a small CNN written as
//! `.kiln` text independently of this repo's builders (`tests/golden/training_cnn/`, made by
//! `tests/golden/train_cnn.py` with tf.compat.v1). `kiln grad` + `kiln run` must give TF's
//! gradients within 1e-4, `kiln train --save` TF's variables after 20 steps of each optimizer
//! within 1e-3 relative (and TF's loss on every per-epoch line), on every backend built in; a
//! resumed run must equal one straight through bit for bit; bad input must exit 1 naming what
//! is wrong.

use kiln::ir::compare::{Tolerance, check_close};
use kiln::ir::{Data, safetensors_io};
use kiln::{BackendKind, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// TensorFlow's variable names in the CNN (`w1`/`b1` conv, `w2`/`b2` dense).
const VARS: [&str; 4] = ["w1", "b1", "w2", "b2"];
const STEPS: usize = 20;
/// One backward pass of f32 arithmetic summed in another order than TensorFlow's.
const GRADIENT: Tolerance = Tolerance::new(1e-4, 1e-4, 0.0);
/// Twenty optimizer steps: 1e-3 relative, with a floor for values that pass through zero.
const TRAJECTORY: Tolerance = Tolerance::new(1e-5, 1e-3, 0.0);

/// The `kiln train` flags giving each optimizer the hyperparameters of train_cnn.py.
const OPTIMIZERS: [(&str, &[&str]); 4] = [
    ("sgd", &["--optimizer", "sgd", "--lr", "0.1"]),
    (
        "momentum",
        &[
            "--optimizer",
            "momentum",
            "--lr",
            "0.05",
            "--momentum",
            "0.9",
        ],
    ),
    (
        "nesterov",
        &[
            "--optimizer",
            "momentum",
            "--lr",
            "0.05",
            "--momentum",
            "0.9",
            "--nesterov",
        ],
    ),
    (
        "adam",
        &[
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--beta1",
            "0.9",
            "--beta2",
            "0.999",
            "--epsilon",
            "1e-8",
        ],
    ),
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/training_cnn")
}

fn read_npy(path: &Path) -> Tensor {
    kiln::npy::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .tensor
}

/// A fresh copy of the golden folder's graph, weights and data (not TF's results), so that the
/// files kiln writes land beside the graph as a user's would.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-training-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["cnn.kiln", "x.npy", "labels.npy"]
        .into_iter()
        .map(String::from)
        .chain(VARS.iter().map(|v| format!("{v}.npy")))
    {
        std::fs::copy(golden_dir().join(&file), dir.join(&file)).unwrap();
    }
    dir
}

/// Runs the kiln binary in `dir`.
fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// Runs the kiln binary in `dir` and returns its stderr, failing the test if it fails.
fn kiln_ok(dir: &Path, args: &[&str]) -> String {
    let out = kiln(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln {}: {stderr}", args.join(" "));
    stderr
}

/// Runs the kiln binary in `dir`, which must exit 1; returns its stderr.
fn kiln_fails(dir: &Path, args: &[&str]) -> String {
    let out = kiln(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "kiln {}: {stderr}",
        args.join(" ")
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

const TRAIN: [&str; 8] = [
    "train",
    "cnn.kiln",
    "--loss",
    "loss",
    "--feed",
    "x=x.npy",
    "--feed",
    "labels=labels.npy",
];

/// Every tensor of a safetensors checkpoint, sorted by name.
fn checkpoint(path: &Path) -> Vec<(String, Tensor)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Tensor)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, safetensors_io::tensor_from_view(&view).unwrap()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn tensor_named<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// The largest `|got - want|` and `|got - want| / |want|` (for the report; the assertion is
/// `check_close`).
fn errors(got: &Tensor, want: &Tensor) -> (f64, f64) {
    got.to_f64_vec()
        .iter()
        .zip(want.to_f64_vec())
        .fold((0.0, 0.0), |(abs, rel), (g, w)| {
            let e = (g - w).abs();
            (abs.max(e), rel.max(e / w.abs().max(1e-30)))
        })
}

/// The mean loss of each per-epoch line `kiln train` writes when stderr is not a terminal.
fn epoch_losses(stderr: &str) -> Vec<f32> {
    stderr
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| {
            let value = l
                .split("mean loss ")
                .nth(1)
                .unwrap_or_else(|| panic!("{l}"));
            value.split(' ').next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn grad_then_run_gives_tensorflows_gradients() {
    let dir = workdir("grad");
    let stderr = kiln_ok(
        &dir,
        &["grad", "cnn.kiln", "--loss", "loss", "-o", "cnn_grad.kiln"],
    );
    assert!(
        stderr.contains("%grad/w1, %grad/b1, %grad/w2, %grad/b2"),
        "{stderr}"
    );
    for backend in BackendKind::available() {
        let out = format!("out_{backend}");
        let backend = backend.to_string();
        kiln_ok(
            &dir,
            &[
                "run",
                "cnn_grad.kiln",
                "--feed",
                "x=x.npy",
                "--feed",
                "labels=labels.npy",
                "--out",
                &out,
                "--backend",
                &backend,
            ],
        );
        for var in VARS {
            let got = read_npy(&dir.join(&out).join(format!("grad_{var}.npy")));
            let want = read_npy(&golden_dir().join(format!("grad_{var}.npy")));
            let (abs, _) = errors(&got, &want);
            eprintln!("{backend} grad_{var}: max abs error {abs:e}");
            if let Err(e) = check_close(&got, &want, GRADIENT) {
                panic!("{backend}: gradient of %loss w.r.t. %{var}: {e}");
            }
        }
    }
}

#[test]
fn twenty_steps_of_each_optimizer_follow_tensorflow() {
    let dir = workdir("trajectories");
    let steps = STEPS.to_string();
    for backend in BackendKind::available() {
        let backend = backend.to_string();
        for (case, flags) in OPTIMIZERS {
            let ckpt = format!("{case}_{backend}.safetensors");
            let mut args = TRAIN.to_vec();
            args.extend_from_slice(flags);
            args.extend_from_slice(&["--steps", &steps, "--save", &ckpt, "--backend", &backend]);
            let stderr = kiln_ok(&dir, &args);

            // Not a terminal: one line per epoch (here per full-batch step), no progress bar.
            assert!(!stderr.contains('\r'), "{stderr}");
            let losses = epoch_losses(&stderr);
            let tf_losses = read_npy(&golden_dir().join(case).join("loss.npy"));
            let got = Tensor::from_vec(&[losses.len()], losses).unwrap();
            if let Err(e) = check_close(&got, &tf_losses, TRAJECTORY) {
                panic!("{backend} {case}: the per-epoch losses: {e}\n{stderr}");
            }

            let saved = checkpoint(&dir.join(&ckpt));
            let mut worst = (0.0f64, 0.0f64);
            for var in VARS {
                let want = read_npy(&golden_dir().join(case).join(format!("{var}.npy")));
                let got = tensor_named(&saved, var);
                let (abs, rel) = errors(got, &want);
                worst = (worst.0.max(abs), worst.1.max(rel));
                if let Err(e) = check_close(got, &want, TRAJECTORY) {
                    panic!("{backend} {case}: %{var} after {STEPS} steps: {e}");
                }
            }
            eprintln!(
                "{backend} {case}: variables after {STEPS} steps: max abs error {:e}, max \
                 relative error {:e}",
                worst.0, worst.1
            );
            assert_eq!(
                tensor_named(&saved, "global_step").to_f64_vec(),
                vec![STEPS as f64]
            );
        }
    }
}

#[test]
fn resuming_from_a_checkpoint_equals_training_straight_through() {
    let dir = workdir("resume");
    // Shuffled mini-batches: the resumed run must also pick up the data where it stopped.
    for (case, slot) in [("adam", "w1/Adam_1"), ("momentum", "w1/Momentum")] {
        let flags = OPTIMIZERS.iter().find(|(c, _)| *c == case).unwrap().1;
        for backend in BackendKind::available() {
            let backend = backend.to_string();
            let run = |extra: &[&str]| {
                let mut args = TRAIN.to_vec();
                args.extend_from_slice(flags);
                args.extend_from_slice(&["--batch", "4", "--shuffle", "5", "--backend", &backend]);
                args.extend_from_slice(extra);
                kiln_ok(&dir, &args);
            };
            run(&["--steps", "10", "--save", "first.safetensors"]);
            run(&[
                "--restore",
                "first.safetensors",
                "--steps",
                "10",
                "--save",
                "resumed.safetensors",
            ]);
            run(&["--steps", "20", "--save", "straight.safetensors"]);
            let first = checkpoint(&dir.join("first.safetensors"));
            let resumed = checkpoint(&dir.join("resumed.safetensors"));
            let straight = checkpoint(&dir.join("straight.safetensors"));
            assert_eq!(tensor_named(&first, "global_step").to_f64_vec(), vec![10.0]);
            let names: Vec<&str> = straight.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.contains(&slot), "{case}: {names:?}");
            assert_eq!(
                names,
                resumed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
            );
            for ((name, got), (_, want)) in resumed.iter().zip(&straight) {
                if let Err(e) = check_close(got, want, Tolerance::EXACT) {
                    panic!("{backend} {case}: %{name} resumed after 10 steps: {e}");
                }
            }
            assert!(
                check_close(
                    tensor_named(&first, "w1"),
                    tensor_named(&straight, "w1"),
                    Tolerance::EXACT
                )
                .is_err(),
                "the second half trained"
            );
        }
    }
}

/// A loss reached from %w1 only through argmax (cast to f32): no gradient flows there.
const ARGMAX_GRAPH: &str = "kiln 3
input %x : f32[?,8,8,1]
input %labels : i32[?]
var %w1 : f32[3,3,1,4] = npy(\"w1.npy\")
var %b2 : f32[3] = npy(\"b2.npy\")
%conv = conv2d(%x, %w1, strides=[1,1], padding=\"SAME\")
%flat = reshape(%conv, shape=[-1, 256])
%winner = argmax(%flat, axis=1, output_type=\"i32\")
%winner_f32 = cast(%winner, to=\"f32\")
%column = reshape(%winner_f32, shape=[-1, 1])
%logits = add(%column, %b2)
%xent = sparse_softmax_cross_entropy_with_logits(%logits, %labels)
%loss = reduce_mean(%xent)
output %loss
";

#[test]
fn bad_training_input_exits_1_naming_what_is_wrong() {
    let dir = workdir("errors");
    let fifteen = Tensor::new(&[15], Data::I32(vec![0; 15])).unwrap();
    kiln::npy::write(dir.join("labels15.npy"), &fifteen).unwrap();
    let cnn = std::fs::read_to_string(dir.join("cnn.kiln")).unwrap();
    std::fs::write(
        dir.join("lonely.kiln"),
        cnn.replace("output %loss", "var %lonely : f32[2] = zeros\noutput %loss"),
    )
    .unwrap();
    std::fs::write(dir.join("argmax.kiln"), ARGMAX_GRAPH).unwrap();

    let mut args = TRAIN.to_vec();
    args[7] = "labels=labels15.npy";
    let e = kiln_fails(&dir, &args);
    assert!(
        e.contains("%x has 16 rows") && e.contains("%labels has 15"),
        "{e}"
    );

    let e = kiln_fails(
        &dir,
        &[
            "grad",
            "lonely.kiln",
            "--loss",
            "loss",
            "--wrt",
            "w1,%lonely",
        ],
    );
    assert!(
        e.contains("%lonely") && e.contains("%loss does not depend on it"),
        "{e}"
    );

    // Each used to say only "duplicate name %grad/w1".
    let e = kiln_fails(
        &dir,
        &["grad", "cnn.kiln", "--loss", "loss", "--wrt", "w1,b1,%w1"],
    );
    assert!(e.contains("%w1 is listed twice"), "{e}");
    kiln_ok(
        &dir,
        &["grad", "cnn.kiln", "--loss", "loss", "-o", "once.kiln"],
    );
    let e = kiln_fails(
        &dir,
        &["grad", "once.kiln", "--loss", "loss", "-o", "twice.kiln"],
    );
    assert!(
        e.contains("already has a node %grad/w1") && e.contains("already added"),
        "{e}"
    );

    let e = kiln_fails(&dir, &["grad", "argmax.kiln", "--loss", "%loss"]);
    assert!(
        e.contains("node %winner_f32 (cast): has no gradient") && e.contains("%w1"),
        "{e}"
    );
    let mut args = TRAIN.to_vec();
    args[1] = "argmax.kiln";
    args.extend_from_slice(&["--steps", "1"]);
    let e = kiln_fails(&dir, &args);
    assert!(
        e.contains("node %winner_f32 (cast): has no gradient"),
        "{e}"
    );

    let mut args = TRAIN.to_vec();
    args.extend_from_slice(&["--epochs", "2", "--steps", "3"]);
    let e = kiln_fails(&dir, &args);
    assert!(e.contains("--epochs or --steps, not both"), "{e}");

    let mut args = TRAIN.to_vec();
    args.extend_from_slice(&["--optimizer", "rmsprop"]);
    let e = kiln_fails(&dir, &args);
    assert!(
        e.contains("--optimizer rmsprop: expected sgd, momentum or adam"),
        "{e}"
    );
    assert!(
        !dir.join("twice.kiln").exists() && std::fs::read_dir(&dir).unwrap().count() == 11,
        "a failed command writes nothing"
    );
}
