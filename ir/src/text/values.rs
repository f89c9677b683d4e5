//! Attribute and literal values of the .kiln format, and their conversion to typed values.
//!
//! A value is parsed into a small tree ([`Val`]) before anything is interpreted, so every
//! conversion error can point at the exact token. Lists nest at most [`MAX_DEPTH`] levels so
//! that hostile input cannot overflow the stack, and nothing is allocated from a number in the
//! file: literal element counts are checked against the values actually written.

use super::lexer::{Tok, Token};
use crate::{Error, Result};

/// Deepest list nesting accepted (`[[[...]]]`); recursion depth is bounded by it.
pub(crate) const MAX_DEPTH: usize = 64;

/// One line of input and its number, for error positions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineCtx<'a> {
    /// 1-based line number.
    pub no: usize,
    /// The line's text, without the newline.
    pub text: &'a str,
}

impl LineCtx<'_> {
    /// A [`Error::Parse`] at byte offset `off` of this line (clamped to the line).
    pub fn err(&self, off: usize, message: impl Into<String>) -> Error {
        let off = off.min(self.text.len());
        // Offsets come from the lexer and are char boundaries; fall back to the byte count.
        let col = self.text.get(..off).map_or(off, |s| s.chars().count()) + 1;
        Error::Parse {
            line: self.no,
            col,
            message: message.into(),
        }
    }
}

/// A parsed value: a number, string, bare word or list, with its byte offset in the line.
#[derive(Clone, Debug)]
pub(crate) struct Val<'a> {
    /// What was written.
    pub kind: ValKind<'a>,
    /// Byte offset of its first character.
    pub off: usize,
}

/// The kinds of [`Val`].
#[derive(Clone, Debug)]
pub(crate) enum ValKind<'a> {
    /// A number as written.
    Num {
        /// The text.
        text: &'a str,
        /// Written as an integer.
        is_int: bool,
    },
    /// A string.
    Str(String),
    /// A bare word (`true`, `false`, or a mistake).
    Word(&'a str),
    /// A `[...]` list.
    List(Vec<Val<'a>>),
}

/// How a token is named in "found ..." messages.
pub(crate) fn describe_tok(t: Option<&Token<'_>>) -> String {
    match t.map(|t| &t.tok) {
        None => "end of line".into(),
        Some(Tok::Name(n)) => format!("`%{n}`"),
        Some(Tok::Ident(w)) => format!("`{w}`"),
        Some(Tok::Num { text, .. }) => format!("`{text}`"),
        Some(Tok::Str(s)) => format!("string {}", quote_short(s)),
        Some(Tok::Punct(c)) => format!("`{c}`"),
    }
}

fn quote_short(s: &str) -> String {
    if s.chars().count() > 24 {
        format!("{:?}...", s.chars().take(24).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

/// Parses a value starting at `toks[*pos]`; `depth` is the current list nesting.
pub(crate) fn parse_value<'a>(
    lc: &LineCtx<'_>,
    toks: &[Token<'a>],
    pos: &mut usize,
    depth: usize,
) -> Result<Val<'a>> {
    let Some(t) = toks.get(*pos) else {
        return Err(lc.err(lc.text.len(), "expected a value, found end of line"));
    };
    let off = t.off;
    *pos += 1;
    let kind = match &t.tok {
        Tok::Num { text, is_int } => ValKind::Num {
            text,
            is_int: *is_int,
        },
        Tok::Str(s) => ValKind::Str(s.clone()),
        Tok::Ident(w) => ValKind::Word(w),
        Tok::Punct('[') => {
            if depth >= MAX_DEPTH {
                return Err(lc.err(off, format!("lists nest deeper than {MAX_DEPTH} levels")));
            }
            let mut items = Vec::new();
            if matches!(
                toks.get(*pos),
                Some(Token {
                    tok: Tok::Punct(']'),
                    ..
                })
            ) {
                *pos += 1;
            } else {
                loop {
                    if toks.get(*pos).is_none() {
                        return Err(unclosed(lc, off, '['));
                    }
                    items.push(parse_value(lc, toks, pos, depth + 1)?);
                    match toks.get(*pos) {
                        Some(Token {
                            tok: Tok::Punct(','),
                            ..
                        }) => *pos += 1,
                        Some(Token {
                            tok: Tok::Punct(']'),
                            ..
                        }) => {
                            *pos += 1;
                            break;
                        }
                        None => return Err(unclosed(lc, off, '[')),
                        other => {
                            return Err(lc.err(
                                other.map_or(off, |t| t.off),
                                format!(
                                    "expected `,` or `]` in list, found {}",
                                    describe_tok(other)
                                ),
                            ));
                        }
                    }
                }
            }
            ValKind::List(items)
        }
        _ => {
            return Err(lc.err(
                off,
                format!(
                    "expected a value (number, \"string\", [list], true or false), found {}",
                    describe_tok(Some(t))
                ),
            ));
        }
    };
    Ok(Val { kind, off })
}

/// The error for a bracket or paren opened at `off` and not closed on its line.
pub(crate) fn unclosed(lc: &LineCtx<'_>, off: usize, open: char) -> Error {
    let close = match open {
        '[' => ']',
        '(' => ')',
        _ => open,
    };
    lc.err(
        off,
        format!("unclosed `{open}`: expected `{close}` before the end of the line"),
    )
}

/// Parses an f32 as the format writes it: decimal, exponent, `inf`, `-inf`, `nan`, `-nan`.
pub(crate) fn parse_f32(text: &str) -> Option<f32> {
    match text {
        "inf" => Some(f32::INFINITY),
        "-inf" => Some(f32::NEG_INFINITY),
        "nan" => Some(f32::NAN),
        "-nan" => Some(-f32::NAN),
        // Rust's parser rounds decimal text correctly, so printed floats come back bit-exact.
        _ => text.parse::<f32>().ok(),
    }
}

impl<'a> Val<'a> {
    /// How the value is named in "found ..." messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            ValKind::Num { text, .. } => format!("`{text}`"),
            ValKind::Str(s) => format!("string {}", quote_short(s)),
            ValKind::Word(w) => format!("`{w}`"),
            ValKind::List(_) => "a list".into(),
        }
    }

    fn expected(&self, lc: &LineCtx<'_>, what: &str, expected: &str) -> Error {
        lc.err(
            self.off,
            format!("{what}: expected {expected}, found {}", self.describe()),
        )
    }

    /// The value as an i64 (`what` names it in errors, e.g. "attribute `axis` of concat").
    pub fn to_i64(&self, lc: &LineCtx<'_>, what: &str) -> Result<i64> {
        match &self.kind {
            ValKind::Num { text, is_int: true } => text.parse::<i64>().map_err(|_| {
                lc.err(
                    self.off,
                    format!("{what}: integer `{text}` is out of range"),
                )
            }),
            _ => Err(self.expected(lc, what, "an integer")),
        }
    }

    /// The value as a non-negative integer.
    pub fn to_usize(&self, lc: &LineCtx<'_>, what: &str) -> Result<usize> {
        let v = self
            .to_i64(lc, what)
            .map_err(|_| self.expected(lc, what, "a non-negative integer"))?;
        usize::try_from(v).map_err(|_| self.expected(lc, what, "a non-negative integer"))
    }

    /// The value as a u64 (seeds).
    pub fn to_u64(&self, lc: &LineCtx<'_>, what: &str) -> Result<u64> {
        match &self.kind {
            ValKind::Num { text, is_int: true } => text
                .parse::<u64>()
                .map_err(|_| self.expected(lc, what, "a non-negative integer below 2^64")),
            _ => Err(self.expected(lc, what, "a non-negative integer")),
        }
    }

    /// The value as an f32 (integers are accepted).
    pub fn to_f32(&self, lc: &LineCtx<'_>, what: &str) -> Result<f32> {
        match &self.kind {
            ValKind::Num { text, .. } => {
                parse_f32(text).ok_or_else(|| self.expected(lc, what, "a number"))
            }
            _ => Err(self.expected(lc, what, "a number")),
        }
    }

    /// The value as a bool (`true` / `false`).
    pub fn to_bool(&self, lc: &LineCtx<'_>, what: &str) -> Result<bool> {
        match self.kind {
            ValKind::Word("true") => Ok(true),
            ValKind::Word("false") => Ok(false),
            _ => Err(self.expected(lc, what, "true or false")),
        }
    }

    /// The value as a string.
    pub fn to_str(&self, lc: &LineCtx<'_>, what: &str) -> Result<&str> {
        match &self.kind {
            ValKind::Str(s) => Ok(s),
            _ => Err(self.expected(lc, what, "a \"string\"")),
        }
    }

    /// The items of a list.
    pub fn to_list(&self, lc: &LineCtx<'_>, what: &str, expected: &str) -> Result<&[Val<'a>]> {
        match &self.kind {
            ValKind::List(items) => Ok(items),
            _ => Err(self.expected(lc, what, expected)),
        }
    }
}

/// The scalars of a literal in row-major order, checked against `dims`: a flat list must hold
/// exactly numel elements; a nested list must match the dims level by level.
pub(crate) fn flatten_literal<'v, 'a>(
    lc: &LineCtx<'_>,
    val: &'v Val<'a>,
    dims: &[usize],
    numel: usize,
    ty: &str,
) -> Result<Vec<&'v Val<'a>>> {
    let ValKind::List(items) = &val.kind else {
        // A bare scalar initialises only a scalar.
        if dims.is_empty() {
            return Ok(vec![val]);
        }
        return Err(lc.err(
            val.off,
            format!("a bare value initialises only a scalar; {ty} needs a [...] list of {numel} elements (or fill(v))"),
        ));
    };
    let nested = items.iter().any(|v| matches!(v.kind, ValKind::List(_)));
    if !nested {
        if items.len() != numel {
            return Err(lc.err(
                val.off,
                format!(
                    "literal has {} element(s) but {ty} needs {numel}",
                    items.len()
                ),
            ));
        }
        return Ok(items.iter().collect());
    }
    let mut out = Vec::new();
    nested_into(lc, val, dims, 1, ty, &mut out)?;
    Ok(out)
}

fn nested_into<'v, 'a>(
    lc: &LineCtx<'_>,
    val: &'v Val<'a>,
    dims: &[usize],
    depth: usize,
    ty: &str,
    out: &mut Vec<&'v Val<'a>>,
) -> Result<()> {
    match (&val.kind, dims.split_first()) {
        (ValKind::List(items), Some((&d, rest))) => {
            if items.len() != d {
                return Err(lc.err(
                    val.off,
                    format!(
                        "nested literal: this list has {} element(s) but {ty} needs {d} at depth {depth}",
                        items.len(),
                    ),
                ));
            }
            items
                .iter()
                .try_for_each(|v| nested_into(lc, v, rest, depth + 1, ty, out))
        }
        (ValKind::List(_), None) => Err(lc.err(
            val.off,
            format!("nested literal is deeper than {ty}: expected a scalar, found a list"),
        )),
        (_, Some(_)) => Err(lc.err(
            val.off,
            format!(
                "nested literal does not match {ty}: expected a list, found {}",
                val.describe()
            ),
        )),
        (_, None) => {
            out.push(val);
            Ok(())
        }
    }
}
