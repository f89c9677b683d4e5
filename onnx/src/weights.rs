//! Writing the safetensors files a graph's `safetensors(...)` initialisers reference.
//!
//! One file per distinct path (the importer uses one for the whole model), holding every
//! tensor that references it under its key. Paths are resolved relative to the folder the
//! .kiln file is written to, as the parser resolves them when reading it back.

use crate::error::{ImportError, Result};
use kiln_ir::safetensors_io;
use kiln_ir::{Graph, Initializer, Op, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Writes every safetensors file `graph` references, relative to `dir`; returns the paths
/// written. A key referenced twice with different values is an error.
pub fn write_weights(graph: &Graph, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: BTreeMap<&str, BTreeMap<&str, Arc<Tensor>>> = BTreeMap::new();
    for id in graph.node_ids() {
        let (Op::Const(s) | Op::Var(s)) = &graph.node(id).op else {
            continue;
        };
        let Initializer::Safetensors {
            path,
            tensor,
            value,
        } = &s.init
        else {
            continue;
        };
        let file = files.entry(path.as_str()).or_default();
        if let Some(prev) = file.insert(tensor.as_str(), value.clone())
            && prev != *value
        {
            return Err(ImportError::Model(format!(
                "{path}: tensor {tensor:?} is referenced with two different values"
            )));
        }
    }
    let mut written = Vec::new();
    for (path, tensors) in files {
        let full = dir.join(path);
        let io = |e: String| ImportError::Io {
            path: full.display().to_string(),
            message: e,
        };
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
        }
        safetensors_io::write_file(&full, tensors.iter().map(|(k, t)| (*k, t.as_ref())))
            .map_err(io)?;
        written.push(full);
    }
    Ok(written)
}
