//! Source declarations: the type (`f32[?,100,1]`) and the initialiser of `input`, `var` and
//! `const` statements.
//!
//! Invariants: a declared type's known dims multiply to at most [`MAX_ELEMENTS`], checked
//! before anything is built; literals are counted against the declared shape before their
//! data is stored; `npy` and `safetensors` files are opened through [`file_access`] (by
//! default only regular files inside the base folder), must hold exactly the declared type,
//! and are read once per parse: every reference to one file (and key) shares one tensor.

use super::MAX_ELEMENTS;
use super::lexer::{Cursor, Tok, Token};
use super::values::{LineCtx, Val, flatten_literal, unclosed};
use crate::file_access::{self, FileAccess};
use crate::op::Initializer;
use crate::safetensors_io;
use crate::shape::{Shape, TensorType};
use crate::tensor::{Data, Tensor};
use crate::{DType, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The initialiser after `=` in a `var`/`const` declaration of `%name : ty`.
pub(super) fn initializer(
    cur: &mut Cursor<'_>,
    files: &mut FileRefs,
    name: &str,
    ty: &TensorType,
) -> Result<Initializer> {
    const FORMS: &str = "an initialiser (zeros, ones, fill(v), normal(mean, std, seed), \
                         uniform(lo, hi, seed), a [...] literal, npy(\"file.npy\") or \
                         safetensors(\"file.safetensors\", \"tensor\"))";
    let lc = cur.lc;
    let Some(t) = cur.peek().cloned() else {
        return Err(cur.expected(FORMS));
    };
    let word = match t.tok {
        Tok::Ident(
            w @ ("zeros" | "ones" | "fill" | "normal" | "uniform" | "npy" | "safetensors"),
        ) => w,
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
        "safetensors" => "safetensors(\"file.safetensors\", \"tensor\")",
        _ => "npy(\"file.npy\")",
    };
    let n = match word {
        "fill" | "npy" => 1,
        "safetensors" => 2,
        _ => 3,
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
        "safetensors" => {
            let path = args[0].to_str(&lc, &what(0))?.to_string();
            let tensor = args[1].to_str(&lc, &what(1))?.to_string();
            let value = files.safetensors((&lc, t.off), (&path, &tensor), name, ty)?;
            Initializer::Safetensors {
                path,
                tensor,
                value,
            }
        }
        _ => {
            let path = args[0].to_str(&lc, &what(0))?.to_string();
            let value = files.npy((&lc, t.off), &path, name, ty)?;
            Initializer::Npy { path, value }
        }
    })
}

/// The files a parse references: where they are looked up, how far they may reach, and what
/// has been read (each file is read once, and each tensor in it is built once and shared by
/// every initialiser that references it).
pub(crate) struct FileRefs {
    folder: PathBuf,
    access: FileAccess,
    /// Whole safetensors files by resolved path.
    safetensors: HashMap<PathBuf, Arc<Vec<u8>>>,
    /// Tensors by resolved path and safetensors key (`None` for a .npy file).
    tensors: HashMap<(PathBuf, Option<String>), Arc<Tensor>>,
}

impl FileRefs {
    /// References resolve against `folder` (the current directory when `None`).
    pub(crate) fn new(folder: Option<&Path>, access: FileAccess) -> FileRefs {
        FileRefs {
            folder: folder.unwrap_or(Path::new("")).to_path_buf(),
            access,
            safetensors: HashMap::new(),
            tensors: HashMap::new(),
        }
    }

    /// Reads `path` (relative to the folder) and checks it against the declared type.
    fn npy(
        &mut self,
        (lc, off): (&LineCtx<'_>, usize),
        path: &str,
        name: &str,
        ty: &TensorType,
    ) -> Result<Arc<Tensor>> {
        let call = format!("npy({path:?})");
        let err = |m: String| lc.err(off, format!("{call}: {m}"));
        let full = file_access::resolve(&self.folder, path, self.access)
            .map_err(|e| err(e.to_string()))?;
        let key = (full, None);
        let tensor = match self.tensors.get(&key) {
            Some(t) => t.clone(),
            None => {
                let file =
                    file_access::open_regular(&key.0, path).map_err(|e| err(e.to_string()))?;
                let read = crate::npy::read_regular(file).map_err(|e| err(e.to_string()))?;
                let t = Arc::new(read.tensor);
                self.tensors.insert(key, t.clone());
                t
            }
        };
        if tensor.ty() != *ty {
            return Err(lc.err(
                off,
                format!("{call} holds {} but %{name} is declared {ty}", tensor.ty()),
            ));
        }
        Ok(tensor)
    }

    /// Reads tensor `key` of the safetensors file `path` (relative to the folder) and checks
    /// it against the declared type. Only kiln's dtypes (f32, i32, i64, bool) are read.
    fn safetensors(
        &mut self,
        (lc, off): (&LineCtx<'_>, usize),
        (path, key): (&str, &str),
        name: &str,
        ty: &TensorType,
    ) -> Result<Arc<Tensor>> {
        let call = format!("safetensors({path:?}, {key:?})");
        let err = |m: String| lc.err(off, format!("{call}: {m}"));
        let full = file_access::resolve(&self.folder, path, self.access)
            .map_err(|e| err(e.to_string()))?;
        let tensor_key = (full, Some(key.to_string()));
        let tensor = match self.tensors.get(&tensor_key) {
            Some(t) => t.clone(),
            None => {
                let full = &tensor_key.0;
                let bytes = match self.safetensors.get(full) {
                    Some(b) => b.clone(),
                    None => {
                        let mut file = file_access::open_regular(full, path)
                            .map_err(|e| err(e.to_string()))?;
                        let b = Arc::new(safetensors_io::read_bytes(&mut file).map_err(err)?);
                        self.safetensors.insert(full.clone(), b.clone());
                        b
                    }
                };
                let t = Arc::new(safetensors_io::read_tensor(&bytes, key).map_err(err)?);
                self.tensors.insert(tensor_key, t.clone());
                t
            }
        };
        if tensor.ty() != *ty {
            return Err(lc.err(
                off,
                format!("{call} holds {} but %{name} is declared {ty}", tensor.ty()),
            ));
        }
        Ok(tensor)
    }
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
        if cur.list_separator(')', open, "`,` or `)`")? {
            return Ok(args);
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
            if cur.list_separator(']', open, "`,` or `]` in the dims")? {
                break;
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

#[cfg(test)]
mod tests {
    use crate::text::{parse, print};
    use crate::{Data, Tensor};
    use std::path::PathBuf;

    /// A fresh folder holding `w.safetensors` with tensor "w" = [[1, 2], [3, 4]] and an i64
    /// tensor "ids" = [7, -1].
    fn folder(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-st-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let w = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).expect("t");
        let ids = Tensor::new(&[2], Data::I64(vec![7, -1])).expect("t");
        crate::safetensors_io::write_file(&dir.join("w.safetensors"), [("w", &w), ("ids", &ids)])
            .expect("write");
        dir
    }

    #[test]
    fn safetensors_initialisers_load_print_and_round_trip() {
        let dir = folder("ok");
        let text = "kiln 2\nconst %w : f32[2,2] = safetensors(\"w.safetensors\", \"w\")\n\
                    const %ids : i64[2] = safetensors(\"w.safetensors\", \"ids\")\noutput %w, %ids\n";
        let g = parse(text, Some(&dir)).expect("parses");
        let src = |n: &str| match &g.node(g.lookup(n).expect("node")).op {
            crate::Op::Const(s) => crate::eval::source_value(s).expect("value"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            src("w"),
            Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).expect("t")
        );
        assert_eq!(
            src("ids"),
            Tensor::new(&[2], Data::I64(vec![7, -1])).expect("t")
        );
        let printed = print(&g);
        assert!(printed.starts_with("kiln 2\n"), "{printed}");
        assert!(
            printed.contains("= safetensors(\"w.safetensors\", \"w\")"),
            "{printed}"
        );
        let again = parse(&printed, Some(&dir)).expect("parses back");
        assert_eq!(print(&again), printed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn safetensors_errors_name_the_file_key_and_types() {
        let dir = folder("bad");
        let err = |decl: &str| {
            let text = format!("kiln 2\n{decl}\n");
            parse(&text, Some(&dir)).expect_err("must fail").to_string()
        };
        let e = err("const %w : f32[4] = safetensors(\"w.safetensors\", \"w\")");
        assert!(e.contains("holds f32[2,2]") && e.contains("f32[4]"), "{e}");
        let e = err("const %w : f32[2,2] = safetensors(\"w.safetensors\", \"nope\")");
        assert!(e.contains("no tensor \"nope\""), "{e}");
        let e = err("const %w : f32[2,2] = safetensors(\"gone.safetensors\", \"w\")");
        assert!(e.contains("gone.safetensors"), "{e}");
        let e = err("const %w : f32[2,2] = safetensors(\"w.safetensors\")");
        assert!(e.contains("found 1 argument"), "{e}");
        std::fs::write(dir.join("junk.safetensors"), b"not a safetensors file").expect("write");
        let e = err("const %w : f32[2,2] = safetensors(\"junk.safetensors\", \"w\")");
        assert!(e.contains("not a valid safetensors file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn printer_writes_the_oldest_version_that_fits() {
        let v1 = "kiln 1\ninput %x : f32[2]\n%y = relu(%x)\noutput %y\n";
        assert!(print(&parse(v1, None).expect("v1")).starts_with("kiln 1\n"));
        let v2 = "kiln 2\ninput %x : f32[2]\n%y = cast(%x, to=\"i32\")\noutput %y\n";
        assert!(print(&parse(v2, None).expect("v2 op")).starts_with("kiln 2\n"));
        // A version-2 op under a `kiln 1` header is refused, as docs/FORMAT.md says.
        let e = parse(&v2.replace("kiln 2", "kiln 1"), None).unwrap_err();
        assert!(
            e.to_string().contains("`cast` needs format version 2"),
            "{e}"
        );
    }
}
