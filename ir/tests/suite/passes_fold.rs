//! Tests of `fold-constants`, `simplify-algebra`, `fold-batch-norm` and `fold-scale-shift`.
//!
//! Golden files: ir/tests/passes/<pass>/*.kiln hold an input graph, a line `# ---- expected`
//! and the expected output (`kiln_ir::text::print` of the rewritten graph; comments are
//! ignored when comparing). A line `# options: freeze_variables fold_budget_bytes=N` before the
//! marker sets the pass context. `UPDATE_GOLDEN=1` rewrites the expected half.
//!
//! Semantics: the reference backend runs every golden input and every conformance graph
//! (tests/golden/cases/*/graph.kiln with its inputs/*.npy) before and after each pass, on feeds
//! sprinkled with -0.0, +0.0, NaN, ±inf, subnormals and huge values. `simplify-algebra` and
//! `fold-constants` must be bit-identical (folding uses the very evaluator the reference runs);
//! `fold-batch-norm` and `fold-scale-shift` must agree within 1e-5 relative.

use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::passes::fold_batch_norm::FoldBatchNorm;
use kiln_ir::passes::fold_constants::FoldConstants;
use kiln_ir::passes::fold_scale_shift::FoldScaleShift;
use kiln_ir::passes::simplify_algebra::SimplifyAlgebra;
use kiln_ir::passes::{Pass, PassContext};
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{Graph, NodeId, Op, Shape, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MARKER: &str = "# ---- expected";

/// How closely outputs must agree after a pass.
#[derive(Clone, Copy, Debug)]
enum Tol {
    Exact,
    Relative(f64),
}

fn pass_by_name(name: &str) -> (Box<dyn Pass>, Tol) {
    match name {
        "fold-constants" => (Box::new(FoldConstants), Tol::Exact),
        "simplify-algebra" => (Box::new(SimplifyAlgebra), Tol::Exact),
        "fold-batch-norm" => (Box::new(FoldBatchNorm), Tol::Relative(1e-5)),
        "fold-scale-shift" => (Box::new(FoldScaleShift), Tol::Relative(1e-5)),
        _ => panic!("unknown pass {name}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The pass context a golden file asks for.
fn context(text: &str) -> PassContext {
    let mut cx = PassContext::default();
    for line in text.lines() {
        let Some(opts) = line.trim().strip_prefix("# options:") else {
            continue;
        };
        for opt in opts.split_whitespace() {
            match opt.split_once('=') {
                None if opt == "freeze_variables" => cx.freeze_variables = true,
                Some(("fold_budget_bytes", n)) => cx.fold_budget_bytes = n.parse().unwrap(),
                _ => panic!("unknown option {opt}"),
            }
        }
    }
    cx
}

/// The text with comments and blank lines dropped, lines trimmed.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim_end())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `pass` once and verifies the graph; returns whether it changed anything.
fn run_pass(pass: &dyn Pass, g: &mut Graph, cx: &mut PassContext) -> bool {
    let changed = pass
        .run(g, cx)
        .unwrap_or_else(|e| panic!("{}: {e}", pass.name()));
    g.verify()
        .unwrap_or_else(|e| panic!("{} broke the graph: {e}", pass.name()));
    changed
}

/// Deterministic feeds with special values mixed in.
fn special_feed(dims: &[usize], seed: u64) -> Tensor {
    const SPECIAL: [f32; 8] = [
        -0.0,
        0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -3e38,
        3e38,
    ];
    let mut t = Tensor::uniform(dims, -2.0, 2.0, seed);
    // Every other element is special, rotating with the seed so that over seeds 0..8 each
    // special value lands on every even position.
    for (i, v) in t.as_f32_mut().unwrap().iter_mut().enumerate() {
        if i % 2 == 0 {
            *v = SPECIAL[(i / 2 + seed as usize) % SPECIAL.len()];
        }
    }
    t
}

/// Runs `g`'s outputs on the reference backend with variables at their initial values and
/// placeholders from `given` (by name) or made up: uniform, or with special values rotated by
/// `special`. Unknown dims of made-up feeds are 2. Returns (output name, value) pairs.
fn run_reference(
    g: &Graph,
    given: &HashMap<String, Tensor>,
    special: Option<u64>,
) -> Vec<(String, Tensor)> {
    let mut feeds = Vec::new();
    let mut shapes = HashMap::new();
    for (i, id) in g.placeholders().into_iter().enumerate() {
        let node = g.node(id);
        let t = given.get(&node.name).cloned().unwrap_or_else(|| {
            let dims: Vec<usize> = node
                .ty
                .shape
                .dims()
                .iter()
                .map(|d| d.unwrap_or(2))
                .collect();
            match special {
                Some(rot) => special_feed(&dims, rot + 3 * i as u64),
                None => Tensor::uniform(&dims, -2.0, 2.0, 7 + i as u64),
            }
        });
        shapes.insert(id, Shape::known(t.dims()));
        feeds.push(t);
    }
    let outputs = g.outputs().to_vec();
    let (sub, map) = g.extract(&outputs, &shapes).expect("extract");
    let vars: Vec<NodeId> = sub.variables();
    let mut var_values: Vec<Tensor> = vars
        .iter()
        .map(|&v| match &sub.node(v).op {
            Op::Var(src) => kiln_ir::eval::source_value(src).expect("var value"),
            _ => unreachable!(),
        })
        .collect();
    let sub_feeds: Vec<NodeId> = g
        .placeholders()
        .iter()
        .filter_map(|p| map.get(p).copied())
        .collect();
    let feed_refs: Vec<&Tensor> = g
        .placeholders()
        .iter()
        .zip(&feeds)
        .filter(|(p, _)| map.contains_key(p))
        .map(|(_, t)| t)
        .collect();
    let req = CompileRequest {
        graph: &sub,
        feeds: sub_feeds,
        variables: vars,
        fetches: outputs.iter().map(|o| map[o]).collect(),
        targets: vec![],
    };
    let exe = ReferenceBackend.compile(&req).expect("compile");
    let out = exe.run(&feed_refs, &mut var_values).expect("run");
    outputs
        .iter()
        .map(|&o| g.node(o).name.clone())
        .zip(out)
        .collect()
}

/// Asserts that two runs agree: same output names, and values within `tol`
/// ([`kiln_ir::compare`]: dims, dtype, NaN/inf placement; integer and bool results exact).
fn assert_agree(what: &str, before: &[(String, Tensor)], after: &[(String, Tensor)], tol: Tol) {
    assert_eq!(before.len(), after.len(), "{what}: output count");
    for ((n0, a), (n1, b)) in before.iter().zip(after) {
        assert_eq!(n0, n1, "{what}: output names must survive the pass");
        let tol = match tol {
            Tol::Exact => kiln_ir::compare::Tolerance::EXACT,
            Tol::Relative(r) => kiln_ir::compare::Tolerance::abs_rel(r),
        };
        kiln_ir::compare::assert_close(b, a, tol, &format!("{what}: %{n0}"));
    }
}

/// Runs one golden file: structural comparison plus the semantic check.
fn check_golden(pass_name: &str, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let (input, expected) = match text.split_once(MARKER) {
        Some((i, e)) => (i.to_string(), e.to_string()),
        None => (text.clone(), String::new()),
    };
    let (pass, tol) = pass_by_name(pass_name);
    let mut cx = context(&input);
    let what = path.display().to_string();
    let before =
        kiln_ir::text::parse(&input, path.parent()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut after = before.clone();
    run_pass(pass.as_ref(), &mut after, &mut cx);
    let printed = kiln_ir::text::print(&after);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let new = format!(
            "{}{MARKER}\n{printed}",
            input.trim_end_matches('\n').to_string() + "\n"
        );
        std::fs::write(path, new).unwrap();
    } else {
        assert_eq!(
            strip_comments(&printed),
            strip_comments(&expected),
            "{what}: output differs from the expected half\n{printed}"
        );
    }
    // Idempotent: a second run changes nothing.
    let mut again = after.clone();
    assert!(
        !run_pass(pass.as_ref(), &mut again, &mut cx),
        "{what}: second run still changes the graph"
    );
    // Every change is logged with the pass's name.
    assert!(cx.log.iter().all(|r| r.pass == pass.name()));
    assert_eq!(
        cx.log.is_empty(),
        strip_comments(&kiln_ir::text::print(&before)) == strip_comments(&printed),
        "{what}: log {:?}",
        cx.log
    );
    // The printed result parses back to the same graph.
    let reparsed = kiln_ir::text::parse(&printed, path.parent()).unwrap();
    assert_eq!(kiln_ir::text::print(&reparsed), printed);
    for special in std::iter::once(None).chain((0..8).map(Some)) {
        let none = HashMap::new();
        assert_agree(
            &what,
            &run_reference(&before, &none, special),
            &run_reference(&after, &none, special),
            tol,
        );
    }
}

fn golden_dir(pass_name: &str) {
    let dir = root().join("tests/passes").join(pass_name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kiln"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{}: too few golden files", dir.display());
    for f in files {
        check_golden(pass_name, &f);
    }
}

#[test]
fn golden_fold_constants() {
    golden_dir("fold-constants");
}

#[test]
fn golden_simplify_algebra() {
    golden_dir("simplify-algebra");
}

#[test]
fn golden_fold_batch_norm() {
    golden_dir("fold-batch-norm");
}

#[test]
fn golden_fold_scale_shift() {
    golden_dir("fold-scale-shift");
}

/// Every conformance graph, through each pass (variables frozen), gives the same outputs on
/// the conformance inputs and on feeds full of special values.
#[test]
fn conformance_graphs_keep_their_results() {
    let cases = root().join("../tests/golden/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cases)
        .expect("conformance cases")
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() > 50, "expected the conformance cases");
    let mut folded = 0;
    for dir in dirs {
        let g = kiln_ir::text::parse_file(&dir.join("graph.kiln"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut given = HashMap::new();
        for id in g.placeholders() {
            let name = g.node(id).name.clone();
            let file = dir
                .join("inputs")
                .join(format!("{}.npy", name.replace('/', "_")));
            if let Ok(r) = kiln_ir::npy::read(&file) {
                given.insert(name, r.tensor);
            }
        }
        for name in [
            "fold-constants",
            "simplify-algebra",
            "fold-batch-norm",
            "fold-scale-shift",
        ] {
            let (pass, tol) = pass_by_name(name);
            let mut cx = PassContext {
                freeze_variables: true,
                ..PassContext::default()
            };
            let mut after = g.clone();
            if run_pass(pass.as_ref(), &mut after, &mut cx) {
                folded += 1;
            }
            let what = format!("{} after {name}", dir.display());
            assert_agree(
                &what,
                &run_reference(&g, &given, None),
                &run_reference(&after, &given, None),
                tol,
            );
            // Made-up special-value feeds are f32: cases with index or mask placeholders
            // (gather indices, cast inputs) run on their stored feeds only.
            let all_f32 = g
                .placeholders()
                .iter()
                .all(|&p| g.node(p).ty.dtype == kiln_ir::DType::F32);
            if all_f32 {
                let none = HashMap::new();
                assert_agree(
                    &what,
                    &run_reference(&g, &none, Some(1)),
                    &run_reference(&after, &none, Some(1)),
                    tol,
                );
            }
        }
    }
    // The cases include constant folding and batch-norm fusion graphs: something must fire.
    eprintln!("{folded} (graph, pass) pairs changed");
    assert!(folded > 0, "no pass changed any conformance graph");
}

/// The semantic check has teeth: `x + 0.0 -> x`, a rule that is NOT exact, is caught by the
/// special-value feeds (x = -0.0 gives +0.0 before and -0.0 after).
#[test]
fn inexact_rewrite_is_detected() {
    let parse = |t: &str| kiln_ir::text::parse(t, None).unwrap();
    let before =
        parse("kiln 1\ninput %x : f32[4]\nconst %z : f32[] = 0.0\n%y = add(%x, %z)\noutput %y\n");
    let after = parse("kiln 1\ninput %x : f32[4]\n%w = neg(%x)\n%y2 = neg(%w)\noutput %y2\n");
    let none = HashMap::new();
    let differs = (0..8).any(|rot| {
        let a = run_reference(&before, &none, Some(rot));
        let b = run_reference(&after, &none, Some(rot));
        a[0].1 != b[0].1
    });
    assert!(differs, "special feeds never exposed -0.0 + 0.0");
}

/// The log line names the folded node, its operands and the constant's type; fetched roots
/// follow the fold (same name, new id).
#[test]
fn fold_log_and_roots() {
    let mut g = kiln_ir::text::parse(
        "kiln 1\nconst %c1 : f32[3] = [1.0, 2.0, 3.0]\nconst %c2 : f32[3] = ones\n\
         %a = add(%c1, %c2)\ninput %x : f32[3]\n%y = mul(%x, %a)\noutput %y\n",
        None,
    )
    .unwrap();
    let a = g.find("a").unwrap();
    let mut cx = PassContext::default();
    cx.roots.insert(a);
    assert!(run_pass(&FoldConstants, &mut g, &mut cx));
    assert_eq!(cx.log.len(), 1);
    assert_eq!(
        cx.log[0].message,
        "folded %a = add(%c1, %c2) -> const f32[3]"
    );
    let new_a = g.find("a").expect("the constant keeps the name %a");
    assert!(cx.roots.contains(&new_a) && !cx.roots.contains(&a));
    match &g.node(new_a).op {
        Op::Const(src) => {
            let v = kiln_ir::eval::source_value(src).unwrap();
            assert_eq!(v.as_f32().unwrap(), &[2.0, 3.0, 4.0]);
        }
        op => panic!("expected a const, got {}", op.name()),
    }
    assert!(
        g.find("c1").is_none() && g.find("c2").is_none(),
        "dead operands removed"
    );
}

/// Batch-norm folding against a hand computation: one 1x1 conv channel, W = 2, scale 3,
/// var 4 - eps (so sqrt = 2), mean 1, offset 0.5: y = (2x - 1) * 3 / 2 + 0.5 = 3x - 1.
#[test]
fn batch_norm_fold_by_hand() {
    let mut g = kiln_ir::text::parse(
        "kiln 1\ninput %x : f32[1,1,2,1]\nconst %w : f32[1,1,1,1] = [2.0]\n\
         const %s : f32[1] = [3.0]\nconst %o : f32[1] = [0.5]\nconst %m : f32[1] = [1.0]\n\
         const %v : f32[1] = [3.999]\n%c = conv2d(%x, %w, padding=\"VALID\")\n\
         %bn = batch_norm(%c, %s, %o, %m, %v)\noutput %bn\n",
        None,
    )
    .unwrap();
    let mut cx = PassContext::default();
    assert!(run_pass(&FoldBatchNorm, &mut g, &mut cx));
    let value = |name: &str| match &g.node(g.find(name).unwrap()).op {
        Op::Const(src) => kiln_ir::eval::source_value(src)
            .unwrap()
            .into_f32()
            .unwrap(),
        op => panic!("%{name} is {}", op.name()),
    };
    assert_eq!(value("w_bn"), vec![3.0]);
    assert_eq!(value("bn_bias"), vec![-1.0]);
    assert!(matches!(
        g.node(g.find("bn").unwrap()).op,
        Op::BiasAdd { .. }
    ));
    assert!(matches!(g.node(g.find("c").unwrap()).op, Op::Conv2d(_)));
    assert!(
        g.find("w").is_none() && g.find("s").is_none(),
        "dead parameters removed"
    );
    assert_eq!(cx.log.len(), 1);
}

/// Weights large enough to be scaled on several threads (conv: channels innermost; transpose_b
/// matmul: runs of `inner` elements per channel) give, bit for bit, the per-element formula
/// `w[i] * f[(i / inner) % channels]` in f64.
#[test]
fn batch_norm_fold_of_large_weights_matches_the_formula() {
    let (eps, cout) = (0.001f32, 96usize);
    for (contraction, wdims, inner) in [
        ("conv2d(%x, %w, padding=\"SAME\")", vec![3, 3, 80, cout], 1),
        ("matmul(%x, %w, transpose_b=true)", vec![cout, 800], 800),
    ] {
        let xdims = if inner == 1 { "1,4,4,80" } else { "2,800" };
        let numel: usize = wdims.iter().product();
        assert!(numel >= 1 << 16, "large enough for the threaded path");
        let dims = wdims.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let text = format!(
            "kiln 1\ninput %x : f32[{xdims}]\nconst %w : f32[{}] = normal(0, 1, 3)\n\
             const %s : f32[{cout}] = uniform(0.5, 2, 4)\nconst %o : f32[{cout}] = normal(0, 1, 5)\n\
             const %m : f32[{cout}] = normal(0, 1, 6)\nconst %v : f32[{cout}] = uniform(0.1, 3, 7)\n\
             %c = {contraction}\n%bn = batch_norm(%c, %s, %o, %m, %v, epsilon={eps})\noutput %bn\n",
            dims.join(",")
        );
        let mut g = kiln_ir::text::parse(&text, None).unwrap();
        let value = |g: &Graph, name: &str| match &g.node(g.find(name).unwrap()).op {
            Op::Const(src) => kiln_ir::eval::source_value(src)
                .unwrap()
                .into_f32()
                .unwrap(),
            op => panic!("%{name} is {}", op.name()),
        };
        let (w, s, v) = (value(&g, "w"), value(&g, "s"), value(&g, "v"));
        assert!(run_pass(
            &FoldBatchNorm,
            &mut g,
            &mut PassContext::default()
        ));
        let want: Vec<u32> = (0..numel)
            .map(|i| {
                let c = (i / inner) % cout;
                let f = s[c] as f64 / (v[c] as f64 + eps as f64).sqrt();
                ((w[i] as f64 * f) as f32).to_bits()
            })
            .collect();
        let got: Vec<u32> = value(&g, "w_bn").iter().map(|x| x.to_bits()).collect();
        assert!(got == want, "{contraction}: folded weights differ");
    }
}
