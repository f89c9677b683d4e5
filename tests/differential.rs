//! Differential tests: random graphs built from the whole op catalogue, run on every available
//! backend and compared with the reference evaluator.
//!
//! Tolerance: `Tolerance::KERNEL` of `kiln::ir::compare`, |got - want| <= 1e-4 * (1 + |want|) +
//! 1e-5 * max|want| (f32 accumulation and polynomial transcendentals against the
//! f64-accumulating reference); dtypes must be equal, NaN and infinities must match exactly.
//! Each case also checks that feeds are not modified, that two runs give identical bits, and
//! (cpu) that one thread and two threads give identical bits.
//!
//! Every recipe step adds an op the output depends on (a step that cannot apply is replaced by
//! the next kind that can), and each test asserts how many steps of which kinds it applied, so
//! a regression that drops steps fails instead of testing smaller graphs.

use kiln::ir::compare::{Tolerance, check_close};
use kiln::{
    BackendKind, ConvAttrs, DType, Data, Graph, NodeId, OptimizeOptions, Padding, PoolAttrs,
    Session, Shape, Tensor,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;

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

/// How many step kinds a recipe byte selects from (`byte % KINDS`).
const KINDS: usize = 20;

/// The largest value a step may produce; a step making more is not applied.
const MAX_NUMEL: usize = 20_000;

/// A graph built from a recipe, with what it took to build it.
struct Built {
    graph: Graph,
    /// The first input, `x`, and every feed (`x` first), with its value.
    feeds: Vec<(NodeId, Tensor)>,
    /// The output: the value after the last step.
    y: NodeId,
    /// Each recipe step's kind of op and the node it made, in order; a step whose own kind could
    /// not apply (rank, shapes, size) applied the next kind that could.
    applied: Vec<(usize, NodeId)>,
    /// How many steps applied the kind their recipe byte named.
    as_chosen: usize,
}

impl Built {
    /// Fails unless every recipe step added an op that `y` depends on: otherwise a graph could
    /// shrink towards `y = x`, or a step could discard the ones before it, and pass while
    /// testing nothing.
    fn check_every_step_applied(&self, steps: &[u8]) -> Result<(), String> {
        let graph = &self.graph;
        if self.applied.len() != steps.len() {
            return Err(format!(
                "applied {} of {} recipe steps {steps:?}: steps were dropped\n{}",
                self.applied.len(),
                steps.len(),
                graph.to_text()
            ));
        }
        let on_path: HashSet<NodeId> = graph.topo_order_of([self.y]).into_iter().collect();
        if let Some(i) = self.applied.iter().position(|(_, n)| !on_path.contains(n)) {
            let (kind, node) = self.applied[i];
            return Err(format!(
                "step {i} (kind {kind}, %{}) does not reach the output %{}: a later step \
                 discarded it\n{}",
                graph.node(node).name,
                graph.node(self.y).name,
                graph.to_text()
            ));
        }
        Ok(())
    }
}

/// Step counts over many recipes.
#[derive(Default)]
struct Tally {
    steps: usize,
    as_chosen: usize,
    per_kind: [usize; KINDS],
}

impl Tally {
    fn add(&mut self, built: &Built) {
        self.steps += built.applied.len();
        self.as_chosen += built.as_chosen;
        for &(kind, _) in &built.applied {
            self.per_kind[kind] += 1;
        }
    }

    /// Fails unless each of `kinds` was applied at least `floor` times and at least `share` of
    /// all steps applied the kind their recipe byte named: a builder regression that makes a
    /// kind fail (and so be replaced) shows here.
    fn check(
        &self,
        kinds: impl IntoIterator<Item = usize>,
        floor: usize,
        share: f64,
    ) -> Result<(), String> {
        let rare: Vec<usize> = kinds
            .into_iter()
            .filter(|&k| self.per_kind[k] < floor)
            .collect();
        if !rare.is_empty() || (self.as_chosen as f64) < share * self.steps as f64 {
            return Err(format!(
                "step kinds {rare:?} applied fewer than {floor} times, or under {share} of \
                 steps as chosen: {self}"
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps, {} as chosen, per kind {:?}",
            self.steps, self.as_chosen, self.per_kind
        )
    }
}

/// Builds a graph from a recipe: an input `x` of a random shape, then one op per step on the
/// current value. A step whose kind cannot apply (a rank it needs, a builder error such as a
/// valid convolution larger than its input, a result over `max_numel` elements) applies the
/// next kind that can, so every step adds an op; [`Built::applied`] records what each added.
fn build(seed: u64, rank: usize, steps: &[u8], max_numel: usize) -> Built {
    let mut p = Params(seed);
    let dims: Vec<usize> = (0..rank).map(|_| p.pick(&SIZES)).collect();
    let mut g = Graph::new();
    let x = g.input("x", Shape::known(&dims)).unwrap();
    let mut feeds = vec![(x, Tensor::uniform(&dims, -2.0, 2.0, seed))];
    let (mut cur, mut applied, mut as_chosen) = (x, Vec::new(), 0);
    for (counter, &byte) in steps.iter().enumerate() {
        let chosen = byte as usize % KINDS;
        let tries = (0..KINDS).map(|k| (chosen + k) % KINDS);
        let mut step = Step {
            g: &mut g,
            feeds: &mut feeds,
            p: &mut p,
            seed,
            counter: counter as u64 + 1,
        };
        let Some((kind, next)) = tries
            .filter_map(|kind| {
                let n = step.apply(kind, cur)?;
                let numel = step
                    .g
                    .node(n)
                    .ty
                    .shape
                    .to_dims()
                    .map(|d| d.iter().product());
                (numel.is_some_and(|n: usize| n <= max_numel)).then_some((kind, n))
            })
            .next()
        else {
            continue;
        };
        as_chosen += usize::from(kind == chosen);
        applied.push((kind, next));
        cur = next;
    }
    Built {
        graph: g,
        feeds,
        y: cur,
        applied,
        as_chosen,
    }
}

/// What one step may touch while adding its op.
struct Step<'a> {
    g: &'a mut Graph,
    feeds: &'a mut Vec<(NodeId, Tensor)>,
    p: &'a mut Params,
    seed: u64,
    counter: u64,
}

impl Step<'_> {
    /// Adds one op of `kind` on `cur`; `None` when this kind cannot apply to `cur`.
    fn apply(&mut self, kind: usize, cur: NodeId) -> Option<NodeId> {
        let (g, feeds, p) = (&mut *self.g, &mut *self.feeds, &mut *self.p);
        let (seed, counter) = (self.seed, self.counter);
        let shape: Vec<usize> = g.node(cur).ty.shape.to_dims().unwrap().to_vec();
        let r = shape.len();
        let weight = |g: &mut Graph, d: &[usize], scale: f32| {
            g.constant(
                &format!("w{counter}_{}", g.len()),
                Tensor::normal(d, 0.0, scale, seed ^ counter),
            )
            .unwrap()
        };
        // A new f32 input of `d`, uniform in [-3, 3): bits every backend sees alike.
        let mut feed = |g: &mut Graph, d: &[usize]| {
            let id = g.input(&format!("f{counter}_{}", g.len()), Shape::known(d))?;
            feeds.push((id, Tensor::uniform(d, -3.0, 3.0, seed ^ (counter << 32))));
            Ok::<_, kiln::Error>(id)
        };
        let next = match kind {
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
                    8 => pos(g, cur).and_then(|c| g.log(c)),
                    9 => pos(g, cur).and_then(|c| g.sqrt(c)),
                    10 => pos(g, cur).and_then(|c| g.rsqrt(c)),
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
                let w = weight(g, &d, 1.0);
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
                let b = weight(g, &[shape[r - 1]], 1.0);
                g.bias_add(cur, b)
            }
            4 if r == 2 => {
                let n = p.pick(&SIZES);
                let w = weight(g, &[shape[1], n], 1.0 / (shape[1] as f32).sqrt());
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
                    g,
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
                let w = weight(g, &[3, 3, shape[3], mult], 0.3);
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
                let scale = weight(g, &[c], 1.0);
                let offset = weight(g, &[c], 1.0);
                let mean = weight(g, &[c], 1.0);
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
            // argmax and cast read a new feed of the current value's shape and add their result
            // to the current value: on computed values a last-bit difference between backends
            // could flip a near-tie or a truncation, while a feed has the same bits everywhere.
            17 if r >= 1 => {
                let axis = p.next(r as u64) as usize;
                let signed = axis as i64 - if p.next(2) == 0 { 0 } else { r as i64 };
                let ty = p.pick(&[DType::I32, DType::I64]);
                // argmax drops the axis; reshaping it back to 1 broadcasts it over `cur`.
                let mut kept: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                kept[axis] = 1;
                feed(g, &shape)
                    .and_then(|f| g.argmax(f, signed, ty))
                    .and_then(|i| g.cast(i, DType::F32))
                    .and_then(|i| g.reshape(i, &kept))
                    .and_then(|i| g.add(cur, i))
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
                feed(g, &shape)
                    .and_then(|f| g.cast(f, to))
                    .and_then(|c| g.cast(c, DType::F32))
                    .and_then(|c| g.add(cur, c))
            }
            _ => return None,
        };
        next.ok()
    }
}

/// The differential tolerance, also the OpenCL tests': see the module doc.
fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    check_close(got, want, Tolerance::KERNEL).map_err(|m| m.to_string())
}

/// Builds the recipe's graph, checks every step added an op, and runs it on every backend
/// against the unoptimised reference; returns the graph as built (for its step counts).
fn check_case(seed: u64, rank: usize, steps: &[u8]) -> Result<Built, String> {
    let built = build(seed, rank, steps, MAX_NUMEL);
    built.check_every_step_applied(steps)?;
    let (g, y) = (&built.graph, built.y);
    let feeds: Vec<(NodeId, &Tensor)> = built.feeds.iter().map(|(n, t)| (*n, t)).collect();
    let snapshot = built.feeds.clone();
    // The oracle: the graph as written, on the reference evaluator, no passes.
    let unoptimized = OptimizeOptions {
        enabled: false,
        ..OptimizeOptions::default()
    };
    let mut reference =
        Session::with_options(g, BackendKind::Reference, unoptimized).map_err(|e| e.to_string())?;
    let want = reference.run(&feeds, &[y]).map_err(|e| e.to_string())?;
    // Every backend with its pass pipeline (the reference backend too: that checks the passes).
    for backend in BackendKind::available() {
        let mut sess = Session::with_backend(g, backend.clone()).map_err(|e| e.to_string())?;
        let got = sess
            .run(&feeds, &[y])
            .map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        close(&got[0], &want[0]).map_err(|e| format!("{backend}: {e}\n{}", g.to_text()))?;
        let again = sess.run(&feeds, &[y]).map_err(|e| e.to_string())?;
        if again[0] != got[0] {
            return Err(format!("{backend}: two runs differ\n{}", g.to_text()));
        }
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = one_thread
            .install(|| sess.run(&feeds, &[y]))
            .map_err(|e| e.to_string())?;
        if single[0] != got[0] {
            return Err(format!(
                "{backend}: 1 thread and the default pool differ\n{}",
                g.to_text()
            ));
        }
    }
    if built.feeds != snapshot {
        return Err("a backend modified its feed".into());
    }
    Ok(built)
}

/// Prints a tally on stderr (not captured, so a passing run shows it too).
fn report(test: &str, tally: &Tally) {
    let _ = writeln!(std::io::stderr(), "{test}: {tally}");
}

#[test]
fn random_graphs_agree_with_the_reference() {
    let config = ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let recipes = (
        any::<u64>(),
        1usize..=4,
        proptest::collection::vec(any::<u8>(), 1..7),
    );
    let tally = RefCell::new(Tally::default());
    let result = TestRunner::new(config).run(&recipes, |(seed, rank, steps)| {
        let built = check_case(seed, rank, &steps).map_err(TestCaseError::fail)?;
        tally.borrow_mut().add(&built);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner();
    report("random graphs", &tally);
    // 512 recipes of 1 to 6 steps: about 1800 steps, about 2/3 as chosen; the rarest kinds
    // (matmul at rank 2, pooling and lrn at rank 4) about 12 times each.
    assert!(tally.steps >= 512, "{tally}");
    tally.check(0..KINDS, 1, 0.5).unwrap();
}

#[test]
fn convolution_heavy_graphs_agree() {
    // Rank-4 recipes dominated by conv/depthwise/pool/batch_norm steps.
    let mut tally = Tally::default();
    for seed in 0..40u64 {
        let steps = [5u8, 3, 0, 8, 6, 15, 7, 10];
        tally.add(&check_case(seed, 4, &steps[..(seed as usize % 8) + 1]).unwrap());
    }
    report("convolution-heavy graphs", &tally);
    assert_eq!(tally.steps, 5 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8));
    tally.check([5, 6, 7, 8, 15], 10, 0.8).unwrap();
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
    let mut tally = Tally::default();
    for seed in 0..30u64 {
        for (i, recipe) in recipes.iter().enumerate() {
            let rank = if i % 2 == 0 {
                4
            } else {
                1 + (seed as usize % 4)
            };
            tally.add(&check_case(seed, rank, recipe).unwrap());
        }
    }
    report("catalogue additions", &tally);
    // Odd recipes start at rank 1 to 4, where the rank-4 kinds are replaced: 72% as chosen.
    tally.check([5, 6, 16, 17, 18, 19], 20, 0.65).unwrap();
}

#[test]
fn a_graph_with_dropped_or_discarded_steps_fails_the_step_check() {
    let steps = [2u8, 19, 16];
    let built = build(3, 4, &steps, MAX_NUMEL);
    built.check_every_step_applied(&steps).unwrap();
    assert_eq!(built.applied.len(), 3);
    // No room for any result: every step is dropped and the graph is `y = x`.
    let dropped = build(3, 4, &steps, 0);
    assert_eq!(dropped.y, dropped.feeds[0].0);
    let err = dropped.check_every_step_applied(&steps).unwrap_err();
    assert!(err.starts_with("applied 0 of 3 recipe steps"), "{err}");
    // The old cast step: `cast(x)` as the output discards every step before it.
    let mut discarded = build(3, 4, &steps, MAX_NUMEL);
    let x = discarded.feeds[0].0;
    let g = &mut discarded.graph;
    let c = g.cast(x, DType::I32).unwrap();
    discarded.y = g.cast(c, DType::F32).unwrap();
    let err = discarded.check_every_step_applied(&steps).unwrap_err();
    assert!(err.starts_with("step 0 (kind 2, "), "{err}");
    assert!(err.contains("does not reach the output"), "{err}");
}

#[test]
fn a_tally_missing_a_kind_or_redirecting_too_often_fails() {
    let mut tally = Tally::default();
    tally.add(&build(3, 4, &[2, 19, 16], MAX_NUMEL));
    tally.check([2, 19, 16], 1, 1.0).unwrap();
    let err = tally.check([2, 19, 16, 5], 1, 1.0).unwrap_err();
    assert!(
        err.starts_with("step kinds [5] applied fewer than 1 times"),
        "{err}"
    );
    // Rank 1: lrn (16) cannot apply and is replaced, so not every step is as chosen.
    let mut tally = Tally::default();
    tally.add(&build(3, 1, &[2, 19, 16], MAX_NUMEL));
    assert_eq!(tally.as_chosen, 2, "{tally}");
    assert!(tally.check([], 0, 1.0).is_err());
}

#[test]
fn the_comparison_checks_dtype_as_well_as_values() {
    let want = Tensor::new(&[2], Data::I64(vec![1, 2])).unwrap();
    let as_f32 = Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap();
    assert_eq!(
        close(&as_f32, &want).unwrap_err(),
        "dtype f32, expected i64"
    );
    let as_i32 = Tensor::new(&[2], Data::I32(vec![1, 2])).unwrap();
    assert_eq!(
        close(&as_i32, &want).unwrap_err(),
        "dtype i32, expected i64"
    );
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
