//! A layered (Sugiyama-style) layout of a directed graph of boxes, top to bottom:
//!
//! 1. cycles are broken by reversing the back edges of a depth-first search (a kiln graph is
//!    acyclic, but the folded blocks of one scope can form cycles between them);
//! 2. layers by longest path from the sources, then every source moved down to just above its
//!    first consumer (a placeholder sits beside the op that reads it, not at the top);
//! 3. edges spanning several layers get one dummy vertex per layer crossed;
//! 4. crossings are reduced by barycenter sweeps, down and up, keeping the order with the
//!    fewest crossings seen;
//! 5. x coordinates: layer by layer, every box as close as it can be to the mean x of its
//!    neighbours in the layer just placed without overlapping, solved exactly per layer as an
//!    isotonic regression (pool adjacent violators), in alternating down and up sweeps.
//!
//! Every step is linear or `E log V` per sweep, so thousands of boxes take milliseconds.

/// Horizontal gap between boxes of one layer.
pub const GAP_X: f64 = 24.0;
/// Vertical gap between layers (room for the edges' shape labels).
pub const GAP_Y: f64 = 44.0;
/// Width of the lane a dummy vertex (a long edge passing through a layer) takes.
const DUMMY_WIDTH: f64 = 6.0;
/// Dummy vertices allowed per box (plus a thousand), see [`Layered::new`].
const DUMMY_BUDGET_PER_BOX: usize = 8;
/// Barycenter sweeps (each one down and one up) for crossing reduction.
const ORDER_SWEEPS: usize = 8;
/// Coordinate sweeps (each one down and one up).
const PLACE_SWEEPS: usize = 6;

/// Where the layout put each box: its layer, its centre x and its top y, plus the bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// The layer of each box (0 at the top).
    pub layer: Vec<usize>,
    /// The centre x of each box; the leftmost box edge is at 0.
    pub x: Vec<f64>,
    /// The top y of each box; the top layer is at 0.
    pub y: Vec<f64>,
    /// Width of the whole drawing.
    pub width: f64,
    /// Height of the whole drawing.
    pub height: f64,
    /// For each edge spanning more than one layer, `(from, to, xs)`: the x of its lane in
    /// each layer it crosses, top to bottom (`from` above `to`; a reversed edge of a cycle
    /// is listed the way it is drawn).
    pub routes: Vec<(usize, usize, Vec<f64>)>,
}

/// Lays out boxes of `sizes` (width, height) joined by `edges` (from, to); edges out of range
/// and self-loops are ignored.
pub fn layered(sizes: &[(f64, f64)], edges: &[(usize, usize)]) -> Layout {
    let n = sizes.len();
    let mut edges: Vec<(usize, usize)> = edges
        .iter()
        .copied()
        .filter(|&(a, b)| a != b && a < n && b < n)
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let edges = acyclic(n, &edges);
    let layer = layers(n, &edges);
    let mut g = Layered::new(sizes, &layer, &edges);
    g.reduce_crossings();
    g.place_x();

    let mut heights = vec![0.0f64; g.rows.len()];
    for v in 0..n {
        heights[g.layer[v]] = heights[g.layer[v]].max(sizes[v].1);
    }
    let mut tops = Vec::with_capacity(heights.len());
    let mut y = 0.0;
    for h in &heights {
        tops.push(y);
        y += h + GAP_Y;
    }
    let (mut left, mut right) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in 0..n {
        left = left.min(g.x[v] - g.width[v] / 2.0);
        right = right.max(g.x[v] + g.width[v] / 2.0);
    }
    if n == 0 {
        (left, right) = (0.0, 0.0);
    }
    let routes = g
        .chains
        .iter()
        .map(|(a, b, dummies)| (*a, *b, dummies.iter().map(|&d| g.x[d] - left).collect()))
        .collect();
    Layout {
        layer: g.layer[..n].to_vec(),
        x: g.x[..n].iter().map(|x| x - left).collect(),
        y: (0..n).map(|v| tops[g.layer[v]]).collect(),
        width: right - left,
        height: (y - GAP_Y).max(0.0),
        routes,
    }
}

/// The edges with every back edge of an iterative depth-first search reversed: a DAG.
fn acyclic(n: usize, edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out_edges = vec![Vec::new(); n];
    for (i, &(a, _)) in edges.iter().enumerate() {
        out_edges[a].push(i);
    }
    // 0: unvisited, 1: on the stack, 2: done.
    let mut state = vec![0u8; n];
    let mut reversed = vec![false; edges.len()];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&e) = out_edges[v].get(*next) {
                *next += 1;
                let w = edges[e].1;
                match state[w] {
                    0 => {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => reversed[e] = true,
                    _ => {}
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    edges
        .iter()
        .zip(reversed)
        .map(|(&(a, b), r)| if r { (b, a) } else { (a, b) })
        .collect()
}

/// Longest-path layers of a DAG; then each source sits one layer above its nearest consumer.
fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut preds = vec![Vec::new(); n];
    let mut succs = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(a, b) in edges {
        succs[a].push(b);
        preds[b].push(a);
        indegree[b] += 1;
    }
    let mut order: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    let mut i = 0;
    while i < order.len() {
        let v = order[i];
        i += 1;
        for &w in &succs[v] {
            indegree[w] -= 1;
            if indegree[w] == 0 {
                order.push(w);
            }
        }
    }
    let mut layer = vec![0usize; n];
    for &v in &order {
        layer[v] = preds[v].iter().map(|&p| layer[p] + 1).max().unwrap_or(0);
    }
    for v in 0..n {
        if preds[v].is_empty()
            && let Some(first) = succs[v].iter().map(|&s| layer[s]).min()
        {
            layer[v] = first.saturating_sub(1);
        }
    }
    layer
}

/// The layered graph with dummy vertices: every edge joins adjacent layers.
struct Layered {
    /// Vertices below this are the caller's boxes; the rest are dummies.
    real: usize,
    layer: Vec<usize>,
    width: Vec<f64>,
    /// Neighbours one layer up and one layer down.
    up: Vec<Vec<usize>>,
    down: Vec<Vec<usize>>,
    /// The vertices of each layer, in order.
    rows: Vec<Vec<usize>>,
    /// Each long edge and its dummy vertices, top to bottom.
    chains: Vec<(usize, usize, Vec<usize>)>,
    x: Vec<f64>,
}

impl Layered {
    fn new(sizes: &[(f64, f64)], layer: &[usize], edges: &[(usize, usize)]) -> Layered {
        let mut g = Layered {
            real: sizes.len(),
            layer: layer.to_vec(),
            width: sizes.iter().map(|s| s.0).collect(),
            up: vec![Vec::new(); sizes.len()],
            down: vec![Vec::new(); sizes.len()],
            rows: Vec::new(),
            chains: Vec::new(),
            x: Vec::new(),
        };
        // Dummies for the shortest long edges first, within a budget linear in the graph: a
        // value read all over a big graph (one placeholder feeding every block) would
        // otherwise need a dummy for every layer of every one of its edges. An edge left out
        // takes no part in ordering and is drawn as one curve.
        let mut by_span: Vec<(usize, usize)> = edges.to_vec();
        by_span.sort_by_key(|&(a, b)| layer[b] - layer[a]);
        let mut budget = DUMMY_BUDGET_PER_BOX * sizes.len() + 1000;
        for (a, b) in by_span {
            let span = layer[b] - layer[a];
            if span > 1 && span - 1 > budget {
                continue;
            }
            budget -= span.saturating_sub(1);
            let mut from = a;
            let mut dummies = Vec::new();
            for l in layer[a] + 1..layer[b] {
                let dummy = g.layer.len();
                g.layer.push(l);
                g.width.push(DUMMY_WIDTH);
                g.up.push(Vec::new());
                g.down.push(Vec::new());
                g.link(from, dummy);
                dummies.push(dummy);
                from = dummy;
            }
            g.link(from, b);
            if !dummies.is_empty() {
                g.chains.push((a, b, dummies));
            }
        }
        let count = g.layer.iter().max().map_or(0, |&m| m + 1);
        g.rows = vec![Vec::new(); count];
        // The first order: depth-first from the top layer, so connected boxes start together.
        let mut seen = vec![false; g.layer.len()];
        let mut starts: Vec<usize> = (0..g.layer.len()).collect();
        starts.sort_by_key(|&v| g.layer[v]);
        for s in starts {
            let mut stack = vec![s];
            while let Some(v) = stack.pop() {
                if std::mem::replace(&mut seen[v], true) {
                    continue;
                }
                g.rows[g.layer[v]].push(v);
                stack.extend(g.down[v].iter().rev().copied());
            }
        }
        g
    }

    fn link(&mut self, a: usize, b: usize) {
        self.down[a].push(b);
        self.up[b].push(a);
    }

    /// Barycenter sweeps; keeps the order with the fewest crossings.
    fn reduce_crossings(&mut self) {
        let mut position = vec![0usize; self.layer.len()];
        let refresh = |rows: &[Vec<usize>], position: &mut [usize]| {
            for row in rows {
                for (i, &v) in row.iter().enumerate() {
                    position[v] = i;
                }
            }
        };
        refresh(&self.rows, &mut position);
        let mut best = self.rows.clone();
        let mut best_crossings = self.crossings(&position);
        for _ in 0..ORDER_SWEEPS {
            if best_crossings == 0 {
                break;
            }
            for l in 1..self.rows.len() {
                sort_by_barycenter(&mut self.rows[l], &self.up, &position);
                for (i, &v) in self.rows[l].iter().enumerate() {
                    position[v] = i;
                }
            }
            for l in (0..self.rows.len().saturating_sub(1)).rev() {
                sort_by_barycenter(&mut self.rows[l], &self.down, &position);
                for (i, &v) in self.rows[l].iter().enumerate() {
                    position[v] = i;
                }
            }
            let crossings = self.crossings(&position);
            if crossings < best_crossings {
                best_crossings = crossings;
                best.clone_from(&self.rows);
            }
        }
        self.rows = best;
    }

    /// Edge crossings between every pair of adjacent layers (counted with a Fenwick tree).
    fn crossings(&self, position: &[usize]) -> usize {
        let mut total = 0;
        for l in 0..self.rows.len().saturating_sub(1) {
            let mut ends: Vec<(usize, usize)> = self.rows[l]
                .iter()
                .flat_map(|&v| {
                    self.down[v]
                        .iter()
                        .map(move |&w| (position[v], position[w]))
                })
                .collect();
            ends.sort_unstable();
            let size = self.rows[l + 1].len();
            let mut tree = vec![0usize; size + 1];
            for (seen, &(_, b)) in ends.iter().enumerate() {
                // Earlier edges ending right of b cross this one.
                let mut not_right = 0;
                let mut i = b + 1;
                while i > 0 {
                    not_right += tree[i];
                    i -= i & i.wrapping_neg();
                }
                total += seen - not_right;
                let mut i = b + 1;
                while i <= size {
                    tree[i] += 1;
                    i += i & i.wrapping_neg();
                }
            }
        }
        total
    }

    /// x coordinates: packed left to right, then pulled toward their neighbours' mean.
    fn place_x(&mut self) {
        self.x = vec![0.0; self.layer.len()];
        for row in &self.rows {
            let mut right = 0.0;
            for &v in row {
                self.x[v] = right + self.width[v] / 2.0;
                right += self.width[v] + GAP_X;
            }
        }
        for _ in 0..PLACE_SWEEPS {
            for l in 1..self.rows.len() {
                self.place_row(l, true);
            }
            for l in (0..self.rows.len().saturating_sub(1)).rev() {
                self.place_row(l, false);
            }
        }
    }

    /// Places layer `l` as near as it can to the mean x of each vertex's neighbours above
    /// (`from_above`) or below, keeping the order and the gaps: the x that minimise the sum of
    /// squared distances to those targets under `x[i+1] - x[i] >= gap[i]` (an isotonic
    /// regression of the targets less the cumulative gaps).
    fn place_row(&mut self, l: usize, from_above: bool) {
        let row = &self.rows[l];
        let mut offset = 0.0;
        let mut offsets = Vec::with_capacity(row.len());
        let mut targets = Vec::with_capacity(row.len());
        let mut weights = Vec::with_capacity(row.len());
        for (i, &v) in row.iter().enumerate() {
            if i > 0 {
                let u = row[i - 1];
                let gap = if u >= self.real || v >= self.real {
                    // Long-edge lanes may run close together.
                    GAP_X / 3.0
                } else {
                    GAP_X
                };
                offset += (self.width[u] + self.width[v]) / 2.0 + gap;
            }
            let neighbours = if from_above {
                &self.up[v]
            } else {
                &self.down[v]
            };
            let (target, weight) = if neighbours.is_empty() {
                // No pull: stay put, weakly.
                (self.x[v], 0.01)
            } else {
                let mean =
                    neighbours.iter().map(|&w| self.x[w]).sum::<f64>() / neighbours.len() as f64;
                // Long edges (dummy chains) pull harder so they run straight.
                let weight = if v >= self.real {
                    4.0
                } else {
                    neighbours.len() as f64
                };
                (mean, weight)
            };
            offsets.push(offset);
            targets.push(target - offset);
            weights.push(weight);
        }
        let fitted = isotonic(&targets, &weights);
        for (i, &v) in row.iter().enumerate() {
            self.x[v] = fitted[i] + offsets[i];
        }
    }
}

/// Sorts a layer by the mean position of each vertex's neighbours in the adjacent layer;
/// vertices without neighbours there keep their place relative to the others.
fn sort_by_barycenter(row: &mut [usize], neighbours: &[Vec<usize>], position: &[usize]) {
    let mut keyed: Vec<(f64, usize, usize)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ns = &neighbours[v];
            let key = if ns.is_empty() {
                i as f64
            } else {
                ns.iter().map(|&w| position[w] as f64).sum::<f64>() / ns.len() as f64
            };
            (key, i, v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (slot, (_, _, v)) in row.iter_mut().zip(keyed) {
        *slot = v;
    }
}

/// The nondecreasing sequence nearest to `values` in weighted least squares (pool adjacent
/// violators).
fn isotonic(values: &[f64], weights: &[f64]) -> Vec<f64> {
    // Blocks of (mean, weight, count).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(values.len());
    for (&v, &w) in values.iter().zip(weights) {
        blocks.push((v, w, 1));
        while blocks.len() > 1 && blocks[blocks.len() - 2].0 > blocks[blocks.len() - 1].0 {
            let (m2, w2, c2) = blocks.pop().unwrap_or_default();
            let last = blocks.len() - 1;
            let (m1, w1, c1) = blocks[last];
            blocks[last] = ((m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2);
        }
    }
    blocks
        .into_iter()
        .flat_map(|(m, _, c)| std::iter::repeat_n(m, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(n: usize) -> Vec<(f64, f64)> {
        vec![(60.0, 30.0); n]
    }

    /// No two boxes of one layer overlap, and every edge points down.
    fn check(sizes: &[(f64, f64)], edges: &[(usize, usize)], layout: &Layout) {
        for a in 0..sizes.len() {
            for b in a + 1..sizes.len() {
                if layout.layer[a] == layout.layer[b] {
                    let apart = (layout.x[a] - layout.x[b]).abs();
                    assert!(
                        apart + 1e-6 >= (sizes[a].0 + sizes[b].0) / 2.0 + GAP_X / 3.0,
                        "{a} and {b} overlap: {layout:?}"
                    );
                }
            }
        }
        for &(a, b) in edges {
            assert!(layout.layer[a] < layout.layer[b], "{a} -> {b}: {layout:?}");
        }
        assert!(layout.x.iter().all(|&x| x >= 0.0 && x <= layout.width));
    }

    #[test]
    fn a_diamond_is_drawn_without_crossings_and_centred() {
        let edges = [(0, 1), (0, 2), (1, 3), (2, 3)];
        let sizes = boxes(4);
        let layout = layered(&sizes, &edges);
        check(&sizes, &edges, &layout);
        assert_eq!(layout.layer, [0, 1, 1, 2]);
        assert!((layout.x[0] - layout.x[3]).abs() < 1.0, "{layout:?}");
        assert!(layout.y[3] > layout.y[1] && layout.y[1] > layout.y[0]);
    }

    #[test]
    fn barycenter_sweeps_untangle_a_crossed_ladder() {
        // 0 -> 3, 1 -> 2 with 2 and 3 first ordered so the edges cross, and more rungs.
        let edges = [(0, 5), (1, 4), (2, 3), (3, 6), (4, 7), (5, 8)];
        let sizes = boxes(9);
        let layout = layered(&sizes, &edges);
        check(&sizes, &edges, &layout);
        let mut g = Layered::new(&sizes, &layout.layer, &edges);
        g.reduce_crossings();
        let mut position = vec![0; g.layer.len()];
        for row in &g.rows {
            for (i, &v) in row.iter().enumerate() {
                position[v] = i;
            }
        }
        assert_eq!(g.crossings(&position), 0);
    }

    #[test]
    fn cycles_and_sources_get_layers() {
        // A cycle between folded blocks, and a weight feeding the last node.
        let edges = [(0, 1), (1, 2), (2, 0), (3, 2)];
        let sizes = boxes(4);
        let layout = layered(&sizes, &edges);
        let dag = acyclic(4, &edges);
        check(&sizes, &dag, &layout);
        assert_eq!(layout.layer[3] + 1, layout.layer[2], "{layout:?}");
    }

    #[test]
    fn isotonic_pools_violators() {
        assert_eq!(
            isotonic(&[1.0, 3.0, 2.0, 4.0], &[1.0; 4]),
            [1.0, 2.5, 2.5, 4.0]
        );
        assert_eq!(isotonic(&[], &[]), Vec::<f64>::new());
    }

    #[test]
    fn long_edges_get_a_lane_per_layer() {
        let edges = [(0, 1), (1, 2), (2, 3), (0, 3)];
        let sizes = boxes(4);
        let layout = layered(&sizes, &edges);
        check(&sizes, &edges, &layout);
        assert_eq!(layout.routes.len(), 1, "{layout:?}");
        let (a, b, xs) = &layout.routes[0];
        assert_eq!((*a, *b, xs.len()), (0, 3, 2));
        // The lane runs beside the chain, not through its boxes.
        for &x in xs {
            assert!((x - layout.x[1]).abs() >= sizes[1].0 / 2.0, "{layout:?}");
        }
    }

    #[test]
    fn a_value_read_everywhere_stays_within_the_dummy_budget() {
        // A chain of 3,000 with its first box read by every box: 4.5 million layer crossings.
        let n = 3000;
        let edges: Vec<(usize, usize)> = (1..n).flat_map(|v| [(v - 1, v), (0, v)]).collect();
        let sizes = boxes(n);
        let g = Layered::new(&sizes, &layers(n, &edges), &edges);
        assert!(
            g.layer.len() <= n + DUMMY_BUDGET_PER_BOX * n + 1000,
            "{}",
            g.layer.len()
        );
        let layout = layered(&sizes, &edges);
        check(&sizes, &edges, &layout);
    }

    #[test]
    fn empty_and_edgeless_graphs() {
        let layout = layered(&[], &[(0, 1)]);
        assert!(layout.x.is_empty() && layout.width == 0.0);
        let sizes = boxes(3);
        let layout = layered(&sizes, &[]);
        check(&sizes, &[], &layout);
    }
}
