//! Convolution, pooling, batch normalisation and LRN, kept in ONNX's NCHW layout.
//!
//! Filters are OIHW in ONNX and HWIO in kiln: constant filters are transposed at import (the
//! data itself, stored once per layout), run-time filters get a transpose node. A conv whose
//! groups equal the input channels with one input channel per group is kiln's depthwise conv
//! (multiplier `cout / cin`); other groups use conv2d's grouped form. Padding follows ONNX:
//! explicit `pads` (begin, end), `auto_pad` SAME_UPPER (kiln's SAME) and SAME_LOWER (explicit,
//! extra cell first), `ceil_mode` as extra bottom/right padding that kiln's pools ignore, and
//! `count_include_pad=1` as an explicit zero `pad` node before a pool (kiln's average excludes
//! padding).

use super::{one, reshape_to};
use crate::attrs::Ctx;
use crate::error::Result;
use crate::importer::Importer;
use crate::value::{Value, permute};
use kiln_ir::{ConvAttrs, DataFormat, Float, NodeId, Op, Padding, PoolAttrs, ReduceOp};
use std::sync::Arc;

/// Reads a two-element spatial attribute (`strides`, `dilations`), default `[1, 1]`.
fn pair(cx: &Ctx<'_>, name: &str) -> Result<[usize; 2]> {
    match cx.ints_opt(name)? {
        None => Ok([1, 1]),
        Some(v) => match v.as_slice() {
            [a, b] if *a >= 1 && *b >= 1 => Ok([*a as usize, *b as usize]),
            _ => Err(cx.err(format!("{name} must be two positive ints (2-D), got {v:?}"))),
        },
    }
}

/// Explicit `[[top, bottom], [left, right]]` pads from `pads` / `auto_pad`, for input spatial
/// dims `hw` (needed for SAME_LOWER), kernel `k`, strides, dilations. `None` means kiln's SAME.
fn pads(
    cx: &Ctx<'_>,
    hw: [Option<usize>; 2],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
) -> Result<Option<[[usize; 2]; 2]>> {
    let auto = cx.string("auto_pad", "NOTSET")?;
    match auto.as_str() {
        "NOTSET" => {
            let p = cx.ints_opt("pads")?.unwrap_or_else(|| vec![0; 4]);
            match p.as_slice() {
                [t, l, b, r] if p.iter().all(|&x| x >= 0) => Ok(Some([
                    [*t as usize, *b as usize],
                    [*l as usize, *r as usize],
                ])),
                _ => Err(cx.err(format!("pads must be 4 non-negative ints (2-D), got {p:?}"))),
            }
        }
        "VALID" => Ok(Some([[0, 0], [0, 0]])),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [[0usize; 2]; 2];
            for i in 0..2 {
                let Some(n) = hw[i] else {
                    if auto == "SAME_UPPER" {
                        return Ok(None);
                    }
                    return Err(cx.err("auto_pad=SAME_LOWER needs known spatial dims"));
                };
                let o = n.div_ceil(s[i]);
                let eff = (k[i] - 1) * d[i] + 1;
                let total = ((o.max(1) - 1) * s[i] + eff).saturating_sub(n);
                let small = total / 2;
                out[i] = if auto == "SAME_UPPER" {
                    [small, total - small]
                } else {
                    [total - small, small]
                };
            }
            Ok(Some(out))
        }
        other => Err(cx.err(format!(
            "auto_pad {other:?} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER"
        ))),
    }
}

fn padding_of(p: [[usize; 2]; 2]) -> Padding {
    if p == [[0, 0], [0, 0]] {
        Padding::Valid
    } else {
        Padding::Explicit(p)
    }
}

/// The NCHW input `x` (rank 4) and its spatial dims.
fn image(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<(NodeId, [Option<usize>; 2])> {
    let x = imp.node(cx, 0)?;
    let ty = imp.ty(x);
    if ty.rank() != 4 {
        return Err(cx.err(format!(
            "only 2-D {} is supported: x must be NCHW of rank 4, got {ty}",
            cx.op
        )));
    }
    Ok((x, [ty.shape.dim(2), ty.shape.dim(3)]))
}

/// Conv (2-D): conv2d, grouped conv2d or depthwise_conv2d, plus bias_add for input 2.
pub fn conv(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let (x, hw) = image(imp, cx)?;
    let w_val = imp.required(cx, 1)?;
    let w_dims: Vec<Option<usize>> = match &w_val {
        Value::Const(t) => t.dims().iter().map(|&d| Some(d)).collect(),
        _ => {
            let w = imp.node(cx, 1)?;
            imp.ty(w).shape.dims().to_vec()
        }
    };
    let [Some(cout), Some(cin_g), Some(kh), Some(kw)] = w_dims[..] else {
        return Err(cx.err(format!(
            "the filter must be OIHW of rank 4 with known dims, got {:?}",
            w_dims
        )));
    };
    if let Some(ks) = cx.ints_opt("kernel_shape")?
        && ks != [kh as i64, kw as i64]
    {
        return Err(cx.err(format!(
            "kernel_shape {ks:?} does not match the filter's [{kh}, {kw}]"
        )));
    }
    let group = cx.int("group", 1)?;
    let cin = imp.ty(x).shape.dim(1);
    if group < 1 || cout % group as usize != 0 {
        return Err(cx.err(format!(
            "group {group} must be >= 1 and divide the {cout} output channels"
        )));
    }
    let group = group as usize;
    if let Some(c) = cin
        && c != cin_g * group
    {
        return Err(cx.err(format!(
            "x has {c} channels but the filter expects {cin_g} per group x {group} groups"
        )));
    }
    let strides = pair(cx, "strides")?;
    let dilations = pair(cx, "dilations")?;
    let padding = pads(cx, hw, [kh, kw], strides, dilations)?.map_or(Padding::Same, padding_of);
    let attrs = ConvAttrs {
        strides,
        padding,
        dilations,
        data_format: DataFormat::Nchw,
    };
    // cin == cin_g * group was checked above, so cin_g == 1 means one channel per group.
    let depthwise = group > 1 && cin_g == 1;
    let h = cx.hint();
    let w_name = cx.input_name(1).unwrap_or_default().to_string();
    let w = match (w_val, depthwise) {
        (Value::Const(t), false) => {
            let hwio = permute(&t, &[2, 3, 1, 0]).map_err(|e| cx.err(e))?;
            imp.constant_node(&w_name, "hwio", Arc::new(hwio))?
        }
        (Value::Const(t), true) => {
            let mult = cout / group;
            let t4 = (*t)
                .clone()
                .reshaped(&[group, mult, kh, kw])
                .map_err(|e| cx.err(e.to_string()))?;
            let dw = permute(&t4, &[2, 3, 0, 1]).map_err(|e| cx.err(e))?;
            imp.constant_node(&w_name, "dw", Arc::new(dw))?
        }
        (_, false) => {
            let w = imp.node(cx, 1)?;
            imp.add(
                cx,
                &format!("{h}/hwio"),
                Op::Transpose {
                    perm: vec![2, 3, 1, 0],
                },
                &[w],
            )?
        }
        (_, true) => {
            let w = imp.node(cx, 1)?;
            let mult = cout / group;
            let w4 = reshape_to(
                imp,
                cx,
                &format!("{h}/w4"),
                w,
                &[Some(group), Some(mult), Some(kh), Some(kw)],
            )?;
            imp.add(
                cx,
                &format!("{h}/dw"),
                Op::Transpose {
                    perm: vec![2, 3, 0, 1],
                },
                &[w4],
            )?
        }
    };
    let has_bias = imp.value(cx, 2).is_some();
    let conv_hint = if has_bias {
        format!("{h}/conv")
    } else {
        h.clone()
    };
    let op = if depthwise {
        Op::DepthwiseConv2d(attrs)
    } else {
        Op::Conv2d(attrs)
    };
    let y = imp.add(cx, &conv_hint, op, &[x, w])?;
    if !has_bias {
        return one(y);
    }
    let b = imp.node(cx, 2)?;
    let op = Op::BiasAdd {
        data_format: DataFormat::Nchw,
    };
    one(imp.add(cx, &h, op, &[y, b])?)
}

/// MaxPool / AveragePool (2-D). The Indices output of MaxPool is not computed.
pub fn pool(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let (x, hw) = image(imp, cx)?;
    let ks = cx
        .ints_opt("kernel_shape")?
        .ok_or_else(|| cx.err("kernel_shape is required"))?;
    let k = match ks.as_slice() {
        [a, b] if *a >= 1 && *b >= 1 => [*a as usize, *b as usize],
        _ => {
            return Err(cx.err(format!(
                "kernel_shape must be two positive ints (2-D), got {ks:?}"
            )));
        }
    };
    if pair(cx, "dilations")? != [1, 1] {
        return Err(cx.err("dilated pooling is not supported"));
    }
    let s = pair(cx, "strides")?;
    let avg = cx.op == "AveragePool";
    let ceil = cx.int("ceil_mode", 0)? != 0;
    let include_pad = avg && cx.int("count_include_pad", 0)? != 0;
    let p = pads(cx, hw, k, s, [1, 1])?;
    let h = cx.hint();
    let make = |padding: Padding| {
        let a = PoolAttrs {
            ksize: k,
            strides: s,
            padding,
            data_format: DataFormat::Nchw,
        };
        if avg { Op::AvgPool(a) } else { Op::MaxPool(a) }
    };
    let Some(mut p) = p else {
        // SAME_UPPER on unknown spatial dims: kiln's SAME is the same padding.
        if ceil || include_pad {
            return Err(cx.err(
                "auto_pad=SAME_UPPER with ceil_mode or count_include_pad needs known spatial dims",
            ));
        }
        return one(imp.add(cx, &h, make(Padding::Same), &[x])?);
    };
    // ceil_mode: extra cells at the bottom/right so the last partial window exists; a window
    // must still start inside the input or its leading padding (ONNX Runtime's rule).
    let mut extra = [0usize; 2];
    if ceil {
        for i in 0..2 {
            let n = hw[i].ok_or_else(|| cx.err("ceil_mode needs known spatial dims"))?;
            let padded = n + p[i][0] + p[i][1];
            if padded < k[i] {
                return Err(cx.err(format!("the kernel {k:?} is larger than the padded input")));
            }
            let mut out = (padded - k[i]).div_ceil(s[i]) + 1;
            if (out - 1) * s[i] >= n + p[i][0] {
                out -= 1;
            }
            extra[i] = ((out - 1) * s[i] + k[i]).saturating_sub(padded);
        }
    }
    let mut x = x;
    if include_pad && p != [[0, 0], [0, 0]] {
        let op = Op::Pad {
            paddings: vec![[0, 0], [0, 0], p[0], p[1]],
            constant_value: Float(0.0),
        };
        x = imp.add(cx, &format!("{h}/pad"), op, &[x])?;
        p = [[0, 0], [0, 0]];
    }
    p[0][1] += extra[0];
    p[1][1] += extra[1];
    one(imp.add(cx, &h, make(padding_of(p)), &[x])?)
}

/// GlobalAveragePool / GlobalMaxPool: a mean / max over the spatial axes, kept as size 1.
pub fn global_pool(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = imp.node(cx, 0)?;
    let rank = imp.ty(x).rank();
    if rank < 3 {
        return Err(cx.err(format!(
            "x must have rank >= 3 (N, C, spatial...), got {}",
            imp.ty(x)
        )));
    }
    let op = if cx.op == "GlobalAveragePool" {
        ReduceOp::Mean
    } else {
        ReduceOp::Max
    };
    let axes = Some((2..rank as i64).collect());
    one(imp.add(
        cx,
        &cx.hint(),
        Op::Reduce {
            op,
            axes,
            keepdims: true,
        },
        &[x],
    )?)
}

/// BatchNormalization in inference form (epsilon default 1e-5), channels on axis 1.
pub fn batch_norm(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    if cx.opset < 9 && cx.int("spatial", 1)? != 1 {
        return Err(cx.err("spatial=0 is not supported"));
    }
    if cx.int("training_mode", 0)? != 0 {
        return Err(cx.err("training_mode=1 is not supported (kiln imports for inference)"));
    }
    let ids = (0..5)
        .map(|i| imp.node(cx, i))
        .collect::<Result<Vec<_>>>()?;
    let op = Op::BatchNorm {
        epsilon: Float(cx.float("epsilon", 1e-5)?),
        data_format: DataFormat::Nchw,
    };
    one(imp.add(cx, &cx.hint(), op, &ids)?)
}

/// LRN over the channels: kiln's lrn runs over the last axis, so NCHW is transposed to NHWC
/// and back. ONNX's window of `size` maps to radius `(size - 1) / 2` (odd sizes only: an even
/// window is lopsided) and its `alpha / size` to kiln's alpha.
pub fn lrn(imp: &mut Importer<'_>, cx: &Ctx<'_>) -> Result<Vec<Value>> {
    let (x, _) = image(imp, cx)?;
    let size = cx
        .int_opt("size")?
        .ok_or_else(|| cx.err("attribute size is required"))?;
    if size < 1 || size % 2 == 0 {
        return Err(cx.err(format!("size {size} must be a positive odd number (an even window is asymmetric; kiln's is not)")));
    }
    let h = cx.hint();
    let nhwc = imp.add(
        cx,
        &format!("{h}/nhwc"),
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        &[x],
    )?;
    let op = Op::Lrn {
        depth_radius: ((size - 1) / 2) as usize,
        bias: Float(cx.float("bias", 1.0)?),
        alpha: Float(cx.float("alpha", 1e-4)? / size as f32),
        beta: Float(cx.float("beta", 0.75)?),
    };
    let y = imp.add(cx, &format!("{h}/lrn"), op, &[nhwc])?;
    one(imp.add(
        cx,
        &h,
        Op::Transpose {
            perm: vec![0, 3, 1, 2],
        },
        &[y],
    )?)
}
