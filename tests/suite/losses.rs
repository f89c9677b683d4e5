//! The training layers and losses against TensorFlow, on every backend: batch normalisation in
//! training mode (output, moving averages after one step, gradients) and the gradients of the
//! softmax cross entropies, from the data `tests/golden/gen.py` writes to
//! `tests/golden/training/` (TF 2.21, GradientTape and fused_batch_norm).

use kiln::ir::compare::{Tolerance, assert_close};
use kiln::ir::grad::GradientOptions;
use kiln::{BackendKind, DType, Graph, NodeId, Session, Shape, Tensor};
use std::path::{Path, PathBuf};

fn data(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/training")
        .join(case)
}

fn load(dir: &Path, name: &str) -> Tensor {
    kiln::npy::read(dir.join(format!("{name}.npy")))
        .unwrap_or_else(|e| panic!("{e} (run tests/golden/gen.py)"))
        .tensor
}

/// Adds the gradients of `ys` weighted by `grad_ys` to `g` (tf.gradients with grad_ys).
fn gradients(g: Graph, ys: &[NodeId], xs: &[NodeId], grad_ys: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let mut ir = g.into_ir();
    let d = ir
        .gradients_with(ys, xs, Some(grad_ys), GradientOptions::default())
        .unwrap();
    (Graph::from(ir), d)
}

const TF: Tolerance = Tolerance::abs_rel(1e-4);

#[test]
fn batch_norm_training_matches_tensorflow_on_every_backend() {
    let dir = data("batch_norm_training");
    let x0 = load(&dir, "x");
    let scalar = |name: &str| load(&dir, name).as_f32().unwrap()[0];
    let (momentum, epsilon) = (scalar("momentum"), scalar("epsilon"));
    // A known batch (the count is a constant) and a `?` batch (counted at run time).
    for batch in [Some(x0.dims()[0]), None] {
        let mut g = Graph::new();
        let mut dims: Vec<Option<usize>> = x0.dims().iter().map(|&d| Some(d)).collect();
        dims[0] = batch;
        let x = g.input("x", Shape::of(&dims)).unwrap();
        let up = g.input("g", Shape::of(&dims)).unwrap();
        let scale = g.var("scale", load(&dir, "scale")).unwrap();
        let offset = g.var("offset", load(&dir, "offset")).unwrap();
        let mm = g.var("moving_mean", load(&dir, "moving_mean")).unwrap();
        let mv = g
            .var("moving_variance", load(&dir, "moving_variance"))
            .unwrap();
        let bn = g
            .batch_norm_training(x, scale, offset, mm, mv, momentum, epsilon)
            .unwrap();
        let (g, d) = gradients(g, &[bn.y], &[x, scale, offset], &[up]);
        for backend in BackendKind::available() {
            let sess = Session::with_backend(&g, backend.clone()).unwrap();
            let feeds = [(x, &x0), (up, &load(&dir, "g"))];
            let mut fetches = vec![bn.y];
            fetches.extend(&d);
            let out = sess
                .run_with_targets(&feeds, &fetches, &bn.updates)
                .unwrap();
            let what = |n: &str| format!("{n} on {backend:?}, batch {batch:?}");
            for (got, name) in out.iter().zip(["y", "dx", "dscale", "doffset"]) {
                assert_close(got, &load(&dir, name), TF, &what(name));
            }
            for (var, name) in [(mm, "new_moving_mean"), (mv, "new_moving_variance")] {
                assert_close(
                    &sess.variable(var).unwrap(),
                    &load(&dir, name),
                    TF,
                    &what(name),
                );
            }
        }
    }
}

#[test]
fn cross_entropy_gradients_match_tensorflow_on_every_backend() {
    let dir = data("xent_gradients");
    let (logits0, labels0) = (load(&dir, "logits"), load(&dir, "labels"));
    let sparse0 = load(&dir, "sparse_labels");
    let mut g = Graph::new();
    let logits = g.input("logits", logits0.shape()).unwrap();
    let labels = g.input("labels", labels0.shape()).unwrap();
    let sparse = g
        .input_typed("sparse_labels", DType::I32, sparse0.shape())
        .unwrap();
    let up = g.input("g", Shape::known(&[logits0.dims()[0]])).unwrap();
    let dense = g.softmax_cross_entropy_with_logits(logits, labels).unwrap();
    let sp = g
        .sparse_softmax_cross_entropy_with_logits(logits, sparse)
        .unwrap();
    let (g, d) = gradients(g, &[dense], &[logits, labels], &[up]);
    let (g, ds) = gradients(g, &[sp], &[logits], &[up]);
    for backend in BackendKind::available() {
        let sess = Session::with_backend(&g, backend.clone()).unwrap();
        let up0 = load(&dir, "g");
        let feeds = [
            (logits, &logits0),
            (labels, &labels0),
            (sparse, &sparse0),
            (up, &up0),
        ];
        let out = sess.run(&feeds, &[d[0], d[1], ds[0]]).unwrap();
        for (got, name) in out.iter().zip(["d_logits", "d_labels", "d_logits_sparse"]) {
            assert_close(
                got,
                &load(&dir, name),
                TF,
                &format!("{name} on {backend:?}"),
            );
        }
    }
}

#[test]
fn sparse_labels_out_of_range_give_nan_rows_on_every_backend() {
    let mut g = Graph::new();
    let logits = g.input("logits", Shape::known(&[3, 4])).unwrap();
    let labels = g
        .input_typed("labels", DType::I64, Shape::known(&[3]))
        .unwrap();
    let loss = g
        .sparse_softmax_cross_entropy_with_logits(logits, labels)
        .unwrap();
    let x = Tensor::uniform(&[3, 4], -1.0, 1.0, 1);
    let l = Tensor::new(&[3], kiln::Data::I64(vec![4, 0, -1])).unwrap();
    for backend in BackendKind::available() {
        let sess = Session::with_backend(&g, backend.clone()).unwrap();
        let out = sess.run(&[(logits, &x), (labels, &l)], &[loss]).unwrap();
        let v = out[0].as_f32().unwrap();
        assert!(
            v[0].is_nan() && v[1].is_finite() && v[2].is_nan(),
            "{backend:?}: {v:?}"
        );
    }
}
