//! kiln-onnx: reads ONNX models into kiln graphs.
//!
//! [`import_file`] decodes an .onnx file (the protobuf messages are hand-written `prost`
//! structs, see [`proto`]), maps every node to kiln's op catalogue and returns a
//! [`kiln_ir::Graph`]. The graph keeps ONNX's NCHW layout (convs, pools and batch norms carry
//! `data_format="NCHW"`; filters are transposed from OIHW to HWIO at import); shape
//! computations (`Shape`, `Gather`, `Concat`, `ConstantOfShape`, `Unsqueeze` on shapes) are
//! evaluated at import on known shapes and constants. Initializers become `const` nodes (or
//! `var` with [`ImportOptions::variables`]) whose values the .kiln text references in one
//! safetensors file ([`write_weights`] writes it). Names keep the ONNX value names with
//! characters outside `[A-Za-z0-9_./-]` mapped to `_`, made unique.
//!
//! Supported: the default ONNX domain at opsets [`MIN_OPSET`] to [`MAX_OPSET`], ops listed
//! by [`supported_ops`]. A model using anything else is an error listing every unsupported
//! op with its node and the opset.

// Safe Rust only: unsafe code lives in the backends, in small commented places.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attrs;
pub mod error;
mod importer;
mod ops;
pub mod proto;
mod tensor;
mod value;
mod weights;

pub use error::{ImportError, Result, UnsupportedOp};
pub use importer::{INLINE_MAX_ELEMENTS, sanitize};
pub use weights::write_weights;

use std::path::Path;

/// The oldest default-domain opset the importer reads.
pub const MIN_OPSET: i64 = 7;
/// The newest default-domain opset the importer reads.
pub const MAX_OPSET: i64 = 21;

/// How to import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Initializers (f32 weights) become `var` nodes (trainable, checkpointable) instead of
    /// `const`.
    pub variables: bool,
    /// The safetensors file the graph's large constants reference, as written in the .kiln
    /// text (relative to the graph file).
    pub weights_file: String,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            variables: false,
            weights_file: "model.safetensors".to_string(),
        }
    }
}

/// Imports an ONNX model from its bytes; external tensor data is looked up in `base_dir` (the
/// model's folder).
pub fn import_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<kiln_ir::Graph> {
    importer::import(bytes, base_dir, opts)
}

/// Reads and imports an .onnx file (the `kiln` crate's `Graph::from_onnx` calls this).
///
/// ```
/// use kiln_onnx::{ImportOptions, import_file};
/// use std::path::Path;
///
/// let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conv_basic.onnx");
/// let graph = import_file(&model, &ImportOptions::default())?;
/// let input = graph.node(graph.placeholders()[0]);
/// assert_eq!((input.name.as_str(), input.ty.to_string()), ("x", "f32[?,3,8,8]".to_string()));
/// // Every ONNX node keeps its name, so errors and profiles name what the model calls it.
/// assert_eq!(graph.node(graph.outputs()[0]).name, "y");
/// # Ok::<(), kiln_onnx::ImportError>(())
/// ```
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<kiln_ir::Graph> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    import_bytes(&bytes, path.parent(), opts)
}

/// The ONNX op types the importer maps (default domain).
pub fn supported_ops() -> &'static [&'static str] {
    ops::SUPPORTED
}
