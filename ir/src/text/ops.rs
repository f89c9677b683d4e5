//! From an op keyword and its `name=value` attributes to an [`Op`].
//!
//! Each op family lists the attributes it accepts; anything else is an error naming the
//! accepted ones. Defaults follow DESIGN.md (strides/dilations `[1,1]`, `data_format="NHWC"`,
//! `alpha=0.2`, `epsilon=0.001`, `axis=-1`, ...); `padding` and the shape-giving attributes of
//! movement ops have no default. Window attributes accept `[h,w]`, a single integer, or
//! TensorFlow's 4-element form (`[1,h,w,1]` for NHWC, `[1,1,h,w]` for NCHW).

use super::values::{LineCtx, Val, ValKind};
use crate::fused::{FusedExpr, FusedOp};
use crate::op::{
    AssignOp, BinaryOp, ConvAttrs, DataFormat, Float, Op, Padding, PoolAttrs, ReduceOp, UnaryOp,
};
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

const CONV: &[&str] = &["strides", "padding", "dilations", "data_format"];
const POOL: &[&str] = &["ksize", "strides", "padding", "data_format"];
const PADDING_FORMS: &str = "\"SAME\", \"VALID\" or [[top,bottom],[left,right]]";

/// The attributes op keyword `kw` accepts, or `None` if `kw` is not an op.
fn accepted(kw: &str) -> Option<&'static [&'static str]> {
    Some(match kw {
        "leaky_relu" => &["alpha"],
        "bias_add" => &["data_format"],
        "matmul" => &["transpose_a", "transpose_b"],
        "conv2d" | "depthwise_conv2d" => CONV,
        "max_pool" | "avg_pool" => POOL,
        "reduce_sum" | "reduce_mean" | "reduce_max" | "reduce_min" => &["axes", "axis", "keepdims"],
        "softmax" | "log_softmax" | "concat" => &["axis"],
        "reshape" => &["shape"],
        "transpose" => &["perm"],
        "slice" => &["begin", "size"],
        "pad" => &["paddings", "constant_value"],
        "batch_norm" => &["epsilon", "data_format"],
        "lrn" => &["depth_radius", "bias", "alpha", "beta"],
        "argmax" => &["axis", "output_type"],
        "gather" => &["axis"],
        "cast" => &["to"],
        "elementwise" => &["expr"],
        "assign" | "assign_add" | "assign_sub" => &[],
        _ if UnaryOp::ALL.iter().any(|u| u.name() == kw) => &[],
        _ if BinaryOp::ALL.iter().any(|b| b.name() == kw) => &[],
        _ => return None,
    })
}

/// Every op keyword, for suggestions.
fn all_keywords() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = UnaryOp::ALL.iter().map(|u| u.name()).collect();
    v.extend(BinaryOp::ALL.iter().map(|b| b.name()));
    v.extend(ReduceOp::ALL.iter().map(|r| r.name()));
    v.extend([
        "bias_add",
        "matmul",
        "conv2d",
        "depthwise_conv2d",
        "max_pool",
        "avg_pool",
        "softmax",
        "log_softmax",
        "reshape",
        "transpose",
        "concat",
        "slice",
        "pad",
        "batch_norm",
        "lrn",
        "argmax",
        "gather",
        "cast",
        "elementwise",
        "fused_conv2d",
        "fused_depthwise_conv2d",
        "fused_matmul",
        "fused_max_pool",
        "fused_avg_pool",
        "fused_reduce_sum",
        "fused_softmax",
        "assign",
        "assign_add",
        "assign_sub",
    ]);
    v
}

/// Edit distance (insert, delete, substitute), for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
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

/// Builds the op for keyword `kw` (at byte `kw_off`) from its attributes.
pub(crate) fn build_op(
    lc: &LineCtx<'_>,
    kw: &str,
    kw_off: usize,
    mut attrs: Vec<Attr<'_>>,
) -> Result<Op> {
    if let Some(main_kw) = FusedOp::main_keyword(kw) {
        // `fused_<main>(...)`: the main op's attributes plus `expr`.
        let expr = take_expr(lc, kw, kw_off, &mut attrs)?;
        let main = build_op(lc, main_kw, kw_off, attrs)?;
        return FusedOp::new(Some(main), expr)
            .map(Op::Fused)
            .map_err(|e| lc.err(kw_off, format!("{kw}: {e}")));
    }
    let Some(accepted) = accepted(kw) else {
        return Err(unknown_op(lc, kw, kw_off));
    };
    for (i, a) in attrs.iter().enumerate() {
        if !accepted.contains(&a.name) {
            let list = if accepted.is_empty() {
                "it takes no attributes".to_string()
            } else {
                format!("expected one of {}", accepted.join(", "))
            };
            return Err(lc.err(
                a.off,
                format!("unknown attribute `{}` for {kw}: {list}", a.name),
            ));
        }
        if attrs[..i].iter().any(|b| b.name == a.name) {
            return Err(lc.err(a.off, format!("attribute `{}` given twice", a.name)));
        }
    }
    let mut a = Attrs {
        lc,
        kw,
        kw_off,
        attrs,
    };
    let op = if let Some(&u) = UnaryOp::ALL.iter().find(|u| u.name() == kw) {
        Op::Unary(match u {
            UnaryOp::LeakyRelu { .. } => UnaryOp::LeakyRelu {
                alpha: Float(a.f32("alpha")?.unwrap_or(0.2)),
            },
            u => u,
        })
    } else if let Some(&b) = BinaryOp::ALL.iter().find(|b| b.name() == kw) {
        Op::Binary(b)
    } else if let Some(&r) = ReduceOp::ALL.iter().find(|r| r.name() == kw) {
        let axes = a.axes()?;
        Op::Reduce {
            op: r,
            axes,
            keepdims: a.bool("keepdims")?.unwrap_or(false),
        }
    } else {
        match kw {
            "bias_add" => Op::BiasAdd {
                data_format: a.data_format()?,
            },
            "matmul" => Op::MatMul {
                transpose_a: a.bool("transpose_a")?.unwrap_or(false),
                transpose_b: a.bool("transpose_b")?.unwrap_or(false),
            },
            "conv2d" => Op::Conv2d(a.conv()?),
            "depthwise_conv2d" => Op::DepthwiseConv2d(a.conv()?),
            "max_pool" => Op::MaxPool(a.pool()?),
            "avg_pool" => Op::AvgPool(a.pool()?),
            "softmax" => Op::Softmax {
                axis: a.i64("axis")?.unwrap_or(-1),
            },
            "log_softmax" => Op::LogSoftmax {
                axis: a.i64("axis")?.unwrap_or(-1),
            },
            "reshape" => Op::Reshape {
                shape: a.i64_list("shape", true)?,
            },
            "transpose" => Op::Transpose {
                perm: a.usize_list("perm")?,
            },
            "concat" => Op::Concat {
                axis: a
                    .required("axis", "an integer")?
                    .to_i64(lc, &a.what("axis"))?,
            },
            "slice" => Op::Slice {
                begin: a.usize_list("begin")?,
                size: a.i64_list("size", true)?,
            },
            "pad" => Op::Pad {
                paddings: a.pad_pairs()?,
                constant_value: Float(a.f32("constant_value")?.unwrap_or(0.0)),
            },
            "batch_norm" => Op::BatchNorm {
                epsilon: Float(a.f32("epsilon")?.unwrap_or(0.001)),
                data_format: a.data_format()?,
            },
            "lrn" => Op::Lrn {
                depth_radius: a
                    .take("depth_radius")
                    .map(|v| v.to_usize(lc, &a.what("depth_radius")))
                    .transpose()?
                    .unwrap_or(5),
                bias: Float(a.f32("bias")?.unwrap_or(1.0)),
                alpha: Float(a.f32("alpha")?.unwrap_or(1.0)),
                beta: Float(a.f32("beta")?.unwrap_or(0.5)),
            },
            "argmax" => Op::ArgMax {
                axis: a
                    .required("axis", "an integer")?
                    .to_i64(lc, &a.what("axis"))?,
                output_type: a.dtype("output_type")?.unwrap_or(DType::I64),
            },
            "gather" => Op::Gather {
                axis: a.i64("axis")?.unwrap_or(0),
            },
            "cast" => Op::Cast {
                to: match a.dtype("to")? {
                    Some(d) => d,
                    None => return Err(lc.err(kw_off, "cast needs the attribute `to` (a dtype)")),
                },
            },
            "elementwise" => {
                let expr = take_expr(lc, kw, kw_off, &mut a.attrs)?;
                Op::Fused(
                    FusedOp::new(None, expr).map_err(|e| lc.err(kw_off, format!("{kw}: {e}")))?,
                )
            }
            "assign" => Op::Assign(AssignOp::Assign),
            "assign_add" => Op::Assign(AssignOp::AssignAdd),
            "assign_sub" => Op::Assign(AssignOp::AssignSub),
            _ => return Err(unknown_op(lc, kw, kw_off)),
        }
    };
    Ok(op)
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

    fn required(&mut self, name: &str, expected: &str) -> Result<Val<'a>> {
        self.take(name).ok_or_else(|| {
            self.lc.err(
                self.kw_off,
                format!("{} needs the attribute `{name}` ({expected})", self.kw),
            )
        })
    }

    fn f32(&mut self, name: &str) -> Result<Option<f32>> {
        self.take(name)
            .map(|v| v.to_f32(self.lc, &self.what(name)))
            .transpose()
    }

    fn i64(&mut self, name: &str) -> Result<Option<i64>> {
        self.take(name)
            .map(|v| v.to_i64(self.lc, &self.what(name)))
            .transpose()
    }

    fn bool(&mut self, name: &str) -> Result<Option<bool>> {
        self.take(name)
            .map(|v| v.to_bool(self.lc, &self.what(name)))
            .transpose()
    }

    fn dtype(&mut self, name: &str) -> Result<Option<DType>> {
        let Some(v) = self.take(name) else {
            return Ok(None);
        };
        let text = v.to_str(self.lc, &self.what(name))?;
        DType::from_name(text).map(Some).ok_or_else(|| {
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
        let Some(v) = self.take("data_format") else {
            return Ok(DataFormat::Nhwc);
        };
        match v.to_str(self.lc, &self.what("data_format"))? {
            "NHWC" => Ok(DataFormat::Nhwc),
            "NCHW" => Ok(DataFormat::Nchw),
            s => Err(self.lc.err(
                v.off,
                format!("bad data_format {s:?}: expected \"NHWC\" or \"NCHW\""),
            )),
        }
    }

    /// A required list of integers; `-1` allowed when `signed`.
    fn i64_list(&mut self, name: &str, signed: bool) -> Result<Vec<i64>> {
        let expected = if signed {
            "a list of integers"
        } else {
            "a list of non-negative integers"
        };
        let v = self.required(name, expected)?;
        let what = self.what(name);
        let items = v.to_list(self.lc, &what, expected)?;
        items.iter().map(|x| x.to_i64(self.lc, &what)).collect()
    }

    fn usize_list(&mut self, name: &str) -> Result<Vec<usize>> {
        let v = self.required(name, "a list of non-negative integers")?;
        let what = self.what(name);
        let items = v.to_list(self.lc, &what, "a list of non-negative integers")?;
        items.iter().map(|x| x.to_usize(self.lc, &what)).collect()
    }

    /// `axes=[..]` or `axes=int`, or the synonym `axis=`; absent means every axis.
    fn axes(&mut self) -> Result<Option<Vec<i64>>> {
        let axes = self.take("axes");
        let axis = self.take("axis");
        let (name, v) = match (axes, axis) {
            (Some(_), Some(b)) => {
                return Err(self.lc.err(b.off, "give `axes` or `axis`, not both"));
            }
            (Some(v), None) => ("axes", v),
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
    fn window(&mut self, name: &str, df: DataFormat, required: bool) -> Result<Option<[usize; 2]>> {
        let forms = "[h,w], an integer, or [1,h,w,1] (NHWC) / [1,1,h,w] (NCHW)";
        let v = if required {
            Some(self.required(name, forms)?)
        } else {
            self.take(name)
        };
        let Some(v) = v else { return Ok(None) };
        let what = self.what(name);
        let items = match &v.kind {
            ValKind::List(items) => items,
            ValKind::Num { .. } => {
                let n = v.to_usize(self.lc, &what)?;
                return Ok(Some([n, n]));
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
            (&[h, w], _) => Ok(Some([h, w])),
            (&[1, h, w, 1], DataFormat::Nhwc) | (&[1, 1, h, w], DataFormat::Nchw) => {
                Ok(Some([h, w]))
            }
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
        let v = self.required("padding", PADDING_FORMS)?;
        let what = self.what("padding");
        if let ValKind::Str(s) = &v.kind {
            return match s.as_str() {
                "SAME" => Ok(Padding::Same),
                "VALID" => Ok(Padding::Valid),
                _ => Err(self.lc.err(
                    v.off,
                    format!("bad padding {s:?}: expected {PADDING_FORMS}"),
                )),
            };
        }
        let pairs = self.pairs(&v, &what, PADDING_FORMS)?;
        // TensorFlow's explicit form lists all four axes; batch and channels must be [0,0].
        let spatial = match (pairs.as_slice(), df) {
            (&[hp, wp], _) => [hp, wp],
            (&[[0, 0], hp, wp, [0, 0]], DataFormat::Nhwc)
            | (&[[0, 0], [0, 0], hp, wp], DataFormat::Nchw) => [hp, wp],
            _ => {
                return Err(self.lc.err(
                    v.off,
                    format!(
                        "bad padding: expected {PADDING_FORMS}, found {} pair(s)",
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
        let expected = "[[before,after], ...] with one pair per axis";
        let v = self.required("paddings", expected)?;
        self.pairs(&v, &self.what("paddings"), expected)
    }

    fn conv(&mut self) -> Result<ConvAttrs> {
        // data_format first: it decides how a 4-element strides list reads.
        let data_format = self.data_format()?;
        Ok(ConvAttrs {
            strides: self
                .window("strides", data_format, false)?
                .unwrap_or([1, 1]),
            padding: self.padding(data_format)?,
            dilations: self
                .window("dilations", data_format, false)?
                .unwrap_or([1, 1]),
            data_format,
        })
    }

    fn pool(&mut self) -> Result<PoolAttrs> {
        let data_format = self.data_format()?;
        let ksize = self.window("ksize", data_format, true)?.unwrap_or([1, 1]);
        Ok(PoolAttrs {
            ksize,
            strides: self
                .window("strides", data_format, false)?
                .unwrap_or([1, 1]),
            padding: self.padding(data_format)?,
            data_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("conv2d", "conv2d"), 0);
        assert_eq!(edit_distance("conv", "conv2d"), 2);
        assert_eq!(edit_distance("rleu", "relu"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn every_keyword_is_accepted() {
        for k in all_keywords() {
            let main = FusedOp::main_keyword(k).unwrap_or(k);
            assert!(accepted(main).is_some(), "{k}");
        }
        assert!(accepted("conv3d").is_none());
    }
}
