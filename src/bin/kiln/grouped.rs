//! Grouped convolutions made visible: a conv2d whose filter reads fewer input channels than the
//! input has, a whole fraction of them, is a grouped convolution (TensorFlow's rule), which the
//! .kiln text does not spell out; `check` and `dump` say so, with the group count.

use kiln::{DataFormat, Graph, NodeId, Op};

/// The groups of the conv2d `id` (fused or not) and the input channels of each, when more than
/// one group; `None` otherwise or when a channel count is unknown.
pub fn conv_groups(graph: &Graph, id: NodeId) -> Option<(usize, usize)> {
    let attrs = match &graph.node(id).op {
        Op::Conv2d(a) => a,
        Op::Fused(f) => match f.main() {
            Some(Op::Conv2d(a)) => a,
            _ => return None,
        },
        _ => return None,
    };
    let inputs = graph.inputs(id);
    let (x, w) = (graph.node(*inputs.first()?), graph.node(*inputs.get(1)?));
    let channel_axis = match attrs.data_format {
        DataFormat::Nhwc => 3,
        DataFormat::Nchw => 1,
    };
    let x_channels = (*x.ty.shape.dims().get(channel_axis)?)?;
    let per_group = (*w.ty.shape.dims().get(2)?)?;
    let groups = x_channels.checked_div(per_group)?;
    (groups > 1).then_some((groups, per_group))
}

/// `check`'s and `dump`'s note for a grouped conv: ` (grouped: G groups of C input channels)`.
pub fn note(graph: &Graph, id: NodeId) -> Option<String> {
    let (groups, per_group) = conv_groups(graph, id)?;
    Some(format!(
        "grouped: {groups} groups of {per_group} input channels"
    ))
}

/// The .kiln `text` of `graph` with each grouped conv's note appended to its type comment.
pub fn annotate(graph: &Graph, text: &str) -> String {
    let notes: Vec<(String, String)> = graph
        .node_ids()
        .filter_map(|id| Some((format!("%{} = ", graph.node(id).name), note(graph, id)?)))
        .collect();
    if notes.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out += line;
        if let Some((_, note)) = notes
            .iter()
            .find(|(start, _)| line.starts_with(start.as_str()))
        {
            out += &format!(" ({note})");
        }
        out.push('\n');
    }
    out
}
