//! Differential tests: random graphs built from the whole op catalogue, run on every available
//! backend and compared with the reference evaluator.
//!
//! Tolerance: |got - want| <= 1e-4 * (1 + |want|) + 1e-5 * max|want| (f32 accumulation and
//! polynomial transcendentals against the f64-accumulating reference); NaN and infinities must
//! match exactly. Each case also checks that feeds are not modified, that two runs give
//! identical bits, and (cpu) that one thread and two threads give identical bits.

use kiln::{
    BackendKind, ConvAttrs, Graph, NodeId, OptimizeOptions, Padding, PoolAttrs, Session, Shape,
    Tensor,
};
use proptest::prelude::*;

/// A small deterministic generator for the parameters of one recipe step.
struct Params(u64);
impl Params {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.next(xs.len() as u64) as usize]
    }
}

const SIZES: [usize; 8] = [1, 2, 3, 4, 5, 7, 13, 16];

/// Builds a graph from a recipe: an input of a random shape, then steps that each add one op
/// to the current value (steps whose shapes do not fit are skipped).
fn build(seed: u64, rank: usize, steps: &[u8]) -> (Graph, NodeId, NodeId, Vec<usize>) {
    let mut p = Params(seed);
    let dims: Vec<usize> = (0..rank).map(|_| p.pick(&SIZES)).collect();
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&dims)).unwrap();
    let mut cur = x;
    let mut counter = 0u64;
    for &step in steps {
        counter += 1;
        let shape: Vec<usize> = g.node(cur).ty.shape.to_dims().unwrap().to_vec();
        let r = shape.len();
        let weight = |g: &mut Graph, d: &[usize], scale: f32| {
            g.constant(
                &format!("w{counter}_{}", g.len()),
                Tensor::normal(d, 0.0, scale, seed ^ counter),
            )
            .unwrap()
        };
        let next = match step % 16 {
            0 => {
                let ops = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
                let u = p.pick(&ops);
                let pos = |g: &mut Graph, c| {
                    g.abs(c).and_then(|a| {
                        let one = g.scalar(0.5)?;
                        g.add(a, one)
                    })
                };
                match u {
                    0 => g.neg(cur),
                    1 => g.abs(cur),
                    2 => g.relu(cur),
                    3 => g.relu6(cur),
                    4 => g.leaky_relu(cur, 0.2),
                    5 => g.sigmoid(cur),
                    6 => g.tanh(cur),
                    7 => g.square(cur),
                    8 => pos(&mut g, cur).and_then(|c| g.log(c)),
                    9 => pos(&mut g, cur).and_then(|c| g.sqrt(c)),
                    10 => pos(&mut g, cur).and_then(|c| g.rsqrt(c)),
                    _ => g.tanh(cur).and_then(|c| g.exp(c)),
                }
            }
            1 | 2 => {
                // A broadcasting operand: a suffix of the shape with some dims set to 1.
                let keep = p.next(r as u64 + 1) as usize;
                let d: Vec<usize> = shape[r - keep..]
                    .iter()
                    .map(|&d| if p.next(3) == 0 { 1 } else { d })
                    .collect();
                let w = weight(&mut g, &d, 1.0);
                let (a, b) = if p.next(2) == 0 { (cur, w) } else { (w, cur) };
                match p.next(6) {
                    0 => g.add(a, b),
                    1 => g.sub(a, b),
                    2 => g.mul(a, b),
                    3 => g.maximum(a, b),
                    4 => g.minimum(a, b),
                    _ => g.abs(b).and_then(|ab| {
                        let one = g.scalar(1.0)?;
                        let d = g.add(ab, one)?;
                        g.div(a, d)
                    }),
                }
            }
            3 if r >= 2 => {
                let b = weight(&mut g, &[shape[r - 1]], 1.0);
                g.bias_add(cur, b)
            }
            4 if r == 2 => {
                let n = p.pick(&SIZES);
                let w = weight(&mut g, &[shape[1], n], 1.0 / (shape[1] as f32).sqrt());
                g.matmul(cur, w)
            }
            5 | 6 if r == 4 => {
                let (kh, kw) = (1 + p.next(3) as usize, 1 + p.next(3) as usize);
                let cout = p.pick(&SIZES);
                let w = weight(
                    &mut g,
                    &[kh, kw, shape[3], cout],
                    1.0 / ((kh * kw * shape[3]) as f32).sqrt(),
                );
                let padding = if p.next(2) == 0 {
                    Padding::Same
                } else {
                    Padding::Valid
                };
                let s = 1 + p.next(2) as usize;
                let attrs = ConvAttrs::with_padding(padding).strides(s, s);
                let attrs = if s == 1 && p.next(3) == 0 {
                    attrs.dilations(2, 2)
                } else {
                    attrs
                };
                g.conv2d(cur, w, attrs)
            }
            7 if r == 4 => {
                let mult = 1 + p.next(2) as usize;
                let w = weight(&mut g, &[3, 3, shape[3], mult], 0.3);
                g.depthwise_conv2d(cur, w, ConvAttrs::same().strides(1 + p.next(2) as usize, 1))
            }
            8 if r == 4 => {
                let k = 1 + p.next(3) as usize;
                let attrs = PoolAttrs::new(
                    k,
                    1 + p.next(2) as usize,
                    if p.next(2) == 0 {
                        Padding::Same
                    } else {
                        Padding::Valid
                    },
                );
                if p.next(2) == 0 {
                    g.max_pool(cur, attrs)
                } else {
                    g.avg_pool(cur, attrs)
                }
            }
            9 => {
                let axis = p.next(r as u64) as i64;
                let keep = p.next(2) == 0;
                match p.next(4) {
                    0 => g.reduce_sum(cur, &[axis], keep),
                    1 => g.reduce_mean(cur, &[axis], keep),
                    2 => g.reduce_max(cur, &[axis], keep),
                    _ => g.reduce_min(cur, &[axis - r as i64], keep),
                }
            }
            10 => {
                let axis = p.next(r as u64) as i64;
                if p.next(2) == 0 {
                    g.softmax(cur, axis)
                } else {
                    g.log_softmax(cur, axis)
                }
            }
            11 if r >= 2 => {
                let mut perm: Vec<usize> = (0..r).collect();
                perm.rotate_left(1 + p.next(r as u64 - 1) as usize);
                g.transpose(cur, &perm)
            }
            12 => {
                let n: usize = shape.iter().product();
                if r >= 2 && p.next(2) == 0 {
                    g.reshape(cur, &[-1])
                } else {
                    g.reshape(cur, &[1, n as i64])
                }
            }
            13 => {
                let begin: Vec<usize> = shape.iter().map(|&d| p.next(d as u64) as usize).collect();
                let size: Vec<i64> = shape
                    .iter()
                    .zip(&begin)
                    .map(|(&d, &b)| {
                        if p.next(2) == 0 {
                            -1
                        } else {
                            1 + p.next((d - b) as u64) as i64
                        }
                    })
                    .collect();
                g.slice(cur, &begin, &size)
            }
            14 => {
                let pads: Vec<[usize; 2]> = (0..r)
                    .map(|_| [p.next(3) as usize, p.next(3) as usize])
                    .collect();
                if p.next(2) == 0 {
                    g.pad(cur, &pads, 0.5)
                } else {
                    g.concat(&[cur, cur], p.next(r as u64) as i64)
                }
            }
            15 if r == 4 => {
                let c = shape[3];
                let scale = weight(&mut g, &[c], 1.0);
                let offset = weight(&mut g, &[c], 1.0);
                let mean = weight(&mut g, &[c], 1.0);
                let var = g
                    .constant(
                        &format!("var{counter}"),
                        Tensor::uniform(&[c], 0.1, 2.0, seed),
                    )
                    .unwrap();
                g.batch_norm(cur, [scale, offset, mean, var], 0.001)
            }
            _ => Ok(cur),
        };
        if let Ok(n) = next {
            let numel: usize = g
                .node(n)
                .ty
                .shape
                .to_dims()
                .map_or(usize::MAX, |d| d.iter().product());
            if numel <= 20_000 {
                cur = n;
            }
        }
    }
    (g, x, cur, dims)
}

fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dims() != want.dims() {
        return Err(format!("dims {:?} vs {:?}", got.dims(), want.dims()));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if b.is_nan() || a.is_nan() {
            a.is_nan() && b.is_nan()
        } else if b.is_infinite() || a.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()) + 1e-5 * scale
        };
        if !ok {
            return Err(format!("element {i}: got {a}, want {b}"));
        }
    }
    Ok(())
}

fn check_case(seed: u64, rank: usize, steps: &[u8]) -> Result<(), String> {
    let (g, x, y, dims) = build(seed, rank, steps);
    let input = Tensor::uniform(&dims, -2.0, 2.0, seed);
    let snapshot = input.clone();
    // The oracle: the graph as written, on the reference evaluator, no passes.
    let unoptimized = OptimizeOptions {
        enabled: false,
        ..OptimizeOptions::default()
    };
    let mut reference = Session::with_options(&g, BackendKind::Reference, unoptimized)
        .map_err(|e| e.to_string())?;
    let want = reference
        .run(&[(x, &input)], &[y])
        .map_err(|e| e.to_string())?;
    // Every backend with its pass pipeline (the reference backend too: that checks the passes).
    for backend in BackendKind::available() {
        let mut sess = Session::with_backend(&g, backend.clone()).map_err(|e| e.to_string())?;
        let got = sess
            .run(&[(x, &input)], &[y])
            .map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        close(&got[0], &want[0]).map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        let again = sess.run(&[(x, &input)], &[y]).map_err(|e| e.to_string())?;
        if again[0] != got[0] {
            return Err(format!("{backend}: two runs differ\n{}", g.to_text()));
        }
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = one_thread
            .install(|| sess.run(&[(x, &input)], &[y]))
            .map_err(|e| e.to_string())?;
        if single[0] != got[0] {
            return Err(format!(
                "{backend}: 1 thread and the default pool differ\n{}",
                g.to_text()
            ));
        }
    }
    if input != snapshot {
        return Err("a backend modified its feed".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_graphs_agree_with_the_reference(
        seed in any::<u64>(),
        rank in 1usize..=4,
        steps in proptest::collection::vec(any::<u8>(), 1..7),
    ) {
        if let Err(e) = check_case(seed, rank, &steps) {
            prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn convolution_heavy_graphs_agree() {
    // Rank-4 recipes dominated by conv/depthwise/pool/batch_norm steps.
    for seed in 0..40u64 {
        let steps = [5u8, 3, 0, 8, 6, 15, 7, 10];
        check_case(seed, 4, &steps[..(seed as usize % 8) + 1]).unwrap();
    }
}
