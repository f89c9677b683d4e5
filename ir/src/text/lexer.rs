//! Tokens of one line of .kiln text.
//!
//! The format has one statement a line, so the lexer works a line at a time: strings,
//! brackets and comments never span lines, and an unclosed one is reported on its own line.
//! Tokens keep their byte offset within the line; columns (1-based, in characters) are only
//! computed when an error is reported. A [`Cursor`] walks one line's tokens for the parser.

use super::values::{LineCtx, Val, describe_tok, parse_value};
use crate::{Error, Result};

/// What a token is. Borrowed text points into the line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok<'a> {
    /// `%name`, without the `%`.
    Name(&'a str),
    /// A bare word: keywords, op names, attribute names, `true`/`false`.
    Ident(&'a str),
    /// A number as written (`-12`, `0.5`, `1e-7`, `inf`, `-nan`); `is_int` when it has no
    /// fraction, exponent or non-finite spelling.
    Num {
        /// The text.
        text: &'a str,
        /// Whether it is written as an integer.
        is_int: bool,
    },
    /// A double-quoted string with escapes resolved.
    Str(String),
    /// One of `( ) [ ] , = : ?`.
    Punct(char),
}

/// A token and its byte offset in the line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token<'a> {
    /// The token.
    pub tok: Tok<'a>,
    /// Byte offset of its first character in the line.
    pub off: usize,
}

/// A lexing error: byte offset in the line and message.
pub(crate) type LexError = (usize, String);

/// Whether `c` may appear in a `%name` (letters, digits and `_ . - /`).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits one line (without its newline) into tokens; a `#` outside a string ends the line.
pub(crate) fn lex_line(line: &str) -> Result<Vec<Token<'_>>, LexError> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < line.len() {
        // Every index we stop at is a char boundary: we only advance by whole chars.
        let c = line[i..].chars().next().unwrap_or('\0');
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '#' => break,
            '(' | ')' | '[' | ']' | ',' | '=' | ':' | '?' => {
                toks.push(Token {
                    tok: Tok::Punct(c),
                    off: i,
                });
                i += 1;
            }
            '%' => {
                let start = i + 1;
                let end = scan(line, start, is_name_char);
                if end == start {
                    return Err((
                        i,
                        "expected a name after `%` (letters, digits, _ . - /)".into(),
                    ));
                }
                toks.push(Token {
                    tok: Tok::Name(&line[start..end]),
                    off: i,
                });
                i = end;
            }
            '"' => {
                let (s, end) = lex_string(line, i)?;
                toks.push(Token {
                    tok: Tok::Str(s),
                    off: i,
                });
                i = end;
            }
            '-' | '.' | '0'..='9' => {
                let end = lex_number(line, i)?;
                let text = &line[i..end];
                let is_int = !text.contains(['.', 'e', 'E', 'i', 'n']);
                toks.push(Token {
                    tok: Tok::Num { text, is_int },
                    off: i,
                });
                i = end;
            }
            c if is_ident_start(c) => {
                let end = scan(line, i, is_ident_char);
                let word = &line[i..end];
                let tok = match word {
                    "inf" | "nan" => Tok::Num {
                        text: word,
                        is_int: false,
                    },
                    _ => Tok::Ident(word),
                };
                toks.push(Token { tok, off: i });
                i = end;
            }
            _ => {
                // Debug-format anything that is not plain printable ASCII (`'\u{0}'`).
                let what = if c.is_ascii_graphic() {
                    format!("'{c}'")
                } else {
                    format!("{c:?}")
                };
                return Err((i, format!("unexpected character {what}")));
            }
        }
    }
    Ok(toks)
}

/// The end of the run of chars from `start` that satisfy `ok`.
fn scan(line: &str, start: usize, ok: impl Fn(char) -> bool) -> usize {
    line[start..]
        .char_indices()
        .find(|&(_, c)| !ok(c))
        .map_or(line.len(), |(k, _)| start + k)
}

/// A number starting at `start`: `-? (digits (. digits*)? | . digits) ([eE] [+-]? digits)?`,
/// or `-inf` / `-nan`. Returns its end.
fn lex_number(line: &str, start: usize) -> Result<usize, LexError> {
    let b = line.as_bytes();
    let mut i = start;
    if b[i] == b'-' {
        i += 1;
        let word_end = scan(line, i, is_ident_char);
        if matches!(&line[i..word_end], "inf" | "nan") {
            return Ok(word_end);
        }
    }
    let digits = |i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_end = digits(i);
    let mut mantissa = int_end - i;
    i = int_end;
    if i < b.len() && b[i] == b'.' {
        let frac_end = digits(i + 1);
        mantissa += frac_end - (i + 1);
        i = frac_end;
    }
    if mantissa == 0 {
        return Err((
            start,
            format!("expected a number, found `{}`", snippet(line, start)),
        ));
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_end = digits(j);
        if exp_end == j {
            return Err((
                start,
                format!(
                    "malformed number `{}`: exponent has no digits",
                    snippet(line, start)
                ),
            ));
        }
        i = exp_end;
    }
    if line[i..]
        .chars()
        .next()
        .is_some_and(|c| is_ident_char(c) || c == '.')
    {
        return Err((
            start,
            format!("malformed number `{}`", snippet(line, start)),
        ));
    }
    Ok(i)
}

/// A double-quoted string starting at `start` (the quote); returns its value and end.
fn lex_string(line: &str, start: usize) -> Result<(String, usize), LexError> {
    let mut out = String::new();
    let mut chars = line[start + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + 1 + k + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((k2, e)) => {
                    return Err((
                        start + 1 + k2,
                        format!("unknown escape `\\{e}` in string (use \\\" \\\\ \\n \\t \\r)"),
                    ));
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err((
        start,
        "unclosed string: expected a closing `\"` on this line".into(),
    ))
}

/// At most 20 chars of the line from `start`, up to the next space, for messages.
pub(crate) fn snippet(line: &str, start: usize) -> String {
    line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ')' | ']'))
        .take(20)
        .collect()
}

/// The tokens of one line and a read position.
pub(crate) struct Cursor<'a> {
    /// The line.
    pub lc: LineCtx<'a>,
    /// Its tokens.
    pub toks: Vec<Token<'a>>,
    /// Index of the next token.
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn peek(&self) -> Option<&Token<'a>> {
        self.toks.get(self.pos)
    }

    /// Byte offset of the current token, or the end of the line.
    pub(crate) fn here(&self) -> usize {
        self.peek().map_or(self.lc.text.len(), |t| t.off)
    }

    /// An error at the current token: "expected X, found Y".
    pub(crate) fn expected(&self, what: &str) -> Error {
        self.lc.err(
            self.here(),
            format!("expected {what}, found {}", describe_tok(self.peek())),
        )
    }

    /// After an item of a bracketed list opened at byte `open`: consumes `,` (more items
    /// follow: `false`) or `close` (the list ended: `true`). The end of the line is an unclosed
    /// bracket; anything else an error expecting `what`.
    pub(crate) fn list_separator(&mut self, close: char, open: usize, what: &str) -> Result<bool> {
        match self.peek() {
            None => {
                let open_char = if close == ')' { '(' } else { '[' };
                Err(super::values::unclosed(&self.lc, open, open_char))
            }
            Some(Token {
                tok: Tok::Punct(','),
                ..
            }) => {
                self.pos += 1;
                Ok(false)
            }
            Some(Token {
                tok: Tok::Punct(p), ..
            }) if *p == close => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Err(self.expected(what)),
        }
    }

    pub(crate) fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    pub(crate) fn expect_punct(&mut self, c: char, what: &str) -> Result<usize> {
        if self.is_punct(c) {
            let off = self.here();
            self.pos += 1;
            Ok(off)
        } else {
            Err(self.expected(what))
        }
    }

    pub(crate) fn expect_name(&mut self, what: &str) -> Result<(&'a str, usize)> {
        match self.peek() {
            Some(&Token {
                tok: Tok::Name(n),
                off,
            }) => {
                self.pos += 1;
                Ok((n, off))
            }
            _ => Err(self.expected(what)),
        }
    }

    pub(crate) fn expect_end(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(self.lc.err(
                t.off,
                format!(
                    "unexpected {} after the end of the statement",
                    describe_tok(Some(t))
                ),
            )),
        }
    }

    pub(crate) fn value(&mut self) -> Result<Val<'a>> {
        parse_value(&self.lc, &self.toks, &mut self.pos, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(line: &str) -> Vec<Tok<'_>> {
        lex_line(line).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_statement() {
        let t = kinds("%c = conv2d(%x, %w/1, strides=[1,-2], padding=\"SAME\") # note");
        assert_eq!(t[0], Tok::Name("c"));
        assert_eq!(t[1], Tok::Punct('='));
        assert_eq!(t[2], Tok::Ident("conv2d"));
        assert_eq!(t[6], Tok::Name("w/1"));
        assert_eq!(
            t[13],
            Tok::Num {
                text: "-2",
                is_int: true
            }
        );
        assert_eq!(t[18], Tok::Str("SAME".into()));
        assert_eq!(t.len(), 20);
    }

    #[test]
    fn lexes_numbers() {
        let t = kinds("1 -0.5 1e-7 2.5E+3 inf -inf nan .5 3.");
        let texts: Vec<(&str, bool)> = t
            .iter()
            .map(|t| match t {
                Tok::Num { text, is_int } => (*text, *is_int),
                _ => panic!("not a number: {t:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                ("1", true),
                ("-0.5", false),
                ("1e-7", false),
                ("2.5E+3", false),
                ("inf", false),
                ("-inf", false),
                ("nan", false),
                (".5", false),
                ("3.", false)
            ]
        );
    }

    #[test]
    fn reports_bad_tokens_with_offsets() {
        assert_eq!(lex_line("a \"abc").unwrap_err().0, 2);
        assert_eq!(lex_line("x 12ab").unwrap_err().0, 2);
        assert_eq!(lex_line("x 1e").unwrap_err().0, 2);
        assert_eq!(lex_line("x - 1").unwrap_err().0, 2);
        assert_eq!(lex_line("x % y").unwrap_err().0, 2);
        assert!(
            lex_line("é\u{0}")
                .unwrap_err()
                .1
                .contains("unexpected character")
        );
        assert_eq!(kinds("\"a\\\"b\\\\\""), [Tok::Str("a\"b\\".into())]);
    }
}
