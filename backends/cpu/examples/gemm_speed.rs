//! Timing harness for the GEMM micro-kernels: matmul 1024^3 + bias + relu (W5), the 3x3
//! 64->64 convolution + bias + relu on 1x56x56x64 (W2) and 8x56x56x64 (W3), and a few other
//! layer shapes (a 3-channel first layer, a 1x1 expansion, a late 7x7x512 layer), on one and
//! on two threads, for every ISA this CPU supports.
//!
//! `cargo run --release -p kiln-cpu --example gemm_speed [repeats] [isa,isa,..] [threads,..]`
//! (ISA names as in `KILN_CPU_FEATURES`: avx512, avx2, portable; default: all supported).
//! A fourth argument `N,H,W,CIN,COUT,K,STRIDE` times that one convolution instead of the list.
//! `COLD=n` cycles through n copies of the direct convolution's packed weights (weights read
//! from memory, as in a network, once n copies exceed the L3). `DIRECT_ONLY=1` skips the
//! Winograd timings, `WINOGRAD_ONLY=1` the direct ones, `ADD=1` adds a residual in the epilogue
//! (`WINOGRAD_ONLY=2` or `4`: only F(2x2, 3x3) or F(4x4, 3x3); for profiling one alone).
//! Prints the median and the best time of `repeats` runs (default 20) with the GFLOP/s they
//! imply; on a shared machine the best run is the better estimate of what the code can do.

use kiln_cpu::gemm::{
    Activation, ConvGeometry, Epilogue, Isa, Residual, WinogradVariant, conv2d_nhwc,
    conv2d_winograd, pack_b_for, pack_winograd, sgemm, winograd_applies,
};
use kiln_ir::op::Padding;
use rayon::ThreadPool;
use std::time::Instant;

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
        .collect()
}

/// (median, fastest) seconds of `repeats` runs of `f` after one warm-up run.
fn time(repeats: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn report(name: &str, isa: Isa, threads: usize, flops: f64, (median, best): (f64, f64)) {
    println!(
        "{name:<36} {:<8} {threads} thr  median {:>8.3} ms {:>6.1} GFLOP/s   best {:>8.3} ms {:>6.1} GFLOP/s",
        isa.name(),
        median * 1e3,
        flops / median / 1e9,
        best * 1e3,
        flops / best / 1e9
    );
}

/// A convolution layer to time: NHWC input dims, output channels, square filter, stride.
struct Conv {
    name: String,
    input: [usize; 4],
    cout: usize,
    k: usize,
    stride: usize,
}

/// The layers timed by default: (name, NHWC input, output channels, filter size, stride).
const CONVS: [(&str, [usize; 4], usize, usize, usize); 11] = [
    (
        "W2 conv 1x56x56x64 3x3 +bias+relu",
        [1, 56, 56, 64],
        64,
        3,
        1,
    ),
    (
        "W3 conv 8x56x56x64 3x3 +bias+relu",
        [8, 56, 56, 64],
        64,
        3,
        1,
    ),
    ("conv 16x32x32x3 3x3 ->32", [16, 32, 32, 3], 32, 3, 1),
    ("conv 1x56x56x64 1x1 ->256", [1, 56, 56, 64], 256, 1, 1),
    ("conv 1x14x14x256 3x3 s2 ->512", [1, 14, 14, 256], 512, 3, 2),
    ("W4 conv 16x32x32x32 3x3 ->32", [16, 32, 32, 32], 32, 3, 1),
    ("W4 conv 16x16x16x32 3x3 ->64", [16, 16, 16, 32], 64, 3, 1),
    ("SQZ conv 1x13x13x64 3x3 ->256", [1, 13, 13, 64], 256, 3, 1),
    (
        "R18 conv 1x28x28x128 3x3 ->128",
        [1, 28, 28, 128],
        128,
        3,
        1,
    ),
    (
        "R18 conv 1x14x14x256 3x3 ->256",
        [1, 14, 14, 256],
        256,
        3,
        1,
    ),
    ("conv 1x7x7x512 3x3 ->512", [1, 7, 7, 512], 512, 3, 1),
];

fn bench_matmul(pool: &ThreadPool, isa: Isa, threads: usize, repeats: usize) -> Result<(), String> {
    let n = 1024;
    let a = values(n * n);
    let b = pack_b_for(isa, n, n, &values(n * n), false)?;
    let bias = values(n);
    let epi = Epilogue {
        bias: Some(&bias),
        add: None,
        activation: Activation::Relu,
    };
    let mut c = vec![0.0f32; n * n];
    let t = time(repeats, || {
        pool.install(|| sgemm(n, n, n, &a, n, &b, &mut c, n, &epi))
            .expect("sgemm")
    });
    report(
        "W5 matmul 1024^3 +bias+relu",
        isa,
        threads,
        2.0 * (n * n * n) as f64,
        t,
    );
    Ok(())
}

fn bench_conv(
    pool: &ThreadPool,
    isa: Isa,
    threads: usize,
    repeats: usize,
    c: &Conv,
) -> Result<(), String> {
    let [n, h, w, cin] = c.input;
    let kdim = c.k * c.k * cin;
    // COLD=n: n copies of the packed filter used in turn, so that with n * filter bytes past
    // the L3 every run reads its weights from memory, as in a whole network.
    let copies = std::env::var("COLD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let filters = (0..copies)
        .map(|_| pack_b_for(isa, kdim, c.cout, &values(kdim * c.cout), false))
        .collect::<Result<Vec<_>, _>>()?;
    let mut turn = 0;
    let geom = ConvGeometry::new([h, w], [c.k, c.k], [c.stride; 2], [1, 1], Padding::Same)?;
    let bias = values(c.cout);
    let input = values(n * h * w * cin);
    let m = n * geom.out_h * geom.out_w;
    // ADD=1: a residual of the output's shape added in the epilogue (a ResNet block's last conv).
    let skip = std::env::var_os("ADD").map(|_| values(m * c.cout));
    let epi = Epilogue {
        bias: Some(&bias),
        add: skip.as_deref().map(|data| Residual { data, ld: c.cout }),
        activation: Activation::Relu,
    };
    let mut out = vec![0.0f32; m * c.cout];
    let flops = 2.0 * (m * c.cout * kdim) as f64;
    if std::env::var_os("WINOGRAD_ONLY").is_none() {
        let t = time(repeats, || {
            turn = (turn + 1) % copies;
            let filter = &filters[turn];
            pool.install(|| conv2d_nhwc(&input, c.input, filter, &geom, &mut out, &epi))
                .expect("conv")
        });
        report(&c.name, isa, threads, flops, t);
    }
    // Winograd F(2x2, 3x3) and F(4x4, 3x3) on the same convolution (their kernels are the
    // detected ISA's, so only with that ISA); GFLOP/s are the direct convolution's FLOPs
    // over its time.
    if winograd_applies(&geom)
        && isa == kiln_cpu::gemm::detect()
        && std::env::var_os("DIRECT_ONLY").is_none()
    {
        let only = std::env::var("WINOGRAD_ONLY").unwrap_or_default();
        for (variant, tag) in [
            (WinogradVariant::F2, "wino2"),
            (WinogradVariant::F4, "wino4"),
        ] {
            if (only == "2" || only == "4") && !tag.ends_with(&only) {
                continue;
            }
            let wf = pack_winograd(&values(kdim * c.cout), cin, c.cout, variant)?;
            let t = time(repeats, || {
                pool.install(|| conv2d_winograd(&input, c.input, &wf, &geom, &mut out, &epi))
                    .expect("winograd")
            });
            report(&format!("{} {tag}", c.name), isa, threads, flops, t);
        }
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let repeats = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let only = std::env::args().nth(2);
    let isas: Vec<Isa> = Isa::supported()
        .into_iter()
        .rev()
        .filter(|i| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == i.name()))
        })
        .collect();
    // Third argument: the thread counts to time, comma-separated (default 1,2).
    let thread_counts: Vec<usize> = std::env::args().nth(3).map_or(vec![1, 2], |s| {
        s.split(',').filter_map(|t| t.parse().ok()).collect()
    });
    // Fourth argument: one convolution to time instead of the list.
    let convs: Vec<Conv> = match std::env::args().nth(4) {
        Some(spec) => vec![parse_conv(&spec)?],
        None => CONVS
            .iter()
            .map(|&(name, input, cout, k, stride)| Conv {
                name: name.to_string(),
                input,
                cout,
                k,
                stride,
            })
            .collect(),
    };
    for threads in thread_counts {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| e.to_string())?;
        for &isa in &isas {
            if isa == Isa::Portable && threads == 2 {
                continue;
            }
            if std::env::args().nth(4).is_none() {
                bench_matmul(&pool, isa, threads, repeats)?;
            }
            for c in &convs {
                bench_conv(&pool, isa, threads, repeats, c)?;
            }
        }
    }
    Ok(())
}

/// A convolution from `N,H,W,CIN,COUT,K,STRIDE`.
fn parse_conv(spec: &str) -> Result<Conv, String> {
    let v: Vec<usize> = spec
        .split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("{spec}: not N,H,W,CIN,COUT,K,STRIDE"))
        })
        .collect::<Result<_, _>>()?;
    let [n, h, w, cin, cout, k, stride] = v[..] else {
        return Err(format!(
            "{spec}: expected 7 numbers N,H,W,CIN,COUT,K,STRIDE"
        ));
    };
    Ok(Conv {
        name: format!("conv {n}x{h}x{w}x{cin} {k}x{k} s{stride} ->{cout}"),
        input: [n, h, w, cin],
        cout,
        k,
        stride,
    })
}
