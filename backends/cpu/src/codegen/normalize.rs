//! Main-stage kernels of the normalize family: `batch_norm(x, scale, offset, mean, variance)`,
//! inference form:
//! `out = (x - mean[c]) * (scale[c] / sqrt(variance[c] + epsilon)) + offset[c]` along the
//! channel axis (last for NHWC, axis 1 for NCHW, any rank the op accepts). (`lrn`, the other
//! normalize op, runs on the host: see `crate::host`.)
//!
//! Two layouts of work, both over "rows" (the outer units of the range ABI):
//! - Channels innermost (NHWC, or NCHW of rank 2): a row is one position's `C` contiguous
//!   channels. Rows are processed in tiles; within a tile each block of four channels computes
//!   its factors once (one sqrt and divide per block per tile, not per element) and then sweeps
//!   the tile's rows.
//! - Channels outer (NCHW): a row is the contiguous plane of one (batch, channel), so the
//!   factors are scalars splatted across an f32x4 loop with a scalar tail.
//!
//! Threading is the window kernels' range ABI (see [`super::window`]), whose work-range reader
//! and element-index helpers this file shares: [`define_normalize_range`] appends a pointer to
//! two `i64` `[start, end)` selecting the rows [`normalize_outer_extent`] counts, and disjoint
//! ranges write disjoint output elements.

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::op::{DataFormat, Op};
use kiln_ir::program::{Kernel, Program};
use kiln_ir::shape::fmt_dims;

use super::window::geom::{Ix, Lin, imin, load, store};
use super::window::work_range;
use crate::jit::loops::{Bound, for_range, for_range_tail};
use crate::jit::{FnEnv, Jit, KernelId};
use crate::math::{MathConfig, emit_f32_const, emit_mul_add};

/// Defines the main-stage kernel of a batch_norm kernel, computing the whole output.
/// Buffers: `kernel.inputs`, then the output.
pub fn define_normalize(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<KernelId, String> {
    define(jit, program, kernel, false)
}

/// Like [`define_normalize`] with one extra last buffer: a pointer to two `i64` `[start, end)`
/// selecting the rows (see [`normalize_outer_extent`]) this call computes.
pub fn define_normalize_range(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
) -> Result<KernelId, String> {
    define(jit, program, kernel, true)
}

/// Number of outer work units (rows of the channel loop) of a batch_norm kernel. An error
/// names the kernel when it is not batch_norm or its shapes are invalid.
pub fn normalize_outer_extent(program: &Program, kernel: &Kernel) -> Result<usize, String> {
    let rows = Plan::of(program, kernel)?.rows;
    usize::try_from(rows).map_err(|_| format!("kernel '{}': negative extent", kernel.name))
}

fn define(
    jit: &mut Jit,
    program: &Program,
    kernel: &Kernel,
    ranged: bool,
) -> Result<KernelId, String> {
    let n_bufs = kernel.inputs.len() + 1 + usize::from(ranged);
    let suffix = if ranged { "__range" } else { "" };
    let name = format!("{}__{}{suffix}", kernel.name, kernel.op_name());
    let plan = Plan::of(program, kernel)?;
    jit.define_kernel(&name, n_bufs, |b, env| {
        let (start, end) = work_range(b, env, ranged, kernel.inputs.len() + 1, plan.rows)?;
        plan.emit(b, env, start, end)
    })
}

/// Elements per tile in the channels-innermost layout (keeps a tile in L1).
const TILE_ELEMS: i64 = 2048;

/// Shape facts of one batch_norm kernel.
#[derive(Clone, Debug)]
struct Plan {
    /// Outer work units.
    rows: i64,
    /// Channels.
    c: i64,
    /// Elements after the channel axis (1 when channels are innermost).
    inner: i64,
    epsilon: f32,
}

impl Plan {
    /// Reads and checks the shapes of a batch_norm kernel.
    fn of(program: &Program, kernel: &Kernel) -> Result<Plan, String> {
        let ctx = |m: String| format!("kernel '{}' (batch_norm): {m}", kernel.name);
        let Some(Op::BatchNorm {
            epsilon,
            data_format,
        }) = kernel.main
        else {
            return Err(ctx(format!("{} is not batch_norm", kernel.op_name())));
        };
        if kernel.inputs.len() != 5 {
            return Err(ctx(format!(
                "expected 5 operands, got {}",
                kernel.inputs.len()
            )));
        }
        super::require_f32_buffers(program, kernel).map_err(ctx)?;
        let dims = &program.buffer(kernel.inputs[0]).dims;
        let axis = match data_format {
            DataFormat::Nhwc if !dims.is_empty() => dims.len() - 1,
            DataFormat::Nchw if dims.len() >= 2 => 1,
            _ => {
                return Err(ctx(format!(
                    "input {} has no channel axis for {}",
                    fmt_dims(dims),
                    data_format.name()
                )));
            }
        };
        let c = dims[axis];
        for (i, name) in ["scale", "offset", "mean", "variance"].iter().enumerate() {
            let pd = &program.buffer(kernel.inputs[i + 1]).dims;
            if pd.as_slice() != [c] {
                return Err(ctx(format!(
                    "{name} must be [{c}] for input {}, got {}",
                    fmt_dims(dims),
                    fmt_dims(pd)
                )));
            }
        }
        let od = &program.buffer(kernel.output).dims;
        if od != dims {
            return Err(ctx(format!(
                "output buffer is {} but the input is {}",
                fmt_dims(od),
                fmt_dims(dims)
            )));
        }
        let prod = |d: &[usize]| {
            d.iter()
                .try_fold(1i64, |n, &x| {
                    i64::try_from(x).ok().and_then(|x| n.checked_mul(x))
                })
                .ok_or_else(|| ctx(format!("input {} is too large", fmt_dims(dims))))
        };
        let outer = prod(&dims[..axis])?;
        let inner = prod(&dims[axis + 1..])?;
        let c = prod(&dims[axis..=axis])?;
        let rows = if inner == 1 { outer } else { outer * c };
        Ok(Plan {
            rows,
            c,
            inner,
            epsilon: epsilon.0,
        })
    }

    /// Emits rows `start..end`.
    fn emit(
        &self,
        b: &mut FunctionBuilder,
        env: &mut FnEnv,
        start: Bound,
        end: Bound,
    ) -> Result<(), String> {
        let bufs: Vec<Value> = (0..6).map(|i| env.buffer(i)).collect::<Result<_, _>>()?;
        let cfg = env.math();
        if self.rows == 0 || self.c == 0 || self.inner == 0 {
            return Ok(());
        }
        if self.inner == 1 {
            self.emit_rows(b, cfg, &bufs, start, end)
        } else {
            self.emit_planes(b, cfg, &bufs, start, end)
        }
    }

    /// `(mean, factor, offset)` of channel `c` as `ty` values.
    fn factors(
        &self,
        b: &mut FunctionBuilder,
        bufs: &[Value],
        ty: Type,
        c: Lin,
    ) -> Result<[Value; 3], String> {
        let [scale, offset, mean, var] = [bufs[1], bufs[2], bufs[3], bufs[4]];
        let s = load(b, ty, scale, c);
        let o = load(b, ty, offset, c);
        let m = load(b, ty, mean, c);
        let v = load(b, ty, var, c);
        let eps = emit_f32_const(b, ty, self.epsilon)?;
        let ve = b.ins().fadd(v, eps);
        let root = b.ins().sqrt(ve);
        let a = b.ins().fdiv(s, root);
        Ok([m, a, o])
    }

    fn apply(
        b: &mut FunctionBuilder,
        cfg: MathConfig,
        bufs: &[Value],
        ty: Type,
        at: Lin,
        f: [Value; 3],
    ) -> Result<(), String> {
        let x = load(b, ty, bufs[0], at);
        let d = b.ins().fsub(x, f[0]);
        let y = emit_mul_add(b, cfg, d, f[1], f[2])?;
        store(b, bufs[5], at, y);
        Ok(())
    }

    fn emit_rows(
        &self,
        b: &mut FunctionBuilder,
        cfg: MathConfig,
        bufs: &[Value],
        start: Bound,
        end: Bound,
    ) -> Result<(), String> {
        let tile = (TILE_ELEMS / self.c).max(1);
        let c = self.c;
        let cvec = c / 4 * 4;
        let end_v = end.value(b);
        for_range(b, start, Bound::Dyn(end_v), tile, |b, r0| {
            let t = b.ins().iadd_imm_s(r0, tile);
            let r1 = imin(b, t, end_v);
            let sweep = |b: &mut FunctionBuilder, ch: Lin, ty: Type| -> Result<(), String> {
                let f = self.factors(b, bufs, ty, ch)?;
                for_range(b, r0, r1, 1, |b, r| {
                    let at = ch.plus(b, Ix::D(r), c);
                    Self::apply(b, cfg, bufs, ty, at, f)
                })
            };
            for_range(b, 0i64, cvec, 4, |b, ch| {
                sweep(b, Lin { c: 0, v: Some(ch) }, types::F32X4)
            })?;
            for ch in cvec..c {
                sweep(b, Lin::c(ch), types::F32)?;
            }
            Ok(())
        })
    }

    fn emit_planes(
        &self,
        b: &mut FunctionBuilder,
        cfg: MathConfig,
        bufs: &[Value],
        start: Bound,
        end: Bound,
    ) -> Result<(), String> {
        let inner = self.inner;
        for_range(b, start, end, 1, |b, r| {
            let ch = b.ins().urem_imm_u(r, self.c);
            let [m, a, o] = self.factors(b, bufs, types::F32, Lin { c: 0, v: Some(ch) })?;
            let fv = [m, a, o].map(|s| b.ins().splat(types::F32X4, s));
            let row = Lin::c(0).plus(b, Ix::D(r), inner);
            for_range_tail(
                b,
                0i64,
                inner,
                4,
                |b, i| {
                    let at = row.plus(b, Ix::D(i), 1);
                    Self::apply(b, cfg, bufs, types::F32X4, at, fv)
                },
                |b, i| {
                    let at = row.plus(b, Ix::D(i), 1);
                    Self::apply(b, cfg, bufs, types::F32, at, [m, a, o])
                },
            )
        })
    }
}
