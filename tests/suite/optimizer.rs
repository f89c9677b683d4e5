//! The optimizers of `kiln::optimizer` against TensorFlow's `tf.compat.v1.train`: 20 steps on
//! `loss = sum((w * x - y)^2)` (gradient `2 x (w x - y)` written by hand) must follow the
//! trajectories in `tests/golden/optimizer/` (made by `optimizer_trajectories.py`) on every
//! backend built in, every backend must agree with the reference, slots must be checkpointed so
//! that a restored session continues bit-identically, and bad input must be a clean error.

use kiln::ir::compare::{Tolerance, assert_close, check_close};
use kiln::optimizer::{Optimizer, global_step};
use kiln::{
    AdamOptimizer, BackendKind, GradientDescentOptimizer, Graph, MomentumOptimizer, NodeId,
    Session, Tensor,
};
use std::path::PathBuf;

const STEPS: usize = 20;
/// Several optimizer steps of f32 arithmetic done in another order than TensorFlow's.
const TRAJECTORY: Tolerance = Tolerance::new(1e-5, 1e-3, 0.0);

fn golden(name: &str) -> Tensor {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/optimizer")
        .join(format!("{name}.npy"));
    kiln::npy::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .tensor
}

fn optimizer(case: &str) -> Box<dyn Optimizer> {
    match case {
        "sgd" => Box::new(GradientDescentOptimizer::new(0.05)),
        "momentum" => Box::new(MomentumOptimizer::new(0.02, 0.9)),
        "nesterov" => Box::new(MomentumOptimizer::new(0.02, 0.9).nesterov(true)),
        "adam" => Box::new(AdamOptimizer::new(0.1)),
        _ => unreachable!("the cases are listed in CASES"),
    }
}

const CASES: [&str; 4] = ["sgd", "momentum", "nesterov", "adam"];

/// The quadratic problem with its hand-written gradient, and the train target of `case`.
struct Problem {
    graph: Graph,
    w: NodeId,
    step: NodeId,
    train: NodeId,
}

fn problem(case: &str) -> Problem {
    let mut g = Graph::new();
    let w = g.var("w", golden("w0")).unwrap();
    let x = g.constant("x", golden("x")).unwrap();
    let y = g.constant("y", golden("y")).unwrap();
    let wx = g.mul(w, x).unwrap();
    let r = g.sub(wx, y).unwrap();
    let two = g.scalar(2.0).unwrap();
    let two_x = g.mul(two, x).unwrap();
    let grad = g.mul(two_x, r).unwrap();
    let step = global_step(&mut g).unwrap();
    let train = optimizer(case)
        .apply_gradients(&mut g, &[(grad, w)], Some(step))
        .unwrap();
    Problem {
        graph: g,
        w,
        step,
        train,
    }
}

fn train(sess: &mut Session, p: &Problem, steps: usize) -> Vec<Tensor> {
    (0..steps)
        .map(|_| {
            sess.run_with_targets(&[], &[], &[p.train]).unwrap();
            sess.variable(p.w).unwrap().clone()
        })
        .collect()
}

/// The slots TensorFlow saved for `case`, by kiln's names.
fn slot_names(case: &str) -> &'static [&'static str] {
    match case {
        "momentum" | "nesterov" => &["w/Momentum"],
        "adam" => &["w/Adam", "w/Adam_1"],
        _ => &[],
    }
}

#[test]
fn twenty_steps_follow_tensorflow_on_every_backend() {
    let mut failures = Vec::new();
    for backend in BackendKind::available() {
        for case in CASES {
            let p = problem(case);
            let mut sess = Session::with_backend(&p.graph, backend.clone()).unwrap();
            let got = train(&mut sess, &p, STEPS);
            let want = golden(case);
            let want_rows = want.as_f32().unwrap().chunks(6);
            for (i, (w, row)) in got.iter().zip(want_rows).enumerate() {
                let row = Tensor::from_vec(&[2, 3], row.to_vec()).unwrap();
                if let Err(e) = check_close(w, &row, TRAJECTORY) {
                    failures.push(format!("{backend:?} {case} step {}: {e}", i + 1));
                }
            }
            let slots = slot_names(case);
            if !slots.is_empty() {
                let want = golden(&format!("{case}_slots"));
                for (name, part) in slots.iter().zip(want.as_f32().unwrap().chunks(6)) {
                    let part = Tensor::from_vec(&[2, 3], part.to_vec()).unwrap();
                    let got = sess.variable_named(name).unwrap();
                    if let Err(e) = check_close(&got, &part, TRAJECTORY) {
                        failures.push(format!("{backend:?} {case} slot {name}: {e}"));
                    }
                }
            }
            if case == "adam" {
                let powers = golden("adam_powers");
                for (name, &want) in ["beta1_power", "beta2_power"]
                    .iter()
                    .zip(powers.as_f32().unwrap())
                {
                    let got = sess.variable_named(name).unwrap();
                    if let Err(e) = check_close(&got, &Tensor::scalar(want), TRAJECTORY) {
                        failures.push(format!("{backend:?} {case} {name}: {e}"));
                    }
                }
            }
            let step = sess.variable(p.step).unwrap();
            if step != Tensor::scalar(STEPS as f32) {
                failures.push(format!("{backend:?} {case}: global_step is {step:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_backend_agrees_with_the_reference() {
    for case in CASES {
        let p = problem(case);
        let mut reference = Session::with_backend(&p.graph, BackendKind::Reference).unwrap();
        let want = train(&mut reference, &p, STEPS);
        for backend in BackendKind::available() {
            let mut sess = Session::with_backend(&p.graph, backend.clone()).unwrap();
            let got = train(&mut sess, &p, STEPS);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(
                    g,
                    w,
                    Tolerance::KERNEL,
                    &format!("{backend:?} {case} step {}", i + 1),
                );
            }
        }
    }
}

#[test]
fn a_restored_checkpoint_continues_bit_identically() {
    let dir = std::env::temp_dir().join(format!("kiln-optimizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for backend in [BackendKind::Reference, BackendKind::Cpu] {
        for case in CASES {
            let p = problem(case);
            let mut straight = Session::with_backend(&p.graph, backend.clone()).unwrap();
            train(&mut straight, &p, STEPS);

            let mut first = Session::with_backend(&p.graph, backend.clone()).unwrap();
            train(&mut first, &p, STEPS / 2);
            let ckpt = dir.join(format!("{case}.safetensors"));
            first.save_variables(&ckpt).unwrap();
            let mut resumed = Session::with_backend(&p.graph, backend.clone()).unwrap();
            resumed.restore_variables(&ckpt).unwrap();
            train(&mut resumed, &p, STEPS - STEPS / 2);

            let variables = straight.variables().unwrap();
            let names: Vec<&str> = variables.iter().map(|(n, _)| n.as_str()).collect();
            for name in slot_names(case).iter().chain(&["w", "global_step"]) {
                assert!(
                    names.contains(name),
                    "{case}: no variable {name} in {names:?}"
                );
            }
            for (name, want) in &variables {
                let got = resumed.variable_named(name).unwrap();
                assert_close(
                    &got,
                    want,
                    Tolerance::EXACT,
                    &format!("{backend:?} {case} {name}"),
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_optimizer_input_is_a_clean_error() {
    let mut g = Graph::new();
    let w = g.var("w", Tensor::zeros(&[2, 3])).unwrap();
    let c = g.constant("c", Tensor::zeros(&[2, 3])).unwrap();
    let short = g.constant("short", Tensor::zeros(&[3])).unwrap();
    let sgd = GradientDescentOptimizer::new(0.1);

    let err = sgd.apply_gradients(&mut g, &[(c, c)], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node %c (const): GradientDescent can only update variables; got a const paired with \
         gradient %c"
    );
    let err = AdamOptimizer::new(0.1)
        .apply_gradients(&mut g, &[(short, w)], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Adam/update_w") && err.contains("f32[3]") && err.contains("f32[2,3]"),
        "{err}"
    );
    let err = sgd.apply_gradients(&mut g, &[], None).unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
    let err = sgd.apply_gradients(&mut g, &[(c, w)], Some(w)).unwrap_err();
    assert!(
        err.to_string().contains("%w") && err.to_string().contains("f32 scalar variable"),
        "{err}"
    );
    // An update op writes only variables, each once.
    let lr = g.scalar(0.1).unwrap();
    let err = g.apply_gradient_descent(c, lr, c).unwrap_err().to_string();
    assert!(err.contains("operand 0 must be a variable"), "{err}");
    let err = g
        .apply_momentum(w, w, lr, c, lr, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("writes %w a second time"), "{err}");
    let err = g.apply_gradient_descent(w, c, c).unwrap_err().to_string();
    assert!(
        err.contains("alpha (operand 1) must be an f32 scalar"),
        "{err}"
    );
}

#[test]
fn a_fetched_variable_shows_its_start_of_run_value() {
    for backend in BackendKind::available() {
        let p = problem("adam");
        let sess = Session::with_backend(&p.graph, backend.clone()).unwrap();
        let before = sess.variable(p.w).unwrap().clone();
        let got = sess.run_with_targets(&[], &[p.w], &[p.train]).unwrap();
        assert_close(&got[0], &before, Tolerance::EXACT, &format!("{backend:?}"));
        assert!(
            sess.variable(p.w).unwrap() != before,
            "{backend:?}: w did not move"
        );
    }
}

#[test]
fn a_train_step_round_trips_through_kiln_text() {
    let p = problem("momentum");
    let text = p.graph.to_text();
    assert!(text.starts_with("kiln 3"), "{text}");
    assert!(
        text.contains("apply_momentum(") && text.contains("group("),
        "{text}"
    );
    let parsed = Graph::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.to_text(), text);
    let train = parsed.lookup("Momentum").unwrap();
    let sess = Session::with_backend(&parsed, BackendKind::Reference).unwrap();
    for _ in 0..STEPS {
        sess.run_with_targets(&[], &[], &[train]).unwrap();
    }
    let mut original = Session::with_backend(&p.graph, BackendKind::Reference).unwrap();
    let want = train_steps_of(&mut original, &p);
    assert_close(
        &sess.variable_named("w").unwrap(),
        &want,
        Tolerance::EXACT,
        "parsed graph",
    );
}

fn train_steps_of(sess: &mut Session, p: &Problem) -> Tensor {
    train(sess, p, STEPS).pop().expect("STEPS > 0")
}
