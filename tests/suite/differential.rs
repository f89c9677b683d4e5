//! Differential tests: random graphs built from the whole op catalogue, run on every available
//! backend and compared with the reference evaluator.
//!
//! Tolerance: `Tolerance::KERNEL` of `kiln::ir::compare`, |got - want| <= 1e-4 * (1 + |want|) +
//! 1e-5 * max|want| (f32 accumulation and polynomial transcendentals against the
//! f64-accumulating reference); dtypes must be equal, NaN and infinities must match exactly.
//! Each case also checks that feeds are not modified, that two runs give identical bits, and
//! (cpu) that one thread and two threads give identical bits.
//!
//! Every recipe step adds an op the output depends on (a step that cannot apply is replaced by
//! the next kind that can), and each test asserts how many steps of which kinds it applied, so
//! a regression that drops steps fails instead of testing smaller graphs.

use kiln::ir::compare::{Tolerance, check_close};
use kiln::{
    BackendKind, ConvAttrs, DType, Data, Graph, NodeId, OptimizeOptions, Padding, Session, Shape,
    Tensor,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::cell::RefCell;
use std::io::Write;

mod gradients;
mod recipe;

use recipe::{Built, KINDS, MAX_NUMEL, Tally, build};

/// The differential tolerance, also the OpenCL tests': see the module doc.
fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    check_close(got, want, Tolerance::KERNEL).map_err(|m| m.to_string())
}

/// Builds the recipe's graph, checks every step added an op, and runs it on every backend
/// against the unoptimised reference; returns the graph as built (for its step counts).
fn check_case(seed: u64, rank: usize, steps: &[u8]) -> Result<Built, String> {
    let built = build(seed, rank, steps, MAX_NUMEL);
    built.check_every_step_applied(steps)?;
    let (g, y) = (&built.graph, built.y);
    let feeds: Vec<(NodeId, &Tensor)> = built.feeds.iter().map(|(n, t)| (*n, t)).collect();
    let snapshot = built.feeds.clone();
    // The oracle: the graph as written, on the reference evaluator, no passes.
    let unoptimized = OptimizeOptions {
        enabled: false,
        ..OptimizeOptions::default()
    };
    let reference =
        Session::with_options(g, BackendKind::Reference, unoptimized).map_err(|e| e.to_string())?;
    let want = reference.run(&feeds, &[y]).map_err(|e| e.to_string())?;
    // Every backend with its pass pipeline (the reference backend too: that checks the passes).
    for backend in BackendKind::available() {
        let sess = Session::with_backend(g, backend.clone()).map_err(|e| e.to_string())?;
        let got = sess
            .run(&feeds, &[y])
            .map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        close(&got[0], &want[0]).map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        let again = sess.run(&feeds, &[y]).map_err(|e| e.to_string())?;
        if again[0] != got[0] {
            return Err(format!("{backend}: two runs differ\n{}", g.to_text()));
        }
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = one_thread
            .install(|| sess.run(&feeds, &[y]))
            .map_err(|e| e.to_string())?;
        if single[0] != got[0] {
            return Err(format!(
                "{backend}: 1 thread and the default pool differ\n{}",
                g.to_text()
            ));
        }
    }
    if built.feeds != snapshot {
        return Err("a backend modified its feed".into());
    }
    Ok(built)
}

/// Prints a tally on stderr (not captured, so a passing run shows it too).
fn report(test: &str, tally: &Tally) {
    let _ = writeln!(std::io::stderr(), "{test}: {tally}");
}

#[test]
fn random_graphs_agree_with_the_reference() {
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let recipes = (
        any::<u64>(),
        1usize..=4,
        proptest::collection::vec(any::<u8>(), 1..7),
    );
    let tally = RefCell::new(Tally::default());
    let result = TestRunner::new(config).run(&recipes, |(seed, rank, steps)| {
        let built = check_case(seed, rank, &steps).map_err(TestCaseError::fail)?;
        tally.borrow_mut().add(&built);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner();
    report("random graphs", &tally);
    // 256 recipes of 1 to 6 steps: about 900 steps, about 2/3 as chosen. Each kind but five
    // comes up at least 10 times (matmul, rank 2 only, and conv, which also takes the steps
    // rank 4 refuses matmul, about 15). The other kinds rank 4 alone allows come up 4 to 15
    // times, so `convolution_heavy_graphs_agree` and `catalogue_additions_agree` assert theirs.
    assert!(tally.steps >= 256, "{tally}");
    let rare = [6, 7, 8, 15, 16, 22];
    let kinds = (0..KINDS).filter(|k| !rare.contains(k));
    tally.check(kinds, 1, 0.5).unwrap();
}

#[test]
fn convolution_heavy_graphs_agree() {
    // Rank-4 recipes dominated by conv/depthwise/pool/batch_norm steps.
    let mut tally = Tally::default();
    for seed in 0..40u64 {
        let steps = [5u8, 3, 0, 8, 6, 15, 7, 10];
        tally.add(&check_case(seed, 4, &steps[..(seed as usize % 8) + 1]).unwrap());
    }
    report("convolution-heavy graphs", &tally);
    assert_eq!(tally.steps, 5 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8));
    tally.check([5, 6, 7, 8, 15], 10, 0.8).unwrap();
}

#[test]
fn catalogue_additions_agree() {
    // Recipes built around lrn (16), argmax (17), gather (18), cast (19) and (grouped) conv.
    let recipes: [&[u8]; 6] = [
        &[5, 16, 0],
        &[18, 16, 18, 3],
        &[17, 18, 0],
        &[19, 5, 16],
        &[6, 18, 9, 17],
        &[5, 6, 16, 18, 10],
    ];
    let mut tally = Tally::default();
    for seed in 0..30u64 {
        for (i, recipe) in recipes.iter().enumerate() {
            let rank = if i % 2 == 0 {
                4
            } else {
                1 + (seed as usize % 4)
            };
            tally.add(&check_case(seed, rank, recipe).unwrap());
        }
    }
    report("catalogue additions", &tally);
    // Odd recipes start at rank 1 to 4, where the rank-4 kinds are replaced: 72% as chosen.
    tally.check([5, 6, 16, 17, 18, 19], 20, 0.65).unwrap();
}

#[test]
fn comparison_select_and_sign_steps_agree() {
    // Recipes built around comparisons, logical ops and select (20) and sign after a
    // stop_gradient (21), among fused elementwise steps (0, 2), reductions and convolutions.
    let recipes: [&[u8]; 5] = [
        &[20, 0, 20],
        &[21, 2, 21, 0],
        &[5, 20, 21, 9],
        &[20, 20, 20, 12],
        &[0, 21, 20, 2, 10],
    ];
    let mut tally = Tally::default();
    for seed in 0..30u64 {
        for (i, recipe) in recipes.iter().enumerate() {
            let rank = if i == 2 { 4 } else { 1 + (seed as usize % 4) };
            tally.add(&check_case(seed, rank, recipe).unwrap());
        }
    }
    report("comparison, select and sign steps", &tally);
    tally.check([20, 21], 60, 0.9).unwrap();
}

#[test]
fn backward_window_ops_agree() {
    // Recipes built around the backward window ops (22), after and between forward windows.
    let recipes: [&[u8]; 4] = [&[22, 0], &[5, 22, 22], &[8, 22, 3], &[22, 6, 22, 10]];
    let mut tally = Tally::default();
    for seed in 0..30u64 {
        for recipe in recipes {
            tally.add(&check_case(seed, 4, recipe).unwrap());
        }
    }
    report("backward window ops", &tally);
    tally.check([22], 100, 0.8).unwrap();
}

#[test]
fn a_graph_with_dropped_or_discarded_steps_fails_the_step_check() {
    let steps = [2u8, 19, 16];
    let built = build(3, 4, &steps, MAX_NUMEL);
    built.check_every_step_applied(&steps).unwrap();
    assert_eq!(built.applied.len(), 3);
    // No room for any result: every step is dropped and the graph is `y = x`.
    let dropped = build(3, 4, &steps, 0);
    assert_eq!(dropped.y, dropped.feeds[0].0);
    let err = dropped.check_every_step_applied(&steps).unwrap_err();
    assert!(err.starts_with("applied 0 of 3 recipe steps"), "{err}");
    // The old cast step: `cast(x)` as the output discards every step before it.
    let mut discarded = build(3, 4, &steps, MAX_NUMEL);
    let x = discarded.feeds[0].0;
    let g = &mut discarded.graph;
    let c = g.cast(x, DType::I32).unwrap();
    discarded.y = g.cast(c, DType::F32).unwrap();
    let err = discarded.check_every_step_applied(&steps).unwrap_err();
    assert!(err.starts_with("step 0 (kind 2, "), "{err}");
    assert!(err.contains("does not reach the output"), "{err}");
}

#[test]
fn a_tally_missing_a_kind_or_redirecting_too_often_fails() {
    let mut tally = Tally::default();
    tally.add(&build(3, 4, &[2, 19, 16], MAX_NUMEL));
    tally.check([2, 19, 16], 1, 1.0).unwrap();
    let err = tally.check([2, 19, 16, 5], 1, 1.0).unwrap_err();
    assert!(
        err.starts_with("step kinds [5] applied fewer than 1 times"),
        "{err}"
    );
    // Rank 1: lrn (16) cannot apply and is replaced, so not every step is as chosen.
    let mut tally = Tally::default();
    tally.add(&build(3, 1, &[2, 19, 16], MAX_NUMEL));
    assert_eq!(tally.as_chosen, 2, "{tally}");
    assert!(tally.check([], 0, 1.0).is_err());
}

#[test]
fn the_comparison_checks_dtype_as_well_as_values() {
    let want = Tensor::new(&[2], Data::I64(vec![1, 2])).unwrap();
    let as_f32 = Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap();
    assert_eq!(
        close(&as_f32, &want).unwrap_err(),
        "dtype f32, expected i64"
    );
    let as_i32 = Tensor::new(&[2], Data::I32(vec![1, 2])).unwrap();
    assert_eq!(
        close(&as_i32, &want).unwrap_err(),
        "dtype i32, expected i64"
    );
}

/// Runs `y` on the unoptimised reference and on every backend; all must agree.
fn agree(g: &Graph, feeds: &[(NodeId, &Tensor)], y: NodeId) -> Result<(), String> {
    let unoptimized = OptimizeOptions {
        enabled: false,
        ..OptimizeOptions::default()
    };
    let reference =
        Session::with_options(g, BackendKind::Reference, unoptimized).map_err(|e| e.to_string())?;
    let want = reference.run(feeds, &[y]).map_err(|e| e.to_string())?;
    for backend in BackendKind::available() {
        let sess = Session::with_backend(g, backend.clone()).map_err(|e| e.to_string())?;
        let got = sess
            .run(feeds, &[y])
            .map_err(|e| format!("{backend}: {e}"))?;
        close(&got[0], &want[0]).map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
    }
    Ok(())
}

#[test]
fn grouped_convolutions_agree() {
    use kiln::DataFormat;
    // (x dims NHWC, kernel, cin per group, groups, cout, stride, padding, NCHW, weights fed)
    let cases = [
        ([1, 9, 8, 4], 3, 2, 2, 6, 2, Padding::Same, false, false),
        ([2, 7, 7, 8], 3, 2, 4, 8, 2, Padding::Valid, false, false),
        ([1, 6, 6, 64], 3, 32, 2, 16, 1, Padding::Same, false, true),
        ([1, 5, 5, 6], 1, 3, 2, 4, 1, Padding::Valid, false, false),
        ([1, 6, 5, 6], 3, 2, 3, 6, 2, Padding::Same, true, false),
        ([2, 4, 4, 4], 2, 1, 4, 8, 1, Padding::Valid, true, true),
    ];
    for (i, &(xd, k, cin, groups, cout, s, pad, nchw, fed)) in cases.iter().enumerate() {
        let mut g = Graph::new();
        let dims: Vec<usize> = if nchw {
            vec![xd[0], xd[3], xd[1], xd[2]]
        } else {
            xd.to_vec()
        };
        assert_eq!(xd[3], cin * groups);
        let x = g.input("x", Shape::known(&dims)).unwrap();
        let wv = Tensor::normal(&[k, k, cin, cout], 0.0, 0.5, i as u64);
        let w = if fed {
            g.input("w", Shape::known(&[k, k, cin, cout])).unwrap()
        } else {
            g.constant("w", wv.clone()).unwrap()
        };
        let mut attrs = ConvAttrs::with_padding(pad).strides(s, s);
        if nchw {
            attrs = attrs.format(DataFormat::Nchw);
        }
        let c = g.conv2d(x, w, attrs).unwrap();
        // A bias and relu the GEMM path folds into its store (NHWC), per group slice.
        let y = if nchw {
            c
        } else {
            let b = g
                .constant("b", Tensor::uniform(&[cout], -1.0, 1.0, 7))
                .unwrap();
            let biased = g.bias_add(c, b).unwrap();
            g.relu(biased).unwrap()
        };
        let input = Tensor::uniform(&dims, -2.0, 2.0, 100 + i as u64);
        let mut feeds = vec![(x, &input)];
        if fed {
            feeds.push((w, &wv));
        }
        agree(&g, &feeds, y).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn gather_with_a_bad_index_fails_the_run() {
    let mut g = Graph::new();
    let p = g.input("p", Shape::known(&[3, 4])).unwrap();
    let idx = g
        .input_typed("idx", DType::I64, Shape::known(&[2]))
        .unwrap();
    let y = g.gather(p, idx, 1).unwrap();
    let params = Tensor::uniform(&[3, 4], -1.0, 1.0, 1);
    let good = Tensor::new(&[2], Data::I64(vec![-1, 2])).unwrap();
    agree(&g, &[(p, &params), (idx, &good)], y).unwrap();
    let bad = Tensor::new(&[2], Data::I64(vec![1, 4])).unwrap();
    for backend in BackendKind::available() {
        let sess = Session::with_backend(&g, backend.clone()).unwrap();
        let err = sess.run(&[(p, &params), (idx, &bad)], &[y]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("index 4") && msg.contains("size 4") && msg.contains("gather"),
            "{backend}: {msg}"
        );
        // The session still works afterwards.
        sess.run(&[(p, &params), (idx, &good)], &[y]).unwrap();
    }
}

#[test]
fn loss_additions_agree() {
    // Recipes built around the cross entropies (23), one_hot (24) and gather_grad (25).
    let recipes: [&[u8]; 4] = [&[4, 23, 0], &[24, 23, 9], &[25, 0, 25], &[18, 25, 24, 23]];
    let mut tally = Tally::default();
    for seed in 0..30u64 {
        for recipe in recipes {
            tally.add(&check_case(seed, 1 + (seed as usize % 4), recipe).unwrap());
        }
    }
    report("loss additions", &tally);
    tally.check([23, 24, 25], 20, 0.8).unwrap();
}

/// Channel shuffles as ONNX imports them (NCHW transposes around a group swap, which the CPU
/// pipeline composes into one transpose after making the graph NHWC) and other transpose /
/// reshape chains, with the depthwise convs and pools of ShuffleNet-like blocks on odd channel
/// counts (the channel-vectorised window kernels): every backend agrees with the unoptimised
/// reference.
#[test]
fn channel_shuffles_and_window_blocks_agree() {
    use kiln::PoolAttrs;
    // (NHWC dims, groups)
    let shuffles = [
        ([1, 5, 6, 12], 3),
        ([2, 4, 3, 10], 2),
        ([1, 7, 7, 45], 5),
        ([1, 3, 3, 8], 4),
    ];
    for (i, &(d, groups)) in shuffles.iter().enumerate() {
        let [n, h, w, c] = d;
        let mut g = Graph::new();
        let x = g.input("x", Shape::known(&[n, c, h, w])).unwrap();
        // NCHW as imported: conv-like producer, shuffle, depthwise consumer.
        let nhwc = g.transpose(x, &[0, 2, 3, 1]).unwrap();
        let r = g.relu(nhwc).unwrap();
        let nchw = g.transpose(r, &[0, 3, 1, 2]).unwrap();
        let (n, c, h, w) = (n as i64, c as i64, h as i64, w as i64);
        let grouped = g.reshape(nchw, &[n, groups, c / groups, h, w]).unwrap();
        let swapped = g.transpose(grouped, &[0, 2, 1, 3, 4]).unwrap();
        let back = g.reshape(swapped, &[n, c, h, w]).unwrap();
        let hwc = g.transpose(back, &[0, 2, 3, 1]).unwrap();
        let k = Tensor::normal(&[3, 3, c as usize, 1], 0.0, 0.5, i as u64);
        let k = g.constant("k", k).unwrap();
        let dw = g
            .depthwise_conv2d(hwc, k, ConvAttrs::same().strides(1 + i % 2, 1 + i % 2))
            .unwrap();
        let b = g
            .constant("b", Tensor::uniform(&[c as usize], -1.0, 1.0, 9))
            .unwrap();
        let biased = g.bias_add(dw, b).unwrap();
        let act = g.relu6(biased).unwrap();
        let mp = g
            .max_pool(act, PoolAttrs::new(3, 2, Padding::Same))
            .unwrap();
        let ap = g
            .avg_pool(hwc, PoolAttrs::new(2, 1, Padding::Valid))
            .unwrap();
        let ap = g.reduce_sum(ap, &[1, 2], true).unwrap();
        let y = g.add(mp, ap).unwrap();
        let input = Tensor::uniform(&[d[0], d[3], d[1], d[2]], -2.0, 2.0, 50 + i as u64);
        agree(&g, &[(x, &input)], y).unwrap_or_else(|e| panic!("shuffle case {i}: {e}"));
    }
    // Chains that do not compose evenly (4 x 6 read as 6 x 4), and whose intermediate is
    // also an output.
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[6, 4])).unwrap();
    let a = g.transpose(x, &[1, 0]).unwrap();
    let b = g.reshape(a, &[6, 4]).unwrap();
    let c = g.transpose(b, &[1, 0]).unwrap();
    let y = g.reshape(c, &[2, 12]).unwrap();
    let input = Tensor::uniform(&[6, 4], -2.0, 2.0, 3);
    agree(&g, &[(x, &input)], y).unwrap();
    agree(&g, &[(x, &input)], b).unwrap();
}
