//! Printing a [`Graph`] as .kiln text.
//!
//! The output is canonical so that print -> parse -> print is byte-identical: sources first in
//! insertion order, then ops in [`Graph::topo_order`] order (which the parser's insertion order
//! reproduces), attributes in a fixed order with defaults omitted, floats in Rust's shortest
//! round-trip form (`inf`, `-inf`, `nan` spelled out), literals as flat lists, and each value's
//! type as a trailing comment.

use super::FORMAT_VERSION;
use crate::op::{ConvAttrs, DataFormat, Float, Initializer, Op, Padding, PoolAttrs, UnaryOp};
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

fn push_format(out: &mut Vec<String>, df: DataFormat) {
    if df != DataFormat::Nhwc {
        out.push(format!("data_format={}", quote(df.name())));
    }
}

fn push_float(out: &mut Vec<String>, name: &str, v: Float, default: f32) {
    if v != Float(default) {
        out.push(format!("{name}={}", fmt_f32(v.0)));
    }
}

fn conv(out: &mut Vec<String>, a: &ConvAttrs) {
    if a.strides != [1, 1] {
        out.push(format!("strides={}", list(&a.strides)));
    }
    out.push(format!("padding={}", padding(&a.padding)));
    if a.dilations != [1, 1] {
        out.push(format!("dilations={}", list(&a.dilations)));
    }
    push_format(out, a.data_format);
}

fn pool(out: &mut Vec<String>, a: &PoolAttrs) {
    out.push(format!("ksize={}", list(&a.ksize)));
    if a.strides != [1, 1] {
        out.push(format!("strides={}", list(&a.strides)));
    }
    out.push(format!("padding={}", padding(&a.padding)));
    push_format(out, a.data_format);
}

/// The op's attributes as `name=value`, in the canonical order, defaults omitted.
pub(crate) fn attrs(op: &Op) -> Vec<String> {
    let mut out = Vec::new();
    match op {
        Op::Input(_) | Op::Var(_) | Op::Const(_) | Op::Binary(_) | Op::Assign(_) => {}
        Op::Unary(UnaryOp::LeakyRelu { alpha }) => push_float(&mut out, "alpha", *alpha, 0.2),
        Op::Unary(_) => {}
        Op::BiasAdd { data_format } => push_format(&mut out, *data_format),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            if *transpose_a {
                out.push("transpose_a=true".into());
            }
            if *transpose_b {
                out.push("transpose_b=true".into());
            }
        }
        Op::Conv2d(a) | Op::DepthwiseConv2d(a) => conv(&mut out, a),
        Op::MaxPool(a) | Op::AvgPool(a) => pool(&mut out, a),
        Op::Reduce { axes, keepdims, .. } => {
            if let Some(axes) = axes {
                out.push(format!("axes={}", list(axes)));
            }
            if *keepdims {
                out.push("keepdims=true".into());
            }
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            if *axis != -1 {
                out.push(format!("axis={axis}"));
            }
        }
        Op::Reshape { shape } => out.push(format!("shape={}", list(shape))),
        Op::Transpose { perm } => out.push(format!("perm={}", list(perm))),
        Op::Concat { axis } => out.push(format!("axis={axis}")),
        Op::Slice { begin, size } => {
            out.push(format!("begin={}", list(begin)));
            out.push(format!("size={}", list(size)));
        }
        Op::Pad {
            paddings,
            constant_value,
        } => {
            out.push(format!("paddings={}", pairs(paddings)));
            push_float(&mut out, "constant_value", *constant_value, 0.0);
        }
        Op::BatchNorm {
            epsilon,
            data_format,
        } => {
            push_float(&mut out, "epsilon", *epsilon, 0.001);
            push_format(&mut out, *data_format);
        }
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => {
            if *depth_radius != 5 {
                out.push(format!("depth_radius={depth_radius}"));
            }
            push_float(&mut out, "bias", *bias, 1.0);
            push_float(&mut out, "alpha", *alpha, 1.0);
            push_float(&mut out, "beta", *beta, 0.5);
        }
        Op::ArgMax { axis, output_type } => {
            out.push(format!("axis={axis}"));
            if *output_type != crate::DType::I64 {
                out.push(format!("output_type={}", quote(&output_type.to_string())));
            }
        }
        Op::Gather { axis } => {
            if *axis != 0 {
                out.push(format!("axis={axis}"));
            }
        }
        Op::Cast { to } => out.push(format!("to={}", quote(&to.to_string()))),
        Op::Fused(f) => {
            if let Some(main) = f.main() {
                out.extend(attrs(main));
            }
            out.push(format!("expr={}", quote(&f.expr().to_string())));
        }
    }
    out
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

/// The oldest format version that can express `graph`: 1 unless it uses a version-2 feature
/// (a safetensors initialiser, or an op added in version 2: lrn, argmax, gather, cast and the
/// fused nodes). Writing the oldest version keeps version-1 files and golden texts
/// byte-stable.
pub(crate) fn required_version(graph: &Graph) -> u64 {
    let v2 = graph.node_ids().any(|id| match &graph.node(id).op {
        Op::Var(s) | Op::Const(s) => matches!(s.init, Initializer::Safetensors { .. }),
        Op::Lrn { .. } | Op::ArgMax { .. } | Op::Gather { .. } | Op::Cast { .. } | Op::Fused(_) => {
            true
        }
        _ => false,
    });
    if v2 { FORMAT_VERSION } else { 1 }
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
