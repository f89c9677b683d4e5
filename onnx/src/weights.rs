//! Writing the safetensors files a graph's `safetensors(...)` initialisers reference.
//!
//! One file per distinct path (the importer uses one for the whole model), holding every
//! tensor that references it under its key. Paths are resolved relative to the folder the
//! .kiln file is written to, as the parser resolves them when reading it back.

use crate::error::{ImportError, Result};
use kiln_ir::{DType, Data, Graph, Initializer, Op, Tensor};
use safetensors::tensor::{Dtype, TensorView};
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
        let bytes: Vec<(&str, Vec<u8>, &Arc<Tensor>)> =
            tensors.iter().map(|(k, t)| (*k, le_bytes(t), t)).collect();
        let views = bytes
            .iter()
            .map(|(k, b, t)| {
                TensorView::new(st_dtype(t.dtype()), t.dims().to_vec(), b)
                    .map(|v| (k.to_string(), v))
                    .map_err(|e| io(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
        }
        safetensors::serialize_to_file(views, None, &full).map_err(|e| io(e.to_string()))?;
        written.push(full);
    }
    Ok(written)
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

fn le_bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}
