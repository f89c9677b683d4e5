//! Classify a batch of images with an ONNX CNN: import the model, compile it once, run a batch
//! through a Session and print the top-5 classes per image and the time per batch.
//!
//! ```text
//! cargo run --release --example onnx_classify                     # the ResNet-18-style fixture
//! cargo run --release --example onnx_classify -- model.onnx 8     # any NCHW image classifier
//! ```
//!
//! The input batch is seeded uniform noise (there is no image decoder here); the graph's one
//! input must be `[N, C, H, W]` with the batch dim symbolic or 1.

use kiln::{BackendKind, Graph, Session, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// Errors are printed with Display (`error: x.npy: No such file or directory`), not as the
/// Debug value a `main` returning `Result` prints.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("onnx/tests/fixtures/net_resnet18.onnx")
    });
    let batch: usize = args.next().map_or(Ok(4), |b| b.parse())?;

    let t0 = Instant::now();
    let graph = Graph::from_onnx(&model)?;
    let import_ms = t0.elapsed().as_secs_f64() * 1e3;
    let inputs = graph.placeholders();
    let [input] = inputs[..] else {
        return Err(format!("expected one graph input, found {}", inputs.len()).into());
    };
    let ty = graph.node(input).ty.clone();
    let dims: Vec<usize> = ty.shape.dims().iter().map(|d| d.unwrap_or(batch)).collect();
    if dims.len() != 4 {
        return Err(format!("expected an NCHW image input, got {ty}").into());
    }
    let output = *graph.outputs().first().ok_or("the model has no outputs")?;
    println!(
        "{}: {} nodes, input %{} {ty}, output %{} {} (imported in {import_ms:.1} ms)",
        model.display(),
        graph.len(),
        graph.node(input).name,
        graph.node(output).name,
        graph.node(output).ty
    );

    let images = Tensor::uniform(&dims, 0.0, 1.0, 42);
    let sess = Session::with_backend(&graph, BackendKind::Cpu)?;
    let t0 = Instant::now();
    let scores = sess.run(&[(input, &images)], &[output])?.remove(0);
    println!(
        "first run (compiles): {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let runs = 10;
    let t0 = Instant::now();
    for _ in 0..runs {
        sess.run(&[(input, &images)], &[output])?;
    }
    let per_batch = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
    println!("{per_batch:.2} ms per batch of {} ({runs} runs)", dims[0]);

    let values = scores.f32s()?;
    let classes = values.len() / dims[0].max(1);
    for (i, row) in values.chunks(classes.max(1)).enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = order
            .iter()
            .take(5)
            .map(|&c| format!("{c} ({:.4})", row[c]))
            .collect();
        println!("image {i}: top-5 {}", top.join(", "));
    }
    Ok(())
}
