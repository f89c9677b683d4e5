//! Epilogue kernel structure: every tail length of the vector loop, threads on disjoint ranges,
//! the identity / empty cases, and errors (never panics) for malformed epilogues.

use crate::codegen_epilogue_util;

use codegen_epilogue_util::*;
use kiln_cpu::codegen::elementwise::epilogue_outer_extent;
use kiln_ir::DType;
use kiln_ir::op::{BinaryOp, UnaryOp};
use kiln_ir::program::{Expr, Operand, Program, Step};

/// A long contiguous run (vector main loop, unrolled part, single vector and scalar tail).
#[test]
fn long_rows_cover_every_tail_length() {
    let mut rng = Rng(5);
    for n in [1usize, 3, 4, 5, 7, 8, 9, 12, 15, 16, 31, 1001] {
        for kind in [0, 1, 2] {
            let dims = vec![3, n];
            let strides = pattern(&mut rng, &dims, kind);
            let numel = reach(&dims, &strides) + 1;
            let case = Case {
                dims,
                loads: vec![LoadSpec { strides, buffer: 0 }],
                buffers: vec![numel],
                steps: vec![
                    Step::Binary(BinaryOp::Mul, Operand::Main, Operand::Load(0)),
                    Step::Unary(UnaryOp::Tanh, Operand::Step(0)),
                ],
                result: Operand::Step(1),
                elementwise: false,
                lo: -2.0,
                hi: 2.0,
            };
            check_case(&case, n as u64, &mut rng);
        }
    }
}

/// Threads calling one kernel on disjoint ranges give the single-call result.
#[test]
fn threaded_ranges_equal_one_call() {
    let dims = vec![37, 5, 16];
    let case = Case {
        dims: dims.clone(),
        loads: vec![LoadSpec {
            strides: vec![0, 0, 1],
            buffer: 0,
        }],
        buffers: vec![16],
        steps: vec![
            Step::Binary(BinaryOp::Add, Operand::Main, Operand::Load(0)),
            Step::Unary(UnaryOp::Sigmoid, Operand::Step(0)),
        ],
        result: Operand::Step(1),
        elementwise: false,
        lo: -4.0,
        hi: 4.0,
    };
    let program = program_of(&case);
    let kernel = compile(&program).expect("compile").expect("kernel");
    let outer = epilogue_outer_extent(&program, &program.kernels[0]);
    assert_eq!(outer, 37 * 5, "bias [0,0,1] collapses the two leading axes");
    let data = data_of(&case, 1);
    let whole = run(&kernel, &case, &data, None);
    assert_close(&whole, &reference(&case, &data), &|| "whole".to_string());

    let mut out = guarded(&data.main);
    let bias = guarded(&data.inputs[0]);
    let out_addr = out.as_mut_ptr() as usize + GUARD * 4;
    let bias_addr = bias.as_ptr() as usize + GUARD * 4;
    std::thread::scope(|s| {
        for t in 0..4usize {
            let kernel = kernel.clone();
            s.spawn(move || {
                let mut r = [(outer * t / 4) as i64, (outer * (t + 1) / 4) as i64];
                let ptrs = [
                    out_addr as *mut u8,
                    bias_addr as *mut u8,
                    r.as_mut_ptr() as *mut u8,
                ];
                // SAFETY: the four ranges are disjoint, so threads write disjoint rows.
                unsafe { kernel.call(&ptrs) }.expect("call");
            });
        }
    });
    check_guards(&out, "output");
    let same = out[GUARD..GUARD + whole.len()]
        .iter()
        .zip(&whole)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "threaded result differs");
}

#[test]
fn identity_and_malformed_epilogues() {
    let base = Case {
        dims: vec![4, 6],
        loads: vec![LoadSpec {
            strides: vec![0, 1],
            buffer: 0,
        }],
        buffers: vec![6],
        steps: Vec::new(),
        result: Operand::Main,
        elementwise: false,
        lo: 0.0,
        hi: 1.0,
    };
    // Identity on a non-elementwise kernel: nothing to generate.
    let mut identity = program_of(&base);
    identity.kernels[0].epilogue = Expr::identity();
    assert!(compile(&identity).expect("identity").is_none());

    let err = |p: &Program| compile(p).err().unwrap_or_else(|| panic!("accepted {p}"));
    // Main in an elementwise kernel.
    let mut p = program_of(&Case {
        elementwise: true,
        ..base.clone()
    });
    p.kernels[0].epilogue.steps = vec![Step::Unary(UnaryOp::Neg, Operand::Main)];
    p.kernels[0].epilogue.result = Operand::Step(0);
    assert!(err(&p).contains("main"), "{}", err(&p));
    // Strides of the wrong rank.
    let mut p = program_of(&base);
    p.kernels[0].epilogue.loads[0].strides = vec![1];
    p.kernels[0].epilogue.result = Operand::Load(0);
    assert!(err(&p).contains("strides"), "{}", err(&p));
    // A load that reaches past its buffer (row stride 1 over 4 rows of 6 needs 9 elements).
    let mut p = program_of(&base);
    p.kernels[0].epilogue.loads[0].strides = vec![1, 1];
    p.kernels[0].epilogue.result = Operand::Load(0);
    assert!(err(&p).contains("past its end"), "{}", err(&p));
    // A step reading a later step, and a missing load.
    let mut p = program_of(&base);
    p.kernels[0].epilogue.steps = vec![Step::Unary(UnaryOp::Neg, Operand::Step(0))];
    p.kernels[0].epilogue.result = Operand::Step(0);
    assert!(err(&p).contains("step 0"), "{}", err(&p));
    let mut p = program_of(&base);
    p.kernels[0].epilogue.result = Operand::Load(3);
    assert!(err(&p).contains("load 3"), "{}", err(&p));
    // A non-f32 buffer.
    let mut p = program_of(&base);
    p.kernels[0].epilogue.result = Operand::Load(0);
    p.buffers[1].dtype = DType::I32;
    assert!(err(&p).contains("f32"), "{}", err(&p));
    // Errors name the kernel.
    assert!(err(&p).contains("'k'"), "{}", err(&p));
}

/// An elementwise kernel over an empty output compiles and writes nothing.
#[test]
fn empty_output_writes_nothing() {
    let case = Case {
        dims: vec![3, 0, 5],
        loads: vec![LoadSpec {
            strides: vec![5, 5, 1],
            buffer: 0,
        }],
        buffers: vec![1],
        steps: vec![Step::Unary(UnaryOp::Exp, Operand::Load(0))],
        result: Operand::Step(0),
        elementwise: true,
        lo: 0.0,
        hi: 1.0,
    };
    let program = program_of(&case);
    assert_eq!(epilogue_outer_extent(&program, &program.kernels[0]), 0);
    let kernel = compile(&program).expect("compile").expect("kernel");
    let data = data_of(&case, 0);
    assert!(run(&kernel, &case, &data, None).is_empty());
}
