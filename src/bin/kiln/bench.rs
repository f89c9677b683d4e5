//! `kiln bench`: compile once, run many times with the feeds already in memory, report times,
//! GFLOP/s and the arena size; `--profile` adds a per-kernel table.

use crate::feeds;
use kiln::ir::cost::graph_flops;
use kiln::{
    BackendKind, DType, Graph, KernelTime, NodeId, Op, OptimizeOptions, Session, Shape, Tensor,
};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

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
}

/// Feeds for every placeholder: from `--feed` files, else seeded uniform data with unknown dims
/// set to `batch`; a feed too large to allocate is an error naming it and its size.
fn complete_feeds(
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
    let graph = crate::load(args.graph)?;
    let given = feeds::load(&graph, args.feeds)?;
    let feeds = complete_feeds(&graph, given, args.batch.unwrap_or(1))?;
    let outputs: Vec<NodeId> = graph.outputs().to_vec();
    if outputs.is_empty() {
        return Err("the graph declares no outputs to benchmark".into());
    }
    let feed_ids: Vec<(NodeId, &Tensor)> = feeds
        .iter()
        .map(|(n, t)| graph.lookup(n).map(|id| (id, t)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let shapes: HashMap<NodeId, Shape> = feed_ids.iter().map(|(id, t)| (*id, t.shape())).collect();
    let flops = graph.extract(&outputs, &shapes).ok().and_then(|(g, _)| {
        let roots: Vec<NodeId> = g.outputs().to_vec();
        graph_flops(&g, &roots)
    });

    let mut session =
        Session::with_options(&graph, backend, args.optimize.clone()).map_err(|e| e.to_string())?;
    session
        .run(&feed_ids, &outputs)
        .map_err(|e| e.to_string())?;
    let stats = session
        .last_compile()
        .cloned()
        .ok_or("the first run did not compile")?;
    for _ in 0..args.warmup {
        session
            .run(&feed_ids, &outputs)
            .map_err(|e| e.to_string())?;
    }
    let mut times = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        session
            .run(&feed_ids, &outputs)
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    let gflops = flops.map(|f| f as f64 / (median * 1e-3) / 1e9);
    let compile_ms = stats.time.as_secs_f64() * 1e3;
    let threads = rayon::current_num_threads();

    if args.json {
        let gf = gflops.map_or("null".to_string(), |g| format!("{g:.3}"));
        println!(
            "{{\"graph\":{},\"backend\":\"{}\",\"threads\":{threads},\"runs\":{},\"compile_ms\":{compile_ms:.3},\"median_ms\":{median:.6},\"min_ms\":{min:.6},\"max_ms\":{max:.6},\"gflops\":{gf},\"flops\":{},\"arena_bytes\":{},\"sum_temporary_bytes\":{},\"kernels\":{}}}",
            json_string(&args.graph.display().to_string()),
            session.backend(),
            times.len(),
            flops.map_or("null".to_string(), |f| f.to_string()),
            stats.info.arena_bytes,
            stats.info.sum_temporary_bytes,
            stats.info.kernels,
        );
    } else {
        println!("graph      {}", args.graph.display());
        println!("backend    {} ({threads} threads)", session.backend());
        println!(
            "compile    {compile_ms:.3} ms ({} kernels)",
            stats.info.kernels
        );
        println!(
            "run        median {median:.4} ms, min {min:.4} ms, max {max:.4} ms over {} runs",
            times.len()
        );
        if let Some(g) = gflops {
            println!("throughput {g:.2} GFLOP/s");
        }
        println!(
            "arena      {} bytes (temporaries without sharing: {} bytes)",
            stats.info.arena_bytes, stats.info.sum_temporary_bytes
        );
    }
    if args.profile {
        let mut total: Vec<KernelTime> = Vec::new();
        for _ in 0..args.runs {
            let (_, profile) = session
                .run_profiled(&feed_ids, &outputs)
                .map_err(|e| e.to_string())?;
            if total.is_empty() {
                total = profile;
            } else {
                total
                    .iter_mut()
                    .zip(profile)
                    .for_each(|(t, p)| t.nanos += p.nanos);
            }
        }
        print_profile(&total, args.runs);
    }
    Ok(())
}

/// A table of kernels: name, fused ops, output type, mean time and share of the total.
pub fn print_profile(times: &[KernelTime], runs: usize) {
    if times.is_empty() {
        println!("(this backend does not time kernels)");
        return;
    }
    let total: u64 = times.iter().map(|t| t.nanos).sum::<u64>().max(1);
    println!(
        "{:<24} {:<40} {:<22} {:>10} {:>6}",
        "kernel", "ops fused", "output", "time us", "share"
    );
    for t in times {
        let ops = t.nodes.join("+");
        let ops = if ops.len() > 40 {
            format!("{}...", &ops[..37])
        } else {
            ops
        };
        println!(
            "{:<24} {:<40} {:<22} {:>10.2} {:>5.1}%",
            t.kernel,
            ops,
            t.output,
            t.nanos as f64 / runs as f64 / 1e3,
            100.0 * t.nanos as f64 / total as f64
        );
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
