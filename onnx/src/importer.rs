//! The import driver: decodes the model, checks the opset and the op set (reporting every
//! unsupported op at once), declares inputs, walks the nodes in order and declares outputs.
//!
//! Invariants: constants stay host tensors ([`Value::Const`]) until an op needs them as a
//! run-time operand; then they become one kiln `const` (or `var`) per (ONNX name, layout), so
//! unused initializers never reach the graph and a weight used twice is stored once. Every
//! kiln node gets a valid, unique name derived from the ONNX value it computes.

use crate::attrs::Ctx;
use crate::error::{ImportError, Result, UnsupportedOp};
use crate::ops;
use crate::proto::{GraphProto, ModelProto, ValueInfoProto};
use crate::tensor::{import_dtype, read_tensor};
use crate::value::Value;
use crate::{ImportOptions, MAX_OPSET, MIN_OPSET};
use kiln_ir::op::Source;
use kiln_ir::{Dim, Graph, Initializer, NodeId, Op, Shape, Tensor, TensorType};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Constants with at most this many elements are written inline as literals; larger ones go
/// to the safetensors file (a literal of a million floats would make the .kiln unreadable).
pub const INLINE_MAX_ELEMENTS: usize = 16;

/// `name` in the .kiln name set: characters outside `[A-Za-z0-9_./-]` become `_`.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "v".to_string() } else { s }
}

/// The state of one import.
pub struct Importer<'o> {
    /// The graph being built.
    pub graph: Graph,
    /// ONNX value name -> what it is.
    values: HashMap<String, Value>,
    /// ONNX names that are initializers (weights: they become variables with `variables`).
    weights: HashSet<String>,
    /// Outputs a node declares but the importer does not produce, with why.
    unavailable: HashMap<String, String>,
    /// Constants already turned into nodes, by (ONNX name, layout tag).
    materialised: HashMap<(String, &'static str), NodeId>,
    opts: &'o ImportOptions,
}

/// Decodes and imports a model (see [`crate::import_bytes`]).
pub fn import(bytes: &[u8], base_dir: Option<&Path>, opts: &ImportOptions) -> Result<Graph> {
    let model = ModelProto::decode(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    let opset = default_opset(&model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Model("the model has no graph".into()))?;
    let unsupported: Vec<UnsupportedOp> = graph
        .node
        .iter()
        .filter_map(|n| {
            let domain = n.domain.as_deref().unwrap_or("");
            let op = n.op_type.as_deref().unwrap_or("");
            let default_domain = domain.is_empty() || domain == "ai.onnx";
            if default_domain && ops::supported(op) {
                return None;
            }
            Some(UnsupportedOp {
                op: if default_domain {
                    op.to_string()
                } else {
                    format!("{domain}.{op}")
                },
                node: Ctx::new(n, opset).name,
            })
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported {
            ops: unsupported,
            opset,
        });
    }
    single_assignment(graph, opset)?;
    if let Some(s) = graph.sparse_initializer.first() {
        let name = s.values.as_ref().and_then(|v| v.name.clone());
        return Err(ImportError::Model(format!(
            "sparse initializer {:?} is not supported",
            name.unwrap_or_default()
        )));
    }
    let mut imp = Importer {
        graph: Graph::new(),
        values: HashMap::new(),
        weights: HashSet::new(),
        unavailable: HashMap::new(),
        materialised: HashMap::new(),
        opts,
    };
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        let what = format!("initializer {name:?}");
        let value = read_tensor(t, base_dir, &what)?;
        imp.weights.insert(name.clone());
        imp.values.insert(name, Value::Const(Arc::new(value)));
    }
    // IR version 3 lists initializers among the inputs too: those are weights, not feeds.
    for input in &graph.input {
        let name = input.name.clone().unwrap_or_default();
        if !imp.values.contains_key(&name) {
            imp.placeholder(input)?;
        }
    }
    for node in &graph.node {
        let cx = Ctx::new(node, opset);
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            if let Some(why) = imp.unavailable.get(name) {
                return Err(cx.err(format!("input {name:?} is not available: {why}")));
            }
            if !imp.values.contains_key(name) {
                return Err(cx.err(format!(
                    "input {name:?} is not a graph input, an initializer or an earlier node's \
                     output (nodes must be in topological order)"
                )));
            }
        }
        let outs = ops::import_node(&mut imp, &cx)?;
        for (i, v) in outs.into_iter().enumerate() {
            if let Some(name) = cx.output_name(i) {
                imp.values.insert(name.to_string(), v);
            }
        }
        for (i, name) in node.output.iter().enumerate() {
            if !name.is_empty() && !imp.values.contains_key(name) {
                // Only an error if something uses it; recorded so the message says why.
                imp.unavailable(name, &cx, i);
            }
        }
    }
    if graph.output.is_empty() {
        return Err(ImportError::Model("the graph has no outputs".into()));
    }
    for out in &graph.output {
        let name = out.name.clone().unwrap_or_default();
        let value = match (imp.values.get(&name), imp.unavailable.get(&name)) {
            (Some(v), _) => v.clone(),
            (None, Some(why)) => {
                return Err(ImportError::Model(format!(
                    "graph output {name:?} is not available: {why}"
                )));
            }
            (None, None) => {
                return Err(ImportError::Model(format!(
                    "graph output {name:?} is not computed by any node"
                )));
            }
        };
        let id = imp.materialise_as(&name, value)?;
        let id = imp.output_node(&name, id)?;
        imp.graph.add_output(id);
    }
    Ok(imp.graph)
}

/// Checks that every tensor has one writer (a graph input or initializer, or one node's
/// output), as onnx.checker and ONNX Runtime require: a second writer would silently replace
/// the first one's value for every later reader.
fn single_assignment(graph: &GraphProto, opset: i64) -> Result<()> {
    let mut writers: HashMap<&str, String> = HashMap::new();
    for name in graph.input.iter().filter_map(|i| i.name.as_deref()) {
        writers.insert(name, "the graph input".to_string());
    }
    for name in graph.initializer.iter().filter_map(|t| t.name.as_deref()) {
        // An initializer may also be listed as a graph input (its default value).
        writers
            .entry(name)
            .or_insert_with(|| "an initializer".to_string());
    }
    for node in &graph.node {
        let cx = Ctx::new(node, opset);
        let writer = format!("node {:?} ({})", cx.name, cx.op);
        for name in node.output.iter().filter(|n| !n.is_empty()) {
            if let Some(first) = writers.insert(name, writer.clone()) {
                return Err(ImportError::Model(format!(
                    "tensor {name:?} is written by both {first} and {writer}: every ONNX tensor \
                     must have exactly one writer"
                )));
            }
        }
    }
    Ok(())
}

/// The default-domain opset, checked against the supported range.
fn default_opset(model: &ModelProto) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| {
            ImportError::Model("the model imports no opset of the default ONNX domain".into())
        })?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Opset {
            opset,
            min: MIN_OPSET,
            max: MAX_OPSET,
        });
    }
    Ok(opset)
}

impl Importer<'_> {
    /// Declares a graph input as a placeholder; symbolic or missing dims become `?`.
    fn placeholder(&mut self, input: &ValueInfoProto) -> Result<()> {
        let name = input.name.clone().unwrap_or_default();
        let bad = |m: String| ImportError::Model(format!("graph input {name:?}: {m}"));
        let tt = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| bad("only tensor inputs are supported".into()))?;
        let elem = tt.elem_type.unwrap_or(0);
        let dtype = import_dtype(elem).ok_or_else(|| {
            bad(format!(
                "element type {} is not supported",
                crate::proto::data_type::name(elem)
            ))
        })?;
        let shape = tt
            .shape
            .as_ref()
            .ok_or_else(|| bad("the shape (at least the rank) must be declared".into()))?;
        let dims = shape
            .dim
            .iter()
            .map(|d| match d.dim_value {
                Some(v) if d.dim_param.is_none() => usize::try_from(v)
                    .map(Some)
                    .map_err(|_| bad(format!("negative dim {v}"))),
                _ => Ok(None),
            })
            .collect::<Result<Vec<Dim>>>()?;
        let op = Op::Input(TensorType::new(dtype, Shape::of(&dims)));
        let id = self
            .add_named(&name, op, &[])
            .map_err(|e| bad(e.to_string()))?;
        self.values.insert(name, Value::Node(id));
        Ok(())
    }

    /// The node to declare as graph output `name`: `id` itself, renamed to the output's name
    /// when that name is free; or, when `id` is a source (renaming an input would change what
    /// the user feeds) or already another output, a same-shape reshape of it named `name`, so
    /// every ONNX output is a kiln output of the same name.
    fn output_node(&mut self, name: &str, id: NodeId) -> Result<NodeId> {
        let wanted = sanitize(name);
        let node = self.graph.node(id);
        if node.name == wanted {
            return Ok(id);
        }
        let err = |e: kiln_ir::Error| ImportError::Model(format!("graph output {name:?}: {e}"));
        let aliased = node.op.is_source() || self.graph.outputs().contains(&id);
        if !aliased && self.graph.find(&wanted).is_none() {
            self.graph.rename(id, wanted).map_err(err)?;
            return Ok(id);
        }
        let dims = node.ty.shape.dims();
        if dims.iter().filter(|d| d.is_none()).count() > 1 {
            return Ok(id);
        }
        let shape = dims.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
        self.add_named(&wanted, Op::Reshape { shape }, &[id])
            .map_err(err)
    }

    /// Records that output `i` of the node is not produced (an unsupported optional output).
    fn unavailable(&mut self, name: &str, cx: &Ctx<'_>, i: usize) {
        let why = format!(
            "it is output {i} of node {:?} ({}), which kiln does not compute",
            cx.name, cx.op
        );
        self.unavailable.insert(name.to_string(), why);
    }

    /// Adds a kiln node named after `hint` (sanitised, made unique).
    pub fn add_named(&mut self, hint: &str, op: Op, inputs: &[NodeId]) -> kiln_ir::Result<NodeId> {
        let name = self.graph.unique_name(&sanitize(hint));
        self.graph.add(name, op, inputs)
    }

    /// Adds a kiln node for the ONNX node `cx`; errors name the ONNX node.
    pub fn add(&mut self, cx: &Ctx<'_>, hint: &str, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        self.add_named(hint, op, inputs)
            .map_err(|e| cx.err(e.to_string()))
    }

    /// The value of input `i`, if present.
    pub fn value(&self, cx: &Ctx<'_>, i: usize) -> Option<Value> {
        cx.input_name(i).and_then(|n| self.values.get(n).cloned())
    }

    /// The value of a required input `i`.
    pub fn required(&self, cx: &Ctx<'_>, i: usize) -> Result<Value> {
        self.value(cx, i)
            .ok_or_else(|| cx.err(format!("input {i} is required")))
    }

    /// Required input `i` as a kiln node (a constant becomes a `const` node).
    pub fn node(&mut self, cx: &Ctx<'_>, i: usize) -> Result<NodeId> {
        let v = self.required(cx, i)?;
        let name = cx.input_name(i).unwrap_or_default().to_string();
        self.materialise_as(&name, v)
            .map_err(|e| cx.err(e.to_string()))
    }

    /// Required input `i` as a constant known at import time.
    pub fn constant(&self, cx: &Ctx<'_>, i: usize) -> Result<Arc<Tensor>> {
        match self.required(cx, i)? {
            Value::Const(t) => Ok(t),
            Value::Sym(s) => match s.clone().into_value() {
                Value::Const(t) => Ok(t),
                _ => Err(cx.err(format!(
                    "input {i} ({:?}) depends on a dim known only at run time ({:?}); kiln needs \
                     it at import time",
                    cx.input_name(i).unwrap_or_default(),
                    s.vals
                ))),
            },
            Value::Node(_) => Err(cx.err(format!(
                "input {i} ({:?}) must be a constant (an initializer or computable from known \
                 shapes) for kiln to import this op",
                cx.input_name(i).unwrap_or_default()
            ))),
        }
    }

    /// The type of a kiln node.
    pub fn ty(&self, id: NodeId) -> TensorType {
        self.graph.node(id).ty.clone()
    }

    /// A value as a kiln node: constants become one `const` (or `var` for initializers when
    /// importing with `variables`) per ONNX name.
    pub fn materialise_as(&mut self, onnx_name: &str, v: Value) -> Result<NodeId> {
        match v {
            Value::Node(id) => Ok(id),
            Value::Const(t) => self.constant_node(onnx_name, "", t),
            Value::Sym(s) => Err(ImportError::Model(format!(
                "value {onnx_name:?} is a shape computed from dims known only at run time \
                 ({:?}); kiln cannot use it as a tensor",
                s.vals
            ))),
        }
    }

    /// The node holding constant `t`, the value of ONNX `onnx_name` in the layout named by
    /// `tag` (e.g. `"hwio"` for a transposed conv filter); made once per (name, tag).
    pub fn constant_node(
        &mut self,
        onnx_name: &str,
        tag: &'static str,
        t: Arc<Tensor>,
    ) -> Result<NodeId> {
        let key = (onnx_name.to_string(), tag);
        if let Some(&id) = self.materialised.get(&key) {
            return Ok(id);
        }
        let name = self.graph.unique_name(&sanitize(onnx_name));
        let ty = t.ty();
        let init = if t.numel() <= INLINE_MAX_ELEMENTS {
            Initializer::Literal(t)
        } else {
            Initializer::Safetensors {
                path: self.opts.weights_file.clone(),
                tensor: name.clone(),
                value: t,
            }
        };
        let source = Source { ty, init };
        let is_weight = self.weights.contains(onnx_name);
        let op = if self.opts.variables && is_weight && source.ty.dtype == kiln_ir::DType::F32 {
            Op::Var(source)
        } else {
            Op::Const(source)
        };
        let id = self
            .graph
            .add(name, op, &[])
            .map_err(|e| ImportError::Model(format!("constant {onnx_name:?}: {e}")))?;
        self.materialised.insert(key, id);
        Ok(id)
    }

    /// A constant made by the importer itself (a scalar for an expansion, indices).
    pub fn literal(&mut self, cx: &Ctx<'_>, hint: &str, t: Tensor) -> Result<NodeId> {
        let source = Source {
            ty: t.ty(),
            init: Initializer::Literal(Arc::new(t)),
        };
        self.add(cx, hint, Op::Const(source), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;
    use crate::proto::{
        Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
        TypeProto, TypeProtoTensor, ValueInfoProto, data_type,
    };
    use prost::Message;

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: Some(data_type::FLOAT),
                    shape: Some(TensorShapeProto {
                        dim: vec![Dimension {
                            dim_value: Some(2),
                            dim_param: None,
                        }],
                    }),
                }),
            }),
        }
    }

    fn node(name: &str, op: &str, input: &str, output: &str) -> NodeProto {
        NodeProto {
            input: vec![input.into()],
            output: vec![output.into()],
            name: Some(name.into()),
            op_type: Some(op.into()),
            ..NodeProto::default()
        }
    }

    /// An opset-13 model of `nodes` with input `x` and output `y`, encoded.
    fn model(nodes: Vec<NodeProto>) -> Vec<u8> {
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: nodes,
                input: vec![value("x")],
                output: vec![value("y")],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn two_writers_of_one_tensor_are_an_error_naming_both() {
        let opts = crate::ImportOptions::default();
        let ok = model(vec![node("first", "Relu", "x", "y")]);
        crate::import_bytes(&ok, None, &opts).expect("one writer imports");
        let twice = model(vec![
            node("first", "Relu", "x", "y"),
            node("second", "Sigmoid", "x", "y"),
        ]);
        let e = crate::import_bytes(&twice, None, &opts).expect_err("two writers");
        assert_eq!(
            e.to_string(),
            "tensor \"y\" is written by both node \"first\" (Relu) and node \"second\" \
             (Sigmoid): every ONNX tensor must have exactly one writer"
        );
        let over_input = model(vec![
            node("n", "Relu", "x", "x"),
            node("m", "Relu", "x", "y"),
        ]);
        let e = crate::import_bytes(&over_input, None, &opts).expect_err("writes an input");
        assert!(
            e.to_string()
                .contains("both the graph input and node \"n\""),
            "{e}"
        );
    }

    #[test]
    fn names_map_other_characters_to_underscore() {
        assert_eq!(sanitize("conv1/weight:0"), "conv1/weight_0");
        assert_eq!(sanitize("a b[1]"), "a_b_1_");
        assert_eq!(sanitize("ok_.-/9"), "ok_.-/9");
        assert_eq!(sanitize(""), "v");
        assert_eq!(sanitize("é"), "_");
    }
}
