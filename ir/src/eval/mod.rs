//! The reference evaluator: what every op means, written as plain, obviously-correct loops over
//! host tensors, following TensorFlow 1.x semantics (see DESIGN.md).
//!
//! It is the oracle every pass and backend is tested against, the engine of constant folding
//! and the `reference` backend, so correctness and clarity beat speed here.
//!
//! Invariants:
//! - Nothing here panics on bad input. Every entry point re-checks operand count, dtypes,
//!   shapes and attributes (the graph was checked by `infer`, but run-time shapes and direct
//!   callers are not) and returns `Err(message)` naming the shapes involved and what was
//!   expected; the caller prefixes the node's name and op.
//! - Compute is f32 in and out. Sums (conv, matmul, reductions, average pools, softmax) are
//!   accumulated in f64 and transcendentals are evaluated in f64, then rounded once, so the
//!   reference is the more accurate side of any comparison.
//! - Movement ops (reshape, transpose, concat, slice, pad), `gather`, `assign`, `select` and
//!   `stop_gradient` work on any dtype, `argmax` and the comparisons on f32/i32/i64 (`equal`
//!   and `not_equal` on bool too), `cast` between all dtypes, the logical ops on bool; all
//!   other ops need f32 operands.

mod elementwise;
mod fused;
mod matmul;
mod movement;
mod normalize;
mod reduce;
mod state;
mod window;

pub use state::{apply_update, shared_source_value, source_value};

use crate::op::{DataFormat, Op};
use crate::shape::{TensorType, fmt_dims};
use crate::tensor::{Tensor, checked_numel};

/// Evaluates one non-source op on concrete operand tensors.
///
/// `inputs` are the node's operands in order. For `assign*` they are the variable's current
/// value and the value to assign; the result is the variable's new value. Sources (`input`,
/// `var`, `const`) are not evaluated here: feeds and [`source_value`] give their values.
/// Errors name the shapes involved; the caller adds the node's name.
pub fn eval_op(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, String> {
    check_result_fits(op, inputs)?;
    match op {
        Op::Input(_) | Op::Var(_) | Op::Const(_) => Err(format!(
            "{} is a source; sources are not evaluated here (their values come from feeds \
             or source_value)",
            op.name()
        )),
        Op::Unary(u) => {
            let [x] = operands(op, inputs)?;
            elementwise::unary(*u, x)
        }
        Op::Binary(b) => {
            let [x, y] = operands(op, inputs)?;
            elementwise::binary(*b, x, y)
        }
        Op::BiasAdd { data_format } => {
            let [x, b] = operands(op, inputs)?;
            elementwise::bias_add(x, b, *data_format)
        }
        Op::Assign(a) => {
            let [current, value] = operands(op, inputs)?;
            state::assign(*a, current, value)
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let [a, b] = operands(op, inputs)?;
            matmul::matmul(a, b, *transpose_a, *transpose_b)
        }
        Op::Conv2d(attrs) => {
            let [x, w] = operands(op, inputs)?;
            window::conv::conv2d(x, w, attrs)
        }
        Op::DepthwiseConv2d(attrs) => {
            let [x, w] = operands(op, inputs)?;
            window::conv::depthwise_conv2d(x, w, attrs)
        }
        Op::MaxPool(attrs) => {
            let [x] = operands(op, inputs)?;
            window::pool::max_pool(x, attrs)
        }
        Op::AvgPool(attrs) => {
            let [x] = operands(op, inputs)?;
            window::pool::avg_pool(x, attrs)
        }
        Op::Reduce {
            op: r,
            axes,
            keepdims,
        } => {
            let [x] = operands(op, inputs)?;
            reduce::reduce(x, *r, axes.as_deref(), *keepdims)
        }
        Op::Softmax { axis } => {
            let [x] = operands(op, inputs)?;
            reduce::softmax(x, *axis, false)
        }
        Op::LogSoftmax { axis } => {
            let [x] = operands(op, inputs)?;
            reduce::softmax(x, *axis, true)
        }
        Op::Reshape { shape } => {
            let [x] = operands(op, inputs)?;
            movement::reshape(x, shape)
        }
        Op::Transpose { perm } => {
            let [x] = operands(op, inputs)?;
            movement::transpose(x, perm)
        }
        Op::Concat { axis } => {
            if inputs.is_empty() {
                return Err("expected at least 1 operand(s), got 0".into());
            }
            movement::concat(inputs, *axis)
        }
        Op::Slice { begin, size } => {
            let [x] = operands(op, inputs)?;
            movement::slice(x, begin, size)
        }
        Op::Pad {
            paddings,
            constant_value,
        } => {
            let [x] = operands(op, inputs)?;
            movement::pad(x, paddings, constant_value.0)
        }
        Op::BatchNorm {
            epsilon,
            data_format,
        } => {
            let [x, scale, offset, mean, variance] = operands(op, inputs)?;
            normalize::batch_norm(x, [scale, offset, mean, variance], epsilon.0, *data_format)
        }
        Op::Fused(f) => fused::fused(f, inputs),
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => {
            let [x] = operands(op, inputs)?;
            normalize::lrn(x, *depth_radius, bias.0, alpha.0, beta.0)
        }
        Op::ArgMax { axis, output_type } => {
            let [x] = operands(op, inputs)?;
            reduce::argmax(x, *axis, *output_type)
        }
        Op::Gather { axis } => {
            let [params, indices] = operands(op, inputs)?;
            movement::gather(params, indices, *axis)
        }
        Op::Cast { to } => {
            let [x] = operands(op, inputs)?;
            elementwise::cast(x, *to)
        }
        Op::BroadcastLike => {
            let [x, like] = operands(op, inputs)?;
            elementwise::broadcast_like(x, like.dims())
        }
        Op::Compare(c) => {
            let [a, b] = operands(op, inputs)?;
            elementwise::compare(*c, a, b)
        }
        Op::Logical(l) => {
            let [a, b] = operands(op, inputs)?;
            elementwise::logical(*l, a, b)
        }
        Op::LogicalNot => {
            let [x] = operands(op, inputs)?;
            elementwise::logical_not(x)
        }
        Op::Select => {
            let [cond, a, b] = operands(op, inputs)?;
            elementwise::select(cond, a, b)
        }
        Op::StopGradient => {
            let [x] = operands(op, inputs)?;
            Ok(x.clone())
        }
        Op::Conv2dBackpropInput { input_shape, attrs } => {
            let [w, dy] = operands(op, inputs)?;
            window::backprop::conv2d_backprop_input(w, dy, *input_shape, attrs)
        }
        Op::Conv2dBackpropFilter {
            filter_shape,
            attrs,
        } => {
            let [x, dy] = operands(op, inputs)?;
            window::backprop::conv2d_backprop_filter(x, dy, *filter_shape, attrs)
        }
        Op::MaxPoolGrad(attrs) => {
            let [x, y, grad] = operands(op, inputs)?;
            window::pool_grad::max_pool_grad(x, y, grad, attrs)
        }
        Op::AvgPoolGrad {
            orig_input_shape,
            attrs,
        } => {
            let [grad] = operands(op, inputs)?;
            window::pool_grad::avg_pool_grad(grad, *orig_input_shape, attrs)
        }
        Op::DepthwiseConv2dBackpropInput { input_shape, attrs } => {
            let [w, dy] = operands(op, inputs)?;
            window::backprop::depthwise_backprop_input(w, dy, *input_shape, attrs)
        }
        Op::DepthwiseConv2dBackpropFilter {
            filter_shape,
            attrs,
        } => {
            let [x, dy] = operands(op, inputs)?;
            window::backprop::depthwise_backprop_filter(x, dy, *filter_shape, attrs)
        }
        Op::SoftmaxCrossEntropyWithLogits => {
            let [logits, labels] = operands(op, inputs)?;
            reduce::softmax_cross_entropy(logits, labels)
        }
        Op::SparseSoftmaxCrossEntropyWithLogits => {
            let [logits, labels] = operands(op, inputs)?;
            reduce::sparse_softmax_cross_entropy(logits, labels)
        }
        Op::OneHot {
            depth,
            on_value,
            off_value,
            axis,
        } => {
            let [indices] = operands(op, inputs)?;
            movement::one_hot(indices, *depth, on_value.0, off_value.0, *axis)
        }
        Op::GatherGrad { axis, size } => {
            let [grad, indices] = operands(op, inputs)?;
            movement::gather_grad(grad, indices, *axis, *size)
        }
        Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam => {
            state::apply(op, inputs)
        }
        Op::Group => Ok(Tensor::scalar(0.0)),
    }
}

/// The operands as a fixed-size array, or an arity error.
fn operands<'a, const N: usize>(op: &Op, inputs: &[&'a Tensor]) -> Result<[&'a Tensor; N], String> {
    <[&Tensor; N]>::try_from(inputs).map_err(|_| {
        format!(
            "{} expects {} operand(s), got {}",
            op.name(),
            op.arity(),
            inputs.len()
        )
    })
}

/// The f32 elements of an operand, or an error naming its role and actual type.
fn f32_data<'a>(t: &'a Tensor, role: &str) -> Result<&'a [f32], String> {
    t.as_f32()
        .ok_or_else(|| format!("{role} must be f32, got {}", t.ty()))
}

/// Element count of `dims`, or an error when it overflows.
fn numel(dims: &[usize]) -> Result<usize, String> {
    checked_numel(dims).map_err(|e| e.to_string())
}

/// Errors when memory for `op`'s result cannot be had (sizes come from run-time shapes and
/// attributes, e.g. `[?,1] + [1,?]` or huge paddings), so no op's allocation aborts the process.
/// The result's type is inferred from the operands; operands inference rejects are left for
/// the op to report in its own words.
fn check_result_fits(op: &Op, inputs: &[&Tensor]) -> Result<(), String> {
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let Ok(ty) = crate::infer::infer(op, &refs) else {
        return Ok(());
    };
    let Some(dims) = ty.shape.to_dims() else {
        return Ok(());
    };
    let n = numel(&dims)?;
    let bytes = n
        .checked_mul(ty.dtype.size_bytes())
        .ok_or_else(|| format!("the result {ty} has more bytes than memory can address"))?;
    // The probe reserves address space only; the op allocates (and touches) the real buffer.
    Vec::<u8>::new()
        .try_reserve_exact(bytes)
        .map_err(|_| format!("out of memory: cannot allocate {bytes} bytes for the result {ty}"))
}

/// A buffer of `n` copies of `value`; an error instead of an abort when memory runs out
/// (output sizes can be driven by attributes, e.g. huge paddings).
fn alloc(n: usize, value: f32) -> Result<Vec<f32>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("cannot allocate {n} f32 elements for the result"))?;
    v.resize(n, value);
    Ok(v)
}

/// An f32 result tensor (the element count matches by construction; checked anyway).
fn finish(dims: &[usize], values: Vec<f32>) -> Result<Tensor, String> {
    Tensor::from_vec(dims, values).map_err(|e| e.to_string())
}

/// Row-major strides of `dims` (in elements).
///
/// Saturating: a tensor with a zero dim may have other dims whose product overflows; its
/// strides are then never used to address an element. For a non-empty tensor every partial
/// product is at most its element count, so nothing saturates.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(dims[i + 1]);
    }
    s
}

/// Product of `dims`, saturating for the same reason as [`strides`] (exact for any part of a
/// non-empty tensor's dims; 0 whenever a dim is 0).
fn prod(dims: &[usize]) -> usize {
    dims.iter().fold(1, |acc: usize, &d| acc.saturating_mul(d))
}

/// Resolves a possibly negative axis against `rank` (valid range `-rank..rank`).
fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!(
            "axis {axis} is out of range for rank {rank} (valid: {}..{r})",
            -r
        ));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// The channel axis of a value in `format`: the last axis for NHWC (any rank >= 1), axis 1
/// for NCHW (rank >= 2), as TensorFlow's bias_add and batch_norm read it.
fn channel_axis(dims: &[usize], format: DataFormat, role: &str) -> Result<usize, String> {
    match format {
        DataFormat::Nhwc if !dims.is_empty() => Ok(dims.len() - 1),
        DataFormat::Nchw if dims.len() >= 2 => Ok(1),
        _ => Err(format!(
            "{role} {} has no channel axis for data_format {} (needs rank >= {})",
            fmt_dims(dims),
            format.name(),
            if format == DataFormat::Nchw { 2 } else { 1 }
        )),
    }
}

/// max(a, b) that returns NaN when either is NaN (TensorFlow's `maximum`).
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// min(a, b) that returns NaN when either is NaN (TensorFlow's `minimum`).
fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

#[cfg(test)]
mod testutil {
    use crate::compare::Tolerance;
    use crate::tensor::{Data, Tensor};

    /// An f32 tensor; panics on a size mismatch (test inputs are written by hand).
    pub fn t(dims: &[usize], values: &[f32]) -> Tensor {
        Tensor::from_vec(dims, values.to_vec()).expect("test tensor size")
    }

    /// An i64 tensor.
    pub fn ints(dims: &[usize], v: &[i64]) -> Tensor {
        Tensor::new(dims, Data::I64(v.to_vec())).expect("test tensor size")
    }

    /// An i32 tensor.
    pub fn i32s(dims: &[usize], v: &[i32]) -> Tensor {
        Tensor::new(dims, Data::I32(v.to_vec())).expect("test tensor size")
    }

    /// 1.0, 2.0, ... n as an f32 tensor of `dims`.
    pub fn iota(dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        t(dims, &(1..=n).map(|i| i as f32).collect::<Vec<_>>())
    }

    /// Deterministic pseudo-random values in [-1, 1) (so tests need no generator).
    pub fn noise(dims: &[usize], seed: u32) -> Tensor {
        let n: usize = dims.iter().product();
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        let v = (0..n)
            .map(|_| {
                s = s.wrapping_mul(1103515245).wrapping_add(12345);
                ((s >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
            })
            .collect::<Vec<_>>();
        t(dims, &v)
    }

    /// Asserts `actual` is an f32 tensor of `dims` within `tol + tol * |e|` of `expected`
    /// ([`crate::compare`]; `tol == 0` means the same bits, NaN matching NaN).
    #[track_caller]
    pub fn assert_close(actual: &Tensor, dims: &[usize], expected: &[f32], tol: f32) {
        let want = t(dims, expected);
        let tol = Tolerance::abs_rel(f64::from(tol));
        crate::compare::assert_close(actual, &want, tol, "eval result");
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{i32s, ints, noise, t};
    use super::*;
    use crate::op::{Float, Initializer, Source, UnaryOp};
    use crate::shape::{Shape, TensorType};

    #[test]
    fn sources_are_not_evaluated_here() {
        let src = Source {
            ty: TensorType::f32(Shape::known(&[2])),
            init: Initializer::Zeros,
        };
        for op in [
            Op::Var(src.clone()),
            Op::Const(src),
            Op::Input(TensorType::f32(Shape::known(&[2]))),
        ] {
            let err = eval_op(&op, &[]).unwrap_err();
            assert!(err.contains("source"), "{err}");
        }
    }

    #[test]
    fn wrong_operand_count_is_an_error() {
        let x = t(&[2], &[1.0, 2.0]);
        let err = eval_op(&Op::Unary(UnaryOp::Neg), &[&x, &x]).unwrap_err();
        assert!(err.contains("expects 1 operand(s), got 2"), "{err}");
        let err = eval_op(&Op::Concat { axis: 0 }, &[]).unwrap_err();
        assert!(err.contains("got 0"), "{err}");
        let bn = Op::BatchNorm {
            epsilon: Float(1e-3),
            data_format: DataFormat::Nhwc,
        };
        assert!(eval_op(&bn, &[&x, &x]).is_err());
    }

    /// Every op on many operand combinations, good and bad: each returns Ok or Err, none
    /// panics (a panic fails the test).
    #[test]
    fn no_op_panics_on_any_operands() {
        use super::testutil::noise;
        use crate::op::{AssignOp, BinaryOp, ConvAttrs, Padding, PoolAttrs, ReduceOp};
        use crate::tensor::Data;
        let pool = vec![
            Tensor::scalar(1.0),
            t(&[0], &[]),
            noise(&[3], 1),
            noise(&[2, 3], 2),
            noise(&[3, 2], 3),
            noise(&[1, 3, 3, 2], 4),
            noise(&[2, 2, 2, 2], 5),
            noise(&[2, 2, 2, 1], 6),
            noise(&[2], 7),
            t(&[0, 2, 0, 3], &[]),
            Tensor::new(&[2], Data::I32(vec![1, 2])).unwrap(),
            Tensor::new(&[2, 2, 2, 2], Data::Bool(vec![true; 16])).unwrap(),
        ];
        let explicit = Padding::Explicit([[5, 0], [0, 1]]);
        let ops = vec![
            Op::Unary(UnaryOp::Rsqrt),
            Op::Binary(BinaryOp::Pow),
            Op::BiasAdd {
                data_format: DataFormat::Nchw,
            },
            Op::Assign(AssignOp::AssignSub),
            Op::Assign(AssignOp::Assign),
            Op::MatMul {
                transpose_a: true,
                transpose_b: false,
            },
            Op::Conv2d(ConvAttrs::same().strides(2, 3)),
            Op::Conv2d(ConvAttrs::with_padding(explicit).format(DataFormat::Nchw)),
            Op::DepthwiseConv2d(ConvAttrs::valid().dilations(2, 2)),
            Op::MaxPool(PoolAttrs::new(2, 2, explicit)),
            Op::AvgPool(PoolAttrs::new(3, 1, Padding::Same)),
            Op::AvgPool(PoolAttrs::new(1 << 40, 1, Padding::Same)),
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: Some(vec![-1, 3]),
                keepdims: true,
            },
            Op::Reduce {
                op: ReduceOp::Max,
                axes: None,
                keepdims: false,
            },
            Op::Softmax { axis: -1 },
            Op::LogSoftmax { axis: 3 },
            Op::Reshape { shape: vec![-1, 2] },
            Op::Reshape {
                shape: vec![i64::MAX, -1],
            },
            Op::Transpose { perm: vec![1, 0] },
            Op::Transpose {
                perm: vec![3, 2, 1, 0],
            },
            Op::Concat { axis: -1 },
            Op::Slice {
                begin: vec![1, 1],
                size: vec![-1, 1],
            },
            Op::Slice {
                begin: vec![0, 1, 0, 1],
                size: vec![1, -1, 1, -1],
            },
            Op::Pad {
                paddings: vec![[1, 2], [0, 1]],
                constant_value: Float(-1.0),
            },
            Op::BatchNorm {
                epsilon: Float(1e-3),
                data_format: DataFormat::Nhwc,
            },
        ];
        let mut results = 0;
        for op in &ops {
            // Up to 3 operands from the pool (batch_norm and concat also get 5).
            let n = pool.len();
            let mut combos: Vec<Vec<&Tensor>> = vec![vec![]];
            for i in 0..n {
                combos.push(vec![&pool[i]]);
                for j in 0..n {
                    combos.push(vec![&pool[i], &pool[j]]);
                    combos.push(vec![&pool[i], &pool[j], &pool[(i + j) % n]]);
                    combos.push(vec![&pool[i], &pool[j], &pool[j], &pool[j], &pool[j]]);
                }
            }
            for inputs in combos {
                if eval_op(op, &inputs).is_ok() {
                    results += 1;
                }
            }
        }
        // Sanity: the sweep exercised successful evaluations too.
        assert!(results > 100, "only {results} successful evaluations");
    }

    #[test]
    fn helpers() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
        assert_eq!(prod(&[usize::MAX, 2, 0]), 0);
        assert_eq!(prod(&[2, 3]), 6);
        assert_eq!(norm_axis(-1, 3), Ok(2));
        assert_eq!(norm_axis(2, 3), Ok(2));
        assert!(norm_axis(3, 3).is_err());
        assert!(norm_axis(-4, 3).is_err());
        assert!(norm_axis(0, 0).is_err());
        assert!(nan_max(f32::NAN, 1.0).is_nan());
        assert!(nan_min(1.0, f32::NAN).is_nan());
        assert_eq!(nan_max(-1.0, 2.0), 2.0);
        assert_eq!(channel_axis(&[1, 2, 3, 4], DataFormat::Nchw, "x"), Ok(1));
        assert_eq!(channel_axis(&[5], DataFormat::Nhwc, "x"), Ok(0));
        assert!(channel_axis(&[5], DataFormat::Nchw, "x").is_err());
        assert!(channel_axis(&[], DataFormat::Nhwc, "x").is_err());
    }

    /// The new ops (and grouped conv) on many operand combinations: Ok or Err, never a panic.
    #[test]
    fn no_panic_on_any_operands() {
        use crate::DType;
        use crate::op::{ConvAttrs, Float};
        use crate::tensor::Data;
        let pool = vec![
            Tensor::scalar(1.0),
            t(&[0], &[]),
            noise(&[3], 1),
            noise(&[2, 3], 2),
            noise(&[1, 3, 3, 4], 4),
            t(&[0, 2, 0, 3], &[]),
            i32s(&[2], &[1, -2]),
            ints(&[2, 1], &[0, 7]),
            ints(&[], &[-1]),
            Tensor::new(&[2, 2], Data::Bool(vec![true; 4])).unwrap(),
            noise(&[1, 1, 2, 4], 5),
        ];
        let ops = [
            Op::Lrn {
                depth_radius: 2,
                bias: Float(1.0),
                alpha: Float(1e-4),
                beta: Float(0.75),
            },
            Op::ArgMax {
                axis: -1,
                output_type: DType::I32,
            },
            Op::ArgMax {
                axis: 0,
                output_type: DType::I64,
            },
            Op::Gather { axis: 0 },
            Op::Gather { axis: -1 },
            Op::Cast { to: DType::I32 },
            Op::Cast { to: DType::Bool },
            Op::Conv2d(ConvAttrs::same().strides(2, 1)),
            Op::Compare(crate::op::CompareOp::Less),
            Op::Compare(crate::op::CompareOp::Equal),
            Op::Logical(crate::op::LogicalOp::Or),
            Op::LogicalNot,
            Op::StopGradient,
        ];
        let mut ok = 0;
        for op in &ops {
            for a in &pool {
                ok += usize::from(super::eval_op(op, &[a]).is_ok());
                for b in &pool {
                    ok += usize::from(super::eval_op(op, &[a, b]).is_ok());
                }
            }
        }
        for c in &pool {
            for a in &pool {
                for b in &pool {
                    ok += usize::from(super::eval_op(&Op::Select, &[c, a, b]).is_ok());
                }
            }
        }
        assert!(ok > 40, "only {ok} successful evaluations");
    }
}
