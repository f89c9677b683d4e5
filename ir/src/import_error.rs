//! The ONNX importer's error type (the `kiln-onnx` crate returns it). It lives in kiln-ir so
//! that [`crate::Error::Import`] can carry it whole: a caller of the `kiln` crate can match the
//! list of unsupported ops instead of parsing a message. Every message names what the user can
//! find in their model: the ONNX node (its name, or its first output when it has none), the op
//! type, the opset, and the shapes or values involved.

use thiserror::Error;

/// One op the importer cannot map, as listed by [`ImportError::Unsupported`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// The op type (with its domain when it is not the default one).
    pub op: String,
    /// The node's name.
    pub node: String,
}

/// Everything that can go wrong while importing an ONNX model.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ImportError {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The bytes are not a valid ONNX protobuf (truncated or corrupt).
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    /// The model's default-domain opset is outside the supported range.
    #[error(
        "unsupported opset {opset} of the default ONNX domain: kiln imports opsets {min} to {max}"
    )]
    Opset {
        /// The model's opset.
        opset: i64,
        /// Oldest supported.
        min: i64,
        /// Newest supported.
        max: i64,
    },
    /// Ops the importer cannot map, all of them at once.
    #[error("{} unsupported op(s) at opset {opset}: {}", .ops.len(), list_ops(.ops))]
    Unsupported {
        /// Every unsupported node.
        ops: Vec<UnsupportedOp>,
        /// The model's default-domain opset.
        opset: i64,
    },
    /// A node's inputs or attributes cannot be imported (bad shapes, bad attribute values).
    #[error("node {node:?} ({op}, opset {opset}): {message}")]
    Node {
        /// The node's name.
        node: String,
        /// The op type.
        op: String,
        /// The model's default-domain opset.
        opset: i64,
        /// What is wrong: the shapes or values seen and what was expected.
        message: String,
    },
    /// The model as a whole is malformed (missing graph, unknown value names, bad tensors).
    #[error("{0}")]
    Model(String),
}

fn list_ops(ops: &[UnsupportedOp]) -> String {
    let parts: Vec<String> = ops
        .iter()
        .map(|o| format!("{} (node {:?})", o.op, o.node))
        .collect();
    parts.join(", ")
}
