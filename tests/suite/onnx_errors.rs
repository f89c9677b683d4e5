//! ONNX import of bad input: every case is a clear error naming what is wrong, never a panic.

use kiln::Graph;
use kiln::onnx::{ImportError, ImportOptions, UnsupportedOp};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("onnx/tests/fixtures")
        .join(name)
}

fn import_err(name: &str) -> String {
    match Graph::from_onnx(fixture(name)) {
        Ok(_) => panic!("{name} imported, expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "expected {p:?} in: {msg}");
    }
}

#[test]
fn unsupported_ops_are_all_listed_with_node_and_opset() {
    let e = import_err("bad_unsupported.onnx");
    assert_mentions(
        &e,
        &[
            "3 unsupported op(s) at opset 13",
            "Erf",
            "NonMaxSuppression",
            "nms_node",
            "com.example.Frobnicate",
            "frob",
        ],
    );
    assert!(!e.contains("Relu"), "{e}");
}

#[test]
fn unsupported_ops_can_be_matched_on_kiln_error() {
    let err = Graph::from_onnx(fixture("bad_unsupported.onnx")).expect_err("unsupported");
    let kiln::Error::Import(ImportError::Unsupported { ops, opset }) = err else {
        panic!("expected Error::Import(Unsupported), got {err:?}");
    };
    assert_eq!(opset, 13);
    let listed: Vec<(&str, &str)> = ops
        .iter()
        .map(|o: &UnsupportedOp| (o.op.as_str(), o.node.as_str()))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed.contains(&("NonMaxSuppression", "nms_node")),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("com.example.Frobnicate", "frob")),
        "{listed:?}"
    );
    assert!(listed.iter().any(|(op, _)| *op == "Erf"), "{listed:?}");
}

#[test]
fn opset_out_of_range() {
    let e = import_err("bad_opset.onnx");
    assert_mentions(&e, &["opset 5", "7 to 21"]);
}

#[test]
fn inconsistent_shapes_name_the_node_and_shapes() {
    let e = import_err("bad_shapes.onnx");
    assert_mentions(&e, &["Add", "opset 13", "f32[2,3]", "f32[4]", "broadcast"]);
}

#[test]
fn missing_external_data_names_the_file_and_tensor() {
    let e = import_err("bad_external.onnx");
    assert_mentions(&e, &["missing.weights", "\"W\""]);
}

#[test]
fn missing_file_and_garbage_are_errors() {
    let e = Graph::from_onnx(fixture("no_such_model.onnx"))
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["no_such_model.onnx"]);
    let opts = ImportOptions::default();
    let e = kiln_onnx::import_bytes(b"\xff\xff\xff\xff not protobuf", None, &opts).unwrap_err();
    assert!(e.to_string().contains("not a valid ONNX model"), "{e}");
    let e = kiln_onnx::import_bytes(b"", None, &opts).unwrap_err();
    assert!(e.to_string().contains("opset"), "{e}");
}

#[test]
fn truncated_models_are_errors() {
    let bytes = std::fs::read(fixture("net_densenet.onnx")).expect("fixture");
    let opts = ImportOptions::default();
    for cut in [1, 7, 100, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let r = kiln_onnx::import_bytes(&bytes[..cut], None, &opts);
        assert!(
            r.is_err(),
            "a model cut at {cut} of {} bytes imported",
            bytes.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, .. ProptestConfig::default() })]

    /// Mutated bytes of a real model either import or fail with an error; never a panic.
    #[test]
    fn mutated_models_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = std::fs::read(fixture("pools.onnx")).expect("fixture");
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = kiln_onnx::import_bytes(&bytes, None, &ImportOptions::default());
    }
}

/// A fresh folder holding a copy of the `external.onnx` fixture whose `external.weights` is
/// made by `weights` (given the folder and the real weights file), inside `top`; returns the
/// model path.
fn external_model(tag: &str, weights: impl FnOnce(&Path, &Path)) -> (PathBuf, PathBuf) {
    let top = std::env::temp_dir().join(format!("kiln-onnx-ext-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let dir = top.join("model");
    std::fs::create_dir_all(&dir).expect("tmp");
    std::fs::copy(fixture("external.onnx"), dir.join("external.onnx")).expect("copy");
    weights(&dir, &fixture("external.weights"));
    (top, dir.join("external.onnx"))
}

#[test]
fn external_data_through_a_symlink_out_of_the_folder_is_refused() {
    // The CVE-2024-27318 pattern: the location is a plain name, but a symlink leads out.
    let (top, model) = external_model("symlink", |dir, real| {
        let outside = dir.parent().expect("top").join("outside.weights");
        std::fs::copy(real, &outside).expect("copy");
        std::os::unix::fs::symlink(&outside, dir.join("external.weights")).expect("symlink");
    });
    let e = Graph::from_onnx(&model)
        .expect_err("symlink out")
        .to_string();
    assert_mentions(
        &e,
        &[
            "\"W\"",
            "external.weights",
            "does not resolve to a file inside",
        ],
    );
    let _ = std::fs::remove_dir_all(&top);
    let (top, model) = external_model("devzero", |dir, _| {
        std::os::unix::fs::symlink("/dev/zero", dir.join("external.weights")).expect("symlink");
    });
    let e = Graph::from_onnx(&model).expect_err("/dev/zero").to_string();
    assert_mentions(
        &e,
        &["external.weights", "does not resolve to a file inside"],
    );
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn external_data_must_be_a_regular_file() {
    let (top, model) = external_model("fifo", |dir, _| {
        let made = std::process::Command::new("mkfifo")
            .arg(dir.join("external.weights"))
            .status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    });
    // Opening a FIFO for reading would block forever.
    let e = Graph::from_onnx(&model).expect_err("fifo").to_string();
    assert_mentions(&e, &["\"W\"", "external.weights", "is not a regular file"]);
    let _ = std::fs::remove_dir_all(&top);
    let (top, model) = external_model("dir", |dir, _| {
        std::fs::create_dir(dir.join("external.weights")).expect("dir");
    });
    let e = Graph::from_onnx(&model).expect_err("directory").to_string();
    assert_mentions(&e, &["external.weights", "is not a regular file"]);
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn external_data_reads_only_its_range() {
    // The weights followed by 64 GiB of (sparse) zeros: reading the whole file first, as the
    // importer once did, runs out of memory; reading offset..offset+length is instant.
    let (top, model) = external_model("sparse", |dir, real| {
        let path = dir.join("external.weights");
        std::fs::copy(real, &path).expect("copy");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(64 << 30).expect("sparse file");
    });
    let g = Graph::from_onnx(&model).expect("imports");
    let reference = Graph::from_onnx(fixture("external.onnx")).expect("fixture imports");
    assert_eq!(g.to_text(), reference.to_text());
    let _ = std::fs::remove_dir_all(&top);
}
