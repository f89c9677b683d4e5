//! Statement-level parsing of .kiln text into a [`Graph`].
//!
//! One statement a line: the file is read line by line, each line lexed on its own, and each
//! statement added to the graph as soon as it is read, so names must be defined before they
//! are used (outputs are the exception: they are resolved at the end of the file). Every error
//! is an [`Error::Parse`] at the offending token; errors from [`Graph::add`] (shape inference)
//! are wrapped with the statement's position.

use super::decl::{FileRefs, initializer, parse_type};
use super::lexer::{Cursor, Tok, Token, lex_line};
use super::ops::{Attr, build_op, edit_distance};
use super::values::{LineCtx, describe_tok, unclosed};
use super::{FORMAT_VERSION, MIN_FORMAT_VERSION};
use crate::op::{Initializer, Op, Source};
use crate::schema::SAFETENSORS_SINCE;
use crate::{Error, Graph, Result};
use std::collections::HashMap;

/// Parses a whole file's text (see [`super::parse`]).
pub(crate) fn parse_text(text: &str, files: FileRefs) -> Result<Graph> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        graph: Graph::new(),
        defined: HashMap::new(),
        outputs: Vec::new(),
        files,
        version: FORMAT_VERSION,
    };
    let mut seen_header = false;
    for (i, line) in text.split('\n').enumerate() {
        let lc = LineCtx {
            no: i + 1,
            text: line,
        };
        let toks = lex_line(line).map_err(|(off, msg)| lc.err(off, msg))?;
        if toks.is_empty() {
            continue;
        }
        let mut cur = Cursor { lc, toks, pos: 0 };
        if seen_header {
            p.statement(&mut cur)?;
        } else {
            p.version = header(&mut cur)?;
            seen_header = true;
        }
    }
    if !seen_header {
        return Err(Error::Parse {
            line: 1,
            col: 1,
            message: format!("empty file: expected the header {}", versions()),
        });
    }
    p.finish()
}

/// The headers this reader accepts, for messages: "`kiln 1` or `kiln 2` or `kiln 3`".
fn versions() -> String {
    let all: Vec<String> = (MIN_FORMAT_VERSION..=FORMAT_VERSION)
        .map(|v| format!("`kiln {v}`"))
        .collect();
    all.join(" or ")
}

/// Checks the `kiln N` header line (versions [`MIN_FORMAT_VERSION`] to [`FORMAT_VERSION`]) and
/// returns N.
fn header(cur: &mut Cursor<'_>) -> Result<u64> {
    if !matches!(
        cur.peek(),
        Some(Token {
            tok: Tok::Ident("kiln"),
            ..
        })
    ) {
        return Err(cur.lc.err(
            cur.here(),
            format!(
                "missing header: a .kiln file starts with {}, found {}",
                versions(),
                describe_tok(cur.peek())
            ),
        ));
    }
    cur.pos += 1;
    let (text, off) = match cur.peek() {
        Some(&Token {
            tok: Tok::Num { text, is_int: true },
            off,
        }) => (text, off),
        _ => return Err(cur.expected("the format version after `kiln` (e.g. `kiln 1`)")),
    };
    cur.pos += 1;
    let version = text
        .parse::<u64>()
        .ok()
        .filter(|v| (MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(v));
    let Some(version) = version else {
        return Err(cur.lc.err(
            off,
            format!(
                "unsupported format version {text}: this reader supports versions \
                 {MIN_FORMAT_VERSION} to {FORMAT_VERSION} ({})",
                versions()
            ),
        ));
    };
    cur.expect_end()?;
    Ok(version)
}

/// The state of a parse: the graph so far, where each name was defined, pending outputs.
struct Parser {
    graph: Graph,
    /// Line each name was defined on, for duplicate-name messages.
    defined: HashMap<String, usize>,
    /// Output names with the position to report if they turn out undefined.
    outputs: Vec<(String, Error)>,
    /// The files initialisers reference, and those read so far (each is read once).
    files: FileRefs,
    /// The header's format version: ops newer than it are errors.
    version: u64,
}

impl Parser {
    fn statement(&mut self, cur: &mut Cursor<'_>) -> Result<()> {
        let first = cur.peek().cloned();
        match first.map(|t| t.tok) {
            Some(Tok::Ident(kw @ ("input" | "var" | "const"))) => {
                cur.pos += 1;
                self.source(cur, kw)
            }
            Some(Tok::Ident("output")) => {
                cur.pos += 1;
                self.output(cur)
            }
            Some(Tok::Ident("kiln")) => Err(cur.lc.err(
                cur.here(),
                "the header `kiln N` may appear only once, as the first statement",
            )),
            Some(Tok::Name(_)) => self.op_statement(cur),
            _ => Err(cur
                .expected("a statement (`input`, `var`, `const`, `output` or `%name = op(...)`)")),
        }
    }

    fn check_new_name(&self, cur: &Cursor<'_>, name: &str, off: usize) -> Result<()> {
        match self.defined.get(name) {
            Some(line) => Err(cur.lc.err(
                off,
                format!("duplicate name %{name} (already defined on line {line})"),
            )),
            None => Ok(()),
        }
    }

    /// Adds a node; errors from the graph (shape inference) get the statement's position.
    fn add(
        &mut self,
        cur: &Cursor<'_>,
        name: &str,
        op: Op,
        inputs: &[crate::NodeId],
    ) -> Result<()> {
        let start = cur.toks.first().map_or(0, |t| t.off);
        self.graph
            .add(name, op, inputs)
            .map_err(|e| cur.lc.err(start, e.to_string()))?;
        self.defined.insert(name.to_string(), cur.lc.no);
        Ok(())
    }

    /// `input %n : TYPE` / `var %n : TYPE = INIT` / `const %n : TYPE = INIT`.
    fn source(&mut self, cur: &mut Cursor<'_>, kw: &str) -> Result<()> {
        let (name, name_off) = cur.expect_name(&format!("a %name after `{kw}`"))?;
        self.check_new_name(cur, name, name_off)?;
        cur.expect_punct(':', &format!("`:` and a type after `{kw} %{name}`"))?;
        let (ty, unknown_dim) = parse_type(cur)?;
        if kw == "input" {
            if cur.is_punct('=') {
                return Err(cur.lc.err(
                    cur.here(),
                    "an input takes no initialiser; use `var` or `const`",
                ));
            }
            cur.expect_end()?;
            return self.add(cur, name, Op::Input(ty), &[]);
        }
        if let Some(off) = unknown_dim {
            return Err(cur.lc.err(
                off,
                format!("{kw} %{name}: every dim must be known, found `?`"),
            ));
        }
        cur.expect_punct(
            '=',
            &format!("`=` and an initialiser after the type of {kw} %{name}"),
        )?;
        let init_off = cur.here();
        let init = initializer(cur, &mut self.files, name, &ty)?;
        if matches!(init, Initializer::Safetensors { .. }) && self.version < SAFETENSORS_SINCE {
            return Err(cur.lc.err(
                init_off,
                format!(
                    "`safetensors` needs format version {SAFETENSORS_SINCE}, but the file's \
                     header says `kiln {}` (write `kiln {SAFETENSORS_SINCE}` as the first line)",
                    self.version
                ),
            ));
        }
        cur.expect_end()?;
        let source = Source { ty, init };
        let op = if kw == "var" {
            Op::Var(source)
        } else {
            Op::Const(source)
        };
        self.add(cur, name, op, &[])
    }

    /// `output %a, %b, ...`
    fn output(&mut self, cur: &mut Cursor<'_>) -> Result<()> {
        loop {
            let (name, off) = cur.expect_name("a %name to output")?;
            let err = cur.lc.err(
                off,
                format!("output %{name} is not defined anywhere in the file"),
            );
            self.outputs.push((name.to_string(), err));
            if cur.peek().is_none() {
                return Ok(());
            }
            cur.expect_punct(',', "`,` between output names")?;
        }
    }

    /// `%name = op(%a, %b, attr=value, ...)`
    fn op_statement(&mut self, cur: &mut Cursor<'_>) -> Result<()> {
        let (name, name_off) = cur.expect_name("a %name")?;
        self.check_new_name(cur, name, name_off)?;
        cur.expect_punct('=', &format!("`=` after %{name}"))?;
        let (kw, kw_off) = match cur.peek() {
            Some(&Token {
                tok: Tok::Ident(kw),
                off,
            }) => (kw, off),
            _ => return Err(cur.expected("an op name after `=`")),
        };
        cur.pos += 1;
        let open = cur.expect_punct('(', &format!("`(` after `{kw}`"))?;
        let mut operands: Vec<(&str, usize)> = Vec::new();
        let mut attrs: Vec<Attr<'_>> = Vec::new();
        if cur.is_punct(')') {
            cur.pos += 1;
        } else {
            loop {
                match cur.peek().cloned() {
                    None => return Err(unclosed(&cur.lc, open, '(')),
                    Some(Token {
                        tok: Tok::Name(n),
                        off,
                    }) => {
                        if !attrs.is_empty() {
                            return Err(cur.lc.err(off, "operands come before attributes"));
                        }
                        cur.pos += 1;
                        operands.push((n, off));
                    }
                    Some(Token {
                        tok: Tok::Ident(a),
                        off,
                    }) => {
                        cur.pos += 1;
                        // `relu(add(%a, %b))` or `relu(x)`: say what an operand is rather
                        // than expecting an attribute's `=`.
                        if cur.is_punct('(') {
                            return Err(cur.lc.err(
                                off,
                                format!(
                                    "`{a}(...)` inside `{kw}(...)`: operands must be %names, \
                                     calls do not nest; compute it on a line of its own \
                                     (`%t = {a}(...)`) and pass %t"
                                ),
                            ));
                        }
                        if cur.is_punct(',') || cur.is_punct(')') {
                            return Err(cur.lc.err(
                                off,
                                format!(
                                    "operand `{a}` lacks its `%`: operands must be %names \
                                     (write %{a}); attributes are written name=value"
                                ),
                            ));
                        }
                        cur.expect_punct('=', &format!("`=` after the attribute name `{a}`"))?;
                        attrs.push(Attr {
                            name: a,
                            off,
                            val: cur.value()?,
                        });
                    }
                    Some(_) => {
                        return Err(cur.expected("an operand (%name) or an attribute (name=value)"));
                    }
                }
                if cur.list_separator(')', open, "`,` or `)`")? {
                    break;
                }
            }
        }
        cur.expect_end()?;
        let lc = cur.lc;
        let op = build_op(&lc, kw, kw_off, attrs, self.version)?;
        let mut inputs = Vec::with_capacity(operands.len());
        for &(n, off) in &operands {
            let id = self.graph.find(n).ok_or_else(|| {
                lc.err(
                    off,
                    format!(
                        "undefined name %{n} (names must be defined before they are used){}",
                        self.did_you_mean(n)
                    ),
                )
            })?;
            inputs.push(id);
        }
        if !op.arity().accepts(inputs.len()) {
            return Err(lc.err(
                kw_off,
                format!(
                    "wrong number of operands: {kw} takes {}, found {}",
                    op.arity(),
                    inputs.len()
                ),
            ));
        }
        if let (Op::Assign(_), Some(&(target, off))) = (&op, operands.first()) {
            let node = self.graph.node(inputs[0]);
            if !matches!(node.op, Op::Var(_)) {
                return Err(lc.err(
                    off,
                    format!(
                        "{kw}: operand 0 must be a var, but %{target} is {}",
                        node.op.name()
                    ),
                ));
            }
        }
        self.add(cur, name, op, &inputs)
    }

    fn finish(mut self) -> Result<Graph> {
        for (name, err) in std::mem::take(&mut self.outputs) {
            let Some(id) = self.graph.find(&name) else {
                return Err(match err {
                    Error::Parse { line, col, message } => Error::Parse {
                        line,
                        col,
                        message: message + &self.did_you_mean(&name),
                    },
                    other => other,
                });
            };
            self.graph.add_output(id);
        }
        Ok(self.graph)
    }

    /// `; did you mean %a, %b?` naming up to three defined nodes within two edits of `name`
    /// (or containing it), or nothing.
    fn did_you_mean(&self, name: &str) -> String {
        // Long names cannot be near short ones; skip the quadratic distance for them.
        if name.len() > 64 {
            return String::new();
        }
        let mut near: Vec<(usize, &str)> = self
            .graph
            .node_ids()
            .map(|id| self.graph.node(id).name.as_str())
            .filter(|k| k.len() <= 64)
            .map(|k| (edit_distance(name, k), k))
            .filter(|&(d, k)| d <= (name.len() / 3).max(1) || k.contains(name) && name.len() >= 3)
            .collect();
        near.sort();
        if near.is_empty() {
            return String::new();
        }
        let names: Vec<String> = near.iter().take(3).map(|(_, k)| format!("%{k}")).collect();
        format!("; did you mean {}?", names.join(", "))
    }
}
