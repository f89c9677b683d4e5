//! A small convolutional network built in Rust and run with a feed dict:
//! conv 3->16 + bias + relu, max-pool, conv 16->32 + bias + relu, global average pool,
//! dense 32->10, softmax. Prints the class probabilities of each image in the batch.

use kiln::{ConvAttrs, Graph, NodeId, Padding, PoolAttrs, Session, Shape, Tensor};

/// conv2d + bias_add + relu with seeded weights, the block most CNNs repeat.
fn conv_block(
    g: &mut Graph,
    x: NodeId,
    name: &str,
    cin: usize,
    cout: usize,
    seed: u64,
) -> kiln::Result<NodeId> {
    let std = (2.0 / (9 * cin) as f32).sqrt();
    let w = g.var(
        &format!("{name}/w"),
        Tensor::normal(&[3, 3, cin, cout], 0.0, std, seed),
    )?;
    let b = g.var(&format!("{name}/b"), Tensor::fill(&[cout], 0.01))?;
    let c = g.named(name).conv2d(x, w, ConvAttrs::same())?;
    let c = g.bias_add(c, b)?;
    g.relu(c)
}

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

fn run() -> Result<(), kiln::Error> {
    let mut g = Graph::new();
    let images = g.input("images", Shape::of(&[None, Some(32), Some(32), Some(3)]))?;
    let x = conv_block(&mut g, images, "conv1", 3, 16, 1)?;
    let x = g.max_pool(x, PoolAttrs::new(2, 2, Padding::Valid))?;
    let x = conv_block(&mut g, x, "conv2", 16, 32, 2)?;
    let x = g.reduce_mean(x, &[1, 2], false)?;
    let w = g.var("dense/w", Tensor::normal(&[32, 10], 0.0, 0.25, 3))?;
    let b = g.var("dense/b", Tensor::zeros(&[10]))?;
    let logits = g.matmul(x, w)?;
    let logits = g.bias_add(logits, b)?;
    let probs = g.named("probs").softmax(logits, -1)?;

    let sess = Session::new(&g)?;
    let batch = Tensor::uniform(&[3, 32, 32, 3], 0.0, 1.0, 7);
    let out = sess.run(&[(images, &batch)], &[probs])?;
    for (i, row) in out[0].f32s()?.chunks(10).enumerate() {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(c, _)| c);
        let shown: Vec<String> = row.iter().map(|p| format!("{p:.3}")).collect();
        println!(
            "image {i}: class {} [{}]",
            best.unwrap_or(0),
            shown.join(" ")
        );
    }
    Ok(())
}
