//! The benchmark workloads (BASELINES.md W1-W7 plus a ResNet block) on the CPU backend, timed
//! with criterion: `cargo bench --bench workloads` (filter with `-- W5`).
//!
//! Each workload loads its graph from `benches/graphs/`, makes a CPU session, fills every
//! placeholder with seeded uniform data in [-1, 1) (unknown dims set to the workload's batch; the
//! same data `kiln bench` makes) and runs it once untimed, which compiles it and checks it runs.
//! Only `Session::run_named` on the cached executable is timed; feeds and fetch names are built
//! before. A workload the backend cannot load, compile or run yet is reported as SKIPPED on
//! stderr with the error and the others still run, so the bench stays usable while the backend
//! grows; a skip is never silent.
//!
//! Sample sizes and measurement times are small so the whole bench takes about a minute and a
//! half; criterion's confidence intervals say when that is too short for a claim. Threads:
//! rayon's default (one per core; `RAYON_NUM_THREADS` overrides it). For comparisons with ONNX
//! Runtime use `benches/peers/run_peers.py`, which runs both in one go.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::{BackendKind, DType, Graph, Op, Session, Tensor};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

/// One workload: a graph under `benches/graphs/` and the value of its unknown (batch) dims.
struct Workload {
    /// Benchmark id, as in BASELINES.md.
    id: &'static str,
    /// File name under `benches/graphs/`.
    file: &'static str,
    /// Value of every `?` dim; `None` for graphs with fully known shapes.
    batch: Option<usize>,
    /// Timing budget: big workloads need fewer samples for a stable median.
    samples: usize,
    /// Measurement time in seconds.
    seconds: u64,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        id: "W1_seed_conv",
        file: "w1_seed_conv.kiln",
        batch: Some(1),
        samples: 50,
        seconds: 3,
    },
    Workload {
        id: "W2_conv3x3_b1",
        file: "w2_conv3x3.kiln",
        batch: Some(1),
        samples: 30,
        seconds: 4,
    },
    Workload {
        id: "W3_conv3x3_b8",
        file: "w2_conv3x3.kiln",
        batch: Some(8),
        samples: 20,
        seconds: 6,
    },
    Workload {
        id: "W4_small_cnn_b16",
        file: "w4_small_cnn.kiln",
        batch: Some(16),
        samples: 20,
        seconds: 5,
    },
    Workload {
        id: "W5_matmul_1024",
        file: "w5_matmul.kiln",
        batch: None,
        samples: 20,
        seconds: 6,
    },
    Workload {
        id: "W6_elementwise_4M",
        file: "w6_elementwise.kiln",
        batch: None,
        samples: 20,
        seconds: 5,
    },
    Workload {
        id: "W7_tiny_add",
        file: "w7_tiny_add.kiln",
        batch: None,
        samples: 50,
        seconds: 3,
    },
    Workload {
        id: "resnet_block_b1",
        file: "resnet_block.kiln",
        batch: Some(1),
        samples: 20,
        seconds: 5,
    },
];

/// Everything a timed run needs, built before timing starts.
struct Prepared {
    session: Session,
    feeds: Vec<(String, Tensor)>,
    fetches: Vec<String>,
}

/// Seeded uniform feeds for every placeholder, seeds 1, 2, ... in declaration order (what
/// `kiln bench` feeds). Errors name the placeholder when its shape or dtype cannot be filled.
fn make_feeds(graph: &Graph, batch: Option<usize>) -> Result<Vec<(String, Tensor)>, String> {
    let mut feeds = Vec::new();
    for (i, id) in graph.placeholders().into_iter().enumerate() {
        let node = graph.node(id);
        let Op::Input(ty) = &node.op else {
            return Err(format!("placeholder %{} is not an input op", node.name));
        };
        if ty.dtype != DType::F32 {
            return Err(format!(
                "placeholder %{} is {}; the bench feeds only f32",
                node.name, ty
            ));
        }
        let dims = ty
            .shape
            .dims()
            .iter()
            .map(|d| d.or(batch))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                format!(
                    "placeholder %{} is {} but the workload sets no batch",
                    node.name, ty
                )
            })?;
        feeds.push((
            node.name.clone(),
            Tensor::uniform(&dims, -1.0, 1.0, i as u64 + 1),
        ));
    }
    Ok(feeds)
}

/// Loads, compiles and runs a workload once; the error says which step failed.
fn prepare(w: &Workload) -> Result<Prepared, String> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "benches", "graphs", w.file]
        .iter()
        .collect();
    let graph = Graph::load(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
    let feeds = make_feeds(&graph, w.batch)?;
    let fetches = graph.output_names();
    if fetches.is_empty() {
        return Err(format!("{} declares no outputs", path.display()));
    }
    let session = Session::with_backend(&graph, BackendKind::Cpu)
        .map_err(|e| format!("creating the CPU session: {e}"))?;
    let feed_refs: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let fetch_refs: Vec<&str> = fetches.iter().map(String::as_str).collect();
    // The first run compiles and fills the session's cache; it is never timed.
    session
        .run_named(&feed_refs, &fetch_refs)
        .map_err(|e| format!("first (compiling) run: {e}"))?;
    Ok(Prepared {
        session,
        feeds,
        fetches,
    })
}

fn workloads(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu");
    group.warm_up_time(Duration::from_millis(500));
    for w in WORKLOADS {
        let p = match prepare(w) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("SKIPPED {} ({}): {e}", w.id, w.file);
                continue;
            }
        };
        let feeds: Vec<(&str, &Tensor)> = p.feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let fetches: Vec<&str> = p.fetches.iter().map(String::as_str).collect();
        group.sample_size(w.samples);
        group.measurement_time(Duration::from_secs(w.seconds));
        group.bench_function(w.id, |b| {
            b.iter(|| {
                // Invariant: the same session ran these feeds successfully in `prepare`, and a
                // cached executable rerun on identical feeds has nothing left to reject.
                let out = p
                    .session
                    .run_named(black_box(&feeds), &fetches)
                    .expect("ran once in prepare with the same feeds");
                black_box(out)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
