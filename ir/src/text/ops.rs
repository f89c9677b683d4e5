//! From an op keyword and its `name=value` attributes to an [`Op`].
//!
//! The op's [`crate::schema`] entry says which attributes it accepts (anything else is an
//! error naming the accepted ones), which it requires, the defaults of the others (filled in
//! here before the op is built, so no default is written in this file) and the format version
//! that introduced it. Window attributes accept `[h,w]`, a single integer, or TensorFlow's
//! 4-element form (`[1,h,w,1]` for NHWC, `[1,1,h,w]` for NCHW).

use super::lexer::lex_line;
use super::values::{LineCtx, Val, ValKind, parse_value};
use crate::fused::{FusedExpr, FusedOp};
use crate::op::{
    AssignOp, BinaryOp, ConvAttrs, DataFormat, Float, Op, Padding, PoolAttrs, ReduceOp, UnaryOp,
};
use crate::op::{CompareOp, LogicalOp};
use crate::schema::{self, AttrDefault, AttrKind, FUSED_SINCE};
use crate::{DType, Error, Result};

/// One `name=value` attribute as written.
#[derive(Clone, Debug)]
pub(crate) struct Attr<'a> {
    /// The attribute name.
    pub name: &'a str,
    /// Byte offset of the name.
    pub off: usize,
    /// The value.
    pub val: Val<'a>,
}

/// Every op keyword, for suggestions.
fn all_keywords() -> Vec<&'static str> {
    schema::all_keywords().collect()
}

/// Edit distance (insert, delete, substitute), for "did you mean" hints.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The error for an unknown op keyword, with up to three similar names.
fn unknown_op(lc: &LineCtx<'_>, kw: &str, off: usize) -> Error {
    if matches!(kw, "input" | "var" | "const") {
        return lc.err(
            off,
            format!("`{kw}` declares a source, not an op: write `{kw} %name : f32[...]`"),
        );
    }
    let mut near: Vec<(usize, &str)> = Vec::new();
    // Long words cannot be near any op name; skip the quadratic distance for them.
    if kw.len() <= 32 {
        near = all_keywords()
            .into_iter()
            .map(|k| (edit_distance(kw, k), k))
            .filter(|&(d, k)| d <= 2 || k.contains(kw) && kw.len() >= 3)
            .collect();
        near.sort();
    }
    let hint = match near.len() {
        0 => String::new(),
        _ => {
            let names: Vec<&str> = near.iter().take(3).map(|&(_, k)| k).collect();
            format!("; did you mean {}?", names.join(", "))
        }
    };
    lc.err(off, format!("unknown op `{kw}`{hint}"))
}

/// Builds the op for keyword `kw` (at byte `kw_off`) from its attributes, in a file of format
/// `version`. The op's [`schema`] entry decides which attributes are accepted, which are
/// required, the defaults of the others, and the version that introduced the op.
pub(crate) fn build_op(
    lc: &LineCtx<'_>,
    kw: &str,
    kw_off: usize,
    mut attrs: Vec<Attr<'_>>,
    version: u64,
) -> Result<Op> {
    if let Some(main) = schema::fused_main(kw) {
        // `fused_<main>(...)`: the main op's attributes plus `expr`.
        check_version(lc, kw, kw_off, main.since.max(FUSED_SINCE), version)?;
        let expr = take_expr(lc, kw, kw_off, &mut attrs)?;
        let main = build_op(lc, main.keyword, kw_off, attrs, version)?;
        let op = FusedOp::new(Some(main), expr)
            .map(Op::Fused)
            .map_err(|e| lc.err(kw_off, format!("{kw}: {e}")))?;
        // The expression's ops may be newer than the node (`sign`).
        check_version(lc, kw, kw_off, op.since_version(), version)?;
        return Ok(op);
    }
    let Some(schema) = schema::lookup(kw) else {
        return Err(unknown_op(lc, kw, kw_off));
    };
    check_version(lc, kw, kw_off, schema.since, version)?;
    for (i, a) in attrs.iter().enumerate() {
        let Some(spec) = schema.attr(a.name) else {
            let list = if schema.attrs.is_empty() {
                "it takes no attributes".to_string()
            } else {
                let names: Vec<&str> = schema.attrs.iter().map(|s| s.name).collect();
                format!("expected one of {}", names.join(", "))
            };
            return Err(lc.err(
                a.off,
                format!("unknown attribute `{}` for {kw}: {list}", a.name),
            ));
        };
        if attrs[..i].iter().any(|b| b.name == a.name) {
            return Err(lc.err(a.off, format!("attribute `{}` given twice", a.name)));
        }
        if let AttrDefault::AliasOf(other) = spec.default
            && attrs.iter().any(|b| b.name == other)
        {
            return Err(lc.err(
                a.val.off,
                format!("give `{other}` or `{}`, not both", a.name),
            ));
        }
    }
    for spec in schema.attrs {
        if attrs.iter().any(|a| a.name == spec.name) {
            continue;
        }
        match spec.default {
            AttrDefault::Required => {
                return Err(lc.err(
                    kw_off,
                    format!(
                        "{kw} needs the attribute `{}` ({})",
                        spec.name,
                        spec.kind.expected()
                    ),
                ));
            }
            AttrDefault::Value(text) => attrs.push(Attr {
                name: spec.name,
                off: kw_off,
                val: default_value(text, kw_off),
            }),
            AttrDefault::Absent(_) | AttrDefault::AliasOf(_) => {}
        }
    }
    let mut a = Attrs {
        lc,
        kw,
        kw_off,
        attrs,
    };
    // Every attribute the schema gives a default is present now; the getters below fail
    // only on a value of the wrong kind (or, for a schema out of step with this match, on an
    // absent one, which the schema tests catch).
    let op = if let Some(&u) = UnaryOp::ALL.iter().find(|u| u.name() == kw) {
        Op::Unary(match u {
            UnaryOp::LeakyRelu { .. } => UnaryOp::LeakyRelu {
                alpha: Float(a.f32("alpha")?),
            },
            u => u,
        })
    } else if let Some(&b) = BinaryOp::ALL.iter().find(|b| b.name() == kw) {
        Op::Binary(b)
    } else if let Some(&r) = ReduceOp::ALL.iter().find(|r| r.name() == kw) {
        Op::Reduce {
            op: r,
            axes: a.axes()?,
            keepdims: a.bool("keepdims")?,
        }
    } else {
        match kw {
            "bias_add" => Op::BiasAdd {
                data_format: a.data_format()?,
            },
            "matmul" => Op::MatMul {
                transpose_a: a.bool("transpose_a")?,
                transpose_b: a.bool("transpose_b")?,
            },
            "conv2d" => Op::Conv2d(a.conv()?),
            "depthwise_conv2d" => Op::DepthwiseConv2d(a.conv()?),
            "max_pool" => Op::MaxPool(a.pool()?),
            "avg_pool" => Op::AvgPool(a.pool()?),
            "softmax" => Op::Softmax {
                axis: a.i64("axis")?,
            },
            "log_softmax" => Op::LogSoftmax {
                axis: a.i64("axis")?,
            },
            "reshape" => Op::Reshape {
                shape: a.i64_list("shape")?,
            },
            "transpose" => Op::Transpose {
                perm: a.usize_list("perm")?,
            },
            "concat" => Op::Concat {
                axis: a.i64("axis")?,
            },
            "slice" => Op::Slice {
                begin: a.usize_list("begin")?,
                size: a.i64_list("size")?,
            },
            "pad" => Op::Pad {
                paddings: a.pad_pairs()?,
                constant_value: Float(a.f32("constant_value")?),
            },
            "batch_norm" => Op::BatchNorm {
                epsilon: Float(a.f32("epsilon")?),
                data_format: a.data_format()?,
            },
            "lrn" => Op::Lrn {
                depth_radius: a.usize("depth_radius")?,
                bias: Float(a.f32("bias")?),
                alpha: Float(a.f32("alpha")?),
                beta: Float(a.f32("beta")?),
            },
            "argmax" => Op::ArgMax {
                axis: a.i64("axis")?,
                output_type: a.dtype("output_type")?,
            },
            "gather" => Op::Gather {
                axis: a.i64("axis")?,
            },
            "cast" => Op::Cast { to: a.dtype("to")? },
            "elementwise" => {
                let expr = take_expr(lc, kw, kw_off, &mut a.attrs)?;
                let op = Op::Fused(
                    FusedOp::new(None, expr).map_err(|e| lc.err(kw_off, format!("{kw}: {e}")))?,
                );
                // The expression's ops may be newer than the node (`sign`).
                check_version(lc, kw, kw_off, op.since_version(), version)?;
                op
            }
            "assign" => Op::Assign(AssignOp::Assign),
            "assign_add" => Op::Assign(AssignOp::AssignAdd),
            "assign_sub" => Op::Assign(AssignOp::AssignSub),
            "broadcast_like" => Op::BroadcastLike,
            "equal" => Op::Compare(CompareOp::Equal),
            "not_equal" => Op::Compare(CompareOp::NotEqual),
            "less" => Op::Compare(CompareOp::Less),
            "less_equal" => Op::Compare(CompareOp::LessEqual),
            "greater" => Op::Compare(CompareOp::Greater),
            "greater_equal" => Op::Compare(CompareOp::GreaterEqual),
            "logical_and" => Op::Logical(LogicalOp::And),
            "logical_or" => Op::Logical(LogicalOp::Or),
            "logical_not" => Op::LogicalNot,
            "select" => Op::Select,
            "stop_gradient" => Op::StopGradient,
            "conv2d_backprop_input" => Op::Conv2dBackpropInput {
                input_shape: a.image_shape("input_shape")?,
                attrs: a.conv()?,
            },
            "conv2d_backprop_filter" => Op::Conv2dBackpropFilter {
                filter_shape: a.filter_shape("filter_shape")?,
                attrs: a.conv()?,
            },
            "max_pool_grad" => Op::MaxPoolGrad(a.pool()?),
            "depthwise_conv2d_backprop_input" => Op::DepthwiseConv2dBackpropInput {
                input_shape: a.image_shape("input_shape")?,
                attrs: a.conv()?,
            },
            "depthwise_conv2d_backprop_filter" => Op::DepthwiseConv2dBackpropFilter {
                filter_shape: a.filter_shape("filter_shape")?,
                attrs: a.conv()?,
            },
            "avg_pool_grad" => Op::AvgPoolGrad {
                orig_input_shape: a.image_shape("orig_input_shape")?,
                attrs: a.pool()?,
            },
            "softmax_cross_entropy_with_logits" => Op::SoftmaxCrossEntropyWithLogits,
            "sparse_softmax_cross_entropy_with_logits" => Op::SparseSoftmaxCrossEntropyWithLogits,
            "one_hot" => Op::OneHot {
                depth: a.usize("depth")?,
                on_value: Float(a.f32("on_value")?),
                off_value: Float(a.f32("off_value")?),
                axis: a.i64("axis")?,
            },
            "gather_grad" => Op::GatherGrad {
                axis: a.i64("axis")?,
                size: a.usize("size")?,
            },
            "apply_gradient_descent" => Op::ApplyGradientDescent,
            "apply_momentum" => Op::ApplyMomentum {
                use_nesterov: a.bool("use_nesterov")?,
            },
            "apply_adam" => Op::ApplyAdam,
            "group" => Op::Group,
            _ => return Err(unknown_op(lc, kw, kw_off)),
        }
    };
    Ok(op)
}

/// An op of format version `since` in a file of format `version` is an error naming both.
fn check_version(
    lc: &LineCtx<'_>,
    kw: &str,
    kw_off: usize,
    since: u64,
    version: u64,
) -> Result<()> {
    if since <= version {
        return Ok(());
    }
    Err(lc.err(
        kw_off,
        format!(
            "`{kw}` needs format version {since}, but the file's header says `kiln {version}` \
             (write `kiln {since}` as the first line)"
        ),
    ))
}

/// A schema default as a [`Val`] placed at the op keyword (so a message about it points there).
fn default_value(text: &'static str, off: usize) -> Val<'static> {
    let lc = LineCtx { no: 0, text };
    // Invariant (tested in schema_defaults_round_trip): every schema default lexes and parses.
    let parsed = lex_line(text)
        .ok()
        .and_then(|toks| parse_value(&lc, &toks, &mut 0, 0).ok());
    let mut val = parsed.unwrap_or(Val {
        kind: ValKind::Word(text),
        off,
    });
    val.off = off;
    val
}

/// Takes the `expr` attribute (a fused expression in a string) out of `attrs`.
fn take_expr(
    lc: &LineCtx<'_>,
    kw: &str,
    kw_off: usize,
    attrs: &mut Vec<Attr<'_>>,
) -> Result<FusedExpr> {
    let Some(i) = attrs.iter().position(|a| a.name == "expr") else {
        return Err(lc.err(
            kw_off,
            format!("{kw} needs the attribute `expr` (an elementwise expression in a string)"),
        ));
    };
    let val = attrs.swap_remove(i).val;
    let text = val.to_str(lc, &format!("attribute `expr` of {kw}"))?;
    FusedExpr::parse(text).map_err(|e| lc.err(val.off, format!("bad expr of {kw}: {e}")))
}

/// The attributes of one statement, taken out by name as the op is built.
struct Attrs<'l, 'a> {
    lc: &'l LineCtx<'l>,
    kw: &'l str,
    kw_off: usize,
    attrs: Vec<Attr<'a>>,
}

impl<'a> Attrs<'_, 'a> {
    /// "attribute `name` of kw", for messages.
    fn what(&self, name: &str) -> String {
        format!("attribute `{name}` of {}", self.kw)
    }

    fn take(&mut self, name: &str) -> Option<Val<'a>> {
        let i = self.attrs.iter().position(|a| a.name == name)?;
        Some(self.attrs.swap_remove(i).val)
    }

    /// The attribute's value; the schema made it required or gave it a default, so it is
    /// present unless the schema and `build_op` disagree.
    fn value(&mut self, name: &str) -> Result<Val<'a>> {
        self.take(name).ok_or_else(|| {
            self.lc.err(
                self.kw_off,
                format!(
                    "internal error: the schema of {} gives attribute `{name}` no value",
                    self.kw
                ),
            )
        })
    }

    fn f32(&mut self, name: &str) -> Result<f32> {
        self.value(name)?.to_f32(self.lc, &self.what(name))
    }

    fn i64(&mut self, name: &str) -> Result<i64> {
        self.value(name)?.to_i64(self.lc, &self.what(name))
    }

    fn usize(&mut self, name: &str) -> Result<usize> {
        self.value(name)?.to_usize(self.lc, &self.what(name))
    }

    fn bool(&mut self, name: &str) -> Result<bool> {
        self.value(name)?.to_bool(self.lc, &self.what(name))
    }

    fn dtype(&mut self, name: &str) -> Result<DType> {
        let v = self.value(name)?;
        let text = v.to_str(self.lc, &self.what(name))?;
        DType::from_name(text).ok_or_else(|| {
            self.lc.err(
                v.off,
                format!(
                    "bad {}: {text:?} is not a dtype (f32, i32, i64, bool)",
                    self.what(name)
                ),
            )
        })
    }

    fn data_format(&mut self) -> Result<DataFormat> {
        let v = self.value("data_format")?;
        match v.to_str(self.lc, &self.what("data_format"))? {
            "NHWC" => Ok(DataFormat::Nhwc),
            "NCHW" => Ok(DataFormat::Nchw),
            s => Err(self.lc.err(
                v.off,
                format!("bad data_format {s:?}: expected \"NHWC\" or \"NCHW\""),
            )),
        }
    }

    /// A list of integers (`-1` has the op's meaning).
    fn i64_list(&mut self, name: &str) -> Result<Vec<i64>> {
        let v = self.value(name)?;
        let what = self.what(name);
        let items = v.to_list(self.lc, &what, AttrKind::Ints.expected())?;
        items.iter().map(|x| x.to_i64(self.lc, &what)).collect()
    }

    fn usize_list(&mut self, name: &str) -> Result<Vec<usize>> {
        let v = self.value(name)?;
        let what = self.what(name);
        let items = v.to_list(self.lc, &what, AttrKind::Counts.expected())?;
        items.iter().map(|x| x.to_usize(self.lc, &what)).collect()
    }

    /// `axes=[..]` or `axes=int`, or the synonym `axis=`; absent means every axis.
    fn axes(&mut self) -> Result<Option<Vec<i64>>> {
        // build_op already refused both being given (the schema makes `axis` an alias).
        let (name, v) = match (self.take("axes"), self.take("axis")) {
            (Some(v), _) => ("axes", v),
            (None, Some(v)) => ("axis", v),
            (None, None) => return Ok(None),
        };
        let what = self.what(name);
        match &v.kind {
            ValKind::List(items) => Ok(Some(
                items
                    .iter()
                    .map(|x| x.to_i64(self.lc, &what))
                    .collect::<Result<_>>()?,
            )),
            _ => Ok(Some(vec![v.to_i64(self.lc, &what)?])),
        }
    }

    /// A window attribute: `[h,w]`, `n` (both), or the 4-element form for `df`.
    fn window(&mut self, name: &str, df: DataFormat) -> Result<[usize; 2]> {
        let forms = AttrKind::Window.expected();
        let v = self.value(name)?;
        let what = self.what(name);
        let items = match &v.kind {
            ValKind::List(items) => items,
            ValKind::Num { .. } => {
                let n = v.to_usize(self.lc, &what)?;
                return Ok([n, n]);
            }
            _ => {
                return Err(self.lc.err(
                    v.off,
                    format!("{what}: expected {forms}, found {}", v.describe()),
                ));
            }
        };
        let n: Vec<usize> = items
            .iter()
            .map(|x| x.to_usize(self.lc, &what))
            .collect::<Result<_>>()?;
        match (n.as_slice(), df) {
            (&[h, w], _)
            | (&[1, h, w, 1], DataFormat::Nhwc)
            | (&[1, 1, h, w], DataFormat::Nchw) => Ok([h, w]),
            (&[_, _, _, _], _) => Err(self.lc.err(
                v.off,
                format!(
                    "{what}: in the 4-element form the batch and channel entries must be 1 \
                     ([1,h,w,1] for NHWC, [1,1,h,w] for NCHW; data_format is {:?})",
                    df.name()
                ),
            )),
            _ => Err(self.lc.err(
                v.off,
                format!(
                    "{what}: expected {forms}, found a list of {} element(s)",
                    n.len()
                ),
            )),
        }
    }

    fn padding(&mut self, df: DataFormat) -> Result<Padding> {
        let v = self.value("padding")?;
        let what = self.what("padding");
        let forms = AttrKind::Padding.expected();
        if let ValKind::Str(s) = &v.kind {
            return match s.as_str() {
                "SAME" => Ok(Padding::Same),
                "VALID" => Ok(Padding::Valid),
                _ => Err(self
                    .lc
                    .err(v.off, format!("bad padding {s:?}: expected {forms}"))),
            };
        }
        let pairs = self.pairs(&v, &what, forms)?;
        // TensorFlow's explicit form lists all four axes; batch and channels must be [0,0].
        let spatial = match (pairs.as_slice(), df) {
            (&[hp, wp], _) => [hp, wp],
            (&[[0, 0], hp, wp, [0, 0]], DataFormat::Nhwc)
            | (&[[0, 0], [0, 0], hp, wp], DataFormat::Nchw) => [hp, wp],
            _ => {
                return Err(self.lc.err(
                    v.off,
                    format!(
                        "bad padding: expected {forms}, found {} pair(s)",
                        pairs.len()
                    ),
                ));
            }
        };
        Ok(Padding::Explicit(spatial))
    }

    /// A list of `[a,b]` pairs of non-negative integers.
    fn pairs(&self, v: &Val<'_>, what: &str, expected: &str) -> Result<Vec<[usize; 2]>> {
        v.to_list(self.lc, what, expected)?
            .iter()
            .map(
                |p| match p.to_list(self.lc, what, "a pair [before,after]")? {
                    [a, b] => Ok([a.to_usize(self.lc, what)?, b.to_usize(self.lc, what)?]),
                    other => Err(self.lc.err(
                        p.off,
                        format!(
                            "{what}: expected a pair [before,after], found {} element(s)",
                            other.len()
                        ),
                    )),
                },
            )
            .collect()
    }

    fn pad_pairs(&mut self) -> Result<Vec<[usize; 2]>> {
        let v = self.value("paddings")?;
        self.pairs(&v, &self.what("paddings"), AttrKind::Pairs.expected())
    }

    /// A rank-4 image shape attribute; the op's inference checks the values (`-1` batch).
    fn image_shape(&mut self, name: &str) -> Result<[i64; 4]> {
        let v = self.value(name)?;
        let what = self.what(name);
        let items = v.to_list(self.lc, &what, AttrKind::Ints.expected())?;
        let dims: Vec<i64> = items
            .iter()
            .map(|x| x.to_i64(self.lc, &what))
            .collect::<Result<_>>()?;
        let off = v.off;
        <[i64; 4]>::try_from(dims.as_slice()).map_err(|_| {
            self.lc.err(
                off,
                format!(
                    "{what}: expected 4 dims (in data_format order), found {}",
                    dims.len()
                ),
            )
        })
    }

    /// A filter shape attribute `[kh, kw, cin, cout]`.
    fn filter_shape(&mut self, name: &str) -> Result<[usize; 4]> {
        let v = self.value(name)?;
        let what = self.what(name);
        let items = v.to_list(self.lc, &what, AttrKind::Counts.expected())?;
        let dims: Vec<usize> = items
            .iter()
            .map(|x| x.to_usize(self.lc, &what))
            .collect::<Result<_>>()?;
        let off = v.off;
        <[usize; 4]>::try_from(dims.as_slice()).map_err(|_| {
            self.lc.err(
                off,
                format!(
                    "{what}: expected 4 dims [kh,kw,cin,cout], found {}",
                    dims.len()
                ),
            )
        })
    }

    fn conv(&mut self) -> Result<ConvAttrs> {
        // data_format first: it decides how a 4-element strides list reads.
        let data_format = self.data_format()?;
        Ok(ConvAttrs {
            strides: self.window("strides", data_format)?,
            padding: self.padding(data_format)?,
            dilations: self.window("dilations", data_format)?,
            data_format,
        })
    }

    fn pool(&mut self) -> Result<PoolAttrs> {
        let data_format = self.data_format()?;
        Ok(PoolAttrs {
            ksize: self.window("ksize", data_format)?,
            strides: self.window("strides", data_format)?,
            padding: self.padding(data_format)?,
            data_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FORMAT_VERSION, printer};
    use super::*;
    use crate::schema::{AttrKind, OPS};

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("conv2d", "conv2d"), 0);
        assert_eq!(edit_distance("conv", "conv2d"), 2);
        assert_eq!(edit_distance("rleu", "relu"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    /// A value of each kind that no schema has as its default.
    fn sample(kind: AttrKind, fused: bool) -> &'static str {
        match kind {
            AttrKind::Int => "1",
            AttrKind::Count => "3",
            AttrKind::Float => "1.5",
            AttrKind::Bool => "true",
            // Four entries: shape attributes of the backward window ops take exactly four.
            AttrKind::Ints => "[2,-1,3,4]",
            AttrKind::Counts => "[1,0,2,3]",
            AttrKind::Pairs => "[[1,2]]",
            AttrKind::Padding => "\"VALID\"",
            AttrKind::Window => "[2,3]",
            AttrKind::DataFormat => "\"NCHW\"",
            AttrKind::DType => "\"i32\"",
            AttrKind::Axes => "[0,1]",
            AttrKind::Expr if fused => "\"relu(main)\"",
            AttrKind::Expr => "\"relu($0)\"",
        }
    }

    fn attr(name: &'static str, text: &'static str) -> Attr<'static> {
        Attr {
            name,
            off: 0,
            val: default_value(text, 0),
        }
    }

    /// Builds `kw` from the given attributes plus every required one (a sample value).
    fn build(kw: &str, given: Vec<Attr<'static>>) -> Result<Op> {
        let lc = LineCtx { no: 1, text: "" };
        let fused_main = schema::fused_main(kw);
        let schema = fused_main.or_else(|| schema::lookup(kw)).unwrap();
        let mut attrs = given;
        let required = schema
            .attrs
            .iter()
            .chain(fused_main.map(|_| &schema::EXPR))
            .filter(|a| a.default == AttrDefault::Required);
        for a in required {
            if attrs.iter().all(|x| x.name != a.name) {
                attrs.push(attr(a.name, sample(a.kind, fused_main.is_some())));
            }
        }
        build_op(&lc, kw, 0, attrs, FORMAT_VERSION)
    }

    #[test]
    fn every_keyword_builds_its_op_and_prints_only_what_is_not_default() {
        for kw in schema::all_keywords() {
            let op = build(kw, Vec::new()).unwrap_or_else(|e| panic!("{kw}: {e}"));
            assert_eq!(op.name(), kw);
            let schema = op.schema().unwrap();
            let printed: Vec<String> = printer::attrs(&op)
                .into_iter()
                .map(|a| a.split('=').next().unwrap_or_default().to_string())
                .collect();
            let required: Vec<&str> = schema
                .attrs
                .iter()
                .chain(schema::fused_main(kw).map(|_| &schema::EXPR))
                .filter(|a| a.default == AttrDefault::Required)
                .map(|a| a.name)
                .collect();
            let mut printed_sorted = printed.clone();
            printed_sorted.sort_unstable();
            let mut required_sorted = required.clone();
            required_sorted.sort_unstable();
            assert_eq!(printed_sorted, required_sorted, "{kw} printed {printed:?}");
        }
    }

    #[test]
    fn schema_defaults_round_trip() {
        for s in OPS {
            for a in s.attrs {
                let AttrDefault::Value(text) = a.default else {
                    continue;
                };
                // Giving the default explicitly builds the same op as leaving it out, and
                // a non-default value builds another one (so the attribute is really read).
                let implicit = build(s.keyword, Vec::new()).unwrap();
                let explicit = build(s.keyword, vec![attr(a.name, text)]);
                assert_eq!(explicit.as_ref(), Ok(&implicit), "{} {}", s.keyword, a.name);
                let other = build(s.keyword, vec![attr(a.name, sample(a.kind, false))]);
                assert_ne!(
                    other.as_ref().ok(),
                    Some(&implicit),
                    "{} {}",
                    s.keyword,
                    a.name
                );
            }
        }
    }

    #[test]
    fn a_version_2_op_in_a_version_1_file_is_an_error() {
        let lc = LineCtx { no: 3, text: "" };
        let err = build_op(&lc, "lrn", 0, Vec::new(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`lrn` needs format version 2"), "{err}");
        let expr = vec![attr("expr", "\"relu(main)\""), attr("axis", "1")];
        let err = build_op(&lc, "fused_softmax", 0, expr, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs format version 2"), "{err}");
        assert!(build_op(&lc, "relu", 0, Vec::new(), 1).is_ok());
    }

    #[test]
    fn a_training_op_needs_version_3_also_inside_an_expression() {
        let lc = LineCtx { no: 3, text: "" };
        let err = build_op(&lc, "select", 0, Vec::new(), 2).unwrap_err();
        assert!(
            err.to_string().contains("`select` needs format version 3"),
            "{err}"
        );
        let expr = || vec![attr("expr", "\"sign(relu($0))\"")];
        let err = build_op(&lc, "elementwise", 0, expr(), 2).unwrap_err();
        assert!(err.to_string().contains("needs format version 3"), "{err}");
        assert!(build_op(&lc, "elementwise", 0, expr(), 3).is_ok());
        let main = vec![attr("expr", "\"sign(main)\""), attr("axis", "1")];
        let err = build_op(&lc, "fused_softmax", 0, main, 2).unwrap_err();
        assert!(err.to_string().contains("needs format version 3"), "{err}");
    }
}
