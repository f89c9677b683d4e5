//! Printing a [`Graph`] as .kiln text.
//!
//! The output is canonical so that print -> parse -> print is byte-identical: sources first in
//! insertion order, then ops in [`Graph::topo_order`] order (which the parser's insertion order
//! reproduces), attributes in a fixed order with defaults omitted, floats in Rust's shortest
//! round-trip form (`inf`, `-inf`, `nan` spelled out), literals as flat lists, and each value's
//! type as a trailing comment.

use super::FORMAT_VERSION;
use crate::op::{ConvAttrs, DataFormat, Float, Initializer, Op, Padding, PoolAttrs, UnaryOp};
use crate::schema::AttrDefault;
use crate::tensor::Data;
use crate::{Graph, Node};
use std::fmt::Write;

/// An f32 as the format writes it; parses back to the same bits (NaN payloads aside).
pub fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        if v.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else if v.is_infinite() {
        if v < 0.0 { "-inf" } else { "inf" }.to_string()
    } else {
        // Debug gives the shortest decimal that round-trips, always with `.` or an exponent.
        format!("{v:?}")
    }
}

/// A string in double quotes with `\ " newline tab return` escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T: ToString>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(T::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn pairs(items: &[[usize; 2]]) -> String {
    let parts: Vec<String> = items.iter().map(|p| list(p)).collect();
    format!("[{}]", parts.join(","))
}

fn padding(p: &Padding) -> String {
    match p {
        Padding::Same => quote("SAME"),
        Padding::Valid => quote("VALID"),
        Padding::Explicit(pp) => pairs(pp),
    }
}

/// Every attribute of `op` as `(name, value text)`, defaults included, in schema order.
fn all_attrs(op: &Op) -> Vec<(&'static str, String)> {
    let float = |v: &Float| fmt_f32(v.0);
    let format = |df: &DataFormat| quote(df.name());
    match op {
        Op::Input(_) | Op::Var(_) | Op::Const(_) | Op::Binary(_) | Op::Assign(_) => Vec::new(),
        Op::Unary(UnaryOp::LeakyRelu { alpha }) => vec![("alpha", float(alpha))],
        Op::Unary(_) => Vec::new(),
        Op::BiasAdd { data_format } => vec![("data_format", format(data_format))],
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => vec![
            ("transpose_a", transpose_a.to_string()),
            ("transpose_b", transpose_b.to_string()),
        ],
        Op::Conv2d(a) | Op::DepthwiseConv2d(a) => conv(a),
        Op::MaxPool(a) | Op::AvgPool(a) => pool(a),
        Op::Reduce { axes, keepdims, .. } => {
            let mut out: Vec<(&str, String)> = axes.iter().map(|a| ("axes", list(a))).collect();
            out.push(("keepdims", keepdims.to_string()));
            out
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Concat { axis } => {
            vec![("axis", axis.to_string())]
        }
        Op::Reshape { shape } => vec![("shape", list(shape))],
        Op::Transpose { perm } => vec![("perm", list(perm))],
        Op::Slice { begin, size } => vec![("begin", list(begin)), ("size", list(size))],
        Op::Pad {
            paddings,
            constant_value,
        } => vec![
            ("paddings", pairs(paddings)),
            ("constant_value", float(constant_value)),
        ],
        Op::BatchNorm {
            epsilon,
            data_format,
        } => vec![
            ("epsilon", float(epsilon)),
            ("data_format", format(data_format)),
        ],
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => vec![
            ("depth_radius", depth_radius.to_string()),
            ("bias", float(bias)),
            ("alpha", float(alpha)),
            ("beta", float(beta)),
        ],
        Op::ArgMax { axis, output_type } => vec![
            ("axis", axis.to_string()),
            ("output_type", quote(&output_type.to_string())),
        ],
        Op::Gather { axis } => vec![("axis", axis.to_string())],
        Op::Cast { to } => vec![("to", quote(&to.to_string()))],
        Op::Fused(f) => {
            let mut out = f.main().map(all_attrs).unwrap_or_default();
            out.push(("expr", quote(&f.expr().to_string())));
            out
        }
        Op::BroadcastLike
        | Op::Compare(_)
        | Op::Logical(_)
        | Op::LogicalNot
        | Op::Select
        | Op::StopGradient => Vec::new(),
        Op::Conv2dBackpropInput { input_shape, attrs }
        | Op::DepthwiseConv2dBackpropInput { input_shape, attrs } => {
            let mut out = vec![("input_shape", list(input_shape))];
            out.extend(conv(attrs));
            out
        }
        Op::Conv2dBackpropFilter {
            filter_shape,
            attrs,
        }
        | Op::DepthwiseConv2dBackpropFilter {
            filter_shape,
            attrs,
        } => {
            let mut out = vec![("filter_shape", list(filter_shape))];
            out.extend(conv(attrs));
            out
        }
        Op::MaxPoolGrad(a) => pool(a),
        Op::AvgPoolGrad {
            orig_input_shape,
            attrs,
        } => {
            let mut out = vec![("orig_input_shape", list(orig_input_shape))];
            out.extend(pool(attrs));
            out
        }
        Op::SoftmaxCrossEntropyWithLogits | Op::SparseSoftmaxCrossEntropyWithLogits => vec![],
        Op::OneHot {
            depth,
            on_value,
            off_value,
            axis,
        } => vec![
            ("depth", depth.to_string()),
            ("on_value", float(on_value)),
            ("off_value", float(off_value)),
            ("axis", axis.to_string()),
        ],
        Op::GatherGrad { axis, size } => {
            vec![("axis", axis.to_string()), ("size", size.to_string())]
        }
        Op::ApplyGradientDescent | Op::ApplyAdam | Op::Group => Vec::new(),
        Op::ApplyMomentum { use_nesterov } => vec![("use_nesterov", use_nesterov.to_string())],
    }
}

fn conv(a: &ConvAttrs) -> Vec<(&'static str, String)> {
    vec![
        ("strides", list(&a.strides)),
        ("padding", padding(&a.padding)),
        ("dilations", list(&a.dilations)),
        ("data_format", quote(a.data_format.name())),
    ]
}

fn pool(a: &PoolAttrs) -> Vec<(&'static str, String)> {
    vec![
        ("ksize", list(&a.ksize)),
        ("strides", list(&a.strides)),
        ("padding", padding(&a.padding)),
        ("data_format", quote(a.data_format.name())),
    ]
}

/// The op's attributes as `name=value`, in the canonical order, with every attribute equal to
/// its schema default left out.
pub(crate) fn attrs(op: &Op) -> Vec<String> {
    let schema = op.schema();
    all_attrs(op)
        .into_iter()
        .filter(|(name, text)| {
            let default = schema.and_then(|s| s.attr(name)).map(|a| a.default);
            !matches!(default, Some(AttrDefault::Value(d)) if d == text)
        })
        .map(|(name, text)| format!("{name}={text}"))
        .collect()
}

/// An initialiser as written after `=`.
pub(crate) fn initializer(init: &Initializer) -> String {
    match init {
        Initializer::Zeros => "zeros".into(),
        Initializer::Ones => "ones".into(),
        Initializer::Fill(v) => format!("fill({})", fmt_f32(v.0)),
        Initializer::Normal { mean, std, seed } => {
            format!("normal({}, {}, {seed})", fmt_f32(mean.0), fmt_f32(std.0))
        }
        Initializer::Uniform { lo, hi, seed } => {
            format!("uniform({}, {}, {seed})", fmt_f32(lo.0), fmt_f32(hi.0))
        }
        Initializer::Literal(t) => {
            let items: Vec<String> = match t.data() {
                Data::F32(v) => v.iter().map(|&x| fmt_f32(x)).collect(),
                Data::I32(v) => v.iter().map(i32::to_string).collect(),
                Data::I64(v) => v.iter().map(i64::to_string).collect(),
                Data::Bool(v) => v.iter().map(bool::to_string).collect(),
            };
            format!("[{}]", items.join(", "))
        }
        Initializer::Npy { path, .. } => format!("npy({})", quote(path)),
        Initializer::Safetensors { path, tensor, .. } => {
            format!("safetensors({}, {})", quote(path), quote(tensor))
        }
    }
}

/// The oldest format version that can express `graph`: the newest [`Op::since_version`] of
/// its ops, and 2 for a safetensors initialiser. Writing the oldest version keeps version-1
/// files and golden texts byte-stable.
pub(crate) fn required_version(graph: &Graph) -> u64 {
    graph
        .node_ids()
        .map(|id| match &graph.node(id).op {
            Op::Var(s) | Op::Const(s) if matches!(s.init, Initializer::Safetensors { .. }) => {
                crate::schema::SAFETENSORS_SINCE
            }
            op => op.since_version(),
        })
        .max()
        .unwrap_or(1)
        .min(FORMAT_VERSION)
}

/// One node's statement, without the type comment.
fn statement(graph: &Graph, id: crate::NodeId, node: &Node) -> String {
    match &node.op {
        Op::Input(ty) => format!("input %{} : {ty}", node.name),
        Op::Var(s) => format!("var %{} : {} = {}", node.name, s.ty, initializer(&s.init)),
        Op::Const(s) => format!("const %{} : {} = {}", node.name, s.ty, initializer(&s.init)),
        op => {
            let mut args: Vec<String> = graph
                .inputs(id)
                .iter()
                .map(|&i| format!("%{}", graph.node(i).name))
                .collect();
            args.extend(attrs(op));
            format!("%{} = {}({})", node.name, op.name(), args.join(", "))
        }
    }
}

/// Prints the graph (see the module doc for the canonical form).
pub(crate) fn print_graph(graph: &Graph) -> String {
    let mut out = format!("kiln {}\n", required_version(graph));
    let sources = graph.node_ids().filter(|&i| graph.node(i).op.is_source());
    let ops = graph
        .topo_order()
        .into_iter()
        .filter(|&i| !graph.node(i).op.is_source());
    for id in sources.chain(ops) {
        let node = graph.node(id);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}  # {}", statement(graph, id, node), node.ty);
    }
    if !graph.outputs().is_empty() {
        let names: Vec<String> = graph
            .outputs()
            .iter()
            .map(|&o| format!("%{}", graph.node(o).name))
            .collect();
        let _ = writeln!(out, "output {}", names.join(", "));
    }
    out
}
