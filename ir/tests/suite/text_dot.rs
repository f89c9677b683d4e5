//! GraphViz export: node and edge counts, labels (name, op, attributes, operand types),
//! highlighting of sources and outputs, and well-formed quoting.

use kiln_ir::dot::to_dot;
use kiln_ir::text::parse;

const GRAPH: &str = r#"kiln 1
input %image : f32[?,100,100,1]
var   %kernel : f32[5,5,1,1] = normal(0, 1, 42)
const %bias : f32[1] = [0.5]
%conv = conv2d(%image, %kernel, strides=[2,2], padding="SAME")
%biased = bias_add(%conv, %bias)
%sq = mul(%biased, %biased)
%y = relu(%sq)
output %y
"#;

fn node_lines(dot: &str) -> Vec<&str> {
    dot.lines()
        .filter(|l| l.trim_start().starts_with('n') && l.contains("[label=") && !l.contains("->"))
        .collect()
}

fn edge_lines(dot: &str) -> Vec<&str> {
    dot.lines().filter(|l| l.contains(" -> ")).collect()
}

/// The line of the DOT node whose label starts with `%name`.
fn node_line<'d>(dot: &'d str, name: &str) -> &'d str {
    let prefix = format!("[label=\"%{name}\\n");
    node_lines(dot)
        .into_iter()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("no node %{name} in\n{dot}"))
}

/// The DOT id (`n3`) of the node labelled `%name`.
fn node_id<'d>(dot: &'d str, name: &str) -> &'d str {
    node_line(dot, name).split_whitespace().next().unwrap_or("")
}

/// Checks that every double-quoted string on every line is closed, honouring `\` escapes.
fn assert_quotes_balanced(dot: &str) {
    for line in dot.lines() {
        let (mut inside, mut escaped) = (false, false);
        for c in line.chars() {
            match (inside, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => inside = !inside,
                _ => {}
            }
        }
        assert!(!inside, "unbalanced quotes in {line:?}");
    }
}

#[test]
fn dot_has_one_node_per_value_and_one_edge_per_operand() {
    let g = parse(GRAPH, None).expect("parses");
    let dot = to_dot(&g);
    assert!(
        dot.starts_with("digraph kiln {\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    assert_eq!(node_lines(&dot).len(), 7, "{dot}");
    // conv 2 + bias_add 2 + mul 2 (the same operand twice) + relu 1.
    assert_eq!(edge_lines(&dot).len(), 7, "{dot}");
    assert_quotes_balanced(&dot);
}

#[test]
fn dot_labels_carry_names_ops_attributes_and_types() {
    let g = parse(GRAPH, None).expect("parses");
    let dot = to_dot(&g);
    let conv = node_line(&dot, "conv");
    assert!(
        conv.contains(r#"label="%conv\nconv2d\nstrides=[2,2]\npadding=\"SAME\"""#),
        "{conv}"
    );
    assert!(conv.contains("shape=box"), "{conv}");
    let image = node_line(&dot, "image");
    assert!(
        image.contains(r"input f32[?,100,100,1]") && image.contains("shape=invhouse"),
        "{image}"
    );
    let kernel = node_line(&dot, "kernel");
    assert!(
        kernel.contains("var f32[5,5,1,1] = normal(0.0, 1.0, 42)"),
        "{kernel}"
    );
    assert!(
        node_line(&dot, "bias").contains("const f32[1] = literal"),
        "{dot}"
    );
    // The output is highlighted; other ops are not.
    let y = node_line(&dot, "y");
    assert!(y.contains("peripheries=2") && y.contains("output 0"), "{y}");
    assert!(!conv.contains("peripheries"), "{conv}");

    // Edges are labelled with the operand's type.
    let edge = |from: &str, to: &str| -> String {
        let prefix = format!("  {} -> {} ", node_id(&dot, from), node_id(&dot, to));
        edge_lines(&dot)
            .into_iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no edge {from} -> {to} in\n{dot}"))
            .to_string()
    };
    assert!(
        edge("image", "conv").contains("label=\"f32[?,100,100,1]\""),
        "{dot}"
    );
    assert!(
        edge("kernel", "conv").contains("label=\"f32[5,5,1,1]\""),
        "{dot}"
    );
    assert!(edge("bias", "biased").contains("label=\"f32[1]\""), "{dot}");
    assert!(
        edge("sq", "y").contains("label=\"f32[?,50,50,1]\""),
        "{dot}"
    );
}

#[test]
fn dot_of_every_op_is_well_formed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let g = kiln_ir::text::parse_file(&dir.join("all_ops.kiln")).expect("parses");
    let dot = to_dot(&g);
    assert_eq!(node_lines(&dot).len(), g.len());
    let operands: usize = g.node_ids().map(|i| g.inputs(i).len()).sum();
    assert_eq!(edge_lines(&dot).len(), operands);
    assert_quotes_balanced(&dot);
    // Padding strings are escaped inside the label.
    assert!(
        node_line(&dot, "mp").contains(r#"padding=\"VALID\""#),
        "{dot}"
    );
}

#[test]
fn fused_nodes_are_drawn_with_their_epilogue() {
    let text = "kiln 2
input %x : f32[1,4,4,2]
const %w : f32[1,1,2,2] = [1.0, 0.0, 0.0, 1.0]
const %b : f32[2] = [0.5, -0.5]
%y = fused_conv2d(%x, %w, %b, padding=\"SAME\", expr=\"relu(add(main, $2))\")
output %y
";
    let g = kiln_ir::text::parse(text, None).unwrap();
    let dot = kiln_ir::dot::to_dot(&g);
    assert_quotes_balanced(&dot);
    let line = node_line(&dot, "y");
    assert!(line.contains("box3d"), "{line}");
    assert!(line.contains("fused_conv2d"), "{line}");
    assert!(line.contains("= relu(add(main, $2))"), "{line}");
    assert!(line.contains("padding=\\\"SAME\\\""), "{line}");
    // Three operands, three edges into the fused node.
    let id = node_id(&dot, "y");
    let into = edge_lines(&dot)
        .into_iter()
        .filter(|l| l.contains(&format!("-> {id}")))
        .count();
    assert_eq!(into, 3, "{dot}");
}
