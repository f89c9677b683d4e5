//! `kiln bench`: compile once, run many times with the feeds already in memory, report times,
//! GFLOP/s against the machine's measured FMA peak, the compile time by phase and the arena
//! size; `--profile` adds a per-kernel table. `--train LOSS` times one training step instead
//! (the loss fetched, the optimizer's update run as a target) and reports the arena of the
//! step against that of the forward pass alone.

use crate::feeds;
use kiln::ir::cost::graph_flops;
use kiln::optimizer::{AdamOptimizer, GradientDescentOptimizer, MomentumOptimizer, Optimizer};
use kiln::{
    BackendKind, CompileTimes, DType, Graph, KernelTime, NodeId, Op, OptimizeOptions, Session,
    SessionOptions, Shape, Tensor,
};
use kiln_cpu::peak::{FmaPeak, fma_peak};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What `kiln bench` was asked to do.
pub struct BenchArgs<'a> {
    pub graph: &'a Path,
    pub feeds: &'a [String],
    pub batch: Option<usize>,
    pub runs: usize,
    pub warmup: usize,
    pub backend: &'a str,
    pub json: bool,
    pub profile: bool,
    /// Optimisation options (`--no-optimize`, `--disable`).
    pub optimize: OptimizeOptions,
    /// `--train LOSS`: time a training step minimising this node.
    pub train: Option<&'a str>,
    /// `--optimizer`: sgd, momentum or adam, with TensorFlow 1's default learning rates.
    pub optimizer: &'a str,
    /// `--threads`: the session's worker threads (default: one per core).
    pub threads: Option<usize>,
    /// `--callers N`: run from N threads at once, each doing `runs` runs.
    pub callers: Option<usize>,
    /// `--trace FILE.json`: write the profiled runs' kernel timeline (Chrome trace format).
    pub trace: Option<&'a Path>,
}

/// The optimizer `--optimizer` names, with tf.compat.v1.train's defaults.
fn bench_optimizer(name: &str) -> Result<Box<dyn Optimizer>, String> {
    match name {
        "sgd" => Ok(Box::new(GradientDescentOptimizer::new(0.01))),
        "momentum" => Ok(Box::new(MomentumOptimizer::new(0.01, 0.9))),
        "adam" => Ok(Box::new(AdamOptimizer::new(0.001))),
        other => Err(format!(
            "--optimizer {other}: expected sgd, momentum or adam"
        )),
    }
}

/// What one timed run fetches and runs: the graph's outputs, or a train step's loss and
/// update target, with the forward pass's arena bytes for comparison.
struct Step {
    fetches: Vec<NodeId>,
    targets: Vec<NodeId>,
    forward_arena_bytes: Option<usize>,
}

/// Feeds for every placeholder: from `--feed` files, else seeded uniform data with unknown dims
/// set to `batch`; a feed too large to allocate is an error naming it and its size.
pub(crate) fn complete_feeds(
    graph: &Graph,
    given: Vec<(String, Tensor)>,
    batch: usize,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut all = given;
    for (seed, id) in graph.placeholders().into_iter().enumerate() {
        let node = graph.node(id);
        if all.iter().any(|(n, _)| *n == node.name) {
            continue;
        }
        let Op::Input(ty) = &node.op else { continue };
        let dims: Vec<usize> = ty.shape.dims().iter().map(|d| d.unwrap_or(batch)).collect();
        let bytes = kiln::ir::tensor::checked_numel(&dims)
            .ok()
            .and_then(|n| n.checked_mul(ty.dtype.size_bytes()));
        let fits = bytes.is_some_and(|b| Vec::<u8>::new().try_reserve_exact(b).is_ok());
        if !fits {
            return Err(format!(
                "--batch {batch}: the generated feed %{} of {}{dims:?} needs {} bytes, more than \
                 this machine can allocate",
                node.name,
                ty.dtype,
                bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string())
            ));
        }
        let tensor = match ty.dtype {
            DType::F32 => Tensor::uniform(&dims, -1.0, 1.0, seed as u64 + 1),
            other => Tensor::zeros_of(other, &dims),
        };
        all.push((node.name.clone(), tensor));
    }
    Ok(all)
}

pub fn bench(args: BenchArgs<'_>) -> Result<(), String> {
    let backend = BackendKind::from_name(args.backend).map_err(|e| e.to_string())?;
    let mut graph = crate::load(args.graph)?;
    let given = feeds::load(&graph, args.feeds)?;
    let feeds = complete_feeds(&graph, given, args.batch.unwrap_or(1))?;
    let step = match args.train {
        None => Step {
            fetches: graph.outputs().to_vec(),
            targets: Vec::new(),
            forward_arena_bytes: None,
        },
        Some(loss) => train_step(&mut graph, loss, &args, backend.clone(), &feeds)?,
    };
    let outputs = step.fetches.clone();
    let targets = step.targets.clone();
    if outputs.is_empty() {
        return Err("the graph declares no outputs to benchmark".into());
    }
    let feed_ids: Vec<(NodeId, &Tensor)> = feeds
        .iter()
        .map(|(n, t)| graph.lookup(n).map(|id| (id, t)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let shapes: HashMap<NodeId, Shape> = feed_ids.iter().map(|(id, t)| (*id, t.shape())).collect();
    let roots: Vec<NodeId> = outputs.iter().chain(&targets).copied().collect();
    let flops = graph.extract(&roots, &shapes).ok().and_then(|(g, _)| {
        let roots: Vec<NodeId> = g.outputs().to_vec();
        graph_flops(&g, &roots)
    });

    let threads = rayon::current_num_threads();
    // Measured (or read from the cache) before compiling, so nothing else competes for the cores.
    let peak_one = fma_peak(1);
    let mut peak = if threads == 1 {
        peak_one.clone()
    } else {
        fma_peak(threads)
    };

    let session = bench_session(&graph, backend, &args)?;
    let callers = args.callers.unwrap_or(1);
    let profiled = if args.profile || args.trace.is_some() {
        args.runs
    } else {
        0
    };
    let progress = Progress::new(1 + args.warmup + callers * args.runs + profiled);
    progress.say("compiling");
    session
        .run_with_targets(&feed_ids, &outputs, &targets)
        .map_err(|e| e.to_string())?;
    progress.tick();
    let stats = session
        .last_compile()
        .ok_or("the first run did not compile")?;
    for _ in 0..args.warmup {
        session
            .run_with_targets(&feed_ids, &outputs, &targets)
            .map_err(|e| e.to_string())?;
        progress.tick();
    }
    let started = Instant::now();
    let mut times = std::thread::scope(|s| {
        let threads: Vec<_> = (0..callers)
            .map(|_| {
                s.spawn(|| {
                    timed_runs(
                        &session, &feed_ids, &outputs, &targets, args.runs, &progress,
                    )
                })
            })
            .collect();
        let mut all = Vec::with_capacity(callers * args.runs);
        for t in threads {
            all.extend(t.join().map_err(|_| "a benchmark thread panicked")??);
        }
        Ok::<_, String>(all)
    })?;
    let runs_per_s = times.len() as f64 / started.elapsed().as_secs_f64();
    progress.finish();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    let spread = Spread::of(&times);
    let gflops = flops.map(|f| f as f64 / (median * 1e-3) / 1e9);
    // A run faster than the cached peak shows the cache was measured on a busy machine, unless
    // a fast algorithm (Winograd) did less arithmetic than the graph's FLOPs count.
    let direct = stats.info.fast_algorithm_kernels == 0;
    if let Some(best) = flops
        .filter(|_| direct)
        .map(|f| f as f64 / (min * 1e-3) / 1e9)
    {
        peak = kiln_cpu::peak::remeasure_if_beaten(
            kiln_cpu::peak::cache_dir().as_deref(),
            &peak,
            best,
        );
    }
    let compile_ms = stats.time.as_secs_f64() * 1e3;
    let compile_cpu_ms = stats.cpu_time.map(|t| t.as_secs_f64() * 1e3);
    let phases = compile_phases(&stats.info.compile_times, stats.time);

    if !args.json {
        println!("graph      {}", args.graph.display());
        println!("backend    {} ({threads} threads)", session.backend());
        println!("cpu        {} ({})", peak.cpu, peak.isa.name());
        let cached = kiln_cpu::peak::cache_dir().map_or_else(
            || "not cached".to_string(),
            |d| format!("cached in {}", d.join(kiln_cpu::peak::CACHE_FILE).display()),
        );
        println!(
            "peak       {:.1} GFLOP/s FMA on 1 thread, {:.1} on {threads} (measured once, {cached})",
            peak_one.gflops, peak.gflops
        );
        let breakdown: Vec<String> = phases
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.3}"))
            .collect();
        let cpu = compile_cpu_ms.map_or(String::new(), |c| format!(", {c:.3} ms CPU"));
        println!(
            "compile    {compile_ms:.3} ms{cpu} ({} kernels): {} ms",
            stats.info.kernels,
            breakdown.join(", ")
        );
        println!(
            "run        median {median:.4} ms, std dev {:.4} ms, p90 {:.4} ms, min {min:.4} ms, \
             max {max:.4} ms over {} runs",
            spread.std_dev,
            spread.p90,
            times.len()
        );
        if args.callers.is_some() {
            println!(
                "callers    {callers} at once on one session: {runs_per_s:.1} runs/s in total"
            );
        }
        if let Some(g) = gflops {
            println!(
                "throughput {g:.2} GFLOP/s ({:.1}% of peak)",
                100.0 * g / peak.gflops
            );
        }
        println!(
            "arena      {} bytes (temporaries without sharing: {} bytes)",
            stats.info.arena_bytes, stats.info.sum_temporary_bytes
        );
        if let Some(forward) = step.forward_arena_bytes {
            println!(
                "forward    {forward} bytes of arena for the loss alone; the train step needs \
                 {:.2}x",
                stats.info.arena_bytes as f64 / forward.max(1) as f64
            );
        }
    }
    let mut profile_json = match args.callers {
        Some(n) => format!(",\"callers\":{n},\"runs_per_s\":{runs_per_s:.3}"),
        None => String::new(),
    };
    if args.profile || args.trace.is_some() {
        let total = profiled_runs(&session, &feed_ids, &outputs, &targets, args.runs, &|| {
            progress.tick()
        })?;
        progress.finish();
        if let Some(path) = args.trace {
            write_trace(path, &total)?;
        }
        if args.profile && args.json {
            let nodes = source_nodes(&graph, &total);
            profile_json += &format!(
                ",\"kernels\":{}",
                profile_to_json(&total, &nodes, args.runs, &peak)
            );
        } else if args.profile {
            print_profile(&graph, &total, args.runs, Some(&peak));
        }
    }
    if args.json {
        let num = |v: Option<f64>| v.map_or("null".to_string(), |g| format!("{g:.3}"));
        let breakdown: Vec<String> = phases
            .iter()
            .map(|(name, ms)| format!("\"{name}\":{ms:.3}"))
            .collect();
        println!(
            "{{\"graph\":{},\"backend\":\"{}\",\"threads\":{threads},\"cpu\":{},\"isa\":\"{}\",\"fma_peak_gflops\":{:.3},\"fma_peak_1thread_gflops\":{:.3},\"runs\":{},\"compile_ms\":{compile_ms:.3},\"compile_cpu_ms\":{},\"compile_breakdown_ms\":{{{}}},\"median_ms\":{median:.6},\"std_dev_ms\":{:.6},\"p90_ms\":{:.6},\"min_ms\":{min:.6},\"max_ms\":{max:.6},\"gflops\":{},\"peak_share\":{},\"flops\":{},\"arena_bytes\":{},\"sum_temporary_bytes\":{},\"kernel_count\":{},\"train\":{},\"forward_arena_bytes\":{}{profile_json}}}",
            json_string(&args.graph.display().to_string()),
            session.backend(),
            json_string(&peak.cpu),
            peak.isa.name(),
            peak.gflops,
            peak_one.gflops,
            times.len(),
            num(compile_cpu_ms),
            breakdown.join(","),
            spread.std_dev,
            spread.p90,
            num(gflops),
            num(gflops.map(|g| g / peak.gflops)),
            flops.map_or("null".to_string(), |f| f.to_string()),
            stats.info.arena_bytes,
            stats.info.sum_temporary_bytes,
            stats.info.kernels,
            args.train.map_or("null".to_string(), json_string),
            step.forward_arena_bytes
                .map_or("null".to_string(), |b| b.to_string()),
        );
    }
    Ok(())
}

/// `runs` timed runs on the calling thread: each one's wall time in milliseconds.
fn timed_runs(
    session: &Session,
    feeds: &[(NodeId, &Tensor)],
    fetches: &[NodeId],
    targets: &[NodeId],
    runs: usize,
    progress: &Progress,
) -> Result<Vec<f64>, String> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        session
            .run_with_targets(feeds, fetches, targets)
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        progress.tick();
    }
    Ok(times)
}

/// The spread of run times around the median: the (population) standard deviation and the
/// 90th percentile (nearest rank), in milliseconds.
struct Spread {
    std_dev: f64,
    p90: f64,
}

impl Spread {
    /// Of `sorted` times (ascending, at least one).
    fn of(sorted: &[f64]) -> Spread {
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let variance = sorted.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / n;
        let rank = (0.9 * n).ceil() as usize;
        Spread {
            std_dev: variance.sqrt(),
            p90: sorted[rank.clamp(1, sorted.len()) - 1],
        }
    }
}

/// A `runs done/total` line on stderr, rewritten in place at most a few times a second, when
/// stderr is a terminal (a big model can take many seconds); silent otherwise, so logs and
/// pipes get no carriage returns.
struct Progress {
    total: usize,
    done: AtomicUsize,
    enabled: bool,
    last_shown: Mutex<Option<Instant>>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: AtomicUsize::new(0),
            enabled: std::io::stderr().is_terminal(),
            last_shown: Mutex::new(None),
        }
    }

    /// Shows `what` is under way (before the first run, which compiles).
    fn say(&self, what: &str) {
        if self.enabled {
            eprint!("\r\x1b[K{what}...");
        }
    }

    /// Counts one run done, and shows the count if the last showing is old enough.
    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled {
            return;
        }
        let Ok(mut last) = self.last_shown.try_lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
            *last = Some(Instant::now());
            eprint!("\r\x1b[Kruns {done}/{}", self.total);
            let _ = std::io::stderr().flush();
        }
    }

    /// Clears the progress line.
    fn finish(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

/// A session with the backend, optimisation options and threads `args` ask for.
fn bench_session(
    graph: &Graph,
    backend: BackendKind,
    args: &BenchArgs<'_>,
) -> Result<Session, String> {
    let options = SessionOptions {
        backend,
        optimize: args.optimize.clone(),
        threads: args.threads,
        ..SessionOptions::default()
    };
    Session::with_session_options(graph, options).map_err(|e| e.to_string())
}

/// Runs `runs` profiled runs, calling `tick` after each; every kernel's time summed over
/// them, with every run's spans.
pub(crate) fn profiled_runs(
    session: &Session,
    feeds: &[(NodeId, &Tensor)],
    fetches: &[NodeId],
    targets: &[NodeId],
    runs: usize,
    tick: &dyn Fn(),
) -> Result<Vec<KernelTime>, String> {
    let mut total: Vec<KernelTime> = Vec::new();
    for _ in 0..runs {
        let (_, profile) = session
            .run_profiled_with_targets(feeds, fetches, targets)
            .map_err(|e| e.to_string())?;
        tick();
        KernelTime::accumulate(&mut total, profile);
    }
    Ok(total)
}

/// Writes the kernel timeline of `times` to `path` in the Chrome trace event format.
pub(crate) fn write_trace(path: &Path, times: &[KernelTime]) -> Result<(), String> {
    if times.is_empty() {
        return Err(format!(
            "--trace {}: this backend does not time kernels",
            path.display()
        ));
    }
    crate::safe_write::write_bytes(path, kiln::trace::chrome_trace(times).as_bytes())
}

/// Adds `optimizer.minimize(loss)` to `graph` after compiling the forward pass alone (the loss
/// fetched, nothing updated) once to measure its arena.
fn train_step(
    graph: &mut Graph,
    loss: &str,
    args: &BenchArgs<'_>,
    backend: BackendKind,
    feeds: &[(String, Tensor)],
) -> Result<Step, String> {
    let loss = crate::grad::lookup(graph, loss, "--train")?;
    let optimizer = bench_optimizer(args.optimizer)?;
    let feed_ids: Vec<(NodeId, &Tensor)> = feeds
        .iter()
        .map(|(n, t)| graph.lookup(n).map(|id| (id, t)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let forward = bench_session(graph, backend, args)?;
    forward.run(&feed_ids, &[loss]).map_err(|e| {
        format!(
            "the forward pass of --train %{}: {e}",
            graph.node(loss).name
        )
    })?;
    let forward_arena_bytes = forward.last_compile().map(|s| s.info.arena_bytes);
    let train = optimizer.minimize(graph, loss).map_err(|e| e.to_string())?;
    Ok(Step {
        fetches: vec![loss],
        targets: vec![train],
        forward_arena_bytes,
    })
}

/// The compile phases in milliseconds, in order, with what none of them covers (pruning,
/// validation, the session's bookkeeping) as `other`.
fn compile_phases(t: &CompileTimes, total: std::time::Duration) -> [(&'static str, f64); 5] {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let timed = t.passes + t.lowering + t.packing + t.codegen;
    [
        ("passes", ms(t.passes)),
        ("lowering", ms(t.lowering)),
        ("packing", ms(t.packing)),
        ("codegen", ms(t.codegen)),
        ("other", ms(total.saturating_sub(timed))),
    ]
}

/// One kernel's profile figures over `runs` runs.
struct KernelFigures {
    ms: f64,
    share: f64,
    gflops: Option<f64>,
    peak_share: Option<f64>,
}

impl KernelFigures {
    fn of(t: &KernelTime, total_nanos: u64, runs: usize, peak: Option<&FmaPeak>) -> Self {
        let nanos = t.nanos as f64 / runs.max(1) as f64;
        // A kernel too fast for the clock has no meaningful rate.
        let gflops = t.flops.filter(|_| nanos > 0.0).map(|f| f as f64 / nanos);
        KernelFigures {
            ms: nanos / 1e6,
            share: t.nanos as f64 / total_nanos.max(1) as f64,
            gflops,
            peak_share: gflops.zip(peak).map(|(g, p)| g / p.gflops),
        }
    }
}

/// What a kernel runs, for people: its ops joined by `+` (`conv2d+add+relu`).
fn kernel_ops(t: &KernelTime) -> String {
    t.ops_text()
}

/// The nodes of the graph as written (`source`) that each kernel computes, by name. Passes
/// fuse a chain into one kernel named after its last node and fold constant subgraphs, so the
/// names are recovered from the source graph: in run order, a kernel computes its root (the
/// source node of its name, or of the name before a pass's `.suffix`, as `bn1.nhwc`) and every
/// ancestor of it that an earlier kernel has not computed, leaving out sources (inputs,
/// constants, variables) and what depends on no input or variable (folded when compiling).
pub fn source_nodes(source: &Graph, times: &[KernelTime]) -> Vec<Vec<String>> {
    let ir = source.ir();
    let order = ir.topo_order();
    let mut at_run_time: HashMap<NodeId, bool> = HashMap::new();
    for &id in &order {
        let op = &ir.node(id).op;
        let varies =
            matches!(op, Op::Input(_) | Op::Var(_)) || ir.inputs(id).iter().any(|i| at_run_time[i]);
        at_run_time.insert(id, varies);
    }
    let computed = |id: NodeId| {
        !matches!(ir.node(id).op, Op::Input(_) | Op::Var(_) | Op::Const(_)) && at_run_time[&id]
    };
    let root_of = |kernel: &str| {
        let mut name = kernel;
        loop {
            if let Some(id) = ir.find(name) {
                return Some(id);
            }
            name = &name[..name.rfind('.')?];
        }
    };
    let mut claimed: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
    times
        .iter()
        .map(|t| {
            let Some(root) = root_of(&t.kernel) else {
                return Vec::new();
            };
            ir.topo_order_of([root])
                .into_iter()
                .filter(|&id| computed(id) && claimed.insert(id))
                .map(|id| ir.node(id).name.clone())
                .collect()
        })
        .collect()
}

/// The `--json --profile` kernel array: name, ops, nodes (the source nodes it computes),
/// output, ms, share, gflops, peak_share.
fn profile_to_json(
    times: &[KernelTime],
    nodes: &[Vec<String>],
    runs: usize,
    peak: &FmaPeak,
) -> String {
    let total: u64 = times.iter().map(|t| t.nanos).sum();
    let num = |v: Option<f64>| v.map_or("null".to_string(), |g| format!("{g:.6}"));
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| json_string(s)).collect();
        format!("[{}]", quoted.join(","))
    };
    let kernels: Vec<String> = times
        .iter()
        .zip(nodes)
        .map(|(t, nodes)| {
            let f = KernelFigures::of(t, total, runs, Some(peak));
            format!(
                "{{\"name\":{},\"ops\":{},\"nodes\":{},\"output\":{},\"ms\":{:.6},\"share\":{:.6},\"gflops\":{},\"peak_share\":{}}}",
                json_string(&t.kernel),
                list(&t.ops),
                list(nodes),
                json_string(&t.output),
                f.ms,
                f.share,
                num(f.gflops),
                num(f.peak_share),
            )
        })
        .collect();
    format!("[{}]", kernels.join(","))
}

/// A table of kernels: name, the source nodes fused into it (see [`source_nodes`]) and its
/// ops, output type, mean time, share of the total, GFLOP/s and (given the machine's `peak`)
/// the share of that peak.
pub fn print_profile(source: &Graph, times: &[KernelTime], runs: usize, peak: Option<&FmaPeak>) {
    if times.is_empty() {
        println!("(this backend does not time kernels)");
        return;
    }
    let nodes = source_nodes(source, times);
    let total: u64 = times.iter().map(|t| t.nanos).sum();
    println!(
        "{:<24} {:<22} {:>9} {:>6} {:>8} {:>6}  ops fused: source nodes",
        "kernel", "output", "ms", "share", "GFLOP/s", "peak"
    );
    for (t, nodes) in times.iter().zip(&nodes) {
        let f = KernelFigures::of(t, total, runs, peak);
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let named: Vec<String> = nodes.iter().map(|n| format!("%{n}")).collect();
        // Last, so the node list is never cut.
        println!(
            "{:<24} {:<22} {:>9.4} {:>6} {:>8} {:>6}  {}: {}",
            truncate(&t.kernel, 24),
            t.output,
            f.ms,
            pct(Some(f.share)),
            f.gflops.map_or("-".to_string(), |g| format!("{g:.1}")),
            pct(f.peak_share),
            kernel_ops(t),
            named.join(" "),
        );
    }
}

/// `s` cut to at most `width` characters, ending in `...` when cut.
fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let kept: String = s.chars().take(width.saturating_sub(3)).collect();
        format!("{kept}...")
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
