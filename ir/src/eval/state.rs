//! State: the initial values of `var` and `const` sources, materialised for their declared
//! type, the value an `assign*` gives its variable, and the optimizer updates (`apply_*`),
//! whose per-element arithmetic [`apply_update`] is shared with the CPU backend.
//!
//! Random initialisers are f32 only and reproducible from their seed (`Tensor::normal` /
//! `Tensor::uniform`). Literal, .npy and safetensors values must already have exactly the declared dims
//! and dtype; nothing is converted here.

use super::{f32_data, finish};
use crate::DType;
use crate::op::{AssignOp, Initializer, Op, Source};
use crate::tensor::{Data, Tensor, checked_numel};
use std::sync::Arc;

/// `assign*(var, value)`: the variable's new value. Shapes must match exactly (no
/// broadcasting, as TensorFlow's `validate_shape`).
pub(super) fn assign(op: AssignOp, current: &Tensor, value: &Tensor) -> Result<Tensor, String> {
    if current.ty() != value.ty() {
        return Err(format!(
            "value {} does not match the variable's type {}",
            value.ty(),
            current.ty()
        ));
    }
    if op == AssignOp::Assign {
        return Ok(value.clone());
    }
    let cs = f32_data(current, "variable")?;
    let vs = f32_data(value, "value")?;
    let sign = if op == AssignOp::AssignAdd { 1.0 } else { -1.0 };
    finish(
        current.dims(),
        cs.iter().zip(vs).map(|(&c, &v)| c + sign * v).collect(),
    )
}

/// `apply_*(...)`: the new values of the variables the op writes, one after another (see
/// [`Op::ApplyGradientDescent`]), from [`apply_update`] on copies of the current values.
pub(super) fn apply(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let names = op
        .apply_operand_names()
        .ok_or_else(|| format!("{} is not an optimizer update", op.name()))?;
    if inputs.len() != names.len() {
        return Err(format!(
            "{} expects {} operands, got {}",
            op.name(),
            names.len(),
            inputs.len()
        ));
    }
    let k = op.updated_variables();
    let dims = inputs[0].dims();
    let mut state: Vec<Vec<f32>> = Vec::with_capacity(k);
    let mut scalars = Vec::new();
    let mut grad: &[f32] = &[];
    for (name, t) in names.iter().zip(inputs) {
        let data = f32_data(t, name)?;
        if state.len() < k || matches!(*name, "grad" | "delta") {
            if t.dims() != dims {
                return Err(format!(
                    "{name} is {} but the variable is {}",
                    t.ty(),
                    inputs[0].ty()
                ));
            }
            if state.len() < k {
                state.push(data.to_vec());
            } else {
                grad = data;
            }
        } else {
            match data {
                [x] if t.dims().is_empty() => scalars.push(*x),
                _ => return Err(format!("{name} must be an f32 scalar, got {}", t.ty())),
            }
        }
    }
    let mut slices: Vec<&mut [f32]> = state.iter_mut().map(Vec::as_mut_slice).collect();
    apply_update(op, &scalars, &mut slices, grad)?;
    let out_dims: Vec<usize> = if k == 1 {
        dims.to_vec()
    } else {
        std::iter::once(k).chain(dims.iter().copied()).collect()
    };
    finish(&out_dims, state.concat())
}

/// Updates in place the variables an optimizer op writes (`vars`, in operand order, each as
/// long as `grad`) from the gradient and the op's scalar operands (`scalars`, in operand
/// order), with the arithmetic of TensorFlow's CPU kernels (`training_ops.cc`), operation for
/// operation, so the reference and the CPU backend (which calls this) agree bit for bit:
/// - gradient descent, scalars `[alpha]`: `var -= delta * alpha`;
/// - momentum, scalars `[lr, momentum]`: `accum = accum * momentum + grad`, then
///   `var -= accum * lr`, or with Nesterov `var -= grad * lr + accum * momentum * lr`;
/// - Adam, scalars `[beta1_power, beta2_power, lr, beta1, beta2, epsilon]`:
///   `alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power)`, `m += (grad - m) * (1 - beta1)`,
///   `v += (grad^2 - v) * (1 - beta2)`, `var -= m * alpha / (sqrt(v) + epsilon)`.
pub fn apply_update(
    op: &Op,
    scalars: &[f32],
    vars: &mut [&mut [f32]],
    grad: &[f32],
) -> Result<(), String> {
    let n = grad.len();
    if vars.len() != op.updated_variables() || vars.iter().any(|v| v.len() != n) {
        return Err(format!(
            "{} needs {} variable(s) of the gradient's {n} elements",
            op.name(),
            op.updated_variables()
        ));
    }
    match (op, scalars, vars) {
        (Op::ApplyGradientDescent, &[alpha], [var]) => {
            for (w, &g) in var.iter_mut().zip(grad) {
                *w -= g * alpha;
            }
        }
        (Op::ApplyMomentum { use_nesterov }, &[lr, momentum], [var, accum]) => {
            for ((w, a), &g) in var.iter_mut().zip(accum.iter_mut()).zip(grad) {
                *a = *a * momentum + g;
                if *use_nesterov {
                    *w -= g * lr + *a * momentum * lr;
                } else {
                    *w -= *a * lr;
                }
            }
        }
        (Op::ApplyAdam, &[beta1_power, beta2_power, lr, beta1, beta2, epsilon], [var, m, v]) => {
            let alpha = lr * (1.0 - beta2_power).sqrt() / (1.0 - beta1_power);
            for (((w, m), v), &g) in var.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grad) {
                *m += (g - *m) * (1.0 - beta1);
                *v += (g * g - *v) * (1.0 - beta2);
                *w -= (*m * alpha) / (v.sqrt() + epsilon);
            }
        }
        (op, scalars, _) => {
            return Err(format!(
                "{} is not an optimizer update taking {} scalar(s)",
                op.name(),
                scalars.len()
            ));
        }
    }
    Ok(())
}

/// The value of a `var` / `const` initialiser, for the source's declared type.
///
/// Errors when the declared shape has unknown dims, when a literal or .npy value does not
/// have the declared dims and dtype, when a fill value cannot be represented in the declared
/// dtype, when a random initialiser is asked for a non-f32 type, or when the value cannot be
/// allocated.
pub fn source_value(src: &Source) -> Result<Tensor, String> {
    let ty = &src.ty;
    let dims = ty.shape.to_dims().ok_or_else(|| {
        format!("declared type {ty} has unknown dims; a var or const needs a concrete shape")
    })?;
    let n = checked_numel(&dims).map_err(|e| e.to_string())?;
    let check_alloc = || -> Result<(), String> {
        // Probe the allocation so that a huge declared shape is an error, not an abort.
        let bytes = n.saturating_mul(ty.dtype.size_bytes());
        Vec::<u8>::new()
            .try_reserve_exact(bytes)
            .map_err(|_| format!("cannot allocate {bytes} bytes for a value of type {ty}"))
    };
    let f32_only = |what: &str| -> Result<(), String> {
        if ty.dtype == DType::F32 {
            Ok(())
        } else {
            Err(format!(
                "{what} initialisers make f32 values, but the declared type is {ty}"
            ))
        }
    };
    let given = |t: &Tensor, what: &str| -> Result<Tensor, String> {
        if t.dtype() != ty.dtype || t.dims() != dims.as_slice() {
            return Err(format!(
                "{what} has type {} but the declared type is {ty}",
                t.ty()
            ));
        }
        Ok(t.clone())
    };
    match &src.init {
        Initializer::Zeros => filled(&dims, n, ty.dtype, 0.0, check_alloc),
        Initializer::Ones => filled(&dims, n, ty.dtype, 1.0, check_alloc),
        Initializer::Fill(v) => filled(&dims, n, ty.dtype, v.0, check_alloc),
        Initializer::Normal { mean, std, seed } => {
            f32_only("normal")?;
            check_alloc()?;
            Ok(Tensor::normal(&dims, mean.0, std.0, *seed))
        }
        Initializer::Uniform { lo, hi, seed } => {
            f32_only("uniform")?;
            if lo.0.is_nan() || hi.0.is_nan() || lo.0 > hi.0 {
                return Err(format!("uniform({}, {}) needs lo <= hi", lo.0, hi.0));
            }
            check_alloc()?;
            Ok(Tensor::uniform(&dims, lo.0, hi.0, *seed))
        }
        Initializer::Literal(t) => given(t, "the literal"),
        Initializer::Npy { path, value } => given(value, &format!("npy(\"{path}\")")),
        Initializer::Safetensors {
            path,
            tensor,
            value,
        } => given(value, &format!("safetensors(\"{path}\", \"{tensor}\")")),
    }
}

/// Like [`source_value`], but a value the initialiser already holds (a literal, npy or
/// safetensors tensor of the declared type) is shared, not copied: lowering keeps constants
/// this way, so a large weight lives once in memory, not once per compiled program.
pub fn shared_source_value(src: &Source) -> Result<Arc<Tensor>, String> {
    let held = match &src.init {
        Initializer::Literal(t) => Some(t),
        Initializer::Npy { value, .. } | Initializer::Safetensors { value, .. } => Some(value),
        _ => None,
    };
    match held {
        Some(t) if t.ty() == src.ty => Ok(Arc::clone(t)),
        _ => source_value(src).map(Arc::new),
    }
}

/// `n` copies of `v` in `dtype`; integer and bool types need a value they represent exactly.
fn filled(
    dims: &[usize],
    n: usize,
    dtype: DType,
    v: f32,
    check_alloc: impl Fn() -> Result<(), String>,
) -> Result<Tensor, String> {
    let not_exact = || format!("fill value {v} is not representable as {dtype}");
    let integral = v.is_finite() && v.fract() == 0.0;
    check_alloc()?;
    let data = match dtype {
        DType::F32 => Data::F32(vec![v; n]),
        // Half-open ranges: 2^31 and 2^63 are f32 values but not i32 / i64 values.
        DType::I32 if integral && (-2f32.powi(31)..2f32.powi(31)).contains(&v) => {
            Data::I32(vec![v as i32; n])
        }
        DType::I64 if integral && (-2f32.powi(63)..2f32.powi(63)).contains(&v) => {
            Data::I64(vec![v as i64; n])
        }
        DType::Bool if v == 0.0 || v == 1.0 => Data::Bool(vec![v == 1.0; n]),
        _ => return Err(not_exact()),
    };
    Tensor::new(dims, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, t};
    use super::*;
    use crate::op::Float;
    use crate::shape::{Shape, TensorType};
    use std::sync::Arc;

    fn src(dtype: DType, dims: &[usize], init: Initializer) -> Source {
        Source {
            ty: TensorType::new(dtype, Shape::known(dims)),
            init,
        }
    }

    #[test]
    fn constant_initialisers() {
        let z = source_value(&src(DType::F32, &[2, 3], Initializer::Zeros)).unwrap();
        assert_eq!(z, Tensor::zeros(&[2, 3]));
        let o = source_value(&src(DType::F32, &[4], Initializer::Ones)).unwrap();
        assert_eq!(o, Tensor::ones(&[4]));
        let f = source_value(&src(DType::F32, &[], Initializer::Fill(Float(2.5)))).unwrap();
        assert_eq!(f, Tensor::scalar(2.5));
        let i = source_value(&src(DType::I32, &[2], Initializer::Fill(Float(-3.0)))).unwrap();
        assert_eq!(i, Tensor::new(&[2], Data::I32(vec![-3, -3])).unwrap());
        let b = source_value(&src(DType::Bool, &[1], Initializer::Ones)).unwrap();
        assert_eq!(b, Tensor::new(&[1], Data::Bool(vec![true])).unwrap());
        let l = source_value(&src(DType::I64, &[1], Initializer::Zeros)).unwrap();
        assert_eq!(l, Tensor::new(&[1], Data::I64(vec![0])).unwrap());
        assert!(source_value(&src(DType::I32, &[2], Initializer::Fill(Float(0.5)))).is_err());
        assert!(
            source_value(&src(
                DType::I32,
                &[2],
                Initializer::Fill(Float(2147483648.0))
            ))
            .is_err()
        );
        let min = source_value(&src(
            DType::I32,
            &[1],
            Initializer::Fill(Float(-2147483648.0)),
        ))
        .unwrap();
        assert_eq!(min, Tensor::new(&[1], Data::I32(vec![i32::MIN])).unwrap());
        assert!(source_value(&src(DType::Bool, &[2], Initializer::Fill(Float(2.0)))).is_err());
        assert!(source_value(&src(DType::I64, &[2], Initializer::Fill(Float(f32::NAN)))).is_err());
    }

    #[test]
    fn random_initialisers_are_seeded() {
        let normal = Initializer::Normal {
            mean: Float(1.0),
            std: Float(2.0),
            seed: 7,
        };
        let a = source_value(&src(DType::F32, &[3, 2], normal.clone())).unwrap();
        assert_eq!(a, Tensor::normal(&[3, 2], 1.0, 2.0, 7));
        let uniform = Initializer::Uniform {
            lo: Float(-1.0),
            hi: Float(1.0),
            seed: 3,
        };
        let u = source_value(&src(DType::F32, &[5], uniform.clone())).unwrap();
        assert_eq!(u, Tensor::uniform(&[5], -1.0, 1.0, 3));
        assert!(u.as_f32().unwrap().iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(source_value(&src(DType::I32, &[5], uniform)).is_err());
        assert!(source_value(&src(DType::I64, &[5], normal)).is_err());
        let backwards = Initializer::Uniform {
            lo: Float(1.0),
            hi: Float(0.0),
            seed: 3,
        };
        assert!(source_value(&src(DType::F32, &[5], backwards)).is_err());
    }

    #[test]
    fn literals_must_match_the_declaration() {
        let v = Arc::new(Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap());
        let ok = source_value(&src(DType::F32, &[2], Initializer::Literal(v.clone()))).unwrap();
        assert_eq!(&ok, v.as_ref());
        let err =
            source_value(&src(DType::F32, &[1, 2], Initializer::Literal(v.clone()))).unwrap_err();
        assert!(err.contains("f32[2]") && err.contains("f32[1,2]"), "{err}");
        assert!(source_value(&src(DType::I32, &[2], Initializer::Literal(v.clone()))).is_err());
        let npy = Initializer::Npy {
            path: "w.npy".into(),
            value: v,
        };
        let err = source_value(&src(DType::F32, &[3], npy)).unwrap_err();
        assert!(err.contains("w.npy"), "{err}");
    }

    #[test]
    fn bad_declarations_are_errors() {
        let unknown = Source {
            ty: TensorType::f32(Shape::of(&[None, Some(2)])),
            init: Initializer::Zeros,
        };
        assert!(source_value(&unknown).unwrap_err().contains("unknown"));
        let huge = src(DType::F32, &[usize::MAX, 2], Initializer::Zeros);
        assert!(source_value(&huge).is_err());
        let too_big = src(DType::F32, &[1 << 40, 1 << 20], Initializer::Ones);
        assert!(source_value(&too_big).is_err());
    }

    #[test]
    fn assign_family() {
        let cur = t(&[2], &[1.0, 2.0]);
        let val = t(&[2], &[10.0, 20.0]);
        assert_eq!(assign(AssignOp::Assign, &cur, &val).unwrap(), val);
        assert_close(
            &assign(AssignOp::AssignAdd, &cur, &val).unwrap(),
            &[2],
            &[11.0, 22.0],
            0.0,
        );
        assert_close(
            &assign(AssignOp::AssignSub, &cur, &val).unwrap(),
            &[2],
            &[-9.0, -18.0],
            0.0,
        );
        let err = assign(AssignOp::AssignAdd, &cur, &t(&[1], &[1.0])).unwrap_err();
        assert!(err.contains("f32[1]") && err.contains("f32[2]"), "{err}");
        let ints = Tensor::new(&[2], Data::I32(vec![1, 2])).unwrap();
        assert_eq!(assign(AssignOp::Assign, &ints, &ints).unwrap(), ints);
        assert!(assign(AssignOp::AssignAdd, &ints, &ints).is_err());
    }

    fn scalars(values: &[f32]) -> Vec<Tensor> {
        values.iter().map(|&v| Tensor::scalar(v)).collect()
    }

    #[test]
    fn gradient_descent_and_momentum_arithmetic() {
        let (var, accum, grad) = (
            t(&[2], &[1.0, 2.0]),
            t(&[2], &[0.5, -1.0]),
            t(&[2], &[1.0, 2.0]),
        );
        let alpha = Tensor::scalar(0.5);
        let delta = t(&[2], &[2.0, -4.0]);
        let gd = apply(&Op::ApplyGradientDescent, &[&var, &alpha, &delta]).unwrap();
        assert_close(&gd, &[2], &[0.0, 4.0], 0.0);
        let s = scalars(&[0.1, 0.9]);
        let ins = [&var, &accum, &s[0], &grad, &s[1]];
        // accum = [0.5 * 0.9 + 1, -0.9 + 2] = [1.45, 1.1]; var -= 0.1 * accum.
        let plain = apply(
            &Op::ApplyMomentum {
                use_nesterov: false,
            },
            &ins,
        )
        .unwrap();
        assert_close(&plain, &[2, 2], &[0.855, 1.89, 1.45, 1.1], 1e-6);
        // var -= 0.1 * grad + 0.1 * 0.9 * accum.
        let nesterov = apply(&Op::ApplyMomentum { use_nesterov: true }, &ins).unwrap();
        assert_close(&nesterov, &[2, 2], &[0.7695, 1.701, 1.45, 1.1], 1e-6);
    }

    #[test]
    fn adam_arithmetic_folds_bias_correction_into_the_rate() {
        let (var, zero, grad) = (t(&[1], &[1.0]), t(&[1], &[0.0]), t(&[1], &[2.0]));
        // First step: beta powers 0.9 and 0.999, lr 0.1, beta1 0.9, beta2 0.999, eps 1e-8.
        let s = scalars(&[0.9, 0.999, 0.1, 0.9, 0.999, 1e-8]);
        let mut ins: Vec<&Tensor> = vec![&var, &zero, &zero];
        ins.extend(s.iter());
        ins.push(&grad);
        let out = apply(&Op::ApplyAdam, &ins).unwrap();
        // lr_t = 0.1 * sqrt(0.001) / 0.1; m = 0.2; v = 0.004; var -= lr_t * 0.2 / sqrt(0.004):
        // the first step moves by lr whatever the gradient's size.
        assert_close(&out, &[3, 1], &[0.9, 0.2, 0.004], 1e-6);
        let wrong = t(&[2], &[1.0, 1.0]);
        ins[9] = &wrong;
        let err = apply(&Op::ApplyAdam, &ins).unwrap_err();
        assert!(
            err.contains("grad is f32[2] but the variable is f32[1]"),
            "{err}"
        );
        let not_scalar = t(&[1], &[0.1]);
        ins[9] = &grad;
        ins[5] = &not_scalar;
        let err = apply(&Op::ApplyAdam, &ins).unwrap_err();
        assert!(
            err.contains("lr must be an f32 scalar, got f32[1]"),
            "{err}"
        );
    }
}
