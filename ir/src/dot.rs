//! GraphViz export: [`to_dot`] renders a graph as a DOT digraph for `dot -Tsvg`.
//!
//! One DOT node per graph node, labelled with its name, op and non-default attributes (the
//! same `name=value` text as the .kiln printer); sources, side effects, fused nodes (with their
//! epilogue expression) and graph outputs are drawn with distinct shapes and colours. One edge per operand (an op using a value twice gets
//! two edges), labelled with the operand's type. DOT identifiers are generated (`n0`, `n1`, ...)
//! and every label is a quoted, escaped string, so no user name can break the syntax.

use crate::op::{Initializer, Op};
use crate::text::{initializer_text, op_attributes};
use crate::{Graph, NodeId};
use std::collections::HashMap;
use std::fmt::Write;

/// Escapes text for a double-quoted DOT string; newlines become DOT's `\n` line breaks.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Shape and fill colour for a node's kind.
fn style(op: &Op) -> (&'static str, &'static str) {
    match op {
        Op::Input(_) => ("invhouse", "#d5e8d4"),
        Op::Var(_) => ("cylinder", "#dae8fc"),
        Op::Const(_) => ("note", "#eeeeee"),
        Op::Assign(_) | Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam => {
            ("hexagon", "#f8cecc")
        }
        // Fused nodes stand out: one kernel doing the work of several ops.
        Op::Fused(_) => ("box3d", "#ffe6cc"),
        _ => ("box", "#ffffff"),
    }
}

/// The label's lines: `%name`, the op (with a short form of a source's initialiser), attributes.
fn label_lines(graph: &Graph, id: NodeId) -> Vec<String> {
    let node = graph.node(id);
    let mut lines = vec![format!("%{}", node.name)];
    match &node.op {
        Op::Input(ty) => lines.push(format!("input {ty}")),
        Op::Var(s) | Op::Const(s) => {
            // Literal values can be huge; a label only says that there are some.
            let init = match &s.init {
                Initializer::Literal(_) => "literal".to_string(),
                other => initializer_text(other),
            };
            lines.push(format!("{} {} = {init}", node.op.name(), s.ty));
        }
        Op::Fused(f) => {
            // The main op and its attributes, then the epilogue as one `= expr` line.
            lines.push(f.name().to_string());
            if let Some(main) = f.main() {
                lines.extend(op_attributes(main));
            }
            lines.push(format!("= {}", f.expr()));
        }
        op => {
            lines.push(op.name().to_string());
            lines.extend(op_attributes(op));
        }
    }
    lines
}

/// Renders the graph as a GraphViz DOT digraph (see the module doc).
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::from("digraph kiln {\n");
    out.push_str("  rankdir=TB;\n");
    out.push_str("  node [fontname=\"Helvetica\", fontsize=10, style=filled];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let outputs: HashMap<NodeId, usize> = graph
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, &o)| (o, i))
        .collect();
    let order = graph.topo_order();
    for &id in &order {
        let (shape, mut fill) = style(&graph.node(id).op);
        let mut lines = label_lines(graph, id);
        let mut extra = String::new();
        if let Some(i) = outputs.get(&id) {
            lines.push(format!("output {i}"));
            fill = "#fff2cc";
            extra.push_str(", peripheries=2, penwidth=2");
        }
        let label: Vec<String> = lines.iter().map(|l| escape(l)).collect();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\", shape={shape}, fillcolor=\"{fill}\"{extra}];",
            id.index(),
            label.join("\\n")
        );
    }
    for &id in &order {
        for (port, src) in graph.inputs(id).into_iter().enumerate() {
            let ty = &graph.node(src).ty;
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"{}];",
                src.index(),
                id.index(),
                escape(&ty.to_string()),
                if port > 0 {
                    format!(", headlabel=\"{port}\"")
                } else {
                    String::new()
                }
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
