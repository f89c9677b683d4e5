//! The op schema: one declarative entry per op keyword of the .kiln format, stating its
//! operands, its attributes (name, kind, default) and the format version that introduced it.
//!
//! This table is the one place these facts are written. The parser checks attribute names
//! against it and fills in the defaults from it, the printer omits exactly the attributes
//! equal to their defaults here, the keyword list for "did you mean" hints, the version check
//! (a `kiln 1` file may not use a version-2 op) and the printer's choice of version read it,
//! and a test checks docs/FORMAT.md's op table against [`format_table`]. What an op *means*
//! lives with the [`Op`] variant's doc comment; how it is built from its attributes lives in
//! `text/ops.rs`, where each keyword is one arm that takes its attributes by name.
//!
//! Invariants (checked by the tests at the bottom): keywords are unique; every default is
//! written in the printer's canonical form, so it parses and prints back to the same text;
//! and every keyword parses into an [`Op`] whose [`Op::name`] is that keyword.

use crate::op::Op;

/// The value kinds attributes take; [`AttrKind::expected`] is how messages and docs say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// An integer (may be negative).
    Int,
    /// A non-negative integer.
    Count,
    /// A number (integers are accepted).
    Float,
    /// `true` or `false`.
    Bool,
    /// A list of integers; `-1` has the op's meaning.
    Ints,
    /// A list of non-negative integers.
    Counts,
    /// A list of `[before, after]` pairs.
    Pairs,
    /// `"SAME"`, `"VALID"` or explicit `[[top,bottom],[left,right]]`.
    Padding,
    /// `[h,w]`, one integer for both, or TensorFlow's four-element form.
    Window,
    /// `"NHWC"` or `"NCHW"`.
    DataFormat,
    /// A dtype in a string: `"f32"`, `"i32"`, `"i64"` or `"bool"`.
    DType,
    /// One axis or a list of axes.
    Axes,
    /// An elementwise expression in a string (fused nodes).
    Expr,
}

impl AttrKind {
    /// What a value of this kind looks like, for messages ("expected ...").
    pub fn expected(self) -> &'static str {
        match self {
            AttrKind::Int => "an integer",
            AttrKind::Count => "a non-negative integer",
            AttrKind::Float => "a number",
            AttrKind::Bool => "true or false",
            AttrKind::Ints => "a list of integers",
            AttrKind::Counts => "a list of non-negative integers",
            AttrKind::Pairs => "[[before,after], ...] with one pair per axis",
            AttrKind::Padding => "\"SAME\", \"VALID\" or [[top,bottom],[left,right]]",
            AttrKind::Window => "[h,w], an integer, or [1,h,w,1] (NHWC) / [1,1,h,w] (NCHW)",
            AttrKind::DataFormat => "\"NHWC\" or \"NCHW\"",
            AttrKind::DType => "a dtype: \"f32\", \"i32\", \"i64\" or \"bool\"",
            AttrKind::Axes => "an axis or a list of axes",
            AttrKind::Expr => "an elementwise expression in a string",
        }
    }
}

/// What an attribute that is left out means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrDefault {
    /// It must be given.
    Required,
    /// This value, written in the printer's canonical form.
    Value(&'static str),
    /// Leaving it out has a meaning no value spells (a reduction's `axes`: every axis); the
    /// text says what, for the docs.
    Absent(&'static str),
    /// Another spelling of the named attribute; at most one of the two may be given.
    AliasOf(&'static str),
}

/// The op families: one taxonomy for the file names of every layer that splits its code by op
/// (`infer/`, `eval/`, the CPU backend's `codegen/` and `host/`, the OpenCL backend's `render/`),
/// so an op's code is found under the same name in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpFamily {
    /// One output element from the same-index input elements: unary and binary ops,
    /// `bias_add`, `cast`.
    Elementwise,
    /// `matmul`.
    Matmul,
    /// Sliding windows over the spatial axes: `conv2d`, `depthwise_conv2d`, the pools, and
    /// their gradients (`*_backprop_*`, `*_pool_grad`).
    Window,
    /// Reductions along axes: `reduce_*`, `softmax`, `log_softmax`, `argmax`, the softmax
    /// cross entropies.
    Reduce,
    /// Normalisations along the channels: `batch_norm`, `lrn`.
    Normalize,
    /// Moving elements without arithmetic: `reshape`, `transpose`, `concat`, `slice`, `pad`,
    /// `gather`, `gather_grad`, `one_hot`.
    Movement,
    /// Sources and state: `input`, `var`, `const`, `assign*`.
    State,
    /// Nodes made by the fusion passes: `fused_<main>`, `elementwise`.
    Fused,
}

impl OpFamily {
    /// Every family.
    pub const ALL: [OpFamily; 8] = [
        OpFamily::Elementwise,
        OpFamily::Matmul,
        OpFamily::Window,
        OpFamily::Reduce,
        OpFamily::Normalize,
        OpFamily::Movement,
        OpFamily::State,
        OpFamily::Fused,
    ];

    /// The family's name: the file (or folder) name its code has in each layer.
    pub fn name(self) -> &'static str {
        match self {
            OpFamily::Elementwise => "elementwise",
            OpFamily::Matmul => "matmul",
            OpFamily::Window => "window",
            OpFamily::Reduce => "reduce",
            OpFamily::Normalize => "normalize",
            OpFamily::Movement => "movement",
            OpFamily::State => "state",
            OpFamily::Fused => "fused",
        }
    }
}

/// The modules in source folder `dir` (files `NAME.rs` and folders `NAME/`) named neither after
/// an [`OpFamily`] nor in `others` (the folder's shared, non-per-family modules, e.g. `mod`,
/// `tests`). Each layer's tests call it, so a file named after something else fails there.
pub fn modules_outside_the_taxonomy(
    dir: &std::path::Path,
    others: &[&str],
) -> std::io::Result<Vec<String>> {
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
        let known = OpFamily::ALL.iter().any(|f| f.name() == stem) || others.contains(&stem);
        if is_module && !known {
            stray.push(stem.to_string());
        }
    }
    stray.sort();
    Ok(stray)
}

/// One attribute of an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrSchema {
    /// The name written before `=`.
    pub name: &'static str,
    /// The kind of value it takes.
    pub kind: AttrKind,
    /// What leaving it out means.
    pub default: AttrDefault,
}

/// One op keyword of the .kiln format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpSchema {
    /// The keyword (`conv2d`).
    pub keyword: &'static str,
    /// Its operands, for the docs (`x, w (HWIO)`).
    pub operands: &'static str,
    /// Its attributes in canonical (printing) order.
    pub attrs: &'static [AttrSchema],
    /// The .kiln format version that introduced it; older files may not use it.
    pub since: u64,
    /// The keyword of a fused node with this op as its main op (`fused_conv2d`), if it can be
    /// one.
    pub fused: Option<&'static str>,
}

impl OpSchema {
    /// The attribute called `name`, if the op has one.
    pub fn attr(&self, name: &str) -> Option<&'static AttrSchema> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

/// The format version that introduced the `safetensors(...)` initialiser.
pub const SAFETENSORS_SINCE: u64 = 2;

/// The format version that introduced fused nodes (`fused_<main>` and `elementwise`).
pub const FUSED_SINCE: u64 = 2;

/// The format version that introduced the ops of training: comparisons, logical ops, `select`,
/// `sign`, `stop_gradient`, the backward window ops and the optimizer updates.
pub const TRAINING_SINCE: u64 = 3;

/// The attribute every fused node has besides its main op's.
pub const EXPR: AttrSchema = AttrSchema {
    name: "expr",
    kind: AttrKind::Expr,
    default: AttrDefault::Required,
};

const fn attr(name: &'static str, kind: AttrKind, default: AttrDefault) -> AttrSchema {
    AttrSchema {
        name,
        kind,
        default,
    }
}

const fn op(
    keyword: &'static str,
    operands: &'static str,
    attrs: &'static [AttrSchema],
    since: u64,
    fused: Option<&'static str>,
) -> OpSchema {
    OpSchema {
        keyword,
        operands,
        attrs,
        since,
        fused,
    }
}

use AttrDefault::{Absent, AliasOf, Required, Value};
use AttrKind as K;

const NONE: &[AttrSchema] = &[];
const DATA_FORMAT: AttrSchema = attr("data_format", K::DataFormat, Value("\"NHWC\""));
const CONV: &[AttrSchema] = &[
    attr("strides", K::Window, Value("[1,1]")),
    attr("padding", K::Padding, Required),
    attr("dilations", K::Window, Value("[1,1]")),
    DATA_FORMAT,
];
const POOL: &[AttrSchema] = &[
    attr("ksize", K::Window, Required),
    attr("strides", K::Window, Value("[1,1]")),
    attr("padding", K::Padding, Required),
    DATA_FORMAT,
];
const CONV_BACKPROP_INPUT: &[AttrSchema] = &[
    attr("input_shape", K::Ints, Required),
    attr("strides", K::Window, Value("[1,1]")),
    attr("padding", K::Padding, Required),
    attr("dilations", K::Window, Value("[1,1]")),
    DATA_FORMAT,
];
const CONV_BACKPROP_FILTER: &[AttrSchema] = &[
    attr("filter_shape", K::Counts, Required),
    attr("strides", K::Window, Value("[1,1]")),
    attr("padding", K::Padding, Required),
    attr("dilations", K::Window, Value("[1,1]")),
    DATA_FORMAT,
];
const AVG_POOL_GRAD: &[AttrSchema] = &[
    attr("orig_input_shape", K::Ints, Required),
    attr("ksize", K::Window, Required),
    attr("strides", K::Window, Value("[1,1]")),
    attr("padding", K::Padding, Required),
    DATA_FORMAT,
];
const REDUCE: &[AttrSchema] = &[
    attr("axes", K::Axes, Absent("all")),
    attr("axis", K::Axes, AliasOf("axes")),
    attr("keepdims", K::Bool, Value("false")),
];
const SOFTMAX: &[AttrSchema] = &[attr("axis", K::Int, Value("-1"))];
const X: &str = "x";
const AB: &str = "a, b (numpy broadcasting)";

/// Every op keyword, in the order of the docs table. Fused nodes are described by their main
/// op's entry ([`OpSchema::fused`]) plus [`EXPR`]; `elementwise` is the fused node without a
/// main op.
pub const OPS: &[OpSchema] = &[
    op("neg", X, NONE, 1, None),
    op("abs", X, NONE, 1, None),
    op("relu", X, NONE, 1, None),
    op("relu6", X, NONE, 1, None),
    op("sigmoid", X, NONE, 1, None),
    op("tanh", X, NONE, 1, None),
    op("exp", X, NONE, 1, None),
    op("log", X, NONE, 1, None),
    op("sqrt", X, NONE, 1, None),
    op("rsqrt", X, NONE, 1, None),
    op("square", X, NONE, 1, None),
    op(
        "leaky_relu",
        X,
        &[attr("alpha", K::Float, Value("0.2"))],
        1,
        None,
    ),
    op("add", AB, NONE, 1, None),
    op("sub", AB, NONE, 1, None),
    op("mul", AB, NONE, 1, None),
    op("div", AB, NONE, 1, None),
    op("maximum", AB, NONE, 1, None),
    op("minimum", AB, NONE, 1, None),
    op("pow", AB, NONE, 1, None),
    op(
        "bias_add",
        "x, b (rank 1, channels)",
        &[DATA_FORMAT],
        1,
        None,
    ),
    op(
        "matmul",
        "a, b (rank 2, or rank 3 batched)",
        &[
            attr("transpose_a", K::Bool, Value("false")),
            attr("transpose_b", K::Bool, Value("false")),
        ],
        1,
        Some("fused_matmul"),
    ),
    op("conv2d", "x, w (HWIO)", CONV, 1, Some("fused_conv2d")),
    op(
        "depthwise_conv2d",
        "x, w ([kh,kw,cin,multiplier])",
        CONV,
        1,
        Some("fused_depthwise_conv2d"),
    ),
    op("max_pool", X, POOL, 1, Some("fused_max_pool")),
    op("avg_pool", X, POOL, 1, Some("fused_avg_pool")),
    op("reduce_sum", X, REDUCE, 1, Some("fused_reduce_sum")),
    op("reduce_mean", X, REDUCE, 1, Some("fused_reduce_mean")),
    op("reduce_max", X, REDUCE, 1, Some("fused_reduce_max")),
    op("reduce_min", X, REDUCE, 1, Some("fused_reduce_min")),
    op("softmax", X, SOFTMAX, 1, Some("fused_softmax")),
    op("log_softmax", X, SOFTMAX, 1, Some("fused_log_softmax")),
    op(
        "reshape",
        X,
        &[attr("shape", K::Ints, Required)],
        1,
        Some("fused_reshape"),
    ),
    op(
        "transpose",
        X,
        &[attr("perm", K::Counts, Required)],
        1,
        Some("fused_transpose"),
    ),
    op(
        "concat",
        "x1, x2, ...",
        &[attr("axis", K::Int, Required)],
        1,
        None,
    ),
    op(
        "slice",
        X,
        &[
            attr("begin", K::Counts, Required),
            attr("size", K::Ints, Required),
        ],
        1,
        Some("fused_slice"),
    ),
    op(
        "pad",
        X,
        &[
            attr("paddings", K::Pairs, Required),
            attr("constant_value", K::Float, Value("0.0")),
        ],
        1,
        Some("fused_pad"),
    ),
    op(
        "batch_norm",
        "x, scale, offset, mean, variance",
        &[attr("epsilon", K::Float, Value("0.001")), DATA_FORMAT],
        1,
        Some("fused_batch_norm"),
    ),
    op("assign", "var, value", NONE, 1, None),
    op("assign_add", "var, value", NONE, 1, None),
    op("assign_sub", "var, value", NONE, 1, None),
    op(
        "lrn",
        "x (NHWC)",
        &[
            attr("depth_radius", K::Count, Value("5")),
            attr("bias", K::Float, Value("1.0")),
            attr("alpha", K::Float, Value("1.0")),
            attr("beta", K::Float, Value("0.5")),
        ],
        2,
        None,
    ),
    op(
        "argmax",
        X,
        &[
            attr("axis", K::Int, Required),
            attr("output_type", K::DType, Value("\"i64\"")),
        ],
        2,
        None,
    ),
    op(
        "gather",
        "params, indices (i32/i64)",
        &[attr("axis", K::Int, Value("0"))],
        2,
        None,
    ),
    op("cast", X, &[attr("to", K::DType, Required)], 2, None),
    op("elementwise", "x1, x2, ...", &[EXPR], FUSED_SINCE, None),
    op("broadcast_like", "x, like", NONE, TRAINING_SINCE, None),
    op("equal", AB, NONE, TRAINING_SINCE, None),
    op("not_equal", AB, NONE, TRAINING_SINCE, None),
    op("less", AB, NONE, TRAINING_SINCE, None),
    op("less_equal", AB, NONE, TRAINING_SINCE, None),
    op("greater", AB, NONE, TRAINING_SINCE, None),
    op("greater_equal", AB, NONE, TRAINING_SINCE, None),
    op("logical_and", AB, NONE, TRAINING_SINCE, None),
    op("logical_or", AB, NONE, TRAINING_SINCE, None),
    op("logical_not", X, NONE, TRAINING_SINCE, None),
    op(
        "select",
        "cond (bool), a, b (numpy broadcasting)",
        NONE,
        TRAINING_SINCE,
        None,
    ),
    op("sign", X, NONE, TRAINING_SINCE, None),
    op("stop_gradient", X, NONE, TRAINING_SINCE, None),
    op(
        "conv2d_backprop_input",
        "w (HWIO), dy",
        CONV_BACKPROP_INPUT,
        TRAINING_SINCE,
        None,
    ),
    op(
        "conv2d_backprop_filter",
        "x, dy",
        CONV_BACKPROP_FILTER,
        TRAINING_SINCE,
        None,
    ),
    op(
        "max_pool_grad",
        "orig_input, orig_output, grad",
        POOL,
        TRAINING_SINCE,
        None,
    ),
    op("avg_pool_grad", "grad", AVG_POOL_GRAD, TRAINING_SINCE, None),
    op(
        "depthwise_conv2d_backprop_input",
        "w ([kh,kw,cin,multiplier]), dy",
        CONV_BACKPROP_INPUT,
        TRAINING_SINCE,
        None,
    ),
    op(
        "depthwise_conv2d_backprop_filter",
        "x, dy",
        CONV_BACKPROP_FILTER,
        TRAINING_SINCE,
        None,
    ),
    op(
        "softmax_cross_entropy_with_logits",
        "logits, labels (same shape)",
        NONE,
        TRAINING_SINCE,
        None,
    ),
    op(
        "sparse_softmax_cross_entropy_with_logits",
        "logits, labels (i32/i64, logits' shape without the last axis)",
        NONE,
        TRAINING_SINCE,
        None,
    ),
    op(
        "one_hot",
        "indices (i32/i64)",
        &[
            attr("depth", K::Count, Required),
            attr("on_value", K::Float, Value("1.0")),
            attr("off_value", K::Float, Value("0.0")),
            attr("axis", K::Int, Value("-1")),
        ],
        TRAINING_SINCE,
        None,
    ),
    op(
        "gather_grad",
        "grad, indices (i32/i64)",
        &[
            attr("axis", K::Int, Value("0")),
            attr("size", K::Count, Required),
        ],
        TRAINING_SINCE,
        None,
    ),
    op(
        "apply_gradient_descent",
        "var, alpha (f32[]), delta",
        NONE,
        TRAINING_SINCE,
        None,
    ),
    op(
        "apply_momentum",
        "var, accum, lr (f32[]), grad, momentum (f32[])",
        &[attr("use_nesterov", K::Bool, Value("false"))],
        TRAINING_SINCE,
        None,
    ),
    op(
        "apply_adam",
        "var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon (f32[] each), grad",
        NONE,
        TRAINING_SINCE,
        None,
    ),
    op(
        "group",
        "x1, x2, ... (any types)",
        NONE,
        TRAINING_SINCE,
        None,
    ),
];

/// The schema of op keyword `keyword` (not a `fused_<main>` keyword: see [`fused_main`]).
pub fn lookup(keyword: &str) -> Option<&'static OpSchema> {
    OPS.iter().find(|s| s.keyword == keyword)
}

/// The main op's schema for a `fused_<main>` keyword.
pub fn fused_main(keyword: &str) -> Option<&'static OpSchema> {
    OPS.iter().find(|s| s.fused == Some(keyword))
}

/// Every keyword an op statement may use: the ops and the fused nodes.
pub fn all_keywords() -> impl Iterator<Item = &'static str> {
    OPS.iter()
        .map(|s| s.keyword)
        .chain(OPS.iter().filter_map(|s| s.fused))
}

impl Op {
    /// The op's family (see [`OpFamily`]); a fused node is [`OpFamily::Fused`].
    pub fn family(&self) -> OpFamily {
        use crate::op::Op as O;
        match self {
            O::Input(_) | O::Var(_) | O::Const(_) | O::Assign(_) => OpFamily::State,
            O::Unary(_) | O::Binary(_) | O::BiasAdd { .. } | O::Cast { .. } | O::BroadcastLike => {
                OpFamily::Elementwise
            }
            O::MatMul { .. } => OpFamily::Matmul,
            O::Conv2d(_) | O::DepthwiseConv2d(_) | O::MaxPool(_) | O::AvgPool(_) => {
                OpFamily::Window
            }
            O::Reduce { .. }
            | O::Softmax { .. }
            | O::LogSoftmax { .. }
            | O::ArgMax { .. }
            | O::SoftmaxCrossEntropyWithLogits
            | O::SparseSoftmaxCrossEntropyWithLogits => OpFamily::Reduce,
            O::BatchNorm { .. } | O::Lrn { .. } => OpFamily::Normalize,
            O::Reshape { .. }
            | O::Transpose { .. }
            | O::Concat { .. }
            | O::Slice { .. }
            | O::Pad { .. }
            | O::Gather { .. }
            | O::OneHot { .. }
            | O::GatherGrad { .. } => OpFamily::Movement,
            O::Fused(_) => OpFamily::Fused,
            O::ApplyGradientDescent | O::ApplyMomentum { .. } | O::ApplyAdam | O::Group => {
                OpFamily::State
            }
            O::Compare(_) | O::Logical(_) | O::LogicalNot | O::Select | O::StopGradient => {
                OpFamily::Elementwise
            }
            O::Conv2dBackpropInput { .. }
            | O::Conv2dBackpropFilter { .. }
            | O::MaxPoolGrad(_)
            | O::AvgPoolGrad { .. }
            | O::DepthwiseConv2dBackpropInput { .. }
            | O::DepthwiseConv2dBackpropFilter { .. } => OpFamily::Window,
        }
    }

    /// The op's schema; for a fused node, its main op's (or `elementwise`'s); `None` for the
    /// sources (`input`, `var`, `const`), which are declarations rather than ops.
    pub fn schema(&self) -> Option<&'static OpSchema> {
        match self {
            Op::Input(_) | Op::Var(_) | Op::Const(_) => None,
            Op::Fused(f) => lookup(f.main().map_or("elementwise", Op::name)),
            op => lookup(op.name()),
        }
    }

    /// The format version that introduced this op ([`FUSED_SINCE`] at least for a fused node).
    pub fn since_version(&self) -> u64 {
        let since = self.schema().map_or(1, |s| s.since);
        match self {
            // An expression's unary ops have versions of their own (`sign` is newer).
            Op::Fused(f) => f
                .expr()
                .nodes()
                .iter()
                .filter_map(|n| match n {
                    crate::fused::ExprNode::Unary(u, _) => lookup(u.name()).map(|s| s.since),
                    _ => None,
                })
                .fold(since.max(FUSED_SINCE), u64::max),
            _ => since,
        }
    }
}

/// The op table of docs/FORMAT.md, made from [`OPS`]: consecutive keywords with the same
/// operands, attributes and version share a row.
pub fn format_table() -> String {
    let mut out =
        String::from("| op | operands | attributes (default) | version |\n|---|---|---|---|\n");
    let mut rows: Vec<(Vec<&str>, &OpSchema)> = Vec::new();
    for s in OPS {
        match rows.last_mut() {
            Some((kws, prev))
                if prev.operands == s.operands
                    && prev.attrs == s.attrs
                    && prev.since == s.since
                    && prev.fused.is_some() == s.fused.is_some() =>
            {
                kws.push(s.keyword)
            }
            _ => rows.push((vec![s.keyword], s)),
        }
    }
    for (kws, s) in rows {
        let attrs: Vec<String> = s.attrs.iter().map(describe_attr).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            kws.join(" "),
            s.operands,
            attrs.join(", "),
            s.since
        ));
    }
    let fused: Vec<&str> = OPS.iter().filter_map(|s| s.fused).collect();
    out.push_str(&format!(
        "| `{}` | the main op's operands, then the epilogue's | the main op's, plus {} | {} |\n",
        fused.join(" "),
        describe_attr(&EXPR),
        FUSED_SINCE
    ));
    out
}

fn describe_attr(a: &AttrSchema) -> String {
    match a.default {
        Required => format!("`{}` (required)", a.name),
        Value(v) => format!("`{}` ({v})", a.name),
        Absent(meaning) => format!("`{}` ({meaning})", a.name),
        AliasOf(other) => format!("`{}` (alias of `{other}`)", a.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_unique() {
        let mut all: Vec<&str> = all_keywords().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a keyword is listed twice");
    }

    #[test]
    fn fused_keywords_name_their_main_op() {
        for s in OPS {
            if let Some(f) = s.fused {
                assert_eq!(f.strip_prefix("fused_"), Some(s.keyword));
            }
        }
    }

    /// docs/FORMAT.md's op table is [`format_table`], between two markers;
    /// `UPDATE_GOLDEN=1` rewrites it.
    #[test]
    fn format_md_op_table_is_the_schema() {
        const BEGIN: &str = "<!-- op table: generated from ir/src/schema.rs -->\n";
        const END: &str = "<!-- end of op table -->\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
        let doc = std::fs::read_to_string(path).expect("docs/FORMAT.md");
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/FORMAT.md lacks the op table markers {BEGIN:?} and {END:?}");
        };
        let current = &doc[b + BEGIN.len()..e];
        let table = format_table();
        if current == table {
            return;
        }
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let new = format!("{}{BEGIN}{table}{}", &doc[..b], &doc[e..]);
            std::fs::write(path, new).expect("write docs/FORMAT.md");
            return;
        }
        panic!(
            "docs/FORMAT.md's op table differs from the schema (UPDATE_GOLDEN=1 rewrites it):\n\
             --- docs\n{current}--- schema\n{table}"
        );
    }

    /// `infer/`, `eval/` and `grad/` keep one file (or folder) per op family; the CPU and
    /// OpenCL backends check their own folders the same way.
    #[test]
    fn infer_and_eval_files_follow_the_op_families() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let infer = ["mod", "movement_tests", "window_tests"];
        let dirs = [
            ("infer", &infer[..]),
            ("eval", &["mod"][..]),
            ("grad", &["mod", "tests"][..]),
        ];
        for (dir, others) in dirs {
            let stray = modules_outside_the_taxonomy(&src.join(dir), others).unwrap();
            assert!(
                stray.is_empty(),
                "{dir}/ has modules outside the op families: {stray:?}"
            );
        }
    }

    #[test]
    fn every_family_has_its_inference_and_evaluation_module() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for dir in ["infer", "eval", "grad"] {
            for f in OpFamily::ALL {
                let (file, folder) = (format!("{}.rs", f.name()), f.name());
                let here = src.join(dir);
                assert!(
                    here.join(file).is_file() || here.join(folder).is_dir(),
                    "{dir}/ has no module for the {} family",
                    f.name()
                );
            }
        }
    }

    #[test]
    fn aliases_name_an_attribute_of_the_same_op() {
        for s in OPS {
            for a in s.attrs {
                if let AliasOf(other) = a.default {
                    assert!(s.attr(other).is_some(), "{}: {}", s.keyword, a.name);
                }
            }
        }
    }
}
