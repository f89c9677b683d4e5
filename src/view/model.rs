//! The page's model: every node with what the page shows of it (box lines, attributes, type,
//! FLOPs, operands, consumers, rewrites, measured time), the scope tree, and the layered
//! layout of every scope's items, written as one JSON object for the page's script.
//!
//! Box sizes are computed here from the text they hold (the page draws monospace text of
//! [`CHAR_WIDTH`]), so the layout is done once, in Rust; the page only stacks each unfolded
//! scope's precomputed layout with the sizes its items have in the current fold state.

use super::edges::Edges;
use super::json;
use super::scope_layouts::{Item, scope_layouts};
use super::scopes::ScopeTree;
use kiln_ir::cost::flops;
use kiln_ir::op::{Initializer, Op};
use kiln_ir::passes::Rewrite;
use kiln_ir::text::{initializer_text, op_attributes};
use kiln_ir::{Graph, NodeId, TensorType};
use std::collections::HashMap;

/// Width of one character of the boxes' 11px monospace text.
pub const CHAR_WIDTH: f64 = 6.7;
/// Height of a box's text line, and of a parameter line (10px text).
const LINE: f64 = 14.0;
const PARAM_LINE: f64 = 12.0;
/// Padding inside a box, and around an unfolded scope's items; its title bar's height.
const PAD: f64 = 8.0;
pub(super) const SCOPE_PAD: f64 = 14.0;
pub(super) const SCOPE_HEADER: f64 = 20.0;
/// Box lines longer than this are cut (the full text is in the details panel).
const MAX_CHARS: usize = 36;

/// What the page shows besides the graph itself.
#[derive(Default)]
pub struct Extras<'a> {
    /// With `--optimize`: the graph before optimisation and the rewrites that made this one.
    pub optimized_from: Option<(&'a Graph, &'a [Rewrite])>,
    /// With `--profile`: measured milliseconds per node (mean per run) and the op names of
    /// the kernel that computed it, plus kernels that matched no node.
    pub times: Option<NodeTimes>,
    /// A line about how the graph was made (`optimised for cpu`, `profiled over 20 runs`).
    pub note: String,
}

/// Measured time per node, from a profiled run.
#[derive(Clone, Debug, Default)]
pub struct NodeTimes {
    /// Node name to (mean ms per run, kernel ops such as `conv2d+add+relu`).
    pub by_node: HashMap<String, (f64, String)>,
    /// Sum of every kernel's mean ms.
    pub total_ms: f64,
}

/// A line cut to [`MAX_CHARS`] characters, ending in `…` when cut.
fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_CHARS {
        s.to_string()
    } else {
        let kept: String = s.chars().take(MAX_CHARS - 1).collect();
        format!("{kept}…")
    }
}

fn text_width(lines: &[String], char_width: f64) -> f64 {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * char_width
}

/// The op's keyword; for a constant or variable also its initialiser (literals summarised).
fn op_text(op: &Op) -> String {
    match op {
        Op::Fused(f) => f.name().to_string(),
        other => other.name().to_string(),
    }
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Input(_) => "input",
        Op::Var(_) => "var",
        Op::Const(_) => "const",
        Op::Fused(_) => "fused",
        Op::Assign(_) | Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam => {
            "update"
        }
        _ => "op",
    }
}

/// The `%name` references in a rewrite message.
fn mentioned(message: &str) -> Vec<&str> {
    message
        .split('%')
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// A node's attributes as `name=value` lines (initialisers and fused expressions included).
fn attributes(op: &Op) -> Vec<String> {
    match op {
        Op::Var(s) | Op::Const(s) => {
            let init = match &s.init {
                Initializer::Literal(t) => format!("literal ({} values)", t.numel()),
                other => initializer_text(other),
            };
            vec![format!("init={init}")]
        }
        Op::Fused(f) => {
            let mut attrs = f.main().map(op_attributes).unwrap_or_default();
            attrs.push(format!("expr={}", f.expr()));
            attrs
        }
        other => op_attributes(other),
    }
}

/// The type with every unknown dim set to 1.
fn unknown_as_one(ty: &TensorType) -> TensorType {
    let dims: Vec<usize> = ty.shape.dims().iter().map(|d| d.unwrap_or(1)).collect();
    TensorType::new(ty.dtype, kiln_ir::Shape::known(&dims))
}

/// Dims of a type for an edge label: `1x64x56x56` (`?` for unknown).
fn dims(ty: &TensorType) -> String {
    let dims: Vec<String> = ty
        .shape
        .dims()
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    if dims.is_empty() {
        "scalar".to_string()
    } else {
        dims.join("×")
    }
}

/// The page model as JSON (see the module doc).
pub fn model_json(graph: &Graph, title: &str, extras: &Extras<'_>) -> String {
    let order: Vec<NodeId> = graph.topo_order();
    let edges = Edges::new(graph, &order);
    let tree = ScopeTree::new(graph, &order, &edges);
    let n = order.len();
    let Edges {
        inputs,
        consumers,
        outputs,
        ..
    } = edges;
    let mut params: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (v, h) in tree.host.iter().enumerate() {
        if let Some(h) = h {
            params[*h].push(v);
        }
    }

    // Rewrites: which mention each node, and what the mentioned nodes were before.
    let mut origin: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut before: Vec<String> = Vec::new();
    let mut rewrites: Vec<String> = Vec::new();
    if let Some((original, log)) = extras.optimized_from {
        let mut described: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (r, rewrite) in log.iter().enumerate() {
            let names = mentioned(&rewrite.message);
            for &name in &names {
                let rewrites = origin.entry(name).or_default();
                // A message may name a node twice (`%a -> %a = ...`).
                if rewrites.last() != Some(&r) {
                    rewrites.push(r);
                }
                if let Some(id) = original.find(name)
                    && described.insert(name)
                {
                    let node = original.node(id);
                    before.push(format!(
                        "{}:{}",
                        json::string(name),
                        json::object([
                            ("op", json::string(&op_text(&node.op))),
                            ("type", json::string(&node.ty.to_string())),
                            (
                                "attrs",
                                json::array(attributes(&node.op).iter().map(|a| json::string(a)))
                            ),
                        ])
                    ));
                }
            }
            rewrites.push(json::object([
                ("pass", json::string(rewrite.pass)),
                ("message", json::string(&rewrite.message)),
            ]));
        }
    }
    let max_share = extras.times.as_ref().map_or(0.0, |t| {
        t.by_node
            .values()
            .map(|(ms, _)| ms / t.total_ms.max(1e-12))
            .fold(0.0, f64::max)
    });

    // Box text and sizes.
    let mut sizes = Vec::with_capacity(n);
    let mut nodes_json = Vec::with_capacity(n);
    for v in 0..n {
        let node = graph.node(order[v]);
        let mut lines = vec![
            cut(&op_text(&node.op)),
            cut(&node.name),
            cut(&node.ty.to_string()),
        ];
        if let Op::Fused(f) = &node.op {
            lines.push(cut(&format!("= {}", f.expr())));
        }
        let time = extras.times.as_ref().and_then(|t| {
            t.by_node
                .get(&node.name)
                .map(|(ms, ops)| (ms, ops, ms / t.total_ms.max(1e-12)))
        });
        if let Some((ms, _, share)) = time {
            lines.push(format!("{ms:.3} ms · {:.1}%", 100.0 * share));
        }
        let param_lines: Vec<String> = params[v]
            .iter()
            .map(|&p| {
                let pn = graph.node(order[p]);
                cut(&format!("{} {}", pn.name, pn.ty))
            })
            .collect();
        let width = text_width(&lines, CHAR_WIDTH)
            .max(text_width(&param_lines, CHAR_WIDTH * 10.0 / 11.0))
            + 2.0 * PAD;
        let height = lines.len() as f64 * LINE + param_lines.len() as f64 * PARAM_LINE + PAD;
        sizes.push((width.max(60.0), height));
        // With unknown dims, the count for 1 in each of them (per example of a `?` batch).
        let types: Vec<&TensorType> = inputs[v]
            .iter()
            .map(|&u| &graph.node(order[u]).ty)
            .collect();
        let (flops, per_unknown) = match flops(&node.op, &types, &node.ty) {
            Some(f) => (Some(f), false),
            None => {
                let ones: Vec<TensorType> = types.iter().map(|t| unknown_as_one(t)).collect();
                let refs: Vec<&TensorType> = ones.iter().collect();
                (flops(&node.op, &refs, &unknown_as_one(&node.ty)), true)
            }
        };
        let mut fields = vec![
            ("name", json::string(&node.name)),
            ("op", json::string(&op_text(&node.op))),
            ("kind", json::string(kind(&node.op))),
            ("type", json::string(&node.ty.to_string())),
            ("dims", json::string(&dims(&node.ty))),
            (
                "attrs",
                json::array(attributes(&node.op).iter().map(|a| json::string(a))),
            ),
            ("flops", flops.map_or("null".to_string(), |f| f.to_string())),
            ("flopsPerUnknown", per_unknown.to_string()),
            ("in", json::array(inputs[v].iter().map(|i| i.to_string()))),
            (
                "out",
                json::array(consumers[v].iter().map(|i| i.to_string())),
            ),
            ("scope", tree.scope_of[v].to_string()),
            (
                "host",
                tree.host[v].map_or("null".to_string(), |h| h.to_string()),
            ),
            (
                "params",
                json::array(params[v].iter().map(|i| i.to_string())),
            ),
            ("lines", json::array(lines.iter().map(|l| json::string(l)))),
            (
                "plines",
                json::array(param_lines.iter().map(|l| json::string(l))),
            ),
            ("w", json::number(sizes[v].0)),
            ("h", json::number(sizes[v].1)),
            ("output", outputs.contains(&v).to_string()),
            (
                "origin",
                json::array(
                    origin
                        .get(node.name.as_str())
                        .into_iter()
                        .flatten()
                        .map(|r| r.to_string()),
                ),
            ),
        ];
        if let Op::Fused(f) = &node.op {
            fields.push(("expr", json::string(&f.expr().to_string())));
        }
        if let Some((ms, ops, share)) = time {
            fields.push(("ms", format!("{ms:.6}")));
            fields.push(("share", format!("{share:.6}")));
            fields.push((
                "heat",
                format!("{:.4}", (share / max_share.max(1e-12)).sqrt()),
            ));
            fields.push(("kernel", json::string(ops)));
        }
        nodes_json.push(json::object(fields));
    }

    // Each scope's label (its path below its parent's), time share and folded box size.
    let labels: Vec<String> = tree
        .scopes
        .iter()
        .map(|scope| match scope.parent {
            Some(p) if !tree.scopes[p].path.is_empty() => scope
                .path
                .strip_prefix(&format!("{}/", tree.scopes[p].path))
                .unwrap_or(&scope.path)
                .to_string(),
            _ => scope.path.clone(),
        })
        .collect();
    let shares: Option<Vec<f64>> = extras.times.as_ref().map(|t| {
        let mut ms = vec![0.0; tree.scopes.len()];
        for (v, &id) in order.iter().enumerate() {
            let own = t.by_node.get(&graph.node(id).name).map_or(0.0, |x| x.0);
            let mut at = Some(tree.scope_of[v]);
            while let Some(a) = at {
                ms[a] += own;
                at = tree.scopes[a].parent;
            }
        }
        ms.iter().map(|m| m / t.total_ms.max(1e-12)).collect()
    });
    let folded_sizes: Vec<(f64, f64)> = (0..tree.scopes.len())
        .map(|s| {
            folded_size(
                &labels[s],
                tree.scopes[s].total,
                shares.as_ref().map(|x| x[s]),
            )
        })
        .collect();
    let layouts = scope_layouts(&tree, &inputs, &sizes, &folded_sizes);
    let scopes_json: Vec<String> = tree
        .scopes
        .iter()
        .enumerate()
        .map(|(s, scope)| {
            let (items, layout) = &layouts[s];
            let share = shares.as_ref().map(|x| x[s]);
            let (w, h) = folded_sizes[s];
            let placed: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let (kind, id) = match item {
                        Item::Node(v) => (0, *v),
                        Item::Scope(c) => (1, *c),
                    };
                    format!(
                        "[{kind},{id},{},{}]",
                        layout.layer[i],
                        json::number(layout.x[i])
                    )
                })
                .collect();
            let mut fields = vec![
                ("path", json::string(&scope.path)),
                ("label", json::string(&labels[s])),
                (
                    "parent",
                    scope.parent.map_or("null".to_string(), |p| p.to_string()),
                ),
                ("total", scope.total.to_string()),
                ("folded", scope.folded.to_string()),
                ("w", json::number(w)),
                ("h", json::number(h)),
                ("items", format!("[{}]", placed.join(","))),
                (
                    "routes",
                    json::array(layout.routes.iter().map(|(a, b, xs)| {
                        format!(
                            "[{a},{b},{}]",
                            json::array(xs.iter().map(|&x| json::number(x)))
                        )
                    })),
                ),
            ];
            if let Some(share) = share {
                fields.push(("share", format!("{share:.6}")));
                fields.push((
                    "heat",
                    format!("{:.4}", (share / max_share.max(1e-12)).sqrt().min(1.0)),
                ));
            }
            json::object(fields)
        })
        .collect();

    json::object([
        ("title", json::string(title)),
        ("note", json::string(&extras.note)),
        ("nodes", format!("[{}]", nodes_json.join(","))),
        ("scopes", format!("[{}]", scopes_json.join(","))),
        ("rewrites", format!("[{}]", rewrites.join(","))),
        ("before", format!("{{{}}}", before.join(","))),
        (
            "totalMs",
            extras
                .times
                .as_ref()
                .map_or("null".to_string(), |t| json::number(t.total_ms)),
        ),
        ("gapX", json::number(super::layout::GAP_X)),
        ("gapY", json::number(super::layout::GAP_Y)),
        ("scopePad", json::number(SCOPE_PAD)),
        ("scopeHeader", json::number(SCOPE_HEADER)),
    ])
}

/// The size of a folded scope's box: its name, its node count, and its share of the time.
fn folded_size(label: &str, total: usize, share: Option<f64>) -> (f64, f64) {
    let mut lines = vec![cut(label), format!("{total} nodes")];
    if let Some(share) = share {
        lines.push(format!("{:.1}% of time", 100.0 * share));
    }
    let width = text_width(&lines, CHAR_WIDTH) + 2.0 * PAD + 16.0;
    (width.max(80.0), lines.len() as f64 * LINE + PAD)
}
