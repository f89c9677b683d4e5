//! Epilogue kernels against an independent reference: random expressions over random shapes
//! (rank 0 to 4, odd sizes) and load patterns (contiguous, bias `[0,..,0,1]`, row/column/scalar
//! broadcasts, transposed and strided reads that force the scalar path), and every unary and
//! binary op. Each case also checks canaries around every buffer and that random split ranges
//! give the one-call result bit for bit (see `codegen_epilogue_util`).

use crate::codegen_epilogue_util;

use codegen_epilogue_util::*;
use kiln_ir::op::BinaryOp;
use kiln_ir::program::{Operand, Step};

#[test]
fn random_expressions_match_the_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in 0..120u64 {
        let case = random_case(&mut rng);
        check_case(&case, seed, &mut rng);
    }
}

/// Every unary op after an exact add of main and a broadcast load, on every load pattern.
#[test]
fn every_unary_op_on_every_pattern() {
    let mut rng = Rng(7);
    for (n, op) in unary_ops().into_iter().enumerate() {
        for kind in 0..6 {
            let dims = [3usize, 1, 5, 9][..1 + (n + kind) % 4].to_vec();
            let strides = pattern(&mut rng, &dims, kind);
            let numel = reach(&dims, &strides) + 1;
            let case = Case {
                dims,
                loads: vec![LoadSpec { strides, buffer: 0 }],
                buffers: vec![numel],
                steps: vec![
                    Step::Binary(BinaryOp::Add, Operand::Main, Operand::Load(0)),
                    Step::Unary(op, Operand::Step(0)),
                ],
                result: Operand::Step(1),
                elementwise: false,
                lo: -3.0,
                hi: 3.0,
            };
            check_case(&case, (n * 6 + kind) as u64, &mut rng);
        }
    }
}

/// Every binary op in both operand orders, between two loads of an elementwise kernel and
/// between main and a load.
#[test]
fn every_binary_op_on_broadcast_operands() {
    let mut rng = Rng(11);
    for (n, op) in binary_ops().into_iter().enumerate() {
        for kind in 0..6 {
            let dims = vec![2, 7, 3, 13];
            let strides = pattern(&mut rng, &dims, kind);
            let s1 = pattern(&mut rng, &dims, (kind + 3) % 6);
            let (n0, n1) = (reach(&dims, &strides) + 1, reach(&dims, &s1) + 1);
            let loads = vec![
                LoadSpec { strides, buffer: 0 },
                LoadSpec {
                    strides: s1,
                    buffer: 1,
                },
            ];
            for (elementwise, x, y) in [
                (true, Operand::Load(0), Operand::Load(1)),
                (true, Operand::Load(1), Operand::Load(0)),
                (false, Operand::Main, Operand::Load(0)),
                (false, Operand::Load(1), Operand::Main),
            ] {
                let case = Case {
                    dims: dims.clone(),
                    loads: loads.clone(),
                    buffers: vec![n0, n1],
                    steps: vec![Step::Binary(op, x, y)],
                    result: Operand::Step(0),
                    elementwise,
                    lo: if op == BinaryOp::Pow { 0.1 } else { -3.0 },
                    hi: 3.0,
                };
                check_case(&case, (n * 6 + kind) as u64, &mut rng);
            }
        }
    }
}

/// pow with negative bases and integral exponents (finite, sign-dependent results) from a
/// scalar exponent load, including the C99 case pow(x, 0) = 1.
#[test]
fn pow_with_negative_bases() {
    let mut rng = Rng(3);
    for e in [3.0f32, -2.0, 0.0, 0.5] {
        let case = Case {
            dims: vec![5, 11],
            loads: vec![LoadSpec {
                strides: vec![0, 0],
                buffer: 0,
            }],
            buffers: vec![1],
            steps: vec![Step::Binary(BinaryOp::Pow, Operand::Main, Operand::Load(0))],
            result: Operand::Step(0),
            elementwise: false,
            lo: -2.0,
            hi: 2.0,
        };
        check_case_with(&case, 99, &mut rng, |d| d.inputs[0][0] = e);
    }
}
