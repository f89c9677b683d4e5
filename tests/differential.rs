//! Differential tests: random graphs built from the whole op catalogue, run on every available
//! backend and compared with the reference evaluator.
//!
//! Tolerance: |got - want| <= 1e-4 * (1 + |want|) + 1e-5 * max|want| (f32 accumulation and
//! polynomial transcendentals against the f64-accumulating reference); NaN and infinities must
//! match exactly. Each case also checks that feeds are not modified, that two runs give
//! identical bits, and (cpu) that one thread and two threads give identical bits.

use kiln::{
    BackendKind, ConvAttrs, DType, Data, Graph, NodeId, OptimizeOptions, Padding, PoolAttrs,
    Session, Shape, Tensor,
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
        let next = match step % 20 {
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
                // Sometimes grouped: x's channels split into `groups` blocks of `cin`.
                let divisors: Vec<usize> = (2..=shape[3])
                    .filter(|&d| shape[3].is_multiple_of(d))
                    .collect();
                let groups = if !divisors.is_empty() && p.next(3) == 0 {
                    p.pick(&divisors)
                } else {
                    1
                };
                let cin = shape[3] / groups;
                let cout = if groups > 1 {
                    groups * (1 + p.next(3) as usize)
                } else {
                    p.pick(&SIZES)
                };
                let w = weight(
                    &mut g,
                    &[kh, kw, cin, cout],
                    1.0 / ((kh * kw * cin) as f32).sqrt(),
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
            16 if r == 4 => {
                let radius = p.pick(&[0usize, 1, 2, 5]);
                let bias = p.pick(&[1.0f32, 2.0, 0.5]);
                let alpha = p.pick(&[1.0f32, 0.1, 1e-4]);
                let beta = p.pick(&[0.5f32, 0.75, 1.0]);
                g.lrn(cur, radius, bias, alpha, beta)
            }
            // argmax and cast read the feed itself: on computed values a difference in the
            // last bit between backends could flip a near-tie or a truncation, while feeds
            // are the same bits everywhere. The result replaces the current value.
            17 => {
                let axis = p.next(r as u64) as i64 - if p.next(2) == 0 { 0 } else { r as i64 };
                let ty = p.pick(&[DType::I32, DType::I64]);
                g.argmax(x, axis, ty).and_then(|i| g.cast(i, DType::F32))
            }
            18 if r >= 1 => {
                let axis = p.next(r as u64) as usize;
                let n = shape[axis] as i64;
                let count = p.pick(&[0usize, 1, 2, 3, 5]);
                let idx: Vec<i64> = (0..count.max(1))
                    .map(|_| p.next(2 * n as u64) as i64 - n)
                    .collect();
                // count 0 means a scalar index (the axis is dropped).
                let dims: &[usize] = if count == 0 { &[] } else { &[count] };
                let indices = if p.next(2) == 0 {
                    let v = idx.iter().map(|&i| i as i32).collect();
                    Tensor::new(dims, Data::I32(v))
                } else {
                    Tensor::new(dims, Data::I64(idx))
                };
                let indices = g
                    .constant(&format!("idx{counter}"), indices.unwrap())
                    .unwrap();
                g.gather(
                    cur,
                    indices,
                    axis as i64 - if p.next(2) == 0 { 0 } else { r as i64 },
                )
            }
            19 => {
                let to = p.pick(&[DType::I32, DType::I64, DType::Bool]);
                g.cast(x, to).and_then(|c| g.cast(c, DType::F32))
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

#[test]
fn catalogue_additions_agree() {
    // Recipes built around lrn (16), argmax (17), gather (18), cast (19) and (grouped) conv.
    let recipes: [&[u8]; 6] = [
        &[5, 16, 0],
        &[18, 16, 18, 3],
        &[17, 18, 0],
        &[19, 5, 16],
        &[6, 18, 9, 17],
        &[5, 6, 16, 18, 10],
    ];
    for seed in 0..30u64 {
        for (i, recipe) in recipes.iter().enumerate() {
            let rank = if i % 2 == 0 {
                4
            } else {
                1 + (seed as usize % 4)
            };
            check_case(seed, rank, recipe).unwrap();
        }
    }
}

/// Runs `y` on the unoptimised reference and on every backend; all must agree.
fn agree(g: &Graph, feeds: &[(NodeId, &Tensor)], y: NodeId) -> Result<(), String> {
    let unoptimized = OptimizeOptions {
        enabled: false,
        ..OptimizeOptions::default()
    };
    let mut reference =
        Session::with_options(g, BackendKind::Reference, unoptimized).map_err(|e| e.to_string())?;
    let want = reference.run(feeds, &[y]).map_err(|e| e.to_string())?;
    for backend in BackendKind::available() {
        let mut sess = Session::with_backend(g, backend.clone()).map_err(|e| e.to_string())?;
        let got = sess
            .run(feeds, &[y])
            .map_err(|e| format!("{backend}: {e}"))?;
        close(&got[0], &want[0]).map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
    }
    Ok(())
}

#[test]
fn grouped_convolutions_agree() {
    use kiln::DataFormat;
    // (x dims NHWC, kernel, cin per group, groups, cout, stride, padding, NCHW, weights fed)
    let cases = [
        ([1, 9, 8, 4], 3, 2, 2, 6, 2, Padding::Same, false, false),
        ([2, 7, 7, 8], 3, 2, 4, 8, 2, Padding::Valid, false, false),
        ([1, 6, 6, 64], 3, 32, 2, 16, 1, Padding::Same, false, true),
        ([1, 5, 5, 6], 1, 3, 2, 4, 1, Padding::Valid, false, false),
        ([1, 6, 5, 6], 3, 2, 3, 6, 2, Padding::Same, true, false),
        ([2, 4, 4, 4], 2, 1, 4, 8, 1, Padding::Valid, true, true),
    ];
    for (i, &(xd, k, cin, groups, cout, s, pad, nchw, fed)) in cases.iter().enumerate() {
        let mut g = Graph::new();
        let dims: Vec<usize> = if nchw {
            vec![xd[0], xd[3], xd[1], xd[2]]
        } else {
            xd.to_vec()
        };
        assert_eq!(xd[3], cin * groups);
        let x = g.input("x", Shape::known(&dims)).unwrap();
        let wv = Tensor::normal(&[k, k, cin, cout], 0.0, 0.5, i as u64);
        let w = if fed {
            g.input("w", Shape::known(&[k, k, cin, cout])).unwrap()
        } else {
            g.constant("w", wv.clone()).unwrap()
        };
        let mut attrs = ConvAttrs::with_padding(pad).strides(s, s);
        if nchw {
            attrs = attrs.format(DataFormat::Nchw);
        }
        let c = g.conv2d(x, w, attrs).unwrap();
        // A bias and relu the GEMM path folds into its store (NHWC), per group slice.
        let y = if nchw {
            c
        } else {
            let b = g
                .constant("b", Tensor::uniform(&[cout], -1.0, 1.0, 7))
                .unwrap();
            let biased = g.bias_add(c, b).unwrap();
            g.relu(biased).unwrap()
        };
        let input = Tensor::uniform(&dims, -2.0, 2.0, 100 + i as u64);
        let mut feeds = vec![(x, &input)];
        if fed {
            feeds.push((w, &wv));
        }
        agree(&g, &feeds, y).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn gather_with_a_bad_index_fails_the_run() {
    let mut g = Graph::new();
    let p = g.input("p", Shape::known(&[3, 4])).unwrap();
    let idx = g
        .input_typed("idx", DType::I64, Shape::known(&[2]))
        .unwrap();
    let y = g.gather(p, idx, 1).unwrap();
    let params = Tensor::uniform(&[3, 4], -1.0, 1.0, 1);
    let good = Tensor::new(&[2], Data::I64(vec![-1, 2])).unwrap();
    agree(&g, &[(p, &params), (idx, &good)], y).unwrap();
    let bad = Tensor::new(&[2], Data::I64(vec![1, 4])).unwrap();
    for backend in BackendKind::available() {
        let mut sess = Session::with_backend(&g, backend.clone()).unwrap();
        let err = sess.run(&[(p, &params), (idx, &bad)], &[y]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("index 4") && msg.contains("size 4") && msg.contains("gather"),
            "{backend}: {msg}"
        );
        // The session still works afterwards.
        sess.run(&[(p, &params), (idx, &good)], &[y]).unwrap();
    }
}
