//! Random graphs from recipes: a recipe is a seed, a rank and a list of step bytes; each step
//! adds one op of the kind its byte names (or, where that kind cannot apply, the next kind that
//! can) to the current value. [`Built`] records what each step applied and [`Tally`] counts
//! steps over many recipes, so tests can assert that no step was dropped or discarded.

use kiln::{ConvAttrs, DType, Data, DataFormat, Graph, NodeId, Padding, PoolAttrs, Shape, Tensor};
use std::collections::HashSet;

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
pub const KINDS: usize = 26;

/// The largest value a step may produce; a step making more is not applied.
pub const MAX_NUMEL: usize = 20_000;

/// A graph built from a recipe, with what it took to build it.
pub struct Built {
    pub graph: Graph,
    /// The first input, `x`, and every feed (`x` first), with its value.
    pub feeds: Vec<(NodeId, Tensor)>,
    /// The output: the value after the last step.
    pub y: NodeId,
    /// Each recipe step's kind of op and the node it made, in order; a step whose own kind could
    /// not apply (rank, shapes, size) applied the next kind that could.
    pub applied: Vec<(usize, NodeId)>,
    /// How many steps applied the kind their recipe byte named.
    pub as_chosen: usize,
}

impl Built {
    /// Fails unless every recipe step added an op that `y` depends on: otherwise a graph could
    /// shrink towards `y = x`, or a step could discard the ones before it, and pass while
    /// testing nothing.
    pub fn check_every_step_applied(&self, steps: &[u8]) -> Result<(), String> {
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
pub struct Tally {
    pub steps: usize,
    pub as_chosen: usize,
    pub per_kind: [usize; KINDS],
}

impl Tally {
    pub fn add(&mut self, built: &Built) {
        self.steps += built.applied.len();
        self.as_chosen += built.as_chosen;
        for &(kind, _) in &built.applied {
            self.per_kind[kind] += 1;
        }
    }

    /// Fails unless each of `kinds` was applied at least `floor` times and at least `share` of
    /// all steps applied the kind their recipe byte named: a builder regression that makes a
    /// kind fail (and so be replaced) shows here.
    pub fn check(
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
pub fn build(seed: u64, rank: usize, steps: &[u8], max_numel: usize) -> Built {
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
            // A mask from comparisons (and logical ops) of new feeds picks between the current
            // value and another: comparing computed values could flip a near-tie between
            // backends, while feeds have the same bits everywhere (i32 feeds, made by a cast,
            // tie often).
            20 => {
                let keep = p.next(r as u64 + 1) as usize;
                let suffix: Vec<usize> = shape[r - keep..]
                    .iter()
                    .map(|&d| if p.next(3) == 0 { 1 } else { d })
                    .collect();
                let ints = p.next(3) == 0;
                let mut operand = |g: &mut Graph, d: &[usize]| {
                    let f = feed(g, d)?;
                    if ints { g.cast(f, DType::I32) } else { Ok(f) }
                };
                let compare = |g: &mut Graph, which: u64, a, b| match which {
                    0 => g.equal(a, b),
                    1 => g.not_equal(a, b),
                    2 => g.less(a, b),
                    3 => g.less_equal(a, b),
                    4 => g.greater(a, b),
                    _ => g.greater_equal(a, b),
                };
                let (c0, c1, logic, other) = (p.next(6), p.next(6), p.next(4), p.next(3));
                let full = operand(g, &shape);
                let part = operand(g, &suffix);
                let mask = full.and_then(|a| part.and_then(|b| compare(g, c0, a, b)));
                let mask = match logic {
                    0 => mask,
                    1 => mask.and_then(|m| g.logical_not(m)),
                    l => operand(g, &suffix).and_then(|b| {
                        let a = operand(g, &shape)?;
                        let m2 = compare(g, c1, b, a)?;
                        let m = mask?;
                        if l == 2 {
                            g.logical_and(m, m2)
                        } else {
                            g.logical_or(m2, m)
                        }
                    }),
                };
                let other = match other {
                    0 => Ok(weight(g, &suffix, 1.0)),
                    1 => g.neg(cur),
                    _ => g.scalar(0.5),
                };
                mask.and_then(|m| other.and_then(|o| g.select(m, cur, o)))
            }
            // sign of a new feed, fused with the current value (sign of a computed value could
            // flip on a last-bit difference near 0), after a stop_gradient.
            21 => {
                let kept = g.stop_gradient(cur);
                let s = feed(g, &shape).and_then(|f| g.sign(f));
                kept.and_then(|k| {
                    let s = s?;
                    if p.next(2) == 0 {
                        g.mul(k, s)
                    } else {
                        g.add(s, k)
                    }
                })
            }
            // A backward window op (conv2d, depthwise or pool) with the current value as its
            // incoming gradient: the forward input size is drawn so the forward op gives
            // exactly `cur`'s shape.
            22 if r == 4 => {
                let format = if p.next(4) == 0 {
                    DataFormat::Nchw
                } else {
                    DataFormat::Nhwc
                };
                let (n, oh, ow, c) = match format {
                    DataFormat::Nhwc => (shape[0], shape[1], shape[2], shape[3]),
                    DataFormat::Nchw => (shape[0], shape[2], shape[3], shape[1]),
                };
                let image = |h: usize, w: usize, ch: usize| match format {
                    DataFormat::Nhwc => [n, h, w, ch],
                    DataFormat::Nchw => [n, ch, h, w],
                };
                let (k, s) = (1 + p.next(3) as usize, 1 + p.next(2) as usize);
                let d = if s == 1 && p.next(3) == 0 { 2 } else { 1 };
                let same = p.next(2) == 0;
                let padding = if same { Padding::Same } else { Padding::Valid };
                // SAME: ceil(in / s) = out; VALID: (in - eff) / s + 1 = out (eff with `dil`).
                let (ey, ex) = (p.next(s as u64) as usize, p.next(s as u64) as usize);
                let size = |out: usize, dil: usize, extra: usize| match same {
                    true => out * s - extra,
                    false => (out - 1) * s + (k - 1) * dil + 1 + extra,
                };
                let (h, w) = (size(oh, d, ey), size(ow, d, ex));
                match p.next(6) {
                    kind @ (4 | 5) => {
                        let attrs = ConvAttrs::with_padding(padding)
                            .strides(s, s)
                            .dilations(d, d)
                            .format(format);
                        // Output channel c * mult + m: `cur`'s channels split as cin * mult.
                        let mult = if c % 2 == 0 { 2 } else { 1 };
                        let (cin, dims) = (c / mult, image(h, w, c / mult));
                        if kind == 4 {
                            let w_ = weight(g, &[k, k, cin, mult], 0.5);
                            let x = dims.map(|v| v as i64);
                            g.depthwise_conv2d_backprop_input(w_, cur, x, attrs)
                        } else {
                            feed(g, &dims).and_then(|x| {
                                g.depthwise_conv2d_backprop_filter(x, cur, [k, k, cin, mult], attrs)
                            })
                        }
                    }
                    kind @ (0 | 1) => {
                        let attrs = ConvAttrs::with_padding(padding)
                            .strides(s, s)
                            .dilations(d, d)
                            .format(format);
                        let groups = if c % 2 == 0 && p.next(2) == 0 { 2 } else { 1 };
                        let cin = 1 + p.next(3) as usize;
                        if kind == 0 {
                            let w_ = weight(g, &[k, k, cin, c], 0.5);
                            let x = image(h, w, cin * groups).map(|v| v as i64);
                            g.conv2d_backprop_input(w_, cur, x, attrs)
                        } else {
                            feed(g, &image(h, w, cin * groups)).and_then(|x| {
                                g.conv2d_backprop_filter(x, cur, [k, k, cin, c], attrs)
                            })
                        }
                    }
                    kind => {
                        let attrs = PoolAttrs {
                            ksize: [k, k],
                            strides: [s, s],
                            padding,
                            data_format: format,
                        };
                        // Pools have no dilation.
                        let x = image(size(oh, 1, ey), size(ow, 1, ex), c);
                        if kind == 2 {
                            // A feed as orig_input: its maxima are the same bits everywhere.
                            feed(g, &x).and_then(|xi| {
                                let y = g.max_pool(xi, attrs)?;
                                g.max_pool_grad(xi, y, cur, attrs)
                            })
                        } else {
                            g.avg_pool_grad(cur, x.map(|v| v as i64), attrs)
                        }
                    }
                }
            }
            // The cross entropies over the last axis: dense labels, a softmax of a feed (rows
            // summing to 1, where TF's logits gradient is the derivative, so the gradient
            // checks of these recipes hold), or class indices in range (a label out of range
            // gives a NaN row, which tests/suite/losses.rs checks on every backend).
            23 if r >= 1 => {
                let classes = shape[r - 1] as u64;
                if p.next(2) == 0 {
                    feed(g, &shape)
                        .and_then(|f| g.softmax(f, -1))
                        .and_then(|l| g.softmax_cross_entropy_with_logits(cur, l))
                } else {
                    let rows = &shape[..r - 1];
                    let n: usize = rows.iter().product();
                    let v: Vec<i64> = (0..n).map(|_| p.next(classes) as i64).collect();
                    let labels = if p.next(2) == 0 {
                        Tensor::new(rows, Data::I32(v.iter().map(|&i| i as i32).collect()))
                    } else {
                        Tensor::new(rows, Data::I64(v))
                    };
                    let labels = g
                        .constant(&format!("labels{counter}"), labels.unwrap())
                        .unwrap();
                    g.sparse_softmax_cross_entropy_with_logits(cur, labels)
                }
            }
            // one_hot of constant indices (some out of range) of cur's shape, the new axis
            // anywhere, times cur broadcast along it.
            24 => {
                let depth = p.pick(&SIZES);
                let n: usize = shape.iter().product();
                let v: Vec<i64> = (0..n)
                    .map(|_| p.next(depth as u64 + 2) as i64 - 1)
                    .collect();
                let indices = g
                    .constant(
                        &format!("hot{counter}"),
                        Tensor::new(&shape, Data::I64(v)).unwrap(),
                    )
                    .unwrap();
                let axis =
                    p.next(r as u64 + 1) as i64 - if p.next(2) == 0 { 0 } else { r as i64 + 1 };
                let a = if axis < 0 { axis + r as i64 + 1 } else { axis } as usize;
                let mut expanded: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                expanded.insert(a, 1);
                g.one_hot(indices, depth, 1.5, -0.5, axis)
                    .and_then(|h| g.reshape(cur, &expanded).and_then(|c| g.mul(h, c)))
            }
            // gather_grad of cur along an axis: indices (repeated, negative) into `size` rows.
            25 if r >= 1 => {
                let axis = p.next(r as u64) as usize;
                let size = p.pick(&SIZES) as i64;
                let idx: Vec<i64> = (0..shape[axis])
                    .map(|_| p.next(2 * size as u64) as i64 - size)
                    .collect();
                let indices = g
                    .constant(
                        &format!("scatter{counter}"),
                        Tensor::new(&[shape[axis]], Data::I64(idx)).unwrap(),
                    )
                    .unwrap();
                let signed = axis as i64 - if p.next(2) == 0 { 0 } else { r as i64 };
                g.gather_grad(cur, indices, signed, size as usize)
            }
            _ => return None,
        };
        next.ok()
    }
}
