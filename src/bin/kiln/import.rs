//! `kiln import MODEL.onnx -o MODEL.kiln`: imports an ONNX model and writes the .kiln graph
//! with its weights in one safetensors file beside it (`MODEL.safetensors`, named after the
//! output's file stem). Neither may overwrite the model or each other, and each is written to a
//! temporary file first and renamed into place, so a failed import leaves no half-written file.

use crate::safe_write::{refuse_symlink, resolved, temporary_beside};
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
    let weights = output.with_file_name(&opts.weights_file);
    refuse_overwrites(model, &output, &weights)?;
    let graph =
        Graph::from_onnx_with(model, &opts).map_err(|e| format!("{}: {e}", model.display()))?;
    save(&graph, &output, &weights)?;
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

/// Refuses an output that would overwrite the model or be overwritten by the weights: the .kiln
/// file, its weights file and the model must be three different files, and the .kiln file must
/// not carry the weights' extension.
fn refuse_overwrites(model: &Path, output: &Path, weights: &Path) -> Result<(), String> {
    let is_safetensors = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        return Err(format!(
            "-o {}: the graph is written as .kiln text and its weights to {}; \
             choose an output name ending in .kiln",
            output.display(),
            weights.display()
        ));
    }
    let model_path = resolved(model)?;
    for (what, path) in [("output", output), ("weights file", weights)] {
        if resolved(path)? == model_path {
            return Err(format!(
                "{what} {} is the model {} itself; refusing to overwrite it",
                path.display(),
                model.display()
            ));
        }
        refuse_symlink(path)?;
    }
    if resolved(output)? == resolved(weights)? {
        return Err(format!(
            "output {} and its weights file {} are the same file",
            output.display(),
            weights.display()
        ));
    }
    Ok(())
}

/// Writes the graph and its weights into a temporary folder beside `output`, then renames both
/// into place (weights first, so the graph never names weights that are not there yet).
fn save(graph: &Graph, output: &Path, weights: &Path) -> Result<(), String> {
    let staging = temporary_beside(output);
    std::fs::create_dir(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let staged = |p: &Path| staging.join(p.file_name().unwrap_or_default());
    let result = graph
        .save_with_weights(staged(output))
        .map_err(|e| format!("{}: {e}", output.display()))
        .and_then(|()| {
            for path in [weights, output] {
                let from = staged(path);
                if from.exists() {
                    std::fs::rename(&from, path).map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            Ok(())
        });
    let _ = std::fs::remove_dir_all(&staging);
    result
}
