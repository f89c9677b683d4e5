//! Shared helpers of the epilogue tests: a seeded generator, load patterns, a [`Case`] (output
//! dims, loads, steps) turned into a one-kernel [`Program`], buffers with canaries, the
//! independent reference (gather through strides + `eval_op` per step on whole tensors) and
//! [`check_case`] (one call against the reference, then split ranges bit-equal to it).
#![allow(dead_code)]

use kiln_cpu::codegen::elementwise::{define_epilogue, epilogue_n_buffers, epilogue_outer_extent};
use kiln_cpu::jit::{CompiledKernel, Jit, JitOptions};
use kiln_ir::eval::eval_op;
use kiln_ir::op::{BinaryOp, Op, UnaryOp};
use kiln_ir::program::{Buffer, BufferId, BufferKind, Expr, Kernel, Load, Operand, Program, Step};
use kiln_ir::{DType, Tensor};

pub const CANARY: u32 = 0x7fc0_dead;
pub const GUARD: usize = 8;

/// A tiny deterministic generator (xorshift64*), so cases are reproducible by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn unary_ops() -> Vec<UnaryOp> {
    UnaryOp::ALL.to_vec()
}

pub fn binary_ops() -> Vec<BinaryOp> {
    vec![
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Pow,
    ]
}

/// One load: its strides and which buffer it reads.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub strides: Vec<usize>,
    /// Index of the buffer among the case's load buffers (two loads may share one).
    pub buffer: usize,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub dims: Vec<usize>,
    pub loads: Vec<LoadSpec>,
    /// Element count of each distinct load buffer.
    pub buffers: Vec<usize>,
    pub steps: Vec<Step>,
    pub result: Operand,
    pub elementwise: bool,
    /// Values of loads and main are uniform in `lo..hi`.
    pub lo: f32,
    pub hi: f32,
}

pub fn row_major(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

pub fn reach(dims: &[usize], strides: &[usize]) -> usize {
    dims.iter().zip(strides).map(|(&d, &s)| (d - 1) * s).sum()
}

/// Strides for one of the load patterns over `dims`.
pub fn pattern(rng: &mut Rng, dims: &[usize], kind: usize) -> Vec<usize> {
    let r = dims.len();
    match kind {
        // contiguous
        0 => row_major(dims),
        // bias over the last axis
        1 => (0..r).map(|k| usize::from(k + 1 == r)).collect(),
        // scalar
        2 => vec![0; r],
        // random broadcast mask (rows, columns, anything): row-major over the kept axes
        3 => {
            let keep: Vec<bool> = (0..r).map(|_| rng.below(2) == 0).collect();
            let kept: Vec<usize> = (0..r).map(|k| if keep[k] { dims[k] } else { 1 }).collect();
            let s = row_major(&kept);
            (0..r).map(|k| if keep[k] { s[k] } else { 0 }).collect()
        }
        // transposed: the buffer stores the axes in reverse order
        4 => {
            let rev: Vec<usize> = dims.iter().rev().copied().collect();
            let s = row_major(&rev);
            (0..r).map(|k| s[r - 1 - k]).collect()
        }
        // strided: every other element along every axis
        _ => row_major(dims).iter().map(|s| s * 2).collect(),
    }
}

pub fn random_dims(rng: &mut Rng) -> Vec<usize> {
    const SIZES: [usize; 8] = [1, 2, 3, 5, 7, 9, 13, 17];
    let rank = rng.below(5);
    (0..rank).map(|_| SIZES[rng.below(SIZES.len())]).collect()
}

/// Ops that keep positive values positive and are well conditioned there, so a chain of them
/// cannot amplify the few-ulp differences of the inline transcendentals past the tolerance.
pub fn chain_op(rng: &mut Rng, operands: &[Operand]) -> Step {
    let pick = |rng: &mut Rng| operands[rng.below(operands.len())];
    const UNARY: [UnaryOp; 9] = [
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Square,
    ];
    const BINARY: [BinaryOp; 5] = [
        BinaryOp::Add,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ];
    if rng.below(2) == 0 {
        Step::Unary(UNARY[rng.below(UNARY.len())], pick(rng))
    } else {
        Step::Binary(BINARY[rng.below(BINARY.len())], pick(rng), pick(rng))
    }
}

pub fn random_case(rng: &mut Rng) -> Case {
    let dims = random_dims(rng);
    let elementwise = rng.below(3) == 0;
    let n_loads = rng.below(4) + usize::from(elementwise);
    let mut loads: Vec<LoadSpec> = Vec::new();
    let mut buffers: Vec<usize> = Vec::new();
    for _ in 0..n_loads {
        let kind = rng.below(6);
        let strides = pattern(rng, &dims, kind);
        let need = if dims.contains(&0) {
            1
        } else {
            reach(&dims, &strides) + 1
        };
        // Sometimes read a buffer another load already reads (with its own strides).
        let buffer = match buffers.iter().position(|&n| n >= need) {
            Some(b) if rng.below(3) == 0 => b,
            _ => {
                buffers.push(need + rng.below(3));
                buffers.len() - 1
            }
        };
        loads.push(LoadSpec { strides, buffer });
    }
    let mut operands: Vec<Operand> = (0..n_loads).map(Operand::Load).collect();
    if !elementwise {
        operands.push(Operand::Main);
    }
    let mut steps = Vec::new();
    for i in 0..rng.below(6) + 1 {
        steps.push(chain_op(rng, &operands));
        operands.push(Operand::Step(i));
    }
    let result = if rng.below(8) == 0 {
        operands[rng.below(operands.len())]
    } else {
        Operand::Step(steps.len() - 1)
    };
    Case {
        dims,
        loads,
        buffers,
        steps,
        result,
        elementwise,
        lo: 0.5,
        hi: 2.0,
    }
}

pub fn buffer(name: &str, dims: &[usize], kind: BufferKind) -> Buffer {
    Buffer {
        name: name.to_string(),
        dtype: DType::F32,
        dims: dims.iter().copied().collect(),
        kind,
    }
}

pub fn program_of(case: &Case) -> Program {
    let mut buffers = vec![buffer("out", &case.dims, BufferKind::Output(0))];
    for (i, &n) in case.buffers.iter().enumerate() {
        buffers.push(buffer(&format!("in{i}"), &[n], BufferKind::Feed(i)));
    }
    let kernel = Kernel {
        name: "k".to_string(),
        nodes: vec!["k".to_string()],
        main: if case.elementwise {
            None
        } else {
            Some(Op::Reshape {
                shape: case.dims.iter().map(|&d| d as i64).collect(),
            })
        },
        inputs: Vec::new(),
        epilogue: Expr {
            loads: case
                .loads
                .iter()
                .map(|l| Load {
                    buffer: BufferId(l.buffer as u32 + 1),
                    strides: l.strides.clone(),
                })
                .collect(),
            steps: case.steps.clone(),
            result: case.result,
        },
        output: BufferId(0),
    };
    Program {
        buffers,
        kernels: vec![kernel],
        feeds: (1..=case.buffers.len() as u32).map(BufferId).collect(),
        variables: Vec::new(),
        fetches: vec![BufferId(0)],
        updates: Vec::new(),
        arena_bytes: 0,
        sum_temporary_bytes: 0,
    }
}

pub fn compile(program: &Program) -> Result<Option<CompiledKernel>, String> {
    let mut jit = Jit::with_options(JitOptions::default())?;
    let Some(id) = define_epilogue(&mut jit, program, &program.kernels[0])? else {
        return Ok(None);
    };
    jit.finish()?.kernel(id).map(Some)
}

/// `values` surrounded by GUARD canaries on each side.
pub fn guarded(values: &[f32]) -> Vec<f32> {
    let mut v = vec![f32::from_bits(CANARY); values.len() + 2 * GUARD];
    v[GUARD..GUARD + values.len()].copy_from_slice(values);
    v
}

pub fn check_guards(v: &[f32], what: &str) {
    let n = v.len() - 2 * GUARD;
    let ok = v[..GUARD]
        .iter()
        .chain(&v[GUARD + n..])
        .all(|x| x.to_bits() == CANARY);
    assert!(ok, "{what}: canary overwritten");
}

pub struct Data {
    pub main: Vec<f32>,
    pub inputs: Vec<Vec<f32>>,
}

pub fn data_of(case: &Case, seed: u64) -> Data {
    let numel: usize = case.dims.iter().product();
    let uni = |n: usize, s: u64| {
        Tensor::uniform(&[n], case.lo, case.hi, s)
            .into_f32()
            .expect("f32 tensor")
    };
    Data {
        main: uni(numel, seed),
        inputs: case
            .buffers
            .iter()
            .enumerate()
            .map(|(i, &n)| uni(n, seed + 1 + i as u64))
            .collect(),
    }
}

/// Independent reference: gather + `eval_op` per step on whole tensors of the output's dims.
pub fn reference(case: &Case, data: &Data) -> Vec<f32> {
    let dims = &case.dims;
    let numel: usize = dims.iter().product();
    let gather = |l: &LoadSpec| -> Tensor {
        let src = &data.inputs[l.buffer];
        let vals = (0..numel)
            .map(|flat| {
                let (mut rest, mut off) = (flat, 0);
                for k in (0..dims.len()).rev() {
                    off += (rest % dims[k]) * l.strides[k];
                    rest /= dims[k];
                }
                src[off]
            })
            .collect();
        Tensor::from_vec(dims, vals).expect("gathered tensor")
    };
    let loads: Vec<Tensor> = case.loads.iter().map(gather).collect();
    let main = Tensor::from_vec(dims, data.main.clone()).expect("main tensor");
    let mut steps: Vec<Tensor> = Vec::new();
    let get = |o: Operand, steps: &[Tensor]| -> Tensor {
        match o {
            Operand::Main => main.clone(),
            Operand::Load(j) => loads[j].clone(),
            Operand::Step(i) => steps[i].clone(),
        }
    };
    for s in &case.steps {
        let t = match *s {
            Step::Unary(op, x) => eval_op(&Op::Unary(op), &[&get(x, &steps)]),
            Step::Binary(op, x, y) => eval_op(&Op::Binary(op), &[&get(x, &steps), &get(y, &steps)]),
        };
        steps.push(t.expect("reference step"));
    }
    get(case.result, &steps).into_f32().expect("f32 result")
}

/// Runs `kernel` over `ranges` (None: one call with a null range pointer); returns the output.
pub fn run(
    kernel: &CompiledKernel,
    case: &Case,
    data: &Data,
    ranges: Option<&[[i64; 2]]>,
) -> Vec<f32> {
    let mut out = guarded(&data.main);
    let mut inputs: Vec<Vec<f32>> = data.inputs.iter().map(|v| guarded(v)).collect();
    let mut ptrs: Vec<*mut u8> = vec![unsafe { out.as_mut_ptr().add(GUARD) } as *mut u8];
    for l in &case.loads {
        // SAFETY (for the add): GUARD < len of every guarded vector.
        ptrs.push(unsafe { inputs[l.buffer].as_mut_ptr().add(GUARD) } as *mut u8);
    }
    match ranges {
        None => {
            ptrs.push(std::ptr::null_mut());
            // SAFETY: every pointer has its buffer's extent (checked by define_epilogue) and
            // GUARD elements of slack on either side; the output overlaps nothing else.
            unsafe { kernel.call(&ptrs) }.expect("call");
        }
        Some(ranges) => {
            for r in ranges {
                let mut r = *r;
                ptrs.push(r.as_mut_ptr() as *mut u8);
                // SAFETY: as above; `r` holds two i64.
                unsafe { kernel.call(&ptrs) }.expect("call");
                ptrs.pop();
            }
        }
    }
    check_guards(&out, "output");
    for (i, v) in inputs.iter_mut().enumerate() {
        check_guards(v, &format!("input {i}"));
    }
    assert!(
        inputs.iter().zip(&data.inputs).all(|(g, d)| {
            g[GUARD..GUARD + d.len()]
                .iter()
                .zip(d)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        }),
        "an input buffer was modified"
    );
    out[GUARD..GUARD + data.main.len()].to_vec()
}

/// `got` against `want` within `1e-6 + 1e-5 * |want|` (kiln_ir::compare: NaN and infinities in
/// the same places).
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], what: &dyn Fn() -> String) {
    let tensor = |v: &[f32]| Tensor::from_vec(&[v.len()], v.to_vec()).expect("1-d tensor");
    let tol = kiln_ir::compare::Tolerance::new(1e-6, 1e-5, 0.0);
    if let Err(m) = kiln_ir::compare::check_close(&tensor(got), &tensor(want), tol) {
        panic!("{}: {m}", what());
    }
}

/// Compiles and checks one case: a whole call, then split ranges equal bit for bit.
pub fn check_case(case: &Case, seed: u64, rng: &mut Rng) {
    check_case_with(case, seed, rng, |_| {});
}

/// [`check_case`] with the random data adjusted by `adjust`.
pub fn check_case_with(case: &Case, seed: u64, rng: &mut Rng, adjust: impl FnOnce(&mut Data)) {
    let program = program_of(case);
    let kernel = compile(&program)
        .unwrap_or_else(|e| panic!("compile {case:?}: {e}"))
        .expect("a kernel");
    assert_eq!(kernel.n_buffers(), epilogue_n_buffers(&program.kernels[0]));
    let mut data = data_of(case, seed);
    adjust(&mut data);
    let want = reference(case, &data);
    let got = run(&kernel, case, &data, None);
    assert_close(&got, &want, &|| format!("seed {seed}: {case:?}"));

    // Split the outer axis into random disjoint pieces (including empty and clamped ones).
    let outer = epilogue_outer_extent(&program, &program.kernels[0]) as i64;
    let mut cuts = vec![0i64, outer];
    for _ in 0..rng.below(4) {
        cuts.push(rng.below(outer as usize + 1) as i64);
    }
    cuts.sort();
    let mut ranges: Vec<[i64; 2]> = cuts.windows(2).map(|w| [w[0], w[1]]).collect();
    ranges[0][0] = -5; // clamped to 0
    if let Some(last) = ranges.last_mut() {
        last[1] = outer + 7; // clamped to outer
    }
    ranges.push([outer, outer + 3]); // empty after clamping
    ranges.reverse(); // order must not matter
    let split = run(&kernel, case, &data, Some(&ranges));
    let same = split
        .iter()
        .zip(&got)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same,
        "seed {seed}: split {ranges:?} differs from one call: {case:?}"
    );
}
