//! `kiln grad GRAPH --loss NAME [--wrt NAME,...] [-o OUT.kiln]`: writes the graph with the
//! gradient of the loss added, one output `grad/<name>` per differentiated node (`kiln run`
//! then writes `grad_<name>.npy`). `--wrt` defaults to every variable the loss depends on.

use crate::safe_write::{resolved, write_bytes};
use kiln::ir::Initializer;
use kiln::{NodeId, Op};
use std::path::{Path, PathBuf};

/// A node name as the user wrote it, with or without `%`.
pub fn bare(name: &str) -> &str {
    name.strip_prefix('%').unwrap_or(name)
}

/// Looks `name` up, naming the graph's outputs and variables when it is not there.
pub fn lookup(graph: &kiln::Graph, name: &str, what: &str) -> Result<NodeId, String> {
    graph.find(bare(name)).ok_or_else(|| {
        let vars: Vec<String> = graph
            .variables()
            .iter()
            .map(|&v| format!("%{}", graph.node(v).name))
            .collect();
        let outs: Vec<String> = graph
            .outputs()
            .iter()
            .map(|&o| format!("%{}", graph.node(o).name))
            .collect();
        format!(
            "{what} %{}: no node has this name (outputs: {}; variables: {})",
            bare(name),
            if outs.is_empty() {
                "none".into()
            } else {
                outs.join(", ")
            },
            if vars.is_empty() {
                "none".into()
            } else {
                vars.join(", ")
            },
        )
    })
}

/// Runs `kiln grad`.
pub fn grad(
    path: &Path,
    loss: &str,
    wrt: &[String],
    output: Option<PathBuf>,
) -> Result<(), String> {
    let mut graph = crate::load(path)?;
    let loss = lookup(&graph, loss, "--loss")?;
    let wrt: Vec<NodeId> = wrt
        .iter()
        .map(|n| lookup(&graph, n, "--wrt"))
        .collect::<Result<_, _>>()?;
    let outputs = graph
        .add_gradient_outputs(loss, (!wrt.is_empty()).then_some(&wrt[..]))
        .map_err(|e| e.to_string())?;
    let text = graph.to_text();
    let names: Vec<String> = outputs
        .iter()
        .map(|&o| format!("%{}", graph.node(o).name))
        .collect();
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(out) => {
            check_output(path, &out, &graph)?;
            write_bytes(&out, text.as_bytes())?;
            eprintln!(
                "wrote {}: gradients of %{} as {}",
                out.display(),
                graph.node(loss).name,
                names.join(", ")
            );
            Ok(())
        }
    }
}

/// The output must not overwrite the graph it was made from, and must sit in the same folder
/// when the graph reads weight files (their paths are relative to the graph file).
fn check_output(input: &Path, output: &Path, graph: &kiln::Graph) -> Result<(), String> {
    let (from, to) = (resolved(input)?, resolved(output)?);
    if from == to {
        return Err(format!(
            "-o {}: refusing to overwrite the input graph; choose another file name",
            output.display()
        ));
    }
    let reads_files = graph.node_ids().any(|n| match &graph.node(n).op {
        Op::Var(s) | Op::Const(s) => {
            matches!(
                s.init,
                Initializer::Npy { .. } | Initializer::Safetensors { .. }
            )
        }
        _ => false,
    });
    if reads_files && from.parent() != to.parent() {
        return Err(format!(
            "-o {}: the graph reads weight files relative to its folder {}; write the new \
             graph into that folder",
            output.display(),
            from.parent()
                .map_or_else(String::new, |p| p.display().to_string())
        ));
    }
    Ok(())
}
