//! Shared harness of the codegen_data_* tests: builds a one-op graph on placeholders, lowers it,
//! JIT-compiles the kernel whose main op is the graph's op with the given `define_*` entry, runs
//! it on buffers surrounded by canaries and returns the result next to `eval_op`'s.

#![allow(dead_code)]

use kiln_cpu::jit::{Jit, JitOptions, KernelId};
use kiln_ir::backend::CompileRequest;
use kiln_ir::eval::eval_op;
use kiln_ir::lower::lower;
use kiln_ir::program::{BufferKind, Kernel, Program};
use kiln_ir::{DType, Data, Graph, Op, Shape, Tensor, TensorType};

/// A `define_*` entry point.
pub type Define = fn(&mut Jit, &Program, &Kernel) -> Result<KernelId, String>;

/// Guard bytes on each side of every buffer.
const GUARD: usize = 64;
/// Byte the guards are filled with.
const CANARY: u8 = 0xA5;

/// Little-endian bytes of a tensor's elements.
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
    }
}

/// A tensor of `dtype` and `dims` from little-endian bytes.
pub fn from_bytes(dtype: DType, dims: &[usize], bytes: &[u8]) -> Tensor {
    let data = match dtype {
        DType::F32 => Data::F32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::I32 => Data::I32(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::I64 => Data::I64(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
    };
    Tensor::new(dims, data).unwrap()
}

/// A buffer with `GUARD` canary bytes on both sides (8-byte aligned storage).
struct Guarded {
    words: Vec<u64>,
    len: usize,
}

impl Guarded {
    fn new(bytes: &[u8]) -> Guarded {
        let words = vec![u64::from_ne_bytes([CANARY; 8]); (2 * GUARD + bytes.len()).div_ceil(8)];
        let len = bytes.len();
        let mut g = Guarded { words, len };
        g.bytes_mut()[GUARD..GUARD + len].copy_from_slice(bytes);
        g
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: u64 storage reinterpreted as bytes, same extent.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.words.len() * 8)
        }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe {
            std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.words.len() * 8)
        }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.bytes_mut()[GUARD..].as_mut_ptr()
    }
    fn data(&self) -> &[u8] {
        &self.bytes()[GUARD..GUARD + self.len]
    }
    fn check_guards(&self, what: &str) {
        let b = self.bytes();
        assert!(
            b[..GUARD].iter().all(|&x| x == CANARY),
            "{what}: guard before was written"
        );
        assert!(
            b[GUARD + self.len..].iter().all(|&x| x == CANARY),
            "{what}: guard after was written"
        );
    }
}

/// The JIT result of the op's kernel and the reference value.
pub struct Outcome {
    /// What the generated kernel computed.
    pub got: Tensor,
    /// `eval_op` on the same inputs.
    pub want: Tensor,
    /// The kernel's main op (to check how lowering normalised attributes).
    pub main: Option<Op>,
}

/// Builds `op(inputs...)` (inputs as placeholders, or with `variable` the first operand is a
/// variable), lowers it, compiles the op's kernel with `define` and runs it. With `retype` the
/// graph is built in f32 (for ops whose graph form accepts only f32) and every buffer of the
/// lowered program is then given the inputs' dtype, to exercise dtype-generic kernels.
pub fn run_op_full(
    op: Op,
    inputs: &[Tensor],
    variable: bool,
    retype: bool,
    define: Define,
) -> Outcome {
    run_op_calls(op, inputs, variable, retype, define, None)
}

/// [`run_op_full`] with a ranged kernel (`define` makes one that takes a trailing
/// `[start, end)` pair of `i64`): called once per range of `ranges`, in order, on the same
/// buffers.
pub fn run_op_ranges(op: Op, inputs: &[Tensor], define: Define, ranges: &[[i64; 2]]) -> Outcome {
    run_op_calls(op, inputs, false, false, define, Some(ranges))
}

fn run_op_calls(
    op: Op,
    inputs: &[Tensor],
    variable: bool,
    retype: bool,
    define: Define,
    ranges: Option<&[[i64; 2]]>,
) -> Outcome {
    let mut g = Graph::new();
    let mut ids = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let dtype = if retype { DType::F32 } else { t.dtype() };
        let ty = TensorType::new(dtype, Shape::known(t.dims()));
        let node_op = if variable && i == 0 {
            Op::Var(kiln_ir::op::Source {
                ty,
                init: kiln_ir::Initializer::Zeros,
            })
        } else {
            Op::Input(ty)
        };
        ids.push(g.add(format!("in{i}"), node_op, &[]).expect("input node"));
    }
    let out = g.add("out", op.clone(), &ids).expect("op node");
    let (variables, feeds) = if variable {
        (vec![ids[0]], ids[1..].to_vec())
    } else {
        (Vec::new(), ids.clone())
    };
    let request = CompileRequest {
        graph: &g,
        feeds,
        variables,
        fetches: vec![out],
        targets: Vec::new(),
    };
    let mut program = lower(&request).expect("lower");
    if retype {
        for b in &mut program.buffers {
            b.dtype = inputs[0].dtype();
        }
    }
    let kernel = program
        .kernels
        .iter()
        .find(|k| k.main.is_some())
        .unwrap_or_else(|| panic!("no main-op kernel in\n{program}"))
        .clone();
    let mut jit = Jit::with_options(JitOptions::default()).expect("jit");
    let id = define(&mut jit, &program, &kernel).unwrap_or_else(|e| panic!("define: {e}"));
    let code = jit.finish().expect("finish");
    let compiled = code.kernel(id).expect("kernel");

    let source = |kind: &BufferKind| -> &Tensor {
        match kind {
            BufferKind::Feed(i) => &inputs[i + usize::from(variable)],
            BufferKind::Variable(_) => &inputs[0],
            other => panic!("unexpected input buffer kind {other:?}"),
        }
    };
    let mut bufs: Vec<Guarded> = kernel
        .inputs
        .iter()
        .map(|&b| Guarded::new(&to_bytes(source(&program.buffer(b).kind))))
        .collect();
    let out_buf = program.buffer(kernel.output);
    bufs.push(Guarded::new(&vec![0xFF; out_buf.size_bytes()]));
    let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|g| g.ptr()).collect();
    match ranges {
        // SAFETY: every pointer has the extent of its buffer in the program (plus guards).
        None => unsafe { compiled.call(&ptrs) }.expect("call"),
        Some(ranges) => {
            for range in ranges {
                let mut range = *range;
                let mut args = ptrs.clone();
                args.push(range.as_mut_ptr().cast());
                // SAFETY: as above, and the kernel reads its range from the last pointer.
                unsafe { compiled.call(&args) }.expect("call");
            }
        }
    }
    for (i, g) in bufs.iter().enumerate() {
        g.check_guards(&format!("buffer {i} of {}", kernel.name));
    }
    let got = from_bytes(out_buf.dtype, &out_buf.dims, bufs.last().unwrap().data());
    // Inputs must be untouched.
    for (i, &b) in kernel.inputs.iter().enumerate() {
        assert_eq!(
            bufs[i].data(),
            &to_bytes(source(&program.buffer(b).kind))[..],
            "input {i} changed"
        );
    }
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let want = eval_op(&op, &refs).expect("eval_op");
    Outcome {
        got,
        want,
        main: kernel.main,
    }
}

/// [`run_op_full`] without retyping.
pub fn run_op_with(op: Op, inputs: &[Tensor], variable: bool, define: Define) -> Outcome {
    run_op_full(op, inputs, variable, false, define)
}

/// [`run_op_with`] on placeholders.
pub fn run_op(op: Op, inputs: &[Tensor], define: Define) -> Outcome {
    run_op_with(op, inputs, false, define)
}

/// Asserts bit-identical results (dims, dtype and every byte).
pub fn assert_bit_exact(o: &Outcome, what: &str) {
    assert_eq!(o.got.dims(), o.want.dims(), "{what}: dims");
    assert_eq!(o.got.dtype(), o.want.dtype(), "{what}: dtype");
    assert!(
        to_bytes(&o.got) == to_bytes(&o.want),
        "{what}: values differ\n got {:?}\nwant {:?}",
        o.got,
        o.want
    );
}

/// Asserts results within `abs + rel * |want|` (kiln_ir::compare: dims, dtype, NaN and
/// infinities in the same places; `rel == abs == 0` means the same bits).
#[track_caller]
pub fn assert_close(o: &Outcome, rel: f32, abs: f32, what: &str) {
    let tol = kiln_ir::compare::Tolerance::new(f64::from(abs), f64::from(rel), 0.0);
    kiln_ir::compare::assert_close(&o.got, &o.want, tol, what);
}
