//! The error type of kiln-ir. Messages use the names the user gave (`%conv`), the shapes
//! involved and what was expected.

use crate::import_error::ImportError;
use crate::op::Arity;
use thiserror::Error;

/// Result with kiln-ir's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building, parsing, checking or evaluating a graph.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// An op's operands or attributes are invalid (shape mismatch, bad attribute value).
    #[error("node %{node} ({op}): {message}")]
    Op {
        /// The node's name.
        node: String,
        /// The op keyword.
        op: &'static str,
        /// What is wrong: shapes seen and what was expected.
        message: String,
    },
    /// An op got the wrong number of operands.
    #[error("node %{node} ({op}): expected {expected} operand(s), got {got}")]
    Arity {
        /// The node's name.
        node: String,
        /// The op keyword.
        op: &'static str,
        /// Operands the op takes.
        expected: Arity,
        /// Operands given.
        got: usize,
    },
    /// Two nodes with one name.
    #[error("duplicate name %{0}")]
    DuplicateName(String),
    /// A name that no node has.
    #[error("unknown name %{0}")]
    UnknownName(String),
    /// A name outside the .kiln name set.
    #[error("invalid name {0:?}: names use letters, digits and _ . - /")]
    InvalidName(String),
    /// Malformed .kiln text.
    #[error("{line}:{col}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What was found and what was expected.
        message: String,
    },
    /// A feed is missing, unknown, or of the wrong type or shape.
    #[error("feed %{name}: {message}")]
    Feed {
        /// The placeholder's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Evaluating a node failed (e.g. shapes only known at run time do not fit).
    #[error("evaluating %{node} ({op}): {message}")]
    Eval {
        /// The node's name.
        node: String,
        /// The op keyword.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A backend cannot run an op.
    #[error("backend {backend} does not support node %{node} ({op}){}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Unsupported {
        /// The backend's name.
        backend: String,
        /// The node's name.
        node: String,
        /// The op keyword.
        op: String,
        /// Why, when more can be said.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// Importing an ONNX model failed; the importer's error is kept whole, so a caller can
    /// match it (e.g. the list of unsupported ops in [`ImportError::Unsupported`]).
    #[error("ONNX import: {0}")]
    Import(#[from] ImportError),
    /// Any other invalid value (e.g. tensor data that does not fit its shape).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<std::path::Path>, err: impl std::fmt::Display) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            message: err.to_string(),
        }
    }
}
