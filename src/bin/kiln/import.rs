//! `kiln import MODEL.onnx -o MODEL.kiln`: imports an ONNX model and writes the .kiln graph
//! with its weights in one safetensors file beside it (`MODEL.safetensors`, named after the
//! output's file stem).

use kiln::Graph;
use kiln::onnx::ImportOptions;
use std::path::{Path, PathBuf};

/// Imports `model` and writes `output` (default: the model's path with `.kiln`) plus its
/// weights file; prints a one-line summary.
pub fn import(model: &Path, output: Option<PathBuf>, variables: bool) -> Result<(), String> {
    let output = output.unwrap_or_else(|| model.with_extension("kiln"));
    let stem = output
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let opts = ImportOptions {
        variables,
        weights_file: format!("{}.safetensors", kiln_onnx::sanitize(&stem)),
    };
    let graph =
        Graph::from_onnx_with(model, &opts).map_err(|e| format!("{}: {e}", model.display()))?;
    graph
        .save_with_weights(&output)
        .map_err(|e| format!("{}: {e}", output.display()))?;
    let inputs: Vec<String> = graph
        .placeholders()
        .iter()
        .map(|&i| format!("%{} {}", graph.node(i).name, graph.node(i).ty))
        .collect();
    let outputs: Vec<String> = graph
        .outputs()
        .iter()
        .map(|&o| format!("%{} {}", graph.node(o).name, graph.node(o).ty))
        .collect();
    println!(
        "wrote {} ({} nodes; inputs: {}; outputs: {})",
        output.display(),
        graph.len(),
        inputs.join(", "),
        outputs.join(", ")
    );
    Ok(())
}
