//! Gradients of random graphs against finite differences, as JAX's `check_grads` does: for
//! each recipe, `loss = sum(y * seed)` with a random constant `seed`, the gradient with
//! respect to the input `x` from `Graph::gradients`, run on every backend, must agree with the
//! reference's, and on the reference its projection on random directions `v` must match the
//! central difference `(loss(x + εv) - loss(x - εv)) / 2ε` (sums in f64).
//!
//! The evaluator computes in f32, so ε is large (1e-2) and the bound is relative: |numeric -
//! analytic| <= 2e-2 Σ|g_i v_i| + 1e-3. A difference that straddles a kink (relu at 0, a tie
//! in max or a max pool) is retried with ε/8 and another direction; a wrong rule fails both.

use super::close;
use super::recipe::{KINDS, MAX_NUMEL, build};
use kiln::{BackendKind, Graph, NodeId, OptimizeOptions, Session, Tensor};

/// The loss `sum(y * seed)` and d loss / dx, added to the graph.
fn with_gradient(
    g: &mut Graph,
    x: NodeId,
    y: NodeId,
    seed: u64,
) -> Result<(NodeId, NodeId), String> {
    let dims = g.node(y).ty.shape.to_dims().unwrap().to_vec();
    let s = g
        .constant("loss_seed", Tensor::uniform(&dims, -1.0, 1.0, seed))
        .unwrap();
    let weighted = g.mul(y, s).unwrap();
    let loss = g.reduce_sum(weighted, &[], false).unwrap();
    let dx = g
        .gradients(&[loss], &[x])
        .map_err(|e| format!("gradients: {e}\n{}", g.to_text()))?;
    Ok((loss, dx[0]))
}

fn reference(g: &Graph) -> Session {
    let unoptimized = OptimizeOptions {
        enabled: false,
        ..OptimizeOptions::default()
    };
    Session::with_options(g, BackendKind::Reference, unoptimized).unwrap()
}

/// Whether the directional derivative of `loss` along `v` at the feeds matches `<dx, v>`.
fn directional_matches(
    sess: &mut Session,
    feeds: &[(NodeId, Tensor)],
    loss: NodeId,
    dx: &Tensor,
    v: &Tensor,
    eps: f32,
) -> Result<(), String> {
    let x0 = &feeds[0].1;
    let at = |sign: f32| -> f64 {
        let moved: Vec<f32> = x0
            .as_f32()
            .unwrap()
            .iter()
            .zip(v.as_f32().unwrap())
            .map(|(a, b)| a + sign * eps * b)
            .collect();
        let moved = Tensor::from_vec(x0.dims(), moved).unwrap();
        let mut all: Vec<(NodeId, &Tensor)> = vec![(feeds[0].0, &moved)];
        all.extend(feeds[1..].iter().map(|(n, t)| (*n, t)));
        let out = sess.run(&all, &[loss]).unwrap();
        out[0].as_f32().unwrap()[0] as f64
    };
    let numeric = (at(1.0) - at(-1.0)) / (2.0 * eps as f64);
    let terms = dx
        .to_f64_vec()
        .into_iter()
        .zip(v.to_f64_vec())
        .map(|(a, b)| a * b);
    let (analytic, magnitude) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
    if (numeric - analytic).abs() <= 2e-2 * magnitude + 1e-3 {
        Ok(())
    } else {
        Err(format!(
            "ε {eps}: finite differences {numeric}, gradient {analytic} (Σ|g v| {magnitude})"
        ))
    }
}

/// Checks one recipe's gradient on every backend and against finite differences.
fn check_recipe(seed: u64, rank: usize, steps: &[u8]) -> Result<(), String> {
    let built = build(seed, rank, steps, MAX_NUMEL / 4);
    built.check_every_step_applied(steps)?;
    let mut g = built.graph.clone();
    let x = built.feeds[0].0;
    let (loss, dx) = with_gradient(&mut g, x, built.y, seed ^ 0x5eed)?;
    let feeds: Vec<(NodeId, &Tensor)> = built.feeds.iter().map(|(n, t)| (*n, t)).collect();
    let mut sess = reference(&g);
    let want = sess.run(&feeds, &[dx]).map_err(|e| e.to_string())?;
    for backend in BackendKind::available() {
        let other = Session::with_backend(&g, backend.clone()).map_err(|e| e.to_string())?;
        let got = other
            .run(&feeds, &[dx])
            .map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        close(&got[0], &want[0]).map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
    }
    for direction in 0..2u64 {
        let v = |k: u64| Tensor::uniform(built.feeds[0].1.dims(), -1.0, 1.0, seed ^ (k << 40));
        let first =
            directional_matches(&mut sess, &built.feeds, loss, &want[0], &v(direction), 1e-2);
        if let Err(e) = first {
            // Straddled a kink? Another direction and a smaller step must agree.
            directional_matches(
                &mut sess,
                &built.feeds,
                loss,
                &want[0],
                &v(direction + 7),
                1.25e-3,
            )
            .map_err(|e2| format!("{e}; retried: {e2}\n{}", g.to_text()))?;
        }
    }
    Ok(())
}

#[test]
fn random_graph_gradients_match_finite_differences() {
    // Deterministic recipes over every step kind and rank (rank 4 for the window ops).
    let mut failures = Vec::new();
    for case in 0..96u64 {
        let rank = 1 + (case % 4) as usize;
        // Every kind but stop_gradient's (21), through which the gradient is zero by
        // definition while finite differences see the identity, and the backward window
        // ops' (22), which include max_pool_grad (no second derivative; the others' rules
        // are checked in ir/src/grad/tests.rs).
        let steps: Vec<u8> = (0..1 + case % 5)
            .map(|i| (case * 7 + i * 13) as u8)
            .map(|b| match b as usize % KINDS {
                21 => b.wrapping_add(2),
                22 => b.wrapping_add(1),
                _ => b,
            })
            .collect();
        if let Err(e) = check_recipe(case, rank, &steps) {
            failures.push(format!("recipe {case} (rank {rank}, steps {steps:?}): {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
