//! Source declarations: the type (`f32[?,100,1]`) and the initialiser of `input`, `var` and
//! `const` statements.
//!
//! Invariants: a declared type's known dims multiply to at most [`MAX_ELEMENTS`], checked
//! before anything is built; literals are counted against the declared shape before their
//! data is stored; `npy` files are read relative to the base folder and must hold exactly the
//! declared type.

use super::MAX_ELEMENTS;
use super::lexer::{Cursor, Tok, Token};
use super::values::{LineCtx, Val, flatten_literal, unclosed};
use crate::op::Initializer;
use crate::shape::{Shape, TensorType};
use crate::tensor::{Data, Tensor};
use crate::{DType, Result};
use std::path::Path;
use std::sync::Arc;

/// The initialiser after `=` in a `var`/`const` declaration of `%name : ty`.
pub(super) fn initializer(
    cur: &mut Cursor<'_>,
    base_dir: Option<&Path>,
    name: &str,
    ty: &TensorType,
) -> Result<Initializer> {
    const FORMS: &str = "an initialiser (zeros, ones, fill(v), normal(mean, std, seed), \
                         uniform(lo, hi, seed), a [...] literal or npy(\"file.npy\"))";
    let lc = cur.lc;
    let Some(t) = cur.peek().cloned() else {
        return Err(cur.expected(FORMS));
    };
    let word = match t.tok {
        Tok::Ident(w @ ("zeros" | "ones" | "fill" | "normal" | "uniform" | "npy")) => w,
        Tok::Punct('[') | Tok::Num { .. } | Tok::Ident("true" | "false") => {
            let v = cur.value()?;
            return literal(&lc, &v, ty).map(|t| Initializer::Literal(Arc::new(t)));
        }
        _ => return Err(cur.expected(FORMS)),
    };
    cur.pos += 1;
    if matches!(word, "normal" | "uniform") && ty.dtype != DType::F32 {
        return Err(lc.err(
            t.off,
            format!("{word}(...) makes f32 values, but %{name} is {ty}"),
        ));
    }
    let args = match word {
        "zeros" => return Ok(Initializer::Zeros),
        "ones" => return Ok(Initializer::Ones),
        _ => call_args(cur, word)?,
    };
    let arity = match word {
        "fill" => "fill(value)",
        "normal" => "normal(mean, std, seed)",
        "uniform" => "uniform(lo, hi, seed)",
        _ => "npy(\"file.npy\")",
    };
    let n = if word == "fill" || word == "npy" {
        1
    } else {
        3
    };
    if args.len() != n {
        return Err(lc.err(
            t.off,
            format!("expected {arity}, found {} argument(s)", args.len()),
        ));
    }
    let what = |i: usize| format!("argument {} of {arity}", i + 1);
    let f = |i: usize| args[i].to_f32(&lc, &what(i)).map(crate::Float);
    Ok(match word {
        "fill" => Initializer::Fill(f(0)?),
        "normal" => Initializer::Normal {
            mean: f(0)?,
            std: f(1)?,
            seed: args[2].to_u64(&lc, &what(2))?,
        },
        "uniform" => Initializer::Uniform {
            lo: f(0)?,
            hi: f(1)?,
            seed: args[2].to_u64(&lc, &what(2))?,
        },
        _ => {
            let path = args[0].to_str(&lc, &what(0))?.to_string();
            let value = load_npy(base_dir, &lc, t.off, &path, name, ty)?;
            Initializer::Npy {
                path,
                value: Arc::new(value),
            }
        }
    })
}

/// Reads `path` (relative to the base folder) and checks it against the declared type.
fn load_npy(
    base_dir: Option<&Path>,
    lc: &LineCtx<'_>,
    off: usize,
    path: &str,
    name: &str,
    ty: &TensorType,
) -> Result<Tensor> {
    let full = match base_dir {
        Some(dir) => dir.join(path),
        None => Path::new(path).to_path_buf(),
    };
    let read = crate::npy::read(&full).map_err(|e| lc.err(off, format!("npy({path:?}): {e}")))?;
    if read.tensor.ty() != *ty {
        return Err(lc.err(
            off,
            format!(
                "npy({path:?}) holds {} but %{name} is declared {ty}",
                read.tensor.ty()
            ),
        ));
    }
    Ok(read.tensor)
}

/// `( value, value, ... )` after an initialiser keyword.
fn call_args<'a>(cur: &mut Cursor<'a>, word: &str) -> Result<Vec<Val<'a>>> {
    let open = cur.expect_punct('(', &format!("`(` after `{word}`"))?;
    let mut args = Vec::new();
    if cur.is_punct(')') {
        cur.pos += 1;
        return Ok(args);
    }
    loop {
        if cur.peek().is_none() {
            return Err(unclosed(&cur.lc, open, '('));
        }
        args.push(cur.value()?);
        match cur.peek() {
            None => return Err(unclosed(&cur.lc, open, '(')),
            Some(Token {
                tok: Tok::Punct(','),
                ..
            }) => cur.pos += 1,
            Some(Token {
                tok: Tok::Punct(')'),
                ..
            }) => {
                cur.pos += 1;
                return Ok(args);
            }
            Some(_) => return Err(cur.expected("`,` or `)`")),
        }
    }
}

/// `f32[?,100,1]`; also returns the offset of the first `?`, if any. Known dims multiply to
/// at most [`MAX_ELEMENTS`], so later code can never be asked to allocate more.
pub(super) fn parse_type(cur: &mut Cursor<'_>) -> Result<(TensorType, Option<usize>)> {
    let (dtype, start) = match cur.peek() {
        Some(&Token {
            tok: Tok::Ident(w),
            off,
        }) => match DType::from_name(w) {
            Some(d) => (d, off),
            None => {
                return Err(cur.lc.err(
                    off,
                    format!("unknown dtype `{w}`: expected f32, i32, i64 or bool"),
                ));
            }
        },
        _ => return Err(cur.expected("a type such as f32[?,100,100,1]")),
    };
    cur.pos += 1;
    let open = cur.expect_punct('[', "`[` and the dims after the dtype")?;
    let mut dims = Vec::new();
    let mut unknown = None;
    let mut numel: u128 = 1;
    if cur.is_punct(']') {
        cur.pos += 1;
    } else {
        loop {
            match cur.peek() {
                None => return Err(unclosed(&cur.lc, open, '[')),
                Some(&Token {
                    tok: Tok::Punct('?'),
                    off,
                }) => {
                    unknown.get_or_insert(off);
                    dims.push(None);
                }
                Some(&Token {
                    tok: Tok::Num { text, is_int: true },
                    off,
                }) if !text.starts_with('-') => {
                    let d = text
                        .parse::<usize>()
                        .map_err(|_| cur.lc.err(off, format!("dim `{text}` is out of range")))?;
                    numel = numel.saturating_mul(d as u128);
                    dims.push(Some(d));
                }
                Some(_) => return Err(cur.expected("a dim (a non-negative integer or `?`)")),
            }
            cur.pos += 1;
            match cur.peek() {
                None => return Err(unclosed(&cur.lc, open, '[')),
                Some(Token {
                    tok: Tok::Punct(','),
                    ..
                }) => cur.pos += 1,
                Some(Token {
                    tok: Tok::Punct(']'),
                    ..
                }) => {
                    cur.pos += 1;
                    break;
                }
                Some(_) => return Err(cur.expected("`,` or `]` in the dims")),
            }
        }
    }
    let ty = TensorType::new(dtype, Shape::of(&dims));
    if numel > MAX_ELEMENTS as u128 {
        return Err(cur.lc.err(
            start,
            format!("{ty} has {numel} elements; the limit is {MAX_ELEMENTS}"),
        ));
    }
    Ok((ty, unknown))
}

/// A literal initialiser checked against the declared (fully known) type.
fn literal(lc: &LineCtx<'_>, v: &Val<'_>, ty: &TensorType) -> Result<Tensor> {
    // parse_type bounds known dims by MAX_ELEMENTS, and var/const reject `?`.
    let dims = ty.shape.to_dims().unwrap_or_default();
    let numel = ty.shape.numel().unwrap_or(0);
    let tys = ty.to_string();
    let items = flatten_literal(lc, v, &dims, numel, &tys)?;
    let what = format!("element of a {tys} literal");
    let data = match ty.dtype {
        DType::F32 => Data::F32(
            items
                .iter()
                .map(|x| x.to_f32(lc, &what))
                .collect::<Result<_>>()?,
        ),
        DType::I64 => Data::I64(
            items
                .iter()
                .map(|x| x.to_i64(lc, &what))
                .collect::<Result<_>>()?,
        ),
        DType::Bool => Data::Bool(
            items
                .iter()
                .map(|x| x.to_bool(lc, &what))
                .collect::<Result<_>>()?,
        ),
        DType::I32 => Data::I32(
            items
                .iter()
                .map(|x| {
                    i32::try_from(x.to_i64(lc, &what)?).map_err(|_| {
                        lc.err(
                            x.off,
                            format!("{what}: {} does not fit in i32", x.describe()),
                        )
                    })
                })
                .collect::<Result<_>>()?,
        ),
    };
    Tensor::new(&dims, data).map_err(|e| lc.err(v.off, e.to_string()))
}
