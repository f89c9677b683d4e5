//! The HTML page: one self-contained file, the model as JSON and the script and style sheet
//! inline. A Content-Security-Policy of `default-src 'none'` lets the page load nothing from
//! anywhere (no scripts, styles, fonts, images or connections), so opening it from disk makes
//! no network request, and an attempt is reported to the page as a policy violation.

use super::model::{Extras, model_json};
use kiln_ir::Graph;

const SCRIPT: &str = include_str!("viewer.js");
const STYLE: &str = include_str!("viewer.css");
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";

/// Escapes text for HTML element content and attribute values.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `graph`, titled `title` (usually the graph's file name).
pub fn page(graph: &Graph, title: &str, extras: &Extras<'_>) -> String {
    let model = model_json(graph, title, extras);
    let title = escape_html(title);
    let note = escape_html(&extras.note);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · kiln view</title>
<style>
{STYLE}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span class="note">{note}</span>
<input id="search" type="search" placeholder="search name or op, Enter" aria-label="search">
<span id="matches"></span>
<button id="fold-all" type="button">fold all</button>
<button id="unfold-all" type="button">unfold all</button>
<button id="fit" type="button">fit</button>
</header>
<main>
<svg id="canvas" xmlns="http://www.w3.org/2000/svg">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>
<g id="viewport"></g>
</svg>
<aside id="details"><p class="muted">Click a node for its attributes, type, FLOPs, inputs and consumers; click a block to unfold it and its title bar to fold it. Drag to pan, wheel to zoom.</p></aside>
</main>
<script type="application/json" id="kiln-model">{model}</script>
<script>
{SCRIPT}</script>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_escaped() {
        assert_eq!(
            escape_html("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
