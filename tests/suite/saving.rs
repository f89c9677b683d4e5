//! Saving graphs with their weights: `Session::save_graph` after training reloads to the same
//! outputs bit for bit, `Graph::save` moves large initial values out of the text into a
//! safetensors file, and the files get the usual (umask-governed) mode.

use kiln::optimizer::{GradientDescentOptimizer, Optimizer};
use kiln::{Graph, Session, Shape, Tensor};
use std::path::{Path, PathBuf};

/// A fresh folder for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A dense layer (64 -> 8, bias) trained by gradient descent on a squared-error loss.
fn trained_model() -> (Graph, Session) {
    let mut g = Graph::new();
    let x = g.input("x", Shape::of(&[None, Some(64)])).unwrap();
    let target = g.input("target", Shape::of(&[None, Some(8)])).unwrap();
    let w = g.var("w", Tensor::normal(&[64, 8], 0.0, 0.1, 3)).unwrap();
    let b = g.var("b", Tensor::zeros(&[8])).unwrap();
    let mm = g.matmul(x, w).unwrap();
    let y = g.named("y").add(mm, b).unwrap();
    g.output(y);
    let err = g.sub(y, target).unwrap();
    let sq = g.square(err).unwrap();
    let loss = g.reduce_mean(sq, &[0, 1], false).unwrap();
    let train = GradientDescentOptimizer::new(0.1)
        .minimize(&mut g, loss)
        .unwrap();
    let sess = Session::new(&g).unwrap();
    let xs = Tensor::uniform(&[16, 64], -1.0, 1.0, 4);
    let ts = Tensor::uniform(&[16, 8], -1.0, 1.0, 5);
    for _ in 0..5 {
        sess.run_with_targets(&[(x, &xs), (target, &ts)], &[], &[train])
            .unwrap();
    }
    (g, sess)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn save_graph_after_training_reloads_to_the_same_outputs_bit_for_bit() {
    let (g, trained) = trained_model();
    let scratch = Scratch::new("save-graph");
    let model = scratch.path("model.kiln");
    trained.save_graph(&model).unwrap();
    let text = std::fs::read_to_string(&model).unwrap();
    assert!(
        text.contains(r#"var %w : f32[64,8] = safetensors("model.safetensors", "w")"#),
        "{text}"
    );

    let feed = Tensor::uniform(&[3, 64], -1.0, 1.0, 6);
    let want = trained.run_outputs(&[("x", &feed)]).unwrap();
    let loaded = Graph::load(&model).unwrap();
    let got = Session::new(&loaded)
        .unwrap()
        .run_outputs(&[("x", &feed)])
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "y");
    assert_eq!(bits(&got[0].1), bits(&want[0].1));
    // The trained values, not the initial ones, were saved.
    let initial = Session::new(&g)
        .unwrap()
        .run_outputs(&[("x", &feed)])
        .unwrap();
    assert_ne!(bits(&got[0].1), bits(&initial[0].1));
}

#[test]
fn graph_save_writes_large_initial_values_to_a_weights_file() {
    let mut g = Graph::new();
    let x = g.input("x", Shape::of(&[Some(1), Some(256)])).unwrap();
    let big = Tensor::normal(&[256, 256], 0.0, 1.0, 9);
    let w = g.var("w", big.clone()).unwrap();
    let small = g
        .var("s", Tensor::from_vec(&[2], vec![0.5, -1.5]).unwrap())
        .unwrap();
    let y = g.named("y").matmul(x, w).unwrap();
    g.output(y);
    g.output(small);
    let scratch = Scratch::new("graph-save");
    let model = scratch.path("net.kiln");
    g.save(&model).unwrap();
    let text = std::fs::read_to_string(&model).unwrap();
    // 65536 floats inline took about a megabyte of text.
    assert!(text.len() < 2000, "{} bytes of text:\n{text}", text.len());
    assert!(
        text.contains(r#"safetensors("net.safetensors", "w")"#),
        "{text}"
    );
    assert!(
        text.contains("[0.5, -1.5]"),
        "small values stay inline:\n{text}"
    );
    let loaded = Session::new(&Graph::load(&model).unwrap()).unwrap();
    assert_eq!(bits(&loaded.variable_named("w").unwrap()), bits(&big));
}

/// The mode std gives a new file here (0666 less the umask).
#[cfg(unix)]
fn usual_mode(dir: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    std::fs::File::create(&probe).unwrap();
    std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777
}

/// Weights files and checkpoints used to be created 0600 (the safetensors crate's temporary
/// file), so other users could not run a saved model.
#[cfg(unix)]
#[test]
fn weights_files_and_checkpoints_get_the_usual_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (_, trained) = trained_model();
    let scratch = Scratch::new("file-modes");
    trained.save_graph(scratch.path("model.kiln")).unwrap();
    trained
        .save_variables(scratch.path("ckpt.safetensors"))
        .unwrap();
    let want = usual_mode(&scratch.0);
    for file in ["model.kiln", "model.safetensors", "ckpt.safetensors"] {
        let mode = std::fs::metadata(scratch.path(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "{file}: mode {mode:o}, expected {want:o}");
    }
}
