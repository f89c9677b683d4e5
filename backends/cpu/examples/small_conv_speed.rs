//! Timing harness for convolutions with few channels: first layers on RGB input, thin and
//! grouped 1x1 layers (SqueezeNet, ShuffleNet, MobileNet-v2 shapes), bias + relu fused.
//!
//! `cargo run --release -p kiln-cpu --example small_conv_speed [repeats] [threads] [name part]`
//! Prints the median and best time of `repeats` runs (default 50) on the ISA `detect()`
//! picks (lower it with `KILN_CPU_FEATURES`).

use kiln_cpu::gemm::{
    Activation, ConvGeometry, Epilogue, conv2d_nhwc_grouped, detect, pack_conv_groups,
};
use kiln_ir::op::Padding;
use std::time::Instant;

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
        .collect()
}

/// name, NHWC input, cout, square filter, stride, padding, groups
type Shape = (
    &'static str,
    [usize; 4],
    usize,
    usize,
    usize,
    Padding,
    usize,
);

const SHAPES: [Shape; 11] = [
    (
        "sqz expand3 55x55x16 3x3 ->64",
        [1, 55, 55, 16],
        64,
        3,
        1,
        Padding::Same,
        1,
    ),
    (
        "sqz conv1 224x224x3 3x3 s2 ->64",
        [1, 224, 224, 3],
        64,
        3,
        2,
        Padding::Valid,
        1,
    ),
    (
        "shuf conv1 224x224x3 3x3 s2 ->24",
        [1, 224, 224, 3],
        24,
        3,
        2,
        Padding::Same,
        1,
    ),
    (
        "w4 conv1 16x32x32x3 3x3 ->32",
        [16, 32, 32, 3],
        32,
        3,
        1,
        Padding::Same,
        1,
    ),
    (
        "r18 conv1 224x224x3 7x7 s2 ->64",
        [1, 224, 224, 3],
        64,
        7,
        2,
        Padding::Same,
        1,
    ),
    (
        "shuf 1x1 28x28x136 g4 ->136",
        [1, 28, 28, 136],
        136,
        1,
        1,
        Padding::Same,
        4,
    ),
    (
        "shuf 1x1 14x14x272 g4 ->272",
        [1, 14, 14, 272],
        272,
        1,
        1,
        Padding::Same,
        4,
    ),
    (
        "sqz squeeze 55x55x128 ->16",
        [1, 55, 55, 128],
        16,
        1,
        1,
        Padding::Same,
        1,
    ),
    (
        "sqz expand 55x55x16 ->64",
        [1, 55, 55, 16],
        64,
        1,
        1,
        Padding::Same,
        1,
    ),
    (
        "sqz squeeze 27x27x256 ->32",
        [1, 27, 27, 256],
        32,
        1,
        1,
        Padding::Same,
        1,
    ),
    (
        "mnv2 112x112x32 ->16",
        [1, 112, 112, 32],
        16,
        1,
        1,
        Padding::Same,
        1,
    ),
];

fn main() -> Result<(), String> {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    let only = std::env::args().nth(3).unwrap_or_default();
    for (name, input, cout, k, stride, padding, groups) in SHAPES {
        if !name.contains(only.as_str()) {
            continue;
        }
        let [n, h, w, cin] = input;
        let depth = k * k * cin / groups;
        let filters = pack_conv_groups(&values(depth * cout), depth, cout, groups)?;
        let geom = ConvGeometry::new([h, w], [k, k], [stride; 2], [1, 1], padding)?;
        let bias = values(cout);
        let epi = Epilogue {
            bias: Some(&bias),
            add: None,
            activation: Activation::Relu,
        };
        let x = values(n * h * w * cin);
        let m = n * geom.out_h * geom.out_w;
        let mut out = vec![0.0f32; m * cout];
        let mut run = || {
            pool.install(|| conv2d_nhwc_grouped(&x, input, &filters, &geom, &mut out, &epi))
                .expect("conv")
        };
        run();
        let mut times: Vec<f64> = (0..repeats)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let flops = 2.0 * (m * cout * depth) as f64;
        let (med, best) = (times[repeats / 2], times[0]);
        println!(
            "{name:<36} {:<8} {threads} thr  median {:>7.3} ms {:>6.1} GFLOP/s  best {:>7.3} ms {:>6.1} GFLOP/s",
            detect().name(),
            med * 1e3,
            flops / med / 1e9,
            best * 1e3,
            flops / best / 1e9
        );
    }
    Ok(())
}
