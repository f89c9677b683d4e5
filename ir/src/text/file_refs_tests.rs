//! Hostile file references in .kiln text: every way out of the graph's folder, files that are
//! not regular, and many references to one file.

use crate::text::{FileAccess, parse, parse_with};
use crate::{Initializer, Op, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A fresh `kiln-refs-TAG-PID/graph` folder holding `w.npy` (f32[2] = [1, 2]) and
/// `w.safetensors` (tensor "w" = the same), with `secret.npy` and `secret.safetensors` beside
/// the folder (outside it). Returns (top, graph folder).
fn setup(tag: &str) -> (PathBuf, PathBuf) {
    let top = std::env::temp_dir().join(format!("kiln-refs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let dir = top.join("graph");
    std::fs::create_dir_all(&dir).expect("tmp");
    let w = Tensor::from_vec(&[2], vec![1.0, 2.0]).expect("t");
    for d in [&dir, &top] {
        let stem = if d == &dir { "w" } else { "secret" };
        crate::npy::write(d.join(format!("{stem}.npy")), &w).expect("npy");
        let st = d.join(format!("{stem}.safetensors"));
        crate::safetensors_io::write_file(&st, [("w", &w)]).expect("st");
    }
    (top, dir)
}

fn err(dir: &Path, init: &str) -> String {
    let text = format!("kiln 2\nconst %w : f32[2] = {init}\noutput %w\n");
    parse(&text, Some(dir)).expect_err(init).to_string()
}

#[test]
fn references_cannot_leave_the_folder_and_do_not_reveal_what_exists_outside() {
    let (top, dir) = setup("out");
    let link = |name: &str, to: PathBuf| std::os::unix::fs::symlink(to, dir.join(name));
    link("link.npy", top.join("secret.npy")).expect("symlink");
    link("gone.npy", top.join("missing.npy")).expect("symlink");
    link("link.safetensors", top.join("secret.safetensors")).expect("symlink");
    let abs = top.join("secret.npy").display().to_string();
    let abs_missing = top.join("missing.npy").display().to_string();
    let abs_st = top.join("secret.safetensors").display().to_string();
    let outside = "does not resolve to a file inside";
    for init in [
        format!("npy({abs:?})"),
        format!("npy({abs_missing:?})"),
        "npy(\"../secret.npy\")".to_string(),
        "npy(\"../missing.npy\")".to_string(),
        "npy(\"./../graph/../secret.npy\")".to_string(),
        "npy(\"link.npy\")".to_string(),
        "npy(\"gone.npy\")".to_string(),
        format!("safetensors({abs_st:?}, \"w\")"),
        "safetensors(\"../secret.safetensors\", \"w\")".to_string(),
        "safetensors(\"link.safetensors\", \"w\")".to_string(),
    ] {
        let e = err(&dir, &init);
        assert!(e.contains(outside), "{init}: {e}");
        assert!(!e.contains("1.0") && !e.contains("holds"), "{init}: {e}");
    }
    // Whether the outside file exists changes nothing but the name echoed.
    let same = |a: &str, b: &str| {
        let (ea, eb) = (err(&dir, a), err(&dir, b));
        let ea = ea
            .replace("secret", "missing")
            .replace("link.npy", "gone.npy");
        assert_eq!(ea, eb);
    };
    same("npy(\"../secret.npy\")", "npy(\"../missing.npy\")");
    same("npy(\"link.npy\")", "npy(\"gone.npy\")");
    same(&format!("npy({abs:?})"), &format!("npy({abs_missing:?})"));
    // Inside the folder still loads; the explicit opt-out reaches outside.
    assert!(
        parse(
            "kiln 2\nconst %w : f32[2] = npy(\"w.npy\")\noutput %w\n",
            Some(&dir)
        )
        .is_ok()
    );
    let text = "kiln 2\nconst %w : f32[2] = npy(\"../secret.npy\")\noutput %w\n";
    assert!(parse_with(text, Some(&dir), FileAccess::Unrestricted).is_ok());
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn devices_fifos_and_directories_are_clean_fast_errors() {
    let (top, dir) = setup("types");
    std::fs::create_dir(dir.join("sub.npy")).expect("dir");
    let fifo = dir.join("fifo.npy");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let not_regular = "is not a regular file";
    for init in [
        "npy(\"fifo.npy\")",
        "npy(\"sub.npy\")",
        "safetensors(\"fifo.npy\", \"w\")",
        "safetensors(\"sub.npy\", \"w\")",
    ] {
        let e = err(&dir, init);
        assert!(e.contains(not_regular), "{init}: {e}");
    }
    // Unrestricted still requires a regular file: /dev/zero would otherwise be read forever.
    for init in ["safetensors(\"/dev/zero\", \"x\")", "npy(\"/dev/zero\")"] {
        let text = format!("kiln 2\nconst %w : f32[2] = {init}\noutput %w\n");
        let e = parse_with(&text, Some(&dir), FileAccess::Unrestricted).expect_err(init);
        assert!(e.to_string().contains(not_regular), "{init}: {e}");
    }
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn many_references_to_one_file_share_one_tensor() {
    let (top, dir) = setup("shared");
    let mut text = String::from("kiln 2\n");
    for i in 0..150 {
        let init = if i % 2 == 0 {
            "npy(\"w.npy\")"
        } else {
            "safetensors(\"./w.safetensors\", \"w\")"
        };
        text.push_str(&format!("const %w{i} : f32[2] = {init}\n"));
    }
    text.push_str("output %w0\n");
    let g = parse(&text, Some(&dir)).expect("parses");
    let value = |i: usize| match &g.node(g.lookup(&format!("w{i}")).expect("node")).op {
        Op::Const(s) => match &s.init {
            Initializer::Npy { value, .. } | Initializer::Safetensors { value, .. } => {
                value.clone()
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    for i in 2..150 {
        assert!(
            Arc::ptr_eq(&value(i % 2), &value(i)),
            "w{i} has its own copy"
        );
    }
    // Two tensors in memory, each shared by its 75 initialisers (and this test's two handles).
    assert_eq!(Arc::strong_count(&value(0)), 76);
    let _ = std::fs::remove_dir_all(&top);
}
