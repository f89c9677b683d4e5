//! The .kiln text format: parsing ([`parse`], [`parse_file`]) and printing ([`print`](fn@print)).
//!
//! ```text
//! kiln 1
//! input %image : f32[?,100,100,1]
//! var   %kernel : f32[5,5,1,1] = normal(0, 1, 42)
//! const %bias : f32[1] = [0.5]
//! %conv = conv2d(%image, %kernel, strides=[1,1], padding="SAME")
//! %biased = bias_add(%conv, %bias)
//! %y = relu(%biased)
//! output %y
//! ```
//!
//! One statement a line, `#` comments, names `%` + letters, digits and `_ . - /`. The grammar,
//! op keywords and attribute defaults are those of DESIGN.md. Invariants: every error is an
//! [`Error::Parse`] with the 1-based line and column of the offending token; nothing in the
//! file can make the parser panic, recurse without bound (lists nest at most 64 deep, fused expressions 32) or
//! allocate more than the file's own content (declared shapes hold at most [`MAX_ELEMENTS`]
//! elements and literals are counted before they are stored); and [`print`](fn@print) output parses back
//! to the same graph and prints byte-identically. File references (`npy(...)`,
//! `safetensors(...)`) are confined to the graph's folder unless the caller opts out with
//! [`FileAccess::Unrestricted`] (see [`crate::file_access`]).

mod decl;
mod lexer;
mod ops;
mod parser;
mod printer;

pub use printer::fmt_f32;
mod values;

pub use crate::file_access::FileAccess;
use crate::{Error, Graph, Result};
use decl::FileRefs;
use std::path::Path;

/// The newest format version: this reader reads versions 1 to 3, and the printer writes the
/// oldest version that can express the graph (`kiln 1` unless it uses a later feature: version 2
/// added a `safetensors(...)` initialiser and the ops lrn, argmax, gather, cast, fused_*,
/// elementwise; version 3 the training ops, whose schema entries say `TRAINING_SINCE`).
pub const FORMAT_VERSION: u64 = 3;

/// The oldest format version this reader still reads.
pub const MIN_FORMAT_VERSION: u64 = 1;

/// The most elements a declared type may have (2^31): larger shapes are rejected at parse time
/// so that no initialiser can ask for an absurd allocation.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Parses .kiln text into a graph. `npy("file")` and `safetensors("file", "key")` paths
/// resolve relative to `base_dir` (the current directory when `None`) and must name regular
/// files inside it ([`FileAccess::Confined`]); the path is kept as written for printing.
pub fn parse(text: &str, base_dir: Option<&Path>) -> Result<Graph> {
    parse_with(text, base_dir, FileAccess::Confined)
}

/// [`parse`] with an explicit [`FileAccess`]: [`FileAccess::Unrestricted`] lets trusted text
/// reference files anywhere (absolute paths, `..`).
pub fn parse_with(text: &str, base_dir: Option<&Path>, access: FileAccess) -> Result<Graph> {
    parser::parse_text(text, FileRefs::new(base_dir, access))
}

/// Reads and parses a .kiln file; file references must stay in the file's folder.
/// A file that cannot be read is an [`Error::Io`]; bytes that are not UTF-8 are an
/// [`Error::Parse`] at their line and column.
pub fn parse_file(path: &Path) -> Result<Graph> {
    parse_file_with(path, FileAccess::Confined)
}

/// [`parse_file`] with an explicit [`FileAccess`].
pub fn parse_file_with(path: &Path, access: FileAccess) -> Result<Graph> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => return Err(utf8_error(&bytes, e)),
    };
    parse_with(text, Some(path.parent().unwrap_or(Path::new(""))), access)
}

/// A parse error at the first byte that is not valid UTF-8.
fn utf8_error(bytes: &[u8], e: std::str::Utf8Error) -> Error {
    let bad = e.valid_up_to();
    // Everything before `bad` is valid UTF-8, so the line prefix decodes.
    let line_start = bytes[..bad]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = bytes[..line_start].iter().filter(|&&b| b == b'\n').count() + 1;
    let col = std::str::from_utf8(&bytes[line_start..bad]).map_or(1, |s| s.chars().count() + 1);
    Error::Parse {
        line,
        col,
        message: format!(
            "invalid UTF-8 (byte 0x{:02x}): .kiln files are UTF-8 text",
            bytes.get(bad).copied().unwrap_or(0)
        ),
    }
}

/// Prints a graph in the .kiln format: header, sources in insertion order, ops in topological
/// order with default attributes omitted, each line ending in its value's type as a comment,
/// then one `output` line. `parse(print(g))` prints identically.
pub fn print(graph: &Graph) -> String {
    printer::print_graph(graph)
}

/// Attributes of `op` as `name=value` strings in canonical order, defaults omitted (for
/// displays such as [`crate::dot`]).
pub fn op_attributes(op: &crate::Op) -> Vec<String> {
    printer::attrs(op)
}

/// An initialiser as the format writes it (`normal(0.0, 1.0, 42)`, `[1.0, 2.0]`, ...).
pub fn initializer_text(init: &crate::Initializer) -> String {
    printer::initializer(init)
}

#[cfg(test)]
mod file_refs_tests;
