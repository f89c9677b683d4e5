//! The seed case: a 5x5 SAME convolution of 100x100 images, written as the plain nested loop
//! that `scipy.signal.convolve2d(image, kernel, mode="same")` computes, against the same
//! convolution as a kiln graph (TensorFlow graph mode: a placeholder of unknown batch, a
//! variable kernel, one compiled program per batch size). Both are timed at a few batch sizes,
//! their results compared, and the speed-up printed.
//!
//! `cargo run --release --example seed_conv` (CI runs it in a debug build, so it stays small).

use kiln::{ConvAttrs, Graph, Session, Shape, Tensor};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Image side and kernel side, as in the seed case.
const SIDE: usize = 100;
const K: usize = 5;

/// `convolve2d(image, kernel, mode="same")` for every image of a `[batch, SIDE, SIDE]` stack:
/// a true convolution (the kernel flipped), zero outside the image, centred on the output.
fn convolve2d_same(images: &[f32], kernel: &[f32], batch: usize) -> Vec<f32> {
    let half = K / 2;
    let mut out = vec![0.0f32; batch * SIDE * SIDE];
    for b in 0..batch {
        let image = &images[b * SIDE * SIDE..(b + 1) * SIDE * SIDE];
        for i in 0..SIDE {
            for j in 0..SIDE {
                let mut sum = 0.0f32;
                for m in 0..K {
                    for n in 0..K {
                        // image[i + half - m][j + half - n], zero outside.
                        let (Some(y), Some(x)) = (
                            (i + half).checked_sub(m).filter(|&y| y < SIDE),
                            (j + half).checked_sub(n).filter(|&x| x < SIDE),
                        ) else {
                            continue;
                        };
                        sum += image[y * SIDE + x] * kernel[m * K + n];
                    }
                }
                out[b * SIDE * SIDE + i * SIDE + j] = sum;
            }
        }
    }
    out
}

/// The fastest of `reps` timings of `f` (the least disturbed by anything else running).
fn fastest<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..reps {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        last = Some(value);
    }
    (best, last.expect("at least one repetition"))
}

fn run() -> Result<(), kiln::Error> {
    let kernel = Tensor::normal(&[K, K], 0.0, 1.0, 42);
    let k = kernel.f32s()?.to_vec();
    // conv2d (TensorFlow's) is a cross-correlation: the same result takes the kernel flipped.
    let flipped: Vec<f32> = (0..K * K).map(|i| k[K * K - 1 - i]).collect();

    let mut g = Graph::new();
    let image = g.input("image", Shape::of(&[None, Some(SIDE), Some(SIDE), Some(1)]))?;
    let w = g.var("kernel", Tensor::from_vec(&[K, K, 1, 1], flipped)?)?;
    let conv = g.named("conv").conv2d(image, w, ConvAttrs::same())?;
    let sess = Session::new(&g)?;

    println!(
        "5x5 SAME convolution of {SIDE}x{SIDE} images on kiln's {} backend",
        sess.backend()
    );
    println!(
        "{:>6} {:>14} {:>12} {:>9} {:>12}",
        "batch", "nested loop ms", "kiln ms", "speed-up", "max |diff|"
    );
    for batch in [1, 4, 16] {
        let images = Tensor::uniform(&[batch, SIDE, SIDE, 1], 0.0, 1.0, batch as u64);
        let pixels = images.f32s()?;
        let (loop_time, expected) = fastest(3, || convolve2d_same(pixels, &k, batch));
        // The first run at a new batch size compiles; time the runs after it.
        sess.run(&[(image, &images)], &[conv])?;
        let (kiln_time, got) = fastest(5, || sess.run(&[(image, &images)], &[conv]));
        let got = got?;
        let diff = got[0]
            .f32s()?
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if diff > 1e-3 {
            return Err(kiln::Error::Invalid(format!(
                "batch {batch}: kiln and the nested loop differ by {diff}"
            )));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{batch:>6} {:>14.3} {:>12.3} {:>8.1}x {diff:>12.2e}",
            ms(loop_time),
            ms(kiln_time),
            loop_time.as_secs_f64() / kiln_time.as_secs_f64().max(1e-9),
        );
    }
    println!(
        "{} compilations: one per batch size, none for a repeated one",
        sess.compilations()
    );
    Ok(())
}

/// Errors are printed with Display, not as the Debug value a `main` returning `Result` prints.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
