//! ONNX import against ONNX Runtime: every fixture in onnx/tests/fixtures (made by
//! onnx/tests/gen_fixtures.py) is imported, run on the reference and CPU backends with the
//! stored inputs, and compared with ONNX Runtime's stored outputs.
//!
//! Every fixture must import and run on both backends: a run-time error fails the test.
//!
//! Comparison: `kiln::ir::compare`. Dims and dtypes must be equal; integer outputs must match
//! exactly. Single ops get `Tolerance::KERNEL`, |kiln - ort| <= 1e-4 + 1e-4 * |ort| + 1e-5 *
//! max|ort|; the whole nets (`net_*`: ResNet-18, MobileNet-v2 and DenseNet style, 20-50 layers of
//! f32 arithmetic summed in another order than ONNX Runtime's) get `Tolerance::NETWORK`,
//! 1e-3 + 1e-3 * |ort|.

use kiln::ir::compare::{Tolerance, check_close};
use kiln::onnx::ImportOptions;
use kiln::{BackendKind, DType, Graph, Op, Session, Tensor};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/tests/fixtures")
}

/// The fixture names (`NAME.onnx` without `bad_` models), sorted.
fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".onnx").map(str::to_string)
        })
        .filter(|n| !n.starts_with("bad_"))
        .collect();
    names.sort();
    names
}

/// `(name, tensor)` for every `CASE.KIND.NAME.npy` file.
fn tensors(case: &str, kind: &str) -> Vec<(String, Tensor)> {
    let prefix = format!("{case}.{kind}.");
    let mut out: Vec<(String, Tensor)> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let name = n.strip_prefix(&prefix)?.strip_suffix(".npy")?.to_string();
            let t = kiln::npy::read(e.path()).expect("fixture npy").tensor;
            Some((name, t))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The tolerance of one fixture: whole networks get [`Tolerance::NETWORK`], single ops
/// [`Tolerance::KERNEL`]; integer and bool outputs compare exactly under either.
fn tolerance(case: &str) -> Tolerance {
    if case.starts_with("net_") {
        Tolerance::NETWORK
    } else {
        Tolerance::KERNEL
    }
}

/// Imports fixture `case` and checks it on `backend` against ONNX Runtime's stored outputs.
fn run_case(case: &str, backend: BackendKind) -> Result<(), String> {
    let path = fixtures().join(format!("{case}.onnx"));
    let graph = Graph::from_onnx(&path).map_err(|e| format!("import: {e}"))?;
    let (feeds, expected) = (tensors(case, "in"), tensors(case, "out"));
    check_outputs(&graph, &feeds, &expected, tolerance(case), backend)
}

/// Runs `graph` on `backend` with `feeds`; every error, and every output that is missing or
/// differs from `expected` (dims, dtype, NaN/inf placement, values within `tol`), is an `Err`.
fn check_outputs(
    graph: &Graph,
    feeds: &[(String, Tensor)],
    expected: &[(String, Tensor)],
    tol: Tolerance,
    backend: BackendKind,
) -> Result<(), String> {
    let sess = Session::with_backend(graph, backend).map_err(|e| format!("session: {e}"))?;
    let refs: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outs = sess.run_outputs(&refs).map_err(|e| format!("run: {e}"))?;
    if outs.len() != expected.len() {
        return Err(format!(
            "{} outputs, ONNX Runtime has {}",
            outs.len(),
            expected.len()
        ));
    }
    for (name, want) in expected {
        let got = outs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("no output named {name}"))?;
        check_close(got, want, tol).map_err(|m| format!("{name}: {m}"))?;
    }
    Ok(())
}

/// Runs every fixture on `backend`; any import, session or run error, or a mismatch, fails:
/// every fixture runs on every backend listed here.
fn run_all(backend: BackendKind) {
    let cases = cases();
    assert!(cases.len() >= 25, "only {} fixtures found", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let result = run_case(c, backend.clone());
            result.err().map(|e| format!("{c}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures fail on {backend}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_match_onnx_runtime_on_reference() {
    run_all(BackendKind::Reference);
}

#[test]
fn fixtures_match_onnx_runtime_on_cpu() {
    run_all(BackendKind::Cpu);
}

#[test]
fn a_run_error_or_a_wrong_dtype_fails_a_fixture() {
    let graph = Graph::from_onnx(fixtures().join("reduce11.onnx")).expect("imports");
    let (feeds, expected) = (tensors("reduce11", "in"), tensors("reduce11", "out"));
    for backend in [BackendKind::Reference, BackendKind::Cpu] {
        check_outputs(
            &graph,
            &feeds,
            &expected,
            Tolerance::KERNEL,
            backend.clone(),
        )
        .unwrap();
        // A run error (here a missing feed) is a failure, not a skip.
        let err =
            check_outputs(&graph, &[], &expected, Tolerance::KERNEL, backend.clone()).unwrap_err();
        assert!(err.starts_with("run: "), "{backend}: {err}");
        // ONNX Runtime's i64 argmax stored as i32 (same values) no longer passes.
        let mut retyped = expected.clone();
        let (_, t) = retyped
            .iter_mut()
            .find(|(n, _)| n == "argmax_keep")
            .expect("argmax_keep output");
        let values = t.to_f64_vec().iter().map(|&v| v as i32).collect();
        *t = Tensor::new(t.dims(), kiln::ir::Data::I32(values)).unwrap();
        let err = check_outputs(&graph, &feeds, &retyped, Tolerance::KERNEL, backend.clone())
            .unwrap_err();
        assert_eq!(err, "argmax_keep: dtype i64, expected i32", "{backend}");
    }
}

#[test]
fn symbolic_batch_becomes_unknown_and_layout_is_nchw() {
    let g = Graph::from_onnx(fixtures().join("conv_basic.onnx")).expect("imports");
    let x = g.find("x").expect("input x");
    assert_eq!(g.node(x).ty.to_string(), "f32[?,3,8,8]");
    // The filter is transposed OIHW [4,3,3,3] -> HWIO [3,3,3,4] at import.
    let w = g.find("W").expect("filter");
    assert_eq!(g.node(w).ty.to_string(), "f32[3,3,3,4]");
    let y = g.find("y").expect("output y");
    assert!(
        matches!(g.node(y).op, Op::BiasAdd { .. }),
        "{:?}",
        g.node(y).op
    );
    let conv = g.inputs(y)[0];
    assert!(matches!(&g.node(conv).op, Op::Conv2d(a) if a.data_format == kiln::DataFormat::Nchw));
}

#[test]
fn depthwise_and_grouped_convs_map_to_their_kiln_ops() {
    let g = Graph::from_onnx(fixtures().join("conv_depthwise.onnx")).expect("imports");
    let w = g.find("W").expect("filter");
    // [8,1,3,3] with group 4 -> depthwise [3,3,4,2] (multiplier 2).
    assert_eq!(g.node(w).ty.to_string(), "f32[3,3,4,2]");
    assert!(
        g.node_ids()
            .any(|i| matches!(g.node(i).op, Op::DepthwiseConv2d(_)))
    );
    let g = Graph::from_onnx(fixtures().join("conv_grouped.onnx")).expect("imports");
    assert_eq!(
        g.node(g.find("W").expect("w")).ty.to_string(),
        "f32[3,3,2,6]"
    );
    assert!(g.node_ids().any(|i| matches!(g.node(i).op, Op::Conv2d(_))));
}

#[test]
fn ir3_initializers_are_weights_and_unused_ones_are_dropped() {
    let g = Graph::from_onnx(fixtures().join("ir3.onnx")).expect("imports");
    let inputs: Vec<String> = g
        .placeholders()
        .iter()
        .map(|&i| g.node(i).name.clone())
        .collect();
    assert_eq!(inputs, ["x"]);
    assert!(g.find("unused").is_none());
    assert!(matches!(g.node(g.find("W").expect("W")).op, Op::Const(_)));
}

#[test]
fn dynamic_flatten_through_shape_ops_folds_to_one_reshape() {
    let g = Graph::from_onnx(fixtures().join("reshapes.onnx")).expect("imports");
    let y = g.find("dyn_flat").expect("dyn_flat");
    assert!(
        matches!(&g.node(y).op, Op::Reshape { shape } if shape == &[-1, 24]),
        "{:?}",
        g.node(y).op
    );
    assert!(
        !g.node_ids()
            .any(|i| matches!(g.node(i).op, Op::Gather { .. } | Op::Concat { .. }))
    );
}

#[test]
fn save_with_weights_round_trips_through_kiln_2_text_and_safetensors() {
    let dir = std::env::temp_dir().join(format!("kiln-onnx-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let g = Graph::from_onnx(fixtures().join("net_densenet.onnx")).expect("imports");
    let kiln_path = dir.join("dense.kiln");
    g.save_with_weights(&kiln_path).expect("saves");
    let text = std::fs::read_to_string(&kiln_path).expect("text");
    assert!(
        text.starts_with("kiln 2\n"),
        "{}",
        &text[..40.min(text.len())]
    );
    assert!(
        text.contains("safetensors(\"net_densenet.safetensors\", \"conv1.weight\")"),
        "{text}"
    );
    assert!(dir.join("net_densenet.safetensors").is_file());
    let back = Graph::load(&kiln_path).expect("parses back");
    assert_eq!(back.to_text(), g.to_text());
    let feeds = tensors("net_densenet", "in");
    let refs: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let a = Session::with_backend(&g, BackendKind::Reference)
        .expect("s")
        .run_outputs(&refs)
        .expect("run");
    let b = Session::with_backend(&back, BackendKind::Reference)
        .expect("s")
        .run_outputs(&refs)
        .expect("run");
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn variables_option_makes_weights_variables() {
    let opts = ImportOptions {
        variables: true,
        ..ImportOptions::default()
    };
    let g = Graph::from_onnx_with(fixtures().join("gemm.onnx"), &opts).expect("imports");
    assert!(matches!(g.node(g.find("Bw").expect("Bw")).op, Op::Var(_)));
    assert_eq!(g.variables().len(), 2);
}

#[test]
fn argmax_output_is_i64() {
    let g = Graph::from_onnx(fixtures().join("reduce11.onnx")).expect("imports");
    let a = g.find("argmax_keep").expect("argmax_keep");
    assert_eq!(g.node(a).ty.dtype, DType::I64);
    assert_eq!(g.node(a).ty.to_string(), "i64[2,1,4]");
}
