//! Fused nodes: an optional main op followed by an elementwise expression, one kernel.
//!
//! The fusion passes (`passes/fuse_epilogues.rs`, `passes/fuse_elementwise.rs`) replace a main
//! op (conv2d, depthwise_conv2d, matmul, a pool, a reduction, softmax, batch_norm or a
//! one-input movement op; see [`FusedOp::accepts_main`]) and the elementwise ops that only it
//! feeds, or a tree of elementwise ops, by one [`Op::Fused`] node. Its operands are the main
//! op's operands first, then every other value the expression reads. The expression is a
//! [`FusedExpr`]: a list of [`ExprNode`]s in evaluation order (each refers only to earlier
//! nodes), whose last node is the result. Values are f32 and broadcast with numpy rules, so a
//! node means exactly what the unfused ops meant, and the reference evaluator computes it op by
//! op, bit-identical to the graph it replaced.
//!
//! Invariants: a `FusedOp` is built through [`FusedOp::new`], which checks the main op's kind
//! and puts the expression in canonical form (post-order from the result, children left to
//! right, no two structurally equal nodes), so two fused nodes that compute the same thing
//! compare equal (CSE and compile-cache keys stay exact) and print → parse → print is stable.
//!
//! Text form (the `expr` attribute): a term is `main`, `$i` (operand `i`), `tK` (a binding),
//! or `op(term, ...)` with a unary or binary op name; `leaky_relu(term, alpha)`. Nodes used
//! more than once, or nested deeper than [`MAX_INLINE_DEPTH`], are bound first as
//! `tK = term;`, so the text is linear in the node count: `t2 = tanh(main); relu(mul(t2, t2))`.

use crate::op::{BinaryOp, Float, Op, UnaryOp};
use std::collections::HashMap;
use std::fmt;

/// Deepest nesting of ops in one term: the printer binds deeper nodes first, and the parser
/// refuses anything deeper (docs/FORMAT.md states this number).
pub const MAX_INLINE_DEPTH: usize = 32;

/// Most nodes an expression may have (a bound on parser work and kernel size).
pub const MAX_NODES: usize = 100_000;

/// One value of a fused expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprNode {
    /// The main op's result (only in a node with a main op).
    Main,
    /// The node's operand `i`, broadcast to the output shape.
    Operand(usize),
    /// `op(nodes[x])`.
    Unary(UnaryOp, usize),
    /// `op(nodes[a], nodes[b])`, numpy broadcasting.
    Binary(BinaryOp, usize, usize),
}

impl ExprNode {
    /// The expression nodes this one reads.
    pub fn children(&self) -> impl Iterator<Item = usize> {
        let (a, b) = match *self {
            ExprNode::Main | ExprNode::Operand(_) => (None, None),
            ExprNode::Unary(_, x) => (Some(x), None),
            ExprNode::Binary(_, a, b) => (Some(a), Some(b)),
        };
        a.into_iter().chain(b)
    }

    fn is_leaf(&self) -> bool {
        matches!(self, ExprNode::Main | ExprNode::Operand(_))
    }

    fn with_children(self, map: impl Fn(usize) -> usize) -> ExprNode {
        match self {
            ExprNode::Unary(u, x) => ExprNode::Unary(u, map(x)),
            ExprNode::Binary(b, x, y) => ExprNode::Binary(b, map(x), map(y)),
            leaf => leaf,
        }
    }
}

/// An elementwise expression; the last node is the result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FusedExpr {
    nodes: Vec<ExprNode>,
}

impl FusedExpr {
    /// An expression from nodes in evaluation order (each child index below its parent's);
    /// canonicalised. Errors on an empty list or a forward reference.
    pub fn new(nodes: Vec<ExprNode>) -> Result<FusedExpr, String> {
        if nodes.is_empty() {
            return Err("a fused expression needs at least one node".into());
        }
        if nodes.len() > MAX_NODES {
            return Err(format!(
                "a fused expression has {} nodes, more than the limit {MAX_NODES}",
                nodes.len()
            ));
        }
        for (i, n) in nodes.iter().enumerate() {
            if let Some(c) = n.children().find(|&c| c >= i) {
                return Err(format!(
                    "expression node {i} reads node {c}, which is not computed before it"
                ));
            }
        }
        Ok(FusedExpr { nodes }.canonical())
    }

    /// The nodes in evaluation order.
    pub fn nodes(&self) -> &[ExprNode] {
        &self.nodes
    }

    /// Index of the result node (the last).
    pub fn result(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Whether the expression reads the main result.
    pub fn uses_main(&self) -> bool {
        self.nodes.contains(&ExprNode::Main)
    }

    /// The largest operand index read, if any.
    pub fn max_operand(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                ExprNode::Operand(i) => Some(*i),
                _ => None,
            })
            .max()
    }

    /// The same expression with operand `i` renamed to `map(i)` (canonicalised again).
    pub fn map_operands(&self, map: impl Fn(usize) -> usize) -> FusedExpr {
        let nodes = self
            .nodes
            .iter()
            .map(|n| match *n {
                ExprNode::Operand(i) => ExprNode::Operand(map(i)),
                other => other,
            })
            .collect();
        FusedExpr { nodes }.canonical()
    }

    /// Post-order from the result, children left to right, structurally equal nodes merged,
    /// unreachable nodes dropped. Iterative, so a long chain costs no stack.
    fn canonical(&self) -> FusedExpr {
        let mut out: Vec<ExprNode> = Vec::with_capacity(self.nodes.len());
        let mut index_of: HashMap<ExprNode, usize> = HashMap::new();
        let mut new_of: Vec<Option<usize>> = vec![None; self.nodes.len()];
        // (node, children already pushed)
        let mut stack = vec![(self.result(), false)];
        while let Some((i, expanded)) = stack.pop() {
            if new_of[i].is_some() {
                continue;
            }
            let node = self.nodes[i];
            if !expanded {
                stack.push((i, true));
                // Pushed in reverse so the first child is finished first.
                let children: Vec<usize> = node.children().collect();
                for &c in children.iter().rev() {
                    if new_of[c].is_none() {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            // Every child is finished: it was pushed above and popped before this entry.
            let mapped = node.with_children(|c| new_of[c].unwrap_or(0));
            let j = *index_of.entry(mapped).or_insert_with(|| {
                out.push(mapped);
                out.len() - 1
            });
            new_of[i] = Some(j);
        }
        FusedExpr { nodes: out }
    }

    /// Checks the expression against its node: operands exist, `main` only with a main op.
    pub fn validate(&self, operands: usize, has_main: bool) -> Result<(), String> {
        if let Some(i) = self.max_operand().filter(|&i| i >= operands) {
            return Err(format!(
                "the expression reads ${i} but the node has {operands} operands"
            ));
        }
        if self.uses_main() && !has_main {
            return Err("the expression reads `main` but the node has no main op".into());
        }
        Ok(())
    }

    /// Parses the text form (see the module docs).
    pub fn parse(text: &str) -> Result<FusedExpr, String> {
        ExprParser::new(text)?.parse()
    }
}

/// The fused op: the main op (if any) on the first operands, then the expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FusedOp {
    main: Option<Box<Op>>,
    expr: FusedExpr,
}

impl FusedOp {
    /// Whether `op` may be the main op of a fused node: an f32 op with a fixed operand count
    /// whose result a kernel computes element by element into its output (contractions,
    /// windows, reductions, softmax, batch_norm and the single-input movement ops).
    pub fn accepts_main(op: &Op) -> bool {
        op.schema().is_some_and(|s| s.fused.is_some())
    }

    /// A fused op; errors if `main` cannot be fused or the expression does not fit it.
    pub fn new(main: Option<Op>, expr: FusedExpr) -> Result<FusedOp, String> {
        if let Some(m) = &main
            && !FusedOp::accepts_main(m)
        {
            return Err(format!(
                "{} cannot be the main op of a fused node",
                m.name()
            ));
        }
        if main.is_some() && !expr.uses_main() {
            return Err("a fused node's expression must read `main`".into());
        }
        if main.is_none() && expr.uses_main() {
            return Err("the expression reads `main` but the node has no main op".into());
        }
        Ok(FusedOp {
            main: main.map(Box::new),
            expr,
        })
    }

    /// The main op, if any.
    pub fn main(&self) -> Option<&Op> {
        self.main.as_deref()
    }

    /// The expression.
    pub fn expr(&self) -> &FusedExpr {
        &self.expr
    }

    /// Operands the main op takes (0 without one).
    pub fn main_arity(&self) -> usize {
        match self.main().map(Op::arity) {
            Some(crate::op::Arity::Exact(k)) => k,
            // `new` admits only fixed-arity main ops.
            Some(crate::op::Arity::AtLeast(k)) => k,
            None => 0,
        }
    }

    /// The same fused op with another main op of the same kind (a layout change).
    pub fn with_main(&self, main: Op) -> Result<FusedOp, String> {
        FusedOp::new(Some(main), self.expr.clone())
    }

    /// The .kiln keyword: `fused_<main>` or `elementwise`.
    pub fn name(&self) -> &'static str {
        match self.main() {
            None => "elementwise",
            // `new` admits only main ops whose schema names a fused keyword.
            Some(m) => m.schema().and_then(|s| s.fused).unwrap_or("fused"),
        }
    }

    /// The main op's keyword for a `fused_<main>` keyword.
    pub fn main_keyword(keyword: &str) -> Option<&'static str> {
        crate::schema::fused_main(keyword).map(|s| s.keyword)
    }
}

impl fmt::Display for FusedExpr {
    /// The text form: shared or deep nodes bound first, the rest inline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut uses = vec![0usize; self.nodes.len()];
        for n in &self.nodes {
            for c in n.children() {
                uses[c] += 1;
            }
        }
        // Inline text and nesting depth of each node, built bottom-up; a bound node's text
        // is its name.
        let mut text: Vec<String> = Vec::with_capacity(self.nodes.len());
        let mut depth: Vec<usize> = Vec::with_capacity(self.nodes.len());
        let mut bindings: Vec<String> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let (t, d) = match *n {
                ExprNode::Main => ("main".to_string(), 0),
                ExprNode::Operand(k) => (format!("${k}"), 0),
                ExprNode::Unary(UnaryOp::LeakyRelu { alpha }, x) => (
                    format!("leaky_relu({}, {})", text[x], crate::text::fmt_f32(alpha.0)),
                    depth[x] + 1,
                ),
                ExprNode::Unary(u, x) => (format!("{}({})", u.name(), text[x]), depth[x] + 1),
                ExprNode::Binary(b, x, y) => (
                    format!("{}({}, {})", b.name(), text[x], text[y]),
                    depth[x].max(depth[y]) + 1,
                ),
            };
            let is_result = i + 1 == self.nodes.len();
            if !n.is_leaf() && !is_result && (uses[i] > 1 || d >= MAX_INLINE_DEPTH) {
                bindings.push(format!("t{i} = {t}; "));
                text.push(format!("t{i}"));
                depth.push(0);
            } else {
                text.push(t);
                depth.push(d);
            }
        }
        for b in &bindings {
            f.write_str(b)?;
        }
        f.write_str(text.last().map_or("", String::as_str))
    }
}

/// A recursive-descent parser over the expression text; nesting is bounded by
/// [`MAX_INLINE_DEPTH`].
struct ExprParser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
    nodes: Vec<ExprNode>,
    bound: HashMap<&'a str, usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Operand(usize),
    Number(f32),
    Punct(char),
}

impl<'a> ExprParser<'a> {
    fn new(text: &'a str) -> Result<ExprParser<'a>, String> {
        let mut toks = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i] as char;
            if c.is_ascii_whitespace() {
                i += 1;
            } else if "(),;=".contains(c) {
                toks.push(Tok::Punct(c));
                i += 1;
            } else if c == '$' {
                let end = scan(bytes, i + 1, |b| b.is_ascii_digit());
                let n = text[i + 1..end]
                    .parse()
                    .map_err(|_| format!("expected an operand number after `$` at {i}"))?;
                toks.push(Tok::Operand(n));
                i = end;
            } else if c.is_ascii_alphabetic() || c == '_' {
                let end = scan(bytes, i, |b| b.is_ascii_alphanumeric() || b == b'_');
                let word = &text[i..end];
                // `inf` and `nan` are numbers (leaky_relu's alpha), not names.
                match word {
                    "inf" => toks.push(Tok::Number(f32::INFINITY)),
                    "nan" => toks.push(Tok::Number(f32::NAN)),
                    _ => toks.push(Tok::Word(word)),
                }
                i = end;
            } else if c == '-' || c == '.' || c.is_ascii_digit() {
                let end = scan(bytes, i + 1, |b| {
                    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+'
                });
                let word = &text[i..end];
                let v = match word {
                    "-inf" => f32::NEG_INFINITY,
                    "-nan" => -f32::NAN,
                    _ => word
                        .parse::<f32>()
                        .map_err(|_| format!("`{word}` is not a number"))?,
                };
                toks.push(Tok::Number(v));
                i = end;
            } else {
                return Err(format!("unexpected character `{c}` at {i}"));
            }
        }
        Ok(ExprParser {
            toks,
            pos: 0,
            nodes: Vec::new(),
            bound: HashMap::new(),
        })
    }

    fn parse(mut self) -> Result<FusedExpr, String> {
        // Bindings: `word = term ;` until the final term.
        while let (Some(Tok::Word(name)), Some(Tok::Punct('='))) = (self.peek(0), self.peek(1)) {
            self.pos += 2;
            let reserved = name == "main"
                || UnaryOp::ALL.iter().any(|u| u.name() == name)
                || BinaryOp::ALL.iter().any(|b| b.name() == name);
            if reserved {
                return Err(format!("`{name}` is reserved and cannot be bound"));
            }
            let value = self.term(0)?;
            self.expect(';')?;
            if self.bound.insert(name, value).is_some() {
                return Err(format!("`{name}` is bound twice"));
            }
        }
        let result = self.term(0)?;
        if let Some(t) = self.peek(0) {
            return Err(format!("unexpected {t:?} after the expression"));
        }
        // The result must be the last node: when it is a bound name, repeat its node (the
        // copy and the original merge in canonicalisation).
        let mut nodes = self.nodes;
        if result + 1 != nodes.len() {
            let copy = nodes[result];
            nodes.push(copy);
        }
        FusedExpr::new(nodes)
    }

    fn peek(&self, k: usize) -> Option<Tok<'a>> {
        self.toks.get(self.pos + k).copied()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.peek(0) {
            Some(Tok::Punct(p)) if p == c => {
                self.pos += 1;
                Ok(())
            }
            other => Err(format!("expected `{c}`, found {other:?}")),
        }
    }

    fn push(&mut self, n: ExprNode) -> Result<usize, String> {
        if self.nodes.len() >= MAX_NODES {
            return Err(format!("the expression has more than {MAX_NODES} nodes"));
        }
        self.nodes.push(n);
        Ok(self.nodes.len() - 1)
    }

    fn term(&mut self, depth: usize) -> Result<usize, String> {
        if depth > MAX_INLINE_DEPTH {
            return Err(format!(
                "the expression nests deeper than {MAX_INLINE_DEPTH} levels; bind inner terms \
                 with `tK = ...;`"
            ));
        }
        let tok = self.peek(0).ok_or("the expression ends early")?;
        self.pos += 1;
        match tok {
            Tok::Operand(i) => self.push(ExprNode::Operand(i)),
            Tok::Word("main") => self.push(ExprNode::Main),
            Tok::Word(w) if self.peek(0) != Some(Tok::Punct('(')) => self
                .bound
                .get(w)
                .copied()
                .ok_or_else(|| format!("`{w}` is not bound")),
            Tok::Word(w) => {
                self.expect('(')?;
                let a = self.term(depth + 1)?;
                let node = if let Some(b) = BinaryOp::ALL.iter().find(|b| b.name() == w) {
                    self.expect(',')?;
                    let c = self.term(depth + 1)?;
                    ExprNode::Binary(*b, a, c)
                } else if w == "leaky_relu" {
                    self.expect(',')?;
                    let alpha = match self.peek(0) {
                        Some(Tok::Number(v)) => v,
                        other => {
                            return Err(format!("expected leaky_relu's alpha, found {other:?}"));
                        }
                    };
                    self.pos += 1;
                    ExprNode::Unary(
                        UnaryOp::LeakyRelu {
                            alpha: Float(alpha),
                        },
                        a,
                    )
                } else if let Some(u) = UnaryOp::ALL.iter().find(|u| u.name() == w) {
                    ExprNode::Unary(*u, a)
                } else {
                    return Err(format!(
                        "`{w}` is not an elementwise op (expected a unary or binary op name)"
                    ));
                };
                self.expect(')')?;
                self.push(node)
            }
            other => Err(format!("expected a term, found {other:?}")),
        }
    }
}

fn scan(bytes: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    let mut i = from;
    while i < bytes.len() && ok(bytes[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
