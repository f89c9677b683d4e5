//! The `kiln` command line: check, dump, draw and run .kiln graphs.

// Safe Rust only: unsafe code lives in the backends, in small commented places.
#![forbid(unsafe_code)]

mod bench;
mod devices;
mod feeds;
mod grad;
mod grouped;
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
        /// The .kiln or .onnx file.
        graph: PathBuf,
    },
    /// Print the graph in .kiln text with inferred types as comments.
    Dump {
        /// The .kiln or .onnx file.
        graph: PathBuf,
        #[command(flatten)]
        passes: passes::PassArgs,
    },
    /// Optimise the graph and print every rewrite and per-pass statistics.
    Explain {
        /// The .kiln or .onnx file.
        graph: PathBuf,
        #[command(flatten)]
        passes: passes::PassArgs,
    },
    /// Print the graph as GraphViz DOT.
    Dot {
        /// The .kiln or .onnx file.
        graph: PathBuf,
        #[command(flatten)]
        passes: passes::PassArgs,
        /// Write to this file instead of standard output (`-`: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the graph's outputs with .npy feeds; print them, and with -o write one NAME.npy each.
    Run {
        /// The .kiln or .onnx file.
        graph: PathBuf,
        /// A feed: placeholder name (with or without %) = .npy file. Repeatable.
        #[arg(long = "feed", value_name = "NAME=FILE.npy")]
        feeds: Vec<String>,
        /// Folder for the outputs (created if needed).
        #[arg(short = 'o', long, visible_alias = "output")]
        out: Option<PathBuf>,
        /// Nodes to compute instead of the graph's outputs, comma-separated (with or without %).
        #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
        targets: Vec<String>,
        /// Restore the variables from this safetensors checkpoint first.
        #[arg(long, value_name = "CKPT")]
        restore: Option<PathBuf>,
        /// Worker threads, 1 to 1024 (default: one per core).
        #[arg(long, value_parser = thread_count)]
        threads: Option<usize>,
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
        /// Write the graph to this file instead of standard output (`-`: standard output).
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
        /// The .kiln or .onnx file.
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
pub(crate) fn at_least_one(arg: &str) -> Result<usize, String> {
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
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Ends the program quietly (exit 0), as other Unix tools do, when standard output is closed
/// early (`kiln dump big.kiln | head -1`): Rust ignores SIGPIPE, so `print!` panics on the
/// broken pipe, and this hook turns that one panic into a plain exit.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map_or("", String::as_str);
        let broken_pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe).to_string();
        let os_broken_pipe = "(os error 32)";
        if message.starts_with("failed printing to stdout")
            && (message.contains(&broken_pipe) || message.contains(os_broken_pipe))
        {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// `-o -` means standard output: `None`, as if no file were given.
fn file_or_stdout(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|p| p.as_os_str() != "-")
}

fn execute(command: Command) -> Result<(), String> {
    match command {
        Command::Devices { json } => devices::devices(json),
        Command::Check { graph } => check(&graph),
        Command::Dump { graph, passes } => {
            let loaded = passes::load_optimized(&graph, &passes, false)?;
            print!(
                "{}",
                grouped::annotate(&loaded.graph, &loaded.graph.to_text())
            );
            if passes.shapes_matter() {
                println!("# {}", loaded.shapes_note);
            }
            Ok(())
        }
        Command::Explain { graph, passes } => {
            if passes.optimize {
                return Err("explain always runs the pass pipeline: drop --optimize".into());
            }
            let loaded = passes::load_optimized(&graph, &passes, true)?;
            println!("{}", loaded.shapes_note);
            if let Some(report) = loaded.report {
                println!("{report}");
            }
            println!("{} nodes after optimisation", loaded.graph.len());
            Ok(())
        }
        Command::Dot {
            graph,
            output,
            passes,
        } => {
            let loaded = passes::load_optimized(&graph, &passes, false)?;
            let mut dot = loaded.graph.to_dot();
            if passes.shapes_matter() {
                dot = format!("// {}\n{dot}", loaded.shapes_note);
            }
            match file_or_stdout(output) {
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
            targets,
            restore,
            threads,
            backend,
            profile,
            trace,
        } => run(RunArgs {
            path: &graph,
            feed_args: &feeds,
            out: out.as_deref(),
            targets: &targets,
            restore: restore.as_deref(),
            threads,
            backend: &backend,
            profile,
            trace: trace.as_deref(),
        }),
        Command::View {
            graph,
            output,
            passes,
            profile,
            feeds,
            runs,
        } => view::view(view::ViewArgs {
            graph: &graph,
            output,
            passes: &passes,
            profile,
            feeds: &feeds,
            runs,
        }),
        Command::Import {
            model,
            output,
            variables,
        } => {
            if output.as_ref().is_some_and(|p| p.as_os_str() == "-") {
                return Err(
                    "import writes a .kiln file and its weights file beside it: -o - (standard \
                     output) cannot hold both; name a .kiln file"
                        .into(),
                );
            }
            import::import(&model, output, variables)
        }
        Command::Grad {
            graph,
            loss,
            wrt,
            output,
        } => grad::grad(&graph, &loss, &wrt, file_or_stdout(output)),
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

/// Whether `path` names an ONNX model (`.onnx`, any case) rather than .kiln text.
fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Loads a graph (an .onnx model through the importer); parse errors get the file name in front
/// of their line:column.
pub(crate) fn load(path: &Path) -> Result<Graph, String> {
    if is_onnx(path) {
        return Graph::from_onnx(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    Graph::load(path).map_err(|e| match e {
        // Binary data is most likely a model under another extension.
        kiln::Error::Parse { ref message, .. } if message.starts_with("invalid UTF-8") => format!(
            "{}:{e}; an ONNX model is read through the importer when its name ends in .onnx",
            path.display()
        ),
        kiln::Error::Parse { .. } => format!("{}:{e}", path.display()),
        other => other.to_string(),
    })
}

fn check(path: &Path) -> Result<(), String> {
    let graph = load(path)?;
    graph.verify().map_err(|e| e.to_string())?;
    for id in graph.topo_order() {
        let node = graph.node(id);
        match grouped::note(&graph, id) {
            Some(note) => println!("%{} : {} = {} ({note})", node.name, node.ty, node.op.name()),
            None => println!("%{} : {} = {}", node.name, node.ty, node.op.name()),
        }
    }
    let outputs: Vec<String> = graph
        .outputs()
        .iter()
        .map(|&o| format!("%{} {}", graph.node(o).name, graph.node(o).ty))
        .collect();
    if outputs.is_empty() {
        eprintln!(
            "warning: {} declares no outputs: `kiln run` and `kiln bench` have nothing to \
             compute (add a line `output %NAME`)",
            path.display()
        );
        println!("ok: {} nodes; no outputs", graph.len());
    } else {
        println!("ok: {} nodes; outputs: {}", graph.len(), outputs.join(", "));
    }
    Ok(())
}

/// What `kiln run` was asked to do.
struct RunArgs<'a> {
    path: &'a Path,
    feed_args: &'a [String],
    /// `-o`/`--out`: the folder for one NAME.npy per computed node.
    out: Option<&'a Path>,
    /// `--targets`: the nodes to compute instead of the graph's outputs.
    targets: &'a [String],
    /// `--restore`: a checkpoint to read the variables from first.
    restore: Option<&'a Path>,
    threads: Option<usize>,
    backend: &'a str,
    profile: bool,
    /// `--trace`: write the run's kernel timeline here (Chrome trace event format).
    trace: Option<&'a Path>,
}

/// Outputs of at most this many elements are printed in full.
const PRINTED_ELEMENTS: usize = 16;

fn run(args: RunArgs<'_>) -> Result<(), String> {
    let backend = BackendKind::from_name(args.backend).map_err(|e| e.to_string())?;
    if args.out.is_some_and(|d| d.as_os_str() == "-") {
        return Err(
            "-o - : run writes one .npy file per output into a folder; without -o it prints \
             what it computed"
                .into(),
        );
    }
    let graph = load(args.path)?;
    let feeds = feeds::load(&graph, args.feed_args)?;
    let fetches: Vec<kiln::NodeId> = if args.targets.is_empty() {
        graph.outputs().to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| match grad::bare(t.trim()) {
                "" => Err(format!(
                    "--targets {}: an empty name (expected NAME,NAME,...)",
                    args.targets.join(",")
                )),
                name => grad::lookup(&graph, name, "--targets"),
            })
            .collect::<Result<_, _>>()?
    };
    if fetches.is_empty() {
        return Err(format!(
            "{} declares no outputs: name the nodes to compute with --targets NAME,...",
            args.path.display()
        ));
    }
    let names: Vec<String> = fetches
        .iter()
        .map(|&id| graph.node(id).name.clone())
        .collect();
    // Every file name is checked (distinct, not a symlink) before anything runs or is written.
    let files = match args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            output_files(dir, &names)?
        }
        None => Vec::new(),
    };
    let options = kiln::SessionOptions {
        backend,
        threads: args.threads,
        ..kiln::SessionOptions::default()
    };
    let session = Session::with_session_options(&graph, options).map_err(|e| e.to_string())?;
    if let Some(checkpoint) = args.restore {
        session
            .restore_variables(checkpoint)
            .map_err(|e| format!("--restore: {e}"))?;
    }
    let feed_ids: Vec<(kiln::NodeId, &Tensor)> = feeds
        .iter()
        .filter_map(|(n, t)| graph.find(n).map(|id| (id, t)))
        .collect();
    let values = session
        .run(&feed_ids, &fetches)
        .map_err(|e| e.to_string())?;
    if args.profile || args.trace.is_some() {
        let (_, times) = session
            .run_profiled(&feed_ids, &fetches)
            .map_err(|e| e.to_string())?;
        if let Some(path) = args.trace {
            bench::write_trace(path, &times)?;
        }
        if args.profile {
            bench::print_profile(&graph, &times, 1, None);
        }
    }
    for (name, value) in names.iter().zip(&values) {
        if value.numel() <= PRINTED_ELEMENTS {
            println!("%{name} {} = {}", value.ty(), feeds::values(value));
        } else {
            println!("%{name} {} {}", value.ty(), feeds::summary(value));
        }
    }
    for (file, value) in files.iter().zip(&values) {
        safe_write::write_file(file, |w| kiln::npy::write_to(w, value))?;
    }
    match args.out {
        Some(dir) => eprintln!(
            "wrote {} file(s) to {}: {}",
            files.len(),
            dir.display(),
            files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => eprintln!(
            "computed {} node(s); nothing written (-o DIR writes one NAME.npy each)",
            values.len()
        ),
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
