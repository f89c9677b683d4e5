//! ONNX import on the builder: [`Graph::from_onnx`] and saving an imported graph with its
//! weights ([`Graph::save_with_weights`]). The importer itself is the `kiln-onnx` crate.

use crate::Graph;
use kiln_ir::Result;
use std::path::Path;

pub use kiln_onnx::{ImportError, ImportOptions, MAX_OPSET, MIN_OPSET, UnsupportedOp};

impl Graph {
    /// Imports an ONNX model. Large constants reference `MODEL.safetensors` (the model's file
    /// stem) beside the graph; [`Graph::save_with_weights`] writes that file.
    ///
    /// ```
    /// use kiln::{Graph, Session, Tensor};
    ///
    /// let model = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/tests/fixtures/conv_basic.onnx");
    /// let g = Graph::from_onnx(model)?;
    /// let input = g.placeholders()[0];
    /// assert_eq!(g.node(input).ty.to_string(), "f32[?,3,8,8]");
    /// let sess = Session::new(&g)?;
    /// let x = Tensor::zeros(&[2, 3, 8, 8]);
    /// let y = sess.run(&[(input, &x)], &[g.outputs()[0]])?;
    /// assert_eq!(y[0].dims(), [2, 4, 8, 8]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn from_onnx(path: impl AsRef<Path>) -> Result<Graph> {
        let path = path.as_ref();
        let stem = path
            .file_stem()
            .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
        let opts = ImportOptions {
            weights_file: format!("{}.safetensors", kiln_onnx::sanitize(&stem)),
            ..ImportOptions::default()
        };
        Graph::from_onnx_with(path, &opts)
    }

    /// Imports an ONNX model with the given options (weights file name, variables). A failure
    /// is an [`Error::Import`](crate::Error::Import) holding the importer's [`ImportError`],
    /// so the unsupported ops, for one, can be matched rather than parsed from the message.
    pub fn from_onnx_with(path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Graph> {
        Ok(Graph::from(kiln_onnx::import_file(path.as_ref(), opts)?))
    }

    /// Writes the graph as a .kiln file and every safetensors file its initialisers reference,
    /// beside it (paths in the graph are relative to the .kiln file).
    pub fn save_with_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let dir = path.parent().unwrap_or(Path::new(""));
        kiln_onnx::write_weights(self.ir(), dir).map_err(|e| match e {
            // Writing is not importing: a failed write is an I/O error on that file.
            ImportError::Io { path, message } => kiln_ir::Error::Io { path, message },
            other => kiln_ir::Error::from(other),
        })?;
        self.write_text(path)
    }
}
