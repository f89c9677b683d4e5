//! Load a .kiln file, feed every placeholder with seeded random data (unknown dims set to 1)
//! and print each output's shape and a checksum.
//!
//! `cargo run --example run_kiln_file -- examples/graphs/seed_conv.kiln`

use kiln::{Graph, Op, Session, Tensor};

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
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/graphs/seed_conv.kiln".into());
    let graph = Graph::load(&path)?;
    let mut feeds = Vec::new();
    for (seed, id) in graph.placeholders().into_iter().enumerate() {
        let node = graph.node(id);
        let Op::Input(ty) = &node.op else { continue };
        let dims: Vec<usize> = ty.shape.dims().iter().map(|d| d.unwrap_or(1)).collect();
        feeds.push((
            node.name.clone(),
            Tensor::uniform(&dims, -1.0, 1.0, seed as u64),
        ));
    }
    let refs: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let sess = Session::new(&graph)?;
    for (name, value) in sess.run_outputs(&refs)? {
        let checksum: f64 = value.to_f64_vec().iter().sum();
        println!("%{name} {}: checksum {checksum:.6}", value.ty());
    }
    Ok(())
}
