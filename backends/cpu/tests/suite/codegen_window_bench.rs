//! Timing of the seed convolution (1x100x100x1 image, 5x5x1x1 filter, SAME, NHWC), single
//! threaded. Ignored by default; run with
//! `cargo test --release -p kiln-cpu --test suite -- codegen_window_bench:: --ignored --nocapture`.

use std::time::Instant;

use kiln_cpu::codegen::window::define_window;
use kiln_cpu::jit::Jit;
use kiln_ir::backend::CompileRequest;
use kiln_ir::eval::eval_op;
use kiln_ir::lower::lower;
use kiln_ir::op::{ConvAttrs, Op};
use kiln_ir::{Graph, Shape, Tensor, TensorType};

#[test]
#[ignore]
fn seed_conv_timing() {
    time_conv(
        &[1, 100, 100, 1],
        ConvAttrs::same(),
        "seed conv 1x100x100x1 * 5x5x1x1 SAME",
    );
    time_conv(
        &[1, 104, 104, 1],
        ConvAttrs::valid(),
        "interior only 1x104x104x1 * 5x5x1x1 VALID",
    );
    // Calibration: the same interior computation as plain Rust (rustc auto-vectorises it).
    let x = Tensor::uniform(&[104, 104], -1.0, 1.0, 1)
        .into_f32()
        .unwrap();
    let w = Tensor::uniform(&[25], -1.0, 1.0, 2).into_f32().unwrap();
    let mut out = vec![0.0f32; 100 * 100];
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        for oy in 0..100 {
            let o = &mut out[oy * 100..oy * 100 + 100];
            o.fill(0.0);
            for ky in 0..5 {
                for kx in 0..5 {
                    let wv = w[ky * 5 + kx];
                    let row = &x[(oy + ky) * 104 + kx..(oy + ky) * 104 + kx + 100];
                    for (a, &v) in o.iter_mut().zip(row) {
                        *a += v * wv;
                    }
                }
            }
        }
        std::hint::black_box(&mut out);
    }
    println!(
        "rust calibration loop: {:.2} us",
        t.elapsed().as_secs_f64() / reps as f64 * 1e6
    );
}

fn time_conv(dims: &[usize], attrs: ConvAttrs, what: &str) {
    let x = Tensor::uniform(dims, -1.0, 1.0, 1);
    let w = Tensor::uniform(&[5, 5, 1, 1], -1.0, 1.0, 2);
    let mut g = Graph::new();
    let xi = g
        .add("x", Op::Input(TensorType::f32(Shape::known(x.dims()))), &[])
        .unwrap();
    let wi = g
        .add("w", Op::Input(TensorType::f32(Shape::known(w.dims()))), &[])
        .unwrap();
    let op = Op::Conv2d(attrs);
    let y = g.add("y", op.clone(), &[xi, wi]).unwrap();
    let req = CompileRequest {
        graph: &g,
        feeds: vec![xi, wi],
        variables: vec![],
        fetches: vec![y],
        targets: vec![],
    };
    let p = lower(&req).unwrap();
    let k = p.kernels.iter().find(|k| k.op_name() == "conv2d").unwrap();
    let mut jit = Jit::new().unwrap();
    let id = define_window(&mut jit, &p, k).unwrap();
    let kernel = jit.finish().unwrap().kernel(id).unwrap();
    let mut xv = x.as_f32().unwrap().to_vec();
    let mut wv = w.as_f32().unwrap().to_vec();
    let mut out = vec![0.0f32; 100 * 100];
    let ptrs = [
        xv.as_mut_ptr().cast(),
        wv.as_mut_ptr().cast(),
        out.as_mut_ptr().cast(),
    ];
    let want = eval_op(&op, &[&x, &w]).unwrap();
    let mut times = Vec::new();
    for _ in 0..50 {
        let reps = 200;
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: the buffers have the program's extents.
            unsafe { kernel.call(&ptrs).unwrap() };
        }
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    // On a shared machine wall time includes time spent descheduled; the thread's on-CPU time
    // (Linux schedstat, ns) does not.
    let reps = 20_000;
    let cpu0 = on_cpu_ns();
    for _ in 0..reps {
        // SAFETY: as above.
        unsafe { kernel.call(&ptrs).unwrap() };
    }
    let cpu = on_cpu_ns()
        .zip(cpu0)
        .map(|(b, a)| (b - a) as f64 / reps as f64 / 1e3);
    let max_err = out
        .iter()
        .zip(want.as_f32().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "{what}: wall min {:.2} us, median {:.2} us; on-CPU {cpu:.2?} us (max abs err {max_err:e})",
        times[0] * 1e6,
        times[times.len() / 2] * 1e6
    );
    assert!(max_err < 1e-4);
}

/// This thread's time on a CPU in nanoseconds, where Linux reports it.
fn on_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}
