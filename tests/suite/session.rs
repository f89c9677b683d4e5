//! Session behaviour: feeds, fetches, targets, variables, caching, checkpoints and the errors
//! a user meets when a graph or a feed is wrong.

use kiln::{ConvAttrs, Error, Graph, NodeId, Session, Shape, Tensor};

fn seed_graph() -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new();
    let image = g
        .input("image", Shape::of(&[None, Some(10), Some(10), Some(1)]))
        .unwrap();
    let kernel = g
        .var("kernel", Tensor::normal(&[5, 5, 1, 1], 0.0, 1.0, 42))
        .unwrap();
    let conv = g
        .named("conv")
        .conv2d(image, kernel, ConvAttrs::same())
        .unwrap();
    (g, image, conv)
}

#[test]
fn unknown_batch_compiles_once_per_shape() {
    let (g, image, conv) = seed_graph();
    let sess = Session::new(&g).unwrap();
    for (batch, expected_compilations) in [(1, 1), (4, 2), (1, 2), (4, 2)] {
        let img = Tensor::uniform(&[batch, 10, 10, 1], 0.0, 1.0, 3);
        let out = sess.run(&[(image, &img)], &[conv]).unwrap();
        assert_eq!(out[0].dims(), &[batch, 10, 10, 1]);
        assert_eq!(sess.compilations(), expected_compilations, "batch {batch}");
    }
}

#[test]
fn cache_is_bounded() {
    let (g, image, conv) = seed_graph();
    let sess = Session::new(&g).unwrap();
    sess.set_cache_capacity(1);
    for batch in [1, 2, 1, 2] {
        let img = Tensor::zeros(&[batch, 10, 10, 1]);
        sess.run(&[(image, &img)], &[conv]).unwrap();
    }
    assert_eq!(
        sess.compilations(),
        4,
        "capacity 1 must evict the other batch size"
    );
}

#[test]
fn batch_elements_are_independent() {
    let (g, image, conv) = seed_graph();
    let sess = Session::new(&g).unwrap();
    let one = Tensor::uniform(&[1, 10, 10, 1], 0.0, 1.0, 9);
    let mut four = one.f32s().unwrap().repeat(4);
    four[100..].iter_mut().for_each(|v| *v *= 2.0);
    let four = Tensor::from_vec(&[4, 10, 10, 1], four).unwrap();
    let a = sess.run(&[(image, &one)], &[conv]).unwrap();
    let b = sess.run(&[(image, &four)], &[conv]).unwrap();
    assert_eq!(a[0].f32s().unwrap(), &b[0].f32s().unwrap()[..100]);
}

/// Built with the `opencl` feature, a session must run on OpenCL here: a missing platform or
/// device fails (CI installs PoCL), as in the conformance and differential tests.
#[cfg(feature = "opencl")]
#[test]
fn opencl_session_runs_and_matches_cpu() {
    use kiln::ir::compare::{Tolerance, assert_close};
    let (g, image, conv) = seed_graph();
    let img = Tensor::uniform(&[2, 10, 10, 1], 0.0, 1.0, 5);
    let want = Session::new(&g).unwrap().run(&[(image, &img)], &[conv]);
    let opencl = kiln::BackendKind::OpenCl { device: None };
    let got = Session::with_backend(&g, opencl)
        .and_then(|s| s.run(&[(image, &img)], &[conv]))
        .unwrap_or_else(|e| panic!("built with the opencl feature, but OpenCL cannot run: {e}"));
    assert_close(
        &got[0],
        &want.unwrap()[0],
        Tolerance::KERNEL,
        "opencl vs cpu",
    );
}

#[test]
fn only_needed_nodes_need_feeds() {
    let mut g = Graph::new();
    let a = g.input("a", Shape::known(&[2])).unwrap();
    let _unused = g.input("unused", Shape::known(&[3])).unwrap();
    let y = g.relu(a).unwrap();
    let sess = Session::new(&g).unwrap();
    let t = Tensor::from_vec(&[2], vec![-1.0, 2.0]).unwrap();
    let out = sess.run(&[(a, &t)], &[y]).unwrap();
    assert_eq!(out[0].f32s().unwrap(), &[0.0, 2.0]);
}

/// `run_named("%x")` used to fail with "feed %%x": names may carry the `%` of the text format.
#[test]
fn run_named_accepts_the_percent_sign() {
    let mut g = Graph::new();
    let a = g.input("a", Shape::known(&[2])).unwrap();
    let r = g.relu(a).unwrap();
    g.rename(r, "r").unwrap();
    let sess = Session::new(&g).unwrap();
    let t = Tensor::from_vec(&[2], vec![-1.0, 2.0]).unwrap();
    for (feed, fetch) in [("%a", "%r"), ("a", "r"), ("%a", "r")] {
        let out = sess.run_named(&[(feed, &t)], &[fetch]).unwrap();
        assert_eq!(out[0].f32s().unwrap(), &[0.0, 2.0], "{feed} {fetch}");
    }
    let err = sess
        .run_named(&[("%b", &t)], &["r"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("%b") && !err.contains("%%"), "{err}");
}

fn feed_error(feed: (&str, Tensor)) -> String {
    let (g, _, _) = seed_graph();
    let sess = Session::new(&g).unwrap();
    let err = sess.run_named(&[(feed.0, &feed.1)], &["conv"]).unwrap_err();
    assert!(matches!(err, Error::Feed { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn feed_errors_name_the_placeholder_and_shapes() {
    let m = feed_error(("image", Tensor::zeros(&[10, 10, 1])));
    assert!(
        m.contains("%image") && m.contains("[?,10,10,1]") && m.contains("[10,10,1]"),
        "{m}"
    );
    let m = feed_error(("image", Tensor::zeros(&[1, 10, 9, 1])));
    assert!(m.contains("[1,10,9,1]"), "{m}");
    let ints = Tensor::zeros_of(kiln::DType::I32, &[1, 10, 10, 1]);
    let m = feed_error(("image", ints));
    assert!(m.contains("i32") && m.contains("f32"), "{m}");
    let m = feed_error(("imag", Tensor::zeros(&[1, 10, 10, 1])));
    assert!(m.contains("%image"), "lists the real placeholders: {m}");
    let m = feed_error(("kernel", Tensor::zeros(&[5, 5, 1, 1])));
    assert!(m.contains("placeholder"), "{m}");
}

#[test]
fn backward_window_ops_with_inconsistent_shapes_are_errors_naming_node_and_shapes() {
    let mut g = Graph::new();
    let w = g.input("w", Shape::known(&[3, 3, 2, 4])).unwrap();
    let dy = g
        .input("dy", Shape::of(&[None, Some(5), Some(5), Some(4)]))
        .unwrap();
    // VALID 3x3 on 6x6 gives 4x4, not dy's 5x5.
    let err = g
        .named("dx")
        .conv2d_backprop_input(w, dy, [-1, 6, 6, 2], ConvAttrs::valid())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node %dx (conv2d_backprop_input): dy is f32[?,5,5,4], but conv2d of an input \
         f32[?,6,6,2] and filter f32[3,3,2,4] gives f32[?,4,4,4]"
    );
    let x = g.input("x", Shape::known(&[1, 7, 7, 3])).unwrap();
    let err = g
        .named("dw")
        .conv2d_backprop_filter(x, dy, [3, 3, 2, 4], ConvAttrs::same())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "node %dw (conv2d_backprop_filter): filter_shape [3, 3, 2, 4]: input \
             channels differ: x is f32[1,7,7,3]"
        ),
        "{err}"
    );
    // The batch is fixed at 2 but dy's is only known when fed: the run names both.
    let dx = g
        .named("dx2")
        .conv2d_backprop_input(w, dy, [2, 7, 7, 2], ConvAttrs::valid())
        .unwrap();
    let sess = Session::new(&g).unwrap();
    let feeds = [
        (w, &Tensor::zeros(&[3, 3, 2, 4])),
        (dy, &Tensor::zeros(&[3, 5, 5, 4])),
    ];
    let err = sess.run(&feeds, &[dx]).unwrap_err().to_string();
    assert!(
        err.contains("%dx2") && err.contains("f32[3,5,5,4]") && err.contains("f32[2,5,5,4]"),
        "{err}"
    );
    // A version-2 file may not use them.
    let text = "kiln 2\ninput %g : f32[1,2,2,1]\n\
                %d = avg_pool_grad(%g, orig_input_shape=[1,4,4,1], ksize=2, strides=2, padding=\"VALID\")\n";
    let err = Graph::parse(text).unwrap_err().to_string();
    assert!(
        err.contains("`avg_pool_grad` needs format version 3"),
        "{err}"
    );
}

#[test]
fn missing_feed_is_an_error() {
    let (g, _, conv) = seed_graph();
    let sess = Session::new(&g).unwrap();
    let err = sess.run(&[], &[conv]).unwrap_err().to_string();
    assert!(err.contains("%image") && err.contains("missing"), "{err}");
}

#[test]
fn assign_targets_update_variables() {
    let mut g = Graph::new();
    let v = g.var("v", Tensor::zeros(&[2])).unwrap();
    let one = g.constant("one", Tensor::ones(&[2])).unwrap();
    let inc = g.assign_add(v, one).unwrap();
    let double = g.add(v, v).unwrap();
    let sess = Session::new(&g).unwrap();
    sess.run_with_targets(&[], &[], &[inc]).unwrap();
    sess.run_with_targets(&[], &[], &[inc]).unwrap();
    assert_eq!(sess.variable(v).unwrap().f32s().unwrap(), &[2.0, 2.0]);
    // Reads in a run see the value at the start of the run; the assign's value is the new one.
    let out = sess.run_with_targets(&[], &[double, inc], &[]).unwrap();
    assert_eq!(out[0].f32s().unwrap(), &[4.0, 4.0]);
    assert_eq!(out[1].f32s().unwrap(), &[3.0, 3.0]);
    assert_eq!(sess.variable(v).unwrap().f32s().unwrap(), &[3.0, 3.0]);
}

/// `x [1, 4] = [1, 2, 3, 4]` times the variable `w [4, 3]`: column j is `sum_p x[p] * w[p, j]`.
fn expected_product(w: &[f32]) -> Vec<f32> {
    (0..3)
        .map(|j| (0..4).map(|p| (p + 1) as f32 * w[p * 3 + j]).sum())
        .collect()
}

#[test]
fn variable_weights_are_repacked_when_they_change() {
    // The CPU backend keeps a variable's packed weights between runs; every way of changing
    // the variable must show in the next product, down to one element.
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[1, 4])).unwrap();
    let w = g.var("w", Tensor::ones(&[4, 3])).unwrap();
    let y = g.matmul(x, w).unwrap();
    let mut last_one = vec![2.0f32; 12];
    last_one[11] = 5.0;
    let new_w = g
        .constant(
            "new_w",
            Tensor::from_vec(&[4, 3], last_one.clone()).unwrap(),
        )
        .unwrap();
    let set_w = g.assign(w, new_w).unwrap();
    // A convolution on a variable filter, thick enough for the GEMM path.
    let image = g.input("image", Shape::known(&[1, 2, 2, 8])).unwrap();
    let filter = g.var("filter", Tensor::ones(&[1, 1, 8, 4])).unwrap();
    let conv = g.conv2d(image, filter, ConvAttrs::same()).unwrap();
    let mut sess = Session::new(&g).unwrap();
    let xv = Tensor::from_vec(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let img = Tensor::ones(&[1, 2, 2, 8]);
    let product = |sess: &mut Session| {
        let out = sess.run(&[(x, &xv), (image, &img)], &[y, conv]).unwrap();
        (out[0].f32s().unwrap().to_vec(), out[1].f32s().unwrap()[0])
    };
    assert_eq!(product(&mut sess), (vec![10.0; 3], 8.0));
    assert_eq!(product(&mut sess), (vec![10.0; 3], 8.0), "cached packing");

    let mut w2: Vec<f32> = (0..12).map(|v| v as f32).collect();
    sess.set_variable(w, Tensor::from_vec(&[4, 3], w2.clone()).unwrap())
        .unwrap();
    sess.set_variable(filter, Tensor::fill(&[1, 1, 8, 4], 0.5))
        .unwrap();
    assert_eq!(product(&mut sess), (expected_product(&w2), 4.0));
    // One element, changed in place through a fresh tensor of otherwise equal values.
    w2[7] = -3.0;
    sess.set_variable(w, Tensor::from_vec(&[4, 3], w2.clone()).unwrap())
        .unwrap();
    assert_eq!(product(&mut sess).0, expected_product(&w2));

    sess.run_with_targets(&[], &[], &[set_w]).unwrap();
    assert_eq!(product(&mut sess).0, expected_product(&last_one));
    assert_eq!(product(&mut sess).0, vec![20.0, 20.0, 32.0]);
}

#[test]
fn set_variable_checks_type_and_is_used() {
    let (g, image, conv) = seed_graph();
    let kernel = g.find("kernel").unwrap();
    let sess = Session::new(&g).unwrap();
    assert!(
        sess.set_variable(kernel, Tensor::zeros(&[3, 3, 1, 1]))
            .is_err()
    );
    sess.set_variable(kernel, Tensor::zeros(&[5, 5, 1, 1]))
        .unwrap();
    let out = sess
        .run(&[(image, &Tensor::ones(&[1, 10, 10, 1]))], &[conv])
        .unwrap();
    assert!(out[0].f32s().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn checkpoint_round_trip_and_bad_files() {
    let (g, _, _) = seed_graph();
    let kernel = g.find("kernel").unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vars.safetensors");
    let sess = Session::new(&g).unwrap();
    let original = sess.variable(kernel).unwrap().clone();
    sess.save_variables(&path).unwrap();
    sess.set_variable(kernel, Tensor::zeros(&[5, 5, 1, 1]))
        .unwrap();
    sess.restore_variables(&path).unwrap();
    assert_eq!(sess.variable(kernel).unwrap(), original);

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x05\x00\x00\x00\x00\x00\x00\x00{oops").unwrap();
    sess.set_variable(kernel, Tensor::ones(&[5, 5, 1, 1]))
        .unwrap();
    assert!(sess.restore_variables(&garbage).is_err());
    assert!(
        sess.restore_variables(dir.join("absent.safetensors"))
            .is_err()
    );
    assert_eq!(
        sess.variable(kernel).unwrap(),
        Tensor::ones(&[5, 5, 1, 1]),
        "failed restore changes nothing"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn builder_reports_shape_errors_with_names_and_shapes() {
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[1, 8, 8, 3])).unwrap();
    let w = g.var("w", Tensor::zeros(&[3, 3, 4, 8])).unwrap();
    let m = g
        .named("conv1")
        .conv2d(x, w, ConvAttrs::same())
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("%conv1")
            && m.contains("conv2d")
            && m.contains("[1,8,8,3]")
            && m.contains("[3,3,4,8]"),
        "{m}"
    );

    let a = g.input("a", Shape::known(&[2, 3])).unwrap();
    let b = g.input("b", Shape::known(&[4, 5])).unwrap();
    let m = g.matmul(a, b).unwrap_err().to_string();
    assert!(m.contains("[2,3]") && m.contains("[4,5]"), "{m}");
    let m = g.add(a, b).unwrap_err().to_string();
    assert!(m.contains("[2,3]") && m.contains("[4,5]"), "{m}");
    assert!(g.reshape(a, &[7]).is_err());
    assert!(g.transpose(a, &[0, 0]).is_err());
    let w = g.var("w2", Tensor::zeros(&[3, 3, 3, 8])).unwrap();
    assert!(g.conv2d(x, w, ConvAttrs::same().strides(0, 1)).is_err());
    let m = g.assign(a, b).unwrap_err().to_string();
    assert!(m.contains("variable"), "{m}");
}

/// The dtype rules of the bool ops: each wrong operand is an error naming the node, the op
/// and both operand types (a non-bool cond, mismatched comparison operands, f32 logic).
#[test]
fn bool_ops_report_dtype_errors_with_names_and_types() {
    use kiln::DType;
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[2, 3])).unwrap();
    let i = g
        .input_typed("i", DType::I32, Shape::known(&[2, 3]))
        .unwrap();
    let mask = g
        .input_typed("mask", DType::Bool, Shape::known(&[3]))
        .unwrap();
    let expect = |m: String, parts: &[&str]| {
        assert!(
            parts.iter().all(|p| m.contains(p)),
            "{m} lacks one of {parts:?}"
        );
    };
    let m = g.named("pick").select(x, x, x).unwrap_err().to_string();
    expect(m, &["%pick", "select", "cond must be bool", "f32[2,3]"]);
    let m = g.named("pick2").select(mask, x, i).unwrap_err().to_string();
    expect(m, &["%pick2", "select", "a = f32[2,3]", "b = i32[2,3]"]);
    let m = g.named("lt").less(x, i).unwrap_err().to_string();
    expect(m, &["%lt", "less", "a = f32[2,3]", "b = i32[2,3]"]);
    let m = g
        .named("both")
        .logical_and(x, mask)
        .unwrap_err()
        .to_string();
    expect(m, &["%both", "logical_and", "a = f32[2,3]", "b = bool[3]"]);
    let m = g
        .named("ordered")
        .greater(mask, mask)
        .unwrap_err()
        .to_string();
    expect(m, &["%ordered", "greater", "bool[3]"]);
    let m = g.named("not").logical_not(i).unwrap_err().to_string();
    expect(m, &["%not", "logical_not", "i32[2,3]"]);
    // The well-typed forms build.
    let gt = g.greater(x, x).unwrap();
    let both = g.logical_or(gt, mask).unwrap();
    assert!(g.select(both, x, x).is_ok() && g.equal(mask, mask).is_ok());
}

/// stop_gradient is the identity on every backend, with the passes (which drop it) and
/// without them (lowering makes it a view, or a copy when it is an output), on any dtype.
#[test]
fn stop_gradient_is_the_identity_with_and_without_passes() {
    use kiln::{BackendKind, DType, Data, OptimizeOptions};
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[2, 3])).unwrap();
    let i = g.input_typed("i", DType::I32, Shape::known(&[4])).unwrap();
    let s = g.stop_gradient(x).unwrap();
    let r = g.relu(s).unwrap();
    let y = g.named("y").stop_gradient(r).unwrap();
    let yi = g.named("yi").stop_gradient(i).unwrap();
    let xs = Tensor::uniform(&[2, 3], -1.0, 1.0, 5);
    let is = Tensor::new(&[4], Data::I32(vec![3, -1, 0, 7])).unwrap();
    let relu: Vec<f32> = xs.as_f32().unwrap().iter().map(|v| v.max(0.0)).collect();
    for backend in BackendKind::available() {
        for enabled in [true, false] {
            let options = OptimizeOptions {
                enabled,
                ..OptimizeOptions::default()
            };
            let sess = Session::with_options(&g, backend.clone(), options).unwrap();
            let out = sess.run(&[(x, &xs), (i, &is)], &[y, yi, s]).unwrap();
            assert_eq!(
                out[0].as_f32().unwrap(),
                relu.as_slice(),
                "{backend} {enabled}"
            );
            assert_eq!(out[1], is, "{backend} {enabled}");
            assert_eq!(out[2], xs, "{backend} {enabled}");
        }
    }
}

#[test]
fn sessions_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Session>();
}

/// `[?,1] + [1,?]` fed 2^24 each asks for a 2^50-byte result, more than any machine can map:
/// the cpu backend used to abort the process allocating it; every backend now returns an
/// error naming the node and the byte count.
#[test]
fn a_result_too_large_for_memory_is_an_error_not_an_abort() {
    let mut g = Graph::new();
    let a = g.input("a", Shape::of(&[None, Some(1)])).unwrap();
    let b = g.input("b", Shape::of(&[Some(1), None])).unwrap();
    let c = g.named("c").add(a, b).unwrap();
    let side = 1 << 24;
    let (ta, tb) = (Tensor::zeros(&[side, 1]), Tensor::zeros(&[1, side]));
    for backend in [kiln::BackendKind::Reference, kiln::BackendKind::Cpu] {
        let sess = Session::with_backend(&g, backend.clone()).unwrap();
        let m = sess
            .run(&[(a, &ta), (b, &tb)], &[c])
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("%c") && m.contains("out of memory") && m.contains("1125899906842624 bytes"),
            "{backend}: {m}"
        );
    }
}

/// A pad whose paddings ask for 2^47 elements fails cleanly on every backend (the cpu
/// backend used to abort while the reference evaluator reported an error).
#[test]
fn a_huge_padding_is_an_error_not_an_abort() {
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[2])).unwrap();
    let p = g.named("p").pad(x, &[[0, 1 << 47]], 0.0).unwrap();
    let y = g.named("y").relu(p).unwrap();
    let t = Tensor::zeros(&[2]);
    for backend in [kiln::BackendKind::Reference, kiln::BackendKind::Cpu] {
        let sess = Session::with_backend(&g, backend.clone()).unwrap();
        let m = sess.run(&[(x, &t)], &[y]).unwrap_err().to_string();
        assert!(
            m.contains("out of memory") && m.contains("bytes"),
            "{backend}: {m}"
        );
    }
}

/// A session's memory limit refuses a compilation whose arena and outputs exceed it, naming
/// both numbers; the same run fits under a larger limit.
#[test]
fn the_memory_limit_refuses_a_run_that_needs_more() {
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[256])).unwrap();
    let e = g.exp(x).unwrap();
    let y = g.named("y").mul(e, x).unwrap();
    let z = g.named("z").add(y, e).unwrap();
    let t = Tensor::uniform(&[256], -1.0, 1.0, 1);
    for backend in [kiln::BackendKind::Reference, kiln::BackendKind::Cpu] {
        let limited = |limit| kiln::OptimizeOptions {
            memory_limit_bytes: Some(limit),
            ..kiln::OptimizeOptions::default()
        };
        let sess = Session::with_options(&g, backend.clone(), limited(1000)).unwrap();
        let m = sess.run(&[(x, &t)], &[y, z]).unwrap_err().to_string();
        assert!(
            m.contains("2048 bytes of outputs") && m.contains("memory limit of 1000 bytes"),
            "{backend}: {m}"
        );
        let sess = Session::with_options(&g, backend.clone(), limited(1 << 20)).unwrap();
        assert_eq!(sess.run(&[(x, &t)], &[y, z]).unwrap().len(), 2, "{backend}");
    }
}

/// A 50,000-op unary chain optimises, compiles and runs on the reference and cpu backends
/// (the passes used to be quadratic in chain length, and one fused expression held the whole
/// chain), and both compute the chain's value.
#[test]
fn a_long_unary_chain_runs_on_every_backend() {
    const LENGTH: usize = 50_000;
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&[4])).unwrap();
    let mut prev = x;
    for i in 0..LENGTH {
        prev = if i % 2 == 0 { g.abs(prev) } else { g.neg(prev) }.unwrap();
    }
    let values = [0.5f32, -1.0, 2.0, -3.0];
    let t = Tensor::from_vec(&[4], values.to_vec()).unwrap();
    // abs then neg, LENGTH / 2 times: -|v|.
    let expected: Vec<f32> = values.iter().map(|v| -v.abs()).collect();
    for backend in [kiln::BackendKind::Reference, kiln::BackendKind::Cpu] {
        let sess = Session::with_backend(&g, backend.clone()).unwrap();
        let out = sess.run(&[(x, &t)], &[prev]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), expected.as_slice(), "{backend}");
    }
}

/// The cpu backend's backward convolutions take images in chunks sized by their scratch (one
/// GEMM per chunk): at 32x32x48 a chunk holds 2 images ungrouped and 4 grouped, so a batch of
/// 5 has several chunks and a partial last one. Both must match the reference evaluator.
#[test]
fn backward_convs_over_several_image_chunks_match_the_reference() {
    use kiln::ir::compare::{Tolerance, assert_close};
    for (ci, what) in [(48, "ungrouped"), (24, "2 groups")] {
        let mut g = Graph::new();
        let x = g.input("x", Shape::known(&[5, 32, 32, 48])).unwrap();
        let w = g.input("w", Shape::known(&[3, 3, ci, 8])).unwrap();
        let dy = g.input("dy", Shape::known(&[5, 32, 32, 8])).unwrap();
        let dx = g
            .conv2d_backprop_input(w, dy, [5, 32, 32, 48], ConvAttrs::same())
            .unwrap();
        let dw = g
            .conv2d_backprop_filter(x, dy, [3, 3, ci, 8], ConvAttrs::same())
            .unwrap();
        let xs = Tensor::uniform(&[5, 32, 32, 48], -1.0, 1.0, 1);
        let ws = Tensor::uniform(&[3, 3, ci, 8], -1.0, 1.0, 2);
        let dys = Tensor::uniform(&[5, 32, 32, 8], -1.0, 1.0, 3);
        let feeds = [(x, &xs), (w, &ws), (dy, &dys)];
        let run = |backend| {
            Session::with_backend(&g, backend)
                .and_then(|s| s.run(&feeds, &[dx, dw]))
                .unwrap()
        };
        let want = run(kiln::BackendKind::Reference);
        let got = run(kiln::BackendKind::Cpu);
        assert_close(&got[0], &want[0], Tolerance::KERNEL, &format!("dx, {what}"));
        assert_close(&got[1], &want[1], Tolerance::KERNEL, &format!("dw, {what}"));
    }
}
