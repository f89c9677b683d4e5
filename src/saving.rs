//! Saving a graph as .kiln text with its large values in a safetensors file beside it (the
//! format-2 `safetensors(...)` initialiser the ONNX importer writes): [`Graph::save`] with the
//! initial values, [`Session::save_graph`] with the variables' current ones, so that a trained
//! model is one `kiln run` away.

use crate::{Graph, Session};
use kiln_ir::{Initializer, Op, Result, Tensor};
use kiln_onnx::INLINE_MAX_ELEMENTS;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The weights file's name beside `path`, as the graph refers to it: `model.kiln` gives
/// `model.safetensors` (the importer's convention).
fn weights_file_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    format!("{}.safetensors", kiln_onnx::sanitize(&stem))
}

/// Writes `graph` to `path` and its weights file beside it. Every variable named in
/// `current` takes that value; any other constant or variable whose value is a literal of more
/// than [`INLINE_MAX_ELEMENTS`] elements moves to the weights file too, keyed by node name.
pub(crate) fn save_with_values(
    graph: &kiln_ir::Graph,
    path: &Path,
    current: Option<&HashMap<String, Tensor>>,
) -> Result<()> {
    let file = weights_file_name(path);
    let mut out = graph.clone();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let (Op::Const(src) | Op::Var(src)) = &node.op else {
            continue;
        };
        let now = match (&node.op, current) {
            (Op::Var(_), Some(values)) => values.get(&node.name).cloned().map(Arc::new),
            _ => None,
        };
        let value = now.or_else(|| match &src.init {
            Initializer::Literal(t) if t.numel() > INLINE_MAX_ELEMENTS => Some(t.clone()),
            _ => None,
        });
        if let Some(value) = value {
            let init = Initializer::Safetensors {
                path: file.clone(),
                tensor: node.name.clone(),
                value,
            };
            out.set_initializer(id, init)?;
        }
    }
    Graph::from(out).save_with_weights(path)
}

impl Session {
    /// Writes the session's graph to `path` (a .kiln file) with every variable's current
    /// value in a safetensors file beside it (`model.kiln` gives `model.safetensors`), so that
    /// `kiln run model.kiln` or [`Graph::load`] and a new session compute what this session
    /// computes now. Large constants go to the same file. Runs that update variables wait
    /// while the values are read, so the file holds one consistent set.
    ///
    /// ```
    /// use kiln::{Graph, Session, Shape, Tensor};
    ///
    /// let mut g = Graph::new();
    /// let x = g.input("x", Shape::of(&[Some(1), Some(2)]))?;
    /// let w = g.var("w", Tensor::from_vec(&[2, 1], vec![1.0, 2.0])?)?;
    /// let y = g.named("y").matmul(x, w)?;
    /// g.output(y);
    /// let sess = Session::new(&g)?;
    /// sess.set_variable(w, Tensor::from_vec(&[2, 1], vec![3.0, 4.0])?)?;
    ///
    /// let dir = std::env::temp_dir().join(format!("kiln-save-graph-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// sess.save_graph(dir.join("model.kiln"))?;
    /// assert!(dir.join("model.safetensors").exists());
    ///
    /// let loaded = Session::new(&Graph::load(dir.join("model.kiln"))?)?;
    /// let feed = Tensor::from_vec(&[1, 2], vec![1.0, 1.0])?;
    /// let out = loaded.run_named(&[("x", &feed)], &["y"])?;
    /// assert_eq!(out[0].as_f32(), Some(&[7.0][..]));
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_graph(&self, path: impl AsRef<Path>) -> Result<()> {
        let current: HashMap<String, Tensor> = self.variables()?.into_iter().collect();
        save_with_values(self.graph(), path.as_ref(), Some(&current))
    }
}
