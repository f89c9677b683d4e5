//! The `kiln` command line: check, dump, draw and run .kiln graphs.

// Safe Rust only: unsafe code lives in the backends, in small commented places.
#![forbid(unsafe_code)]

mod bench;
mod devices;
mod feeds;
mod grad;
mod import;
mod passes;
mod safe_write;
mod train;
mod view;

use clap::{Parser, Subcommand};
use kiln::{BackendKind, Graph, Session, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "A lazy computation-graph compiler: check, dump, draw and run .kiln graphs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List OpenCL platforms and devices (for `--backend opencl:SPEC`).
    Devices {
        /// Print one JSON object on one line.
        #[arg(long)]
        json: bool,
    },
    /// Parse and verify a graph, infer its shapes, print every node's type.
    Check {
        /// The .kiln file.
        graph: PathBuf,
    },
    /// Print the graph in .kiln text with inferred types as comments.
    Dump {
        /// The .kiln file.
        graph: PathBuf,
        #[command(flatten)]
        passes: passes::PassArgs,
    },
    /// Optimise the graph and print every rewrite and per-pass statistics.
    Explain {
        /// The .kiln file.
        graph: PathBuf,
        #[command(flatten)]
        passes: passes::PassArgs,
    },
    /// Print the graph as GraphViz DOT.
    Dot {
        /// The .kiln file.
        graph: PathBuf,
        #[command(flatten)]
        passes: passes::PassArgs,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the graph's outputs with .npy feeds; write one NAME.npy per output.
    Run {
        /// The .kiln file.
        graph: PathBuf,
        /// A feed: placeholder name (with or without %) = .npy file. Repeatable.
        #[arg(long = "feed", value_name = "NAME=FILE.npy")]
        feeds: Vec<String>,
        /// Folder for the outputs (created if needed).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Backend: reference, cpu or opencl.
        #[arg(long, default_value_t = BackendKind::default_kind().to_string())]
        backend: String,
        /// Print a per-kernel time table.
        #[arg(long)]
        profile: bool,
        /// Write the run's kernel timeline to this file (Chrome trace event format, for
        /// Perfetto or chrome://tracing).
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Write the graph as a self-contained interactive HTML page: foldable name scopes,
    /// details on click, search; optionally optimised, or profiled as a heat map.
    View {
        /// The .kiln file, or an .onnx model (imported first).
        graph: PathBuf,
        /// The page to write (default: the graph's path with .html).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        passes: passes::PassArgs,
        /// Run the graph and colour each node by its kernel's share of the run time (shows
        /// the optimised graph, whose kernels ran).
        #[arg(long)]
        profile: bool,
        /// With --profile, a feed: NAME=FILE.npy; placeholders not fed get seeded random data.
        #[arg(long = "feed", value_name = "NAME=FILE.npy")]
        feeds: Vec<String>,
        /// With --profile, the value of every unknown dim (default 1).
        #[arg(long, value_parser = at_least_one)]
        batch: Option<usize>,
        /// With --profile, the timed runs (at least 1).
        #[arg(long, default_value_t = 10, value_parser = at_least_one)]
        runs: usize,
    },
    /// Add the gradient of a loss: outputs grad/<name> per differentiated node (`kiln run`
    /// writes them as grad_<name>.npy).
    Grad {
        /// The .kiln file.
        graph: PathBuf,
        /// The node to differentiate (its elements are summed), with or without %.
        #[arg(long)]
        loss: String,
        /// Nodes to differentiate with respect to, comma-separated (default: every variable
        /// the loss depends on).
        #[arg(long, value_delimiter = ',')]
        wrt: Vec<String>,
        /// Write the graph to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Train every variable a loss depends on: one optimizer update per batch of the feeds.
    Train {
        /// The .kiln file.
        graph: PathBuf,
        /// The node to minimise (its elements are summed), with or without %.
        #[arg(long)]
        loss: String,
        /// Training data: NAME=FILE.npy per placeholder, split along axis 0. Repeatable.
        #[arg(long = "feed", value_name = "NAME=FILE.npy")]
        feeds: Vec<String>,
        /// sgd, momentum or adam (tf.compat.v1.train semantics and defaults).
        #[arg(long, default_value = "sgd")]
        optimizer: String,
        /// Learning rate (default 0.01; 0.001 for adam).
        #[arg(long)]
        lr: Option<f32>,
        /// Momentum (momentum only; default 0.9).
        #[arg(long)]
        momentum: Option<f32>,
        /// Nesterov momentum (momentum only).
        #[arg(long)]
        nesterov: bool,
        /// Adam's beta1 (default 0.9).
        #[arg(long)]
        beta1: Option<f32>,
        /// Adam's beta2 (default 0.999).
        #[arg(long)]
        beta2: Option<f32>,
        /// Adam's epsilon (default 1e-8).
        #[arg(long)]
        epsilon: Option<f32>,
        /// Rows per step (default: all rows; a partial last batch is dropped).
        #[arg(long, value_parser = at_least_one)]
        batch: Option<usize>,
        /// Passes over the data (default 1).
        #[arg(long, value_parser = at_least_one)]
        epochs: Option<usize>,
        /// Optimizer steps instead of epochs (the batches wrap around).
        #[arg(long, value_parser = at_least_one)]
        steps: Option<usize>,
        /// Shuffle the rows every epoch with this seed (default: file order).
        #[arg(long)]
        shuffle: Option<u64>,
        /// Restore variables (optimizer slots included) from this checkpoint first.
        #[arg(long)]
        restore: Option<PathBuf>,
        /// Save every variable, slots included, to this safetensors checkpoint at the end.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Backend: reference, cpu or opencl.
        #[arg(long, default_value_t = BackendKind::default_kind().to_string())]
        backend: String,
        /// Worker threads, 1 to 1024 (default: one per core).
        #[arg(long, value_parser = thread_count)]
        threads: Option<usize>,
    },
    /// Import an ONNX model: write MODEL.kiln and its weights (MODEL.safetensors) beside it.
    Import {
        /// The .onnx file.
        model: PathBuf,
        /// The .kiln file to write (default: the model's path with .kiln).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Make the weights variables (trainable, checkpointable) instead of constants.
        #[arg(long)]
        variables: bool,
    },
    /// Compile once, run many times, report times, GFLOP/s and the arena size.
    Bench {
        /// The .kiln file.
        graph: PathBuf,
        /// A feed: NAME=FILE.npy; placeholders not fed get seeded random data.
        #[arg(long = "feed", value_name = "NAME=FILE.npy")]
        feeds: Vec<String>,
        /// The value of every unknown dim (default 1; at least 1).
        #[arg(long, value_parser = at_least_one)]
        batch: Option<usize>,
        /// Timed runs (at least 1).
        #[arg(long, default_value_t = 20, value_parser = at_least_one)]
        runs: usize,
        /// Untimed runs before timing.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Worker threads, 1 to 1024 (default: one per core).
        #[arg(long, value_parser = thread_count)]
        threads: Option<usize>,
        /// Backend: reference, cpu or opencl.
        #[arg(long, default_value_t = BackendKind::default_kind().to_string())]
        backend: String,
        /// Print one JSON object on one line.
        #[arg(long)]
        json: bool,
        /// Compile the graph as written, without the pass pipeline.
        #[arg(long)]
        no_optimize: bool,
        /// Passes to skip, comma-separated.
        #[arg(long, value_delimiter = ',')]
        disable: Vec<String>,
        /// Print a per-kernel time table.
        #[arg(long)]
        profile: bool,
        /// Time one training step minimising this node (with or without %) instead of a run.
        #[arg(long, value_name = "LOSS")]
        train: Option<String>,
        /// The train step's optimizer: sgd, momentum or adam (TensorFlow 1's defaults).
        #[arg(long, default_value = "sgd")]
        optimizer: String,
        /// Run from this many threads at once on one session (each does --runs runs) and
        /// report the total runs per second.
        #[arg(long, value_parser = at_least_one)]
        callers: Option<usize>,
        /// Write the kernel timeline of the timed runs to this file (Chrome trace event
        /// format, for Perfetto or chrome://tracing).
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
}

/// The most worker threads `--threads` accepts: far more than any machine's cores, few enough
/// that starting them takes no noticeable time (100,000 took minutes).
const MAX_THREADS: usize = 1024;

/// A count that must be at least 1 (`--runs 0` would time nothing, `--batch 0` feed nothing).
fn at_least_one(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a whole number: {e}")),
    }
}

/// A worker-thread count from 1 to [`MAX_THREADS`].
fn thread_count(arg: &str) -> Result<usize, String> {
    let n = at_least_one(arg)?;
    if n > MAX_THREADS {
        return Err(format!(
            "at most {MAX_THREADS} threads (this machine has {} logical CPUs)",
            std::thread::available_parallelism().map_or(1, |p| p.get())
        ));
    }
    Ok(n)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> Result<(), String> {
    match command {
        Command::Devices { json } => devices::devices(json),
        Command::Check { graph } => check(&graph),
        Command::Dump { graph, passes } => {
            print!(
                "{}",
                passes::load_optimized(&graph, &passes, false)?.0.to_text()
            );
            Ok(())
        }
        Command::Explain { graph, passes } => {
            let (optimized, report) = passes::load_optimized(&graph, &passes, true)?;
            if let Some(report) = report {
                println!("{report}");
            }
            println!("{} nodes after optimisation", optimized.len());
            Ok(())
        }
        Command::Dot {
            graph,
            output,
            passes,
        } => {
            let dot = passes::load_optimized(&graph, &passes, false)?.0.to_dot();
            match output {
                Some(path) => safe_write::write_bytes(&path, dot.as_bytes()),
                None => {
                    print!("{dot}");
                    Ok(())
                }
            }
        }
        Command::Run {
            graph,
            feeds,
            out,
            backend,
            profile,
            trace,
        } => run(
            &graph,
            &feeds,
            out.as_deref(),
            &backend,
            profile,
            trace.as_deref(),
        ),
        Command::View {
            graph,
            output,
            passes,
            profile,
            feeds,
            batch,
            runs,
        } => view::view(view::ViewArgs {
            graph: &graph,
            output,
            passes: &passes,
            profile,
            feeds: &feeds,
            batch,
            runs,
        }),
        Command::Import {
            model,
            output,
            variables,
        } => import::import(&model, output, variables),
        Command::Grad {
            graph,
            loss,
            wrt,
            output,
        } => grad::grad(&graph, &loss, &wrt, output),
        Command::Train {
            graph,
            loss,
            feeds,
            optimizer,
            lr,
            momentum,
            nesterov,
            beta1,
            beta2,
            epsilon,
            batch,
            epochs,
            steps,
            shuffle,
            restore,
            save,
            backend,
            threads,
        } => {
            set_threads(threads)?;
            train::train(train::TrainArgs {
                graph: &graph,
                loss: &loss,
                feeds: &feeds,
                optimizer: &optimizer,
                lr,
                momentum,
                nesterov,
                beta1,
                beta2,
                epsilon,
                batch,
                epochs,
                steps,
                shuffle,
                restore: restore.as_deref(),
                save: save.as_ref(),
                backend: &backend,
                threads,
            })
        }
        Command::Bench {
            graph,
            feeds,
            batch,
            runs,
            warmup,
            threads,
            backend,
            json,
            no_optimize,
            disable,
            profile,
            train,
            optimizer,
            callers,
            trace,
        } => {
            set_threads(threads)?;
            bench::bench(bench::BenchArgs {
                graph: &graph,
                feeds: &feeds,
                batch,
                runs,
                warmup,
                backend: &backend,
                json,
                profile,
                optimize: kiln::OptimizeOptions {
                    enabled: !no_optimize,
                    disabled: disable,
                    ..kiln::OptimizeOptions::default()
                },
                train: train.as_deref(),
                optimizer: &optimizer,
                threads,
                callers,
                trace: trace.as_deref(),
            })
        }
    }
}

/// Sizes the global worker pool for `--threads N` (default: one thread per core).
fn set_threads(threads: Option<usize>) -> Result<(), String> {
    match threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| format!("--threads {n}: {e}")),
        None => Ok(()),
    }
}

/// Loads a graph; parse errors get the file name in front of their line:column.
pub(crate) fn load(path: &Path) -> Result<Graph, String> {
    Graph::load(path).map_err(|e| match e {
        kiln::Error::Parse { .. } => format!("{}:{e}", path.display()),
        other => other.to_string(),
    })
}

fn check(path: &Path) -> Result<(), String> {
    let graph = load(path)?;
    graph.verify().map_err(|e| e.to_string())?;
    for id in graph.topo_order() {
        let node = graph.node(id);
        println!("%{} : {} = {}", node.name, node.ty, node.op.name());
    }
    let outputs: Vec<String> = graph
        .outputs()
        .iter()
        .map(|&o| format!("%{} {}", graph.node(o).name, graph.node(o).ty))
        .collect();
    println!("ok: {} nodes; outputs: {}", graph.len(), outputs.join(", "));
    Ok(())
}

fn run(
    path: &Path,
    feed_args: &[String],
    out: Option<&Path>,
    backend: &str,
    profile: bool,
    trace: Option<&Path>,
) -> Result<(), String> {
    let backend = BackendKind::from_name(backend).map_err(|e| e.to_string())?;
    let graph = load(path)?;
    let feeds = feeds::load(&graph, feed_args)?;
    // Every file name is checked (distinct, not a symlink) before anything runs or is written.
    let files = match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            output_files(dir, &graph.output_names())?
        }
        None => Vec::new(),
    };
    let session = Session::with_backend(&graph, backend).map_err(|e| e.to_string())?;
    let refs: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outputs = session.run_outputs(&refs).map_err(|e| e.to_string())?;
    if profile || trace.is_some() {
        let feeds: Vec<(kiln::NodeId, &Tensor)> = feeds
            .iter()
            .filter_map(|(n, t)| graph.find(n).map(|id| (id, t)))
            .collect();
        let fetches = graph.outputs().to_vec();
        let (_, times) = session
            .run_profiled(&feeds, &fetches)
            .map_err(|e| e.to_string())?;
        if let Some(path) = trace {
            bench::write_trace(path, &times)?;
        }
        if profile {
            bench::print_profile(&times, 1, None);
        }
    }
    for (name, value) in &outputs {
        println!("%{name} {} {}", value.ty(), feeds::summary(value));
    }
    for (file, (_, value)) in files.iter().zip(&outputs) {
        safe_write::write_file(file, |w| kiln::npy::write_to(w, value))?;
    }
    Ok(())
}

/// The file each output is written to in `dir` (`NAME.npy`, `/` becoming `_`); two outputs
/// that would share a file, or a file that is a symlink, are an error.
fn output_files(dir: &Path, outputs: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = Vec::with_capacity(outputs.len());
    for name in outputs {
        let file = dir.join(format!("{}.npy", name.replace('/', "_")));
        if let Some(j) = files.iter().position(|f| *f == file) {
            return Err(format!(
                "outputs %{} and %{name} would both be written to {}; rename one of them",
                outputs[j],
                file.display()
            ));
        }
        safe_write::refuse_symlink(&file)?;
        files.push(file);
    }
    Ok(files)
}
