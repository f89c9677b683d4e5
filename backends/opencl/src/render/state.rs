//! The state family: `assign`, `assign_add` and `assign_sub` compute a variable's new value,
//! one work-item per element (sources are buffers and get no kernel). `assign` accepts any
//! dtype (the element type of the C pointers follows the buffers); `assign_add`/`assign_sub`
//! are f32. The optimizer updates (`apply_*`) compute the new values of all their variables
//! in one work-item per element, stored one after another, with the reference's operations in
//! its order (`FP_CONTRACT OFF` keeps them unfused).

use super::kernel::KernelSrc;
use super::movement::same_dtype;
use super::{Body, Limits, group_1d, per_element};
use kiln_ir::DType;
use kiln_ir::op::AssignOp;
use kiln_ir::op::Op;
use kiln_ir::shape::fmt_dims;
use std::fmt::Write as _;

/// `assign*(var, value)`: the variable's new value.
pub(super) fn assign(
    src: &mut KernelSrc<'_>,
    limits: &Limits,
    op: AssignOp,
) -> Result<Body, String> {
    let ty = same_dtype(src, 1)?;
    same_dtype(src, 0)?;
    if src.input(0)?.dims != src.out().dims || src.input(1)?.dims != src.out().dims {
        return Err(format!(
            "value {} does not match variable {}",
            fmt_dims(&src.input(1)?.dims),
            fmt_dims(&src.input(0)?.dims)
        ));
    }
    if op != AssignOp::Assign && src.out().dtype != DType::F32 {
        return Err(format!("{} needs f32, got {}", op.name(), src.out().dtype));
    }
    let cur = src.input_name(0)?;
    let val = src.input_name(1)?;
    let value = match op {
        AssignOp::Assign => format!("{val}[gid]"),
        AssignOp::AssignAdd => format!("{cur}[gid] + {val}[gid]"),
        AssignOp::AssignSub => format!("{cur}[gid] - {val}[gid]"),
    };
    per_element(src, limits, &format!("    const {ty} m = {value};\n"))
}

/// `apply_*(...)`: one work-item per variable element writes the `k` new values at `gid`,
/// `n + gid`, ... (see [`kiln_ir::eval::apply_update`] for the arithmetic, mirrored here).
pub(super) fn apply(src: &mut KernelSrc<'_>, limits: &Limits, op: &Op) -> Result<Body, String> {
    let names = op
        .apply_operand_names()
        .ok_or_else(|| format!("{} is not an optimizer update", op.name()))?;
    let k = op.updated_variables();
    let var = src.input(0)?;
    let n = var.numel();
    if src.out().numel() != n * k || src.out().dtype != DType::F32 {
        return Err(format!(
            "output {} does not hold {k} values of the variable {}",
            fmt_dims(&src.out().dims),
            fmt_dims(&var.dims)
        ));
    }
    let it = src.it;
    let mut code = String::new();
    let _ = writeln!(code, "    const {it} gid = ({it})get_global_id(0);");
    let _ = writeln!(code, "    if (gid >= {n}) return;");
    for (i, name) in names.iter().enumerate() {
        let b = src.input(i)?;
        let tensor = i < k || matches!(*name, "grad" | "delta");
        let ok = b.dtype == DType::F32
            && if tensor {
                b.dims == var.dims
            } else {
                b.dims.is_empty()
            };
        if !ok {
            return Err(format!(
                "{name} is {}{}, expected f32",
                b.dtype,
                fmt_dims(&b.dims)
            ));
        }
        let c = src.input_name(i)?;
        let at = if tensor { "gid" } else { "0" };
        let _ = writeln!(code, "    float {name} = {c}[{at}];");
    }
    let update = match op {
        Op::ApplyGradientDescent => "    var = var - delta * alpha;\n".to_string(),
        Op::ApplyMomentum { use_nesterov } => {
            let step = if *use_nesterov {
                "grad * lr + accum * momentum * lr"
            } else {
                "accum * lr"
            };
            format!("    accum = accum * momentum + grad;\n    var = var - ({step});\n")
        }
        Op::ApplyAdam => concat!(
            "    const float alpha = lr * sqrt(1.0f - beta2_power) / (1.0f - beta1_power);\n",
            "    m = m + (grad - m) * (1.0f - beta1);\n",
            "    v = v + (grad * grad - v) * (1.0f - beta2);\n",
            "    var = var - (m * alpha) / (sqrt(v) + epsilon);\n",
        )
        .to_string(),
        _ => return Err(format!("{} is not an optimizer update", op.name())),
    };
    code.push_str(&update);
    let out = src.out_name();
    for (i, name) in names.iter().take(k).enumerate() {
        let _ = writeln!(code, "    {out}[{} + gid] = {name};", i * n);
    }
    let local = group_1d(limits);
    Ok(Body {
        attrs: String::new(),
        code,
        global: vec![n.div_ceil(local) * local],
        local: vec![local],
        failure: None,
    })
}
