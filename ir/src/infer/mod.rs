//! Shape and dtype inference for every op, with attribute validation.
//!
//! [`infer`] is an exhaustive `match` over [`Op`] that hands each op family to its own file
//! (sources here; elementwise and channel ops, matmul, window ops, reductions, movement ops in
//! the submodules). It never panics on user input: every arithmetic on dims is checked, and every
//! message names the operands' full types and what was expected (the graph adds the node's
//! name and op). Unknown dims (`?`) propagate: only what is known is checked, and a `?` in a
//! result means the value is known only at run time, where the evaluator and the backends check
//! it. Invariant of every returned type: its known dims multiplied together and by the element
//! size fit in `usize`, so later stages may compute buffer sizes without overflow checks.

mod elementwise;
mod fused;
mod matmul;
mod movement;
mod normalize;
mod reduce;
mod state;
mod window;

pub use window::{WindowDim, conv_output_dim, effective_kernel, window_dim};

use crate::DType;
use crate::op::Op;
use crate::shape::TensorType;

/// The type of `op`'s value given its operands' types, or a message saying what is wrong.
///
/// The caller (the graph) has already checked the operand count against [`Op::arity`]; a wrong
/// count still gives an error here rather than a panic.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, String> {
    if !op.arity().accepts(inputs.len()) {
        return Err(format!(
            "expected {} operand(s), got {}",
            op.arity(),
            inputs.len()
        ));
    }
    let ty = match op {
        Op::Input(ty) => Ok(ty.clone()),
        Op::Var(s) | Op::Const(s) => state::source(s),
        Op::Unary(_) => elementwise::unary(inputs[0]),
        Op::Binary(_) => elementwise::binary(inputs[0], inputs[1]),
        Op::BiasAdd { data_format } => elementwise::bias_add(*data_format, inputs[0], inputs[1]),
        Op::BatchNorm {
            epsilon,
            data_format,
        } => normalize::batch_norm(epsilon.0, *data_format, inputs),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul::matmul(*transpose_a, *transpose_b, inputs[0], inputs[1]),
        Op::Conv2d(a) => window::conv2d(a, inputs[0], inputs[1], false),
        Op::DepthwiseConv2d(a) => window::conv2d(a, inputs[0], inputs[1], true),
        Op::MaxPool(a) | Op::AvgPool(a) => window::pool(a, inputs[0]),
        Op::Reduce { axes, keepdims, .. } => reduce::reduce(axes.as_deref(), *keepdims, inputs[0]),
        Op::Softmax { axis } | Op::LogSoftmax { axis } => reduce::softmax(*axis, inputs[0]),
        Op::Reshape { shape } => movement::reshape(shape, inputs[0]),
        Op::Transpose { perm } => movement::transpose(perm, inputs[0]),
        Op::Concat { axis } => movement::concat(*axis, inputs),
        Op::Slice { begin, size } => movement::slice(begin, size, inputs[0]),
        Op::Pad { paddings, .. } => movement::pad(paddings, inputs[0]),
        Op::Assign(a) => state::assign(*a, inputs[0], inputs[1]),
        Op::Lrn { beta, .. } => normalize::lrn(beta.0, inputs[0]),
        Op::ArgMax { axis, output_type } => reduce::argmax(*axis, *output_type, inputs[0]),
        Op::Gather { axis } => movement::gather(*axis, inputs[0], inputs[1]),
        Op::Cast { to } => elementwise::cast(*to, inputs[0]),
        Op::Fused(f) => fused::fused(f, inputs),
        Op::BroadcastLike => elementwise::broadcast_like(inputs[0], inputs[1]),
        Op::Compare(c) => elementwise::compare(*c, inputs[0], inputs[1]),
        Op::Logical(_) => elementwise::logical(inputs[0], inputs[1]),
        Op::LogicalNot => elementwise::logical_not(inputs[0]),
        Op::Select => elementwise::select(inputs[0], inputs[1], inputs[2]),
        Op::StopGradient => Ok(inputs[0].clone()),
        Op::Conv2dBackpropInput { input_shape, attrs } => {
            window::conv2d_backprop_input(attrs, *input_shape, inputs[0], inputs[1])
        }
        Op::Conv2dBackpropFilter {
            filter_shape,
            attrs,
        } => window::conv2d_backprop_filter(attrs, *filter_shape, inputs[0], inputs[1]),
        Op::MaxPoolGrad(a) => window::max_pool_grad(a, inputs[0], inputs[1], inputs[2]),
        Op::AvgPoolGrad {
            orig_input_shape,
            attrs,
        } => window::avg_pool_grad(attrs, *orig_input_shape, inputs[0]),
        Op::DepthwiseConv2dBackpropInput { input_shape, attrs } => {
            window::depthwise_backprop_input(attrs, *input_shape, inputs[0], inputs[1])
        }
        Op::DepthwiseConv2dBackpropFilter {
            filter_shape,
            attrs,
        } => window::depthwise_backprop_filter(attrs, *filter_shape, inputs[0], inputs[1]),
        Op::SoftmaxCrossEntropyWithLogits => reduce::cross_entropy(inputs[0], inputs[1]),
        Op::SparseSoftmaxCrossEntropyWithLogits => {
            reduce::sparse_cross_entropy(inputs[0], inputs[1])
        }
        Op::OneHot { depth, axis, .. } => movement::one_hot(*depth, *axis, inputs[0]),
        Op::GatherGrad { axis, size } => movement::gather_grad(*axis, *size, inputs[0], inputs[1]),
        Op::ApplyGradientDescent | Op::ApplyMomentum { .. } | Op::ApplyAdam => {
            state::apply(op, inputs)
        }
        Op::Group => Ok(TensorType::f32(crate::shape::Shape::scalar())),
    }?;
    check_size(&ty)?;
    Ok(ty)
}

/// Errors unless `t` is f32 (all compute is f32); `role` names the operand (`x`, `filter`, ...).
fn require_f32(role: &str, t: &TensorType) -> Result<(), String> {
    if t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!("{role} must be f32, got {t} (dtype {})", t.dtype))
    }
}

/// Normalises `axis` (negative counts from the end) into `0..rank`, or says why it cannot.
fn normalize_axis(axis: i64, rank: usize, role: &str, t: &TensorType) -> Result<usize, String> {
    // Ranks are tiny; the conversion cannot fail in practice but is checked anyway.
    let r = i64::try_from(rank).map_err(|_| format!("{role} has too many axes"))?;
    if axis < -r || axis >= r {
        return Err(format!(
            "axis {axis} is out of range for {role} = {t} (rank {rank}: axes {}..{})",
            -r,
            r - 1
        ));
    }
    let a = if axis < 0 { axis + r } else { axis };
    // `a` is in 0..r after the check above.
    Ok(a as usize)
}

/// Errors if the known dims of `ty`, times the element size, overflow `usize`.
fn check_size(ty: &TensorType) -> Result<(), String> {
    let dims = ty.shape.dims();
    if dims.contains(&Some(0)) {
        return Ok(()); // an empty tensor, whatever its other dims
    }
    dims.iter()
        .flatten()
        .try_fold(ty.dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
        .map(|_| ())
        .ok_or_else(|| format!("{ty} is too large: its size in bytes overflows usize"))
}

/// Parses `f32[1,?,3]` into a type (tests only).
#[cfg(test)]
fn ty(s: &str) -> TensorType {
    use crate::shape::Shape;
    let (dt, rest) = s.split_once('[').expect("test type has a '['");
    let inner = rest.strip_suffix(']').expect("test type ends with ']'");
    let dims: Vec<Option<usize>> = if inner.is_empty() {
        Vec::new()
    } else {
        inner
            .split(',')
            .map(|d| {
                if d == "?" {
                    None
                } else {
                    Some(d.parse().expect("dim"))
                }
            })
            .collect()
    };
    TensorType::new(DType::from_name(dt).expect("dtype"), Shape::of(&dims))
}

/// Infers `op` on operand types written as strings (tests only).
#[cfg(test)]
fn run(op: &Op, inputs: &[&str]) -> Result<TensorType, String> {
    let types: Vec<TensorType> = inputs.iter().map(|s| ty(s)).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    infer(op, &refs)
}

/// Asserts that inference fails with a message containing every fragment (tests only).
#[cfg(test)]
#[track_caller]
fn assert_err(op: &Op, inputs: &[&str], fragments: &[&str]) {
    match run(op, inputs) {
        Ok(t) => panic!("expected an error from {op:?} on {inputs:?}, got {t}"),
        Err(m) => {
            for f in fragments {
                assert!(m.contains(f), "message {m:?} lacks {f:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Float;
    use crate::op::{AssignOp, Initializer, Source};
    use crate::shape::Shape;
    use crate::tensor::Tensor;
    use std::sync::Arc;

    fn src(t: &str, init: Initializer) -> Source {
        Source { ty: ty(t), init }
    }

    #[test]
    fn input_keeps_declared_type_with_unknowns() {
        let t = ty("f32[?,100,100,1]");
        assert_eq!(run(&Op::Input(t.clone()), &[]).unwrap(), t);
        assert_eq!(run(&Op::Input(ty("i64[]")), &[]).unwrap(), ty("i64[]"));
    }

    #[test]
    fn input_that_overflows_is_rejected() {
        let big = usize::MAX / 2;
        let t = TensorType::f32(Shape::of(&[None, Some(big), Some(3)]));
        let e = run(&Op::Input(t), &[]).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        // A zero dim makes the tensor empty, so the product does not overflow.
        let t = TensorType::f32(Shape::known(&[big, big, 0]));
        assert!(run(&Op::Input(t), &[]).is_ok());
    }

    #[test]
    fn var_and_const_check_their_initializer() {
        let lit = Tensor::from_vec(&[2, 3], vec![0.0; 6]).unwrap();
        let ok = src("f32[2,3]", Initializer::Literal(Arc::new(lit.clone())));
        assert_eq!(run(&Op::Const(ok.clone()), &[]).unwrap(), ty("f32[2,3]"));
        assert_eq!(run(&Op::Var(ok), &[]).unwrap(), ty("f32[2,3]"));

        let bad = src("f32[3,2]", Initializer::Literal(Arc::new(lit.clone())));
        assert_err(
            &Op::Const(bad),
            &[],
            &["literal is f32[2,3]", "declared type is f32[3,2]"],
        );

        let npy = Initializer::Npy {
            path: "w.npy".into(),
            value: Arc::new(lit),
        };
        assert_err(
            &Op::Var(src("f32[6]", npy)),
            &[],
            &["npy(\"w.npy\") holds f32[2,3]", "f32[6]"],
        );

        let ints = Tensor::new(&[2], crate::tensor::Data::I32(vec![1, 2])).unwrap();
        let wrong_dtype = src("f32[2]", Initializer::Literal(Arc::new(ints)));
        assert_err(&Op::Const(wrong_dtype), &[], &["i32[2]", "f32[2]"]);
    }

    #[test]
    fn var_needs_concrete_type_and_sane_initializer() {
        assert_err(
            &Op::Var(src("f32[?,3]", Initializer::Zeros)),
            &[],
            &["f32[?,3]", "unknown dims"],
        );
        assert!(run(&Op::Var(src("i32[4]", Initializer::Zeros)), &[]).is_ok());
        assert_err(
            &Op::Var(src("i32[4]", Initializer::Ones)),
            &[],
            &["ones", "i32[4]"],
        );
        let normal = |std| Initializer::Normal {
            mean: Float(0.0),
            std: Float(std),
            seed: 1,
        };
        assert!(run(&Op::Var(src("f32[4]", normal(1.0))), &[]).is_ok());
        assert_err(
            &Op::Var(src("f32[4]", normal(-1.0))),
            &[],
            &["std must be >= 0"],
        );
        assert_err(&Op::Var(src("f32[4]", normal(f32::NAN))), &[], &["finite"]);
        let uniform = Initializer::Uniform {
            lo: Float(1.0),
            hi: Float(0.0),
            seed: 1,
        };
        assert_err(&Op::Var(src("f32[4]", uniform)), &[], &["lo <= hi"]);
        let huge = Source {
            ty: TensorType::f32(Shape::known(&[usize::MAX / 2, 3])),
            init: Initializer::Zeros,
        };
        assert_err(&Op::Var(huge), &[], &["overflows"]);
    }

    #[test]
    fn assign_needs_identical_types() {
        for a in [AssignOp::Assign, AssignOp::AssignAdd, AssignOp::AssignSub] {
            assert_eq!(
                run(&Op::Assign(a), &["f32[2,3]", "f32[2,3]"]).unwrap(),
                ty("f32[2,3]")
            );
            assert_err(
                &Op::Assign(a),
                &["f32[2,3]", "f32[3,2]"],
                &["variable is f32[2,3]", "value is f32[3,2]"],
            );
            assert_err(&Op::Assign(a), &["f32[2]", "i32[2]"], &["f32[2]", "i32[2]"]);
            // A broadcastable value is still rejected: assign is not a binary op.
            assert_err(&Op::Assign(a), &["f32[2,3]", "f32[3]"], &["f32[3]"]);
        }
        assert!(run(&Op::Assign(AssignOp::Assign), &["i32[2]", "i32[2]"]).is_ok());
        assert_err(
            &Op::Assign(AssignOp::AssignAdd),
            &["i32[2]", "i32[2]"],
            &["must be f32"],
        );
    }

    #[test]
    fn wrong_operand_count_is_an_error_not_a_panic() {
        assert_err(
            &Op::Binary(crate::op::BinaryOp::Add),
            &["f32[2]"],
            &["expected 2 operand(s), got 1"],
        );
        assert_err(&Op::Concat { axis: 0 }, &[], &["at least 1"]);
    }

    #[test]
    fn normalize_axis_bounds() {
        let t = ty("f32[2,3,4]");
        assert_eq!(normalize_axis(-1, 3, "x", &t), Ok(2));
        assert_eq!(normalize_axis(-3, 3, "x", &t), Ok(0));
        assert_eq!(normalize_axis(2, 3, "x", &t), Ok(2));
        assert!(
            normalize_axis(3, 3, "x", &t)
                .unwrap_err()
                .contains("axis 3 is out of range")
        );
        assert!(normalize_axis(-4, 3, "x", &t).is_err());
        assert!(normalize_axis(i64::MIN, 3, "x", &t).is_err());
    }

    #[test]
    fn optimizer_updates_check_every_operand() {
        let s = "f32[]";
        assert_eq!(
            run(&Op::ApplyGradientDescent, &["f32[2,3]", s, "f32[2,3]"]).unwrap(),
            ty("f32[2,3]")
        );
        let momentum = Op::ApplyMomentum { use_nesterov: true };
        let ins = ["f32[4]", "f32[4]", s, "f32[4]", s];
        assert_eq!(run(&momentum, &ins).unwrap(), ty("f32[2,4]"));
        let adam = [
            "f32[2,2]", "f32[2,2]", "f32[2,2]", s, s, s, s, s, s, "f32[?,2]",
        ];
        assert_eq!(run(&Op::ApplyAdam, &adam).unwrap(), ty("f32[3,2,2]"));
        assert_err(
            &Op::ApplyGradientDescent,
            &["f32[2,3]", "f32[1]", "f32[2,3]"],
            &["alpha (operand 1) must be an f32 scalar (f32[]), got f32[1]"],
        );
        assert_err(
            &Op::ApplyGradientDescent,
            &["f32[2,3]", s, "f32[3,2]"],
            &["delta (operand 2) must be the variable's type f32[2,3], got f32[3,2]"],
        );
        assert_err(
            &momentum,
            &["f32[4]", "f32[5]", s, "f32[4]", s],
            &["accum (operand 1)", "f32[5]"],
        );
        assert_err(
            &Op::ApplyGradientDescent,
            &["i32[2]", s, "i32[2]"],
            &["must be f32"],
        );
        assert_eq!(run(&Op::Group, &["i64[3]", "f32[2]"]).unwrap(), ty("f32[]"));
    }
}
