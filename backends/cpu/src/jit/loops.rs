//! Loop-building helpers over `FunctionBuilder`: counted loops with block parameters, loops that
//! carry values (accumulators), and the vector-main-loop-plus-scalar-tail split.
//!
//! Loops are emitted rotated (`if start < end { do { body } while (iv += step) < end }`): one
//! branch per iteration and no header block, which Cranelift does not do for us. Induction
//! variables are signed `i64` element indices; comparisons are signed. When both bounds are
//! compile-time constants (the usual case: kernels are specialised to shapes) the entry guard is
//! folded away and an empty loop emits nothing. Each helper leaves the builder in the loop's exit
//! block, open for the next instructions.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// A loop bound: known when the kernel is compiled, or an `i64` SSA value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A constant.
    Const(i64),
    /// An `i64` value computed in the function.
    Dyn(Value),
}

impl From<i64> for Bound {
    fn from(v: i64) -> Bound {
        Bound::Const(v)
    }
}

impl From<Value> for Bound {
    fn from(v: Value) -> Bound {
        Bound::Dyn(v)
    }
}

impl Bound {
    /// The bound as an `i64` value (materialising a constant in the current block).
    pub fn value(self, b: &mut FunctionBuilder) -> Value {
        match self {
            Bound::Const(c) => b.ins().iconst(types::I64, c),
            Bound::Dyn(v) => v,
        }
    }
}

/// Memory flags for element loads and stores into kernel buffers: cannot trap (the runtime
/// guarantees extents), no alignment promise (buffers are only element-aligned).
pub fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Address of element `index` in a buffer: `base + index * elem_bytes`.
pub fn elem_addr(b: &mut FunctionBuilder, base: Value, index: Value, elem_bytes: i64) -> Value {
    let offset = if elem_bytes > 0 && (elem_bytes as u64).is_power_of_two() {
        b.ins()
            .ishl_imm_u(index, i64::from(elem_bytes.trailing_zeros()))
    } else {
        b.ins().imul_imm_s(index, elem_bytes)
    };
    b.ins().iadd(base, offset)
}

/// `for iv in (start..end).step_by(step) { body(b, iv) }`.
pub fn for_range(
    b: &mut FunctionBuilder,
    start: impl Into<Bound>,
    end: impl Into<Bound>,
    step: i64,
    body: impl FnOnce(&mut FunctionBuilder, Value) -> Result<(), String>,
) -> Result<(), String> {
    for_range_carry(b, start, end, step, &[], |b, iv, _| {
        body(b, iv).map(|()| Vec::new())
    })
    .map(|_| ())
}

/// A counted loop that threads values through iterations (e.g. accumulators).
///
/// `body(b, iv, carried)` returns the next iteration's values (same count and types as `init`);
/// the function returns the values after the last iteration (`init` when the loop is empty).
pub fn for_range_carry(
    b: &mut FunctionBuilder,
    start: impl Into<Bound>,
    end: impl Into<Bound>,
    step: i64,
    init: &[Value],
    body: impl FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Result<Vec<Value>, String>,
) -> Result<Vec<Value>, String> {
    if step <= 0 {
        return Err(format!("loop step must be positive, got {step}"));
    }
    let (start, end) = (start.into(), end.into());
    let known_nonempty = match (start, end) {
        (Bound::Const(s), Bound::Const(e)) if s >= e => return Ok(init.to_vec()),
        (Bound::Const(_), Bound::Const(_)) => true,
        _ => false,
    };
    let types: Vec<_> = init.iter().map(|&v| b.func.dfg.value_type(v)).collect();
    let start_v = start.value(b);
    let end_v = end.value(b);

    let body_block = b.create_block();
    b.append_block_param(body_block, types::I64);
    let exit_block = b.create_block();
    for &ty in &types {
        b.append_block_param(body_block, ty);
        b.append_block_param(exit_block, ty);
    }

    let enter: Vec<BlockArg> = std::iter::once(start_v)
        .chain(init.iter().copied())
        .map(Into::into)
        .collect();
    if known_nonempty {
        b.ins().jump(body_block, &enter);
    } else {
        let skip: Vec<BlockArg> = init.iter().copied().map(Into::into).collect();
        let go = b.ins().icmp(IntCC::SignedLessThan, start_v, end_v);
        b.ins().brif(go, body_block, &enter, exit_block, &skip);
    }

    b.switch_to_block(body_block);
    let params = b.block_params(body_block).to_vec();
    let next_vals = body(b, params[0], &params[1..])?;
    let next_types: Vec<_> = next_vals
        .iter()
        .map(|&v| b.func.dfg.value_type(v))
        .collect();
    if next_types != types {
        return Err(format!(
            "loop body returned carried values of types {next_types:?}, expected {types:?}"
        ));
    }
    let next = b.ins().iadd_imm_s(params[0], step);
    let again = b.ins().icmp(IntCC::SignedLessThan, next, end_v);
    let back: Vec<BlockArg> = std::iter::once(next)
        .chain(next_vals.iter().copied())
        .map(Into::into)
        .collect();
    let done: Vec<BlockArg> = next_vals.iter().copied().map(Into::into).collect();
    b.ins().brif(again, body_block, &back, exit_block, &done);
    b.seal_block(body_block);
    b.seal_block(exit_block);

    b.switch_to_block(exit_block);
    Ok(b.block_params(exit_block).to_vec())
}

/// Where a loop of `width`-wide steps from `start` must stop so that it never passes `end`:
/// `start + floor(max(end - start, 0) / width) * width`. `width` must be a power of two.
pub fn vector_end(
    b: &mut FunctionBuilder,
    start: impl Into<Bound>,
    end: impl Into<Bound>,
    width: i64,
) -> Result<Bound, String> {
    if width <= 0 || !(width as u64).is_power_of_two() {
        return Err(format!("vector width must be a power of two, got {width}"));
    }
    Ok(match (start.into(), end.into()) {
        (Bound::Const(s), Bound::Const(e)) => Bound::Const(s + (e - s).max(0) / width * width),
        (start, end) => {
            let (s, e) = (start.value(b), end.value(b));
            let n = b.ins().isub(e, s);
            let zero = b.ins().iconst(types::I64, 0);
            let positive = b.ins().icmp(IntCC::SignedGreaterThan, n, zero);
            let n = b.ins().select(positive, n, zero);
            let whole = b.ins().band_imm_s(n, -width);
            Bound::Dyn(b.ins().iadd(s, whole))
        }
    })
}

/// `start..end` split into a main loop of `width`-element steps (`main(b, iv)` handles elements
/// `iv..iv+width`) and a scalar tail (`tail(b, iv)` handles element `iv`). `width` must be a
/// power of two.
pub fn for_range_tail(
    b: &mut FunctionBuilder,
    start: impl Into<Bound>,
    end: impl Into<Bound>,
    width: i64,
    main: impl FnOnce(&mut FunctionBuilder, Value) -> Result<(), String>,
    tail: impl FnOnce(&mut FunctionBuilder, Value) -> Result<(), String>,
) -> Result<(), String> {
    let (start, end) = (start.into(), end.into());
    let split = vector_end(b, start, end, width)?;
    for_range(b, start, split, width, main)?;
    for_range(b, split, end, 1, tail)
}
