//! Normalisations along the channel axis: `batch_norm` (inference form: rank-1 statistics of
//! the channel count) and `lrn` (NHWC, the window over the last axis).

use super::elementwise::{channel_axis, check_per_channel};
use super::require_f32;
use crate::op::DataFormat;
use crate::shape::TensorType;

/// `batch_norm(x, scale, offset, mean, variance)`: x rank 4 (NHWC also allows rank >= 2, channels
/// last); the four statistics rank 1 of the channel count; epsilon finite and >= 0.
pub(super) fn batch_norm(
    epsilon: f32,
    format: DataFormat,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(format!("epsilon must be finite and >= 0, got {epsilon}"));
    }
    let x = inputs[0];
    require_f32("x", x)?;
    let c = channel_axis(format, x, 4)?;
    if format == DataFormat::Nchw && x.rank() != 4 {
        return Err(format!("x must have rank 4 with NCHW, got {x}"));
    }
    for (role, v) in ["scale", "offset", "mean", "variance"]
        .into_iter()
        .zip(&inputs[1..])
    {
        check_per_channel(role, v, x, x.shape.dim(c))?;
    }
    Ok(x.clone())
}

/// `lrn(x)`: f32 of rank 4 (NHWC, the window runs over the last axis); same type.
pub(super) fn lrn(beta: f32, x: &TensorType) -> Result<TensorType, String> {
    require_f32("x", x)?;
    if x.rank() != 4 {
        return Err(format!("x must have rank 4 (NHWC), got {x}"));
    }
    if !beta.is_finite() {
        return Err(format!("beta must be finite, got {beta}"));
    }
    Ok(x.clone())
}

#[cfg(test)]
mod tests {
    use super::super::{assert_err, run, ty};
    use crate::op::{DataFormat, Float, Op};

    #[test]
    fn batch_norm_channels() {
        let bn = |f| Op::BatchNorm {
            epsilon: Float(0.001),
            data_format: f,
        };
        let (nhwc, nchw) = (bn(DataFormat::Nhwc), bn(DataFormat::Nchw));
        let stats = ["f32[8]", "f32[8]", "f32[8]", "f32[8]"];
        let with = |x: &'static str| {
            let mut v = vec![x];
            v.extend(stats);
            v
        };
        assert_eq!(
            run(&nhwc, &with("f32[?,4,4,8]")).unwrap(),
            ty("f32[?,4,4,8]")
        );
        assert_eq!(run(&nhwc, &with("f32[3,8]")).unwrap(), ty("f32[3,8]"));
        assert_eq!(
            run(&nchw, &with("f32[2,8,4,4]")).unwrap(),
            ty("f32[2,8,4,4]")
        );
        assert_err(&nchw, &with("f32[2,8,4]"), &["rank 4", "NCHW"]);
        assert_err(&nhwc, &with("f32[8]"), &["rank >= 2"]);
        assert_err(
            &nhwc,
            &["f32[1,2,2,8]", "f32[8]", "f32[8]", "f32[7]", "f32[8]"],
            &[
                "x is f32[1,2,2,8] (8 channels)",
                "mean is f32[7] (7 values)",
            ],
        );
        assert_err(
            &nhwc,
            &["f32[1,2,2,8]", "f32[8]", "f32[8]", "f32[8]", "f32[8,1]"],
            &["variance must be rank 1"],
        );
        let neg = Op::BatchNorm {
            epsilon: Float(-1.0),
            data_format: DataFormat::Nhwc,
        };
        assert_err(&neg, &with("f32[1,2,2,8]"), &["epsilon", ">= 0"]);
        let nan = Op::BatchNorm {
            epsilon: Float(f32::NAN),
            data_format: DataFormat::Nhwc,
        };
        assert_err(&nan, &with("f32[1,2,2,8]"), &["epsilon"]);
    }
}
