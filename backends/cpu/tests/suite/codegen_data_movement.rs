//! Movement and assign kernels (codegen/movement.rs, codegen/state.rs) against `eval_op`, bit
//! for bit: reshape, transposes of rank 1-6 (every permutation up to rank 4, blocked tiles with
//! partial edges), concat of 1-3 operands along every axis, slices,
//! pads, assigns, every dtype, empty tensors, NaN payloads; canaries around every buffer (see
//! codegen_data_util).

use crate::codegen_data_util;

use codegen_data_util::{assert_bit_exact, run_op, run_op_full, run_op_ranges, run_op_with};
use kiln_cpu::codegen::movement::{MOVE_PARTS, define_movement, define_movement_range};
use kiln_cpu::codegen::state::define_state;
use kiln_cpu::jit::{Jit, KernelId};
use kiln_ir::program::{Kernel, Program};
use kiln_ir::{AssignOp, DType, Data, Float, Op, Tensor};

fn t(dims: &[usize], seed: u64) -> Tensor {
    Tensor::uniform(dims, -4.0, 4.0, seed)
}

/// A tensor of `dtype` with distinct, seed-dependent elements.
fn typed(dtype: DType, dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let v = |i: usize| (i as u64).wrapping_mul(2654435761).wrapping_add(seed * 977);
    let data = match dtype {
        DType::F32 => return t(dims, seed),
        DType::I32 => Data::I32((0..n).map(|i| v(i) as i32).collect()),
        DType::I64 => Data::I64((0..n).map(|i| (v(i) << 20) as i64 - 5).collect()),
        DType::Bool => Data::Bool((0..n).map(|i| v(i) % 3 == 0).collect()),
    };
    Tensor::new(dims, data).unwrap()
}

#[test]
fn reshape_copies_all_elements() {
    for (from, to) in [
        (vec![3usize, 7], vec![21i64]),
        (vec![2, 3, 5], vec![5, -1]),
        (vec![1], vec![]),
        (vec![4, 17], vec![17, 2, 2]),
        (vec![0, 3], vec![3, 0]),
    ] {
        for dtype in [DType::F32, DType::I64, DType::Bool] {
            let o = run_op(
                Op::Reshape { shape: to.clone() },
                &[typed(dtype, &from, 1)],
                define_movement,
            );
            assert_bit_exact(&o, &format!("reshape {from:?} -> {to:?} {dtype}"));
        }
    }
}

#[test]
fn transposes_of_rank_2_to_5() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 7], &[1, 0]),
        (&[13, 1], &[1, 0]),
        (&[2, 3, 5], &[2, 0, 1]),
        (&[2, 3, 5], &[0, 2, 1]),
        (&[2, 3, 5], &[1, 0, 2]),
        (&[2, 3, 5], &[0, 1, 2]),
        (&[2, 3, 4, 5], &[0, 3, 1, 2]),
        (&[2, 3, 4, 5], &[0, 2, 3, 1]),
        (&[2, 3, 4, 5], &[3, 2, 1, 0]),
        (&[1, 3, 1, 7], &[2, 3, 0, 1]),
        (&[2, 3, 1, 4, 3], &[4, 1, 3, 0, 2]),
        (&[3, 2, 2, 3, 5], &[0, 1, 3, 2, 4]),
        (&[4, 0, 3], &[2, 1, 0]),
    ];
    for (i, (dims, perm)) in cases.iter().enumerate() {
        for dtype in [DType::F32, DType::I32, DType::I64, DType::Bool] {
            let o = run_op(
                Op::Transpose {
                    perm: perm.to_vec(),
                },
                &[typed(dtype, dims, i as u64)],
                define_movement,
            );
            assert_bit_exact(&o, &format!("transpose {dims:?} by {perm:?} {dtype}"));
        }
    }
}

/// Every permutation of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|r| if r >= first { r + 1 } else { r }));
            out.push(p);
        }
    }
    out
}

fn check_transpose(dtype: DType, dims: &[usize], perm: &[usize], seed: u64) {
    let o = run_op(
        Op::Transpose {
            perm: perm.to_vec(),
        },
        &[typed(dtype, dims, seed)],
        define_movement,
    );
    assert_bit_exact(&o, &format!("transpose {dims:?} by {perm:?} {dtype}"));
}

/// Every permutation of rank 1-4 over shapes that cross the blocked transpose's tile edges (16
/// f32 = 64 bytes) with odd and prime remainders, runs merged from adjacent axes, size-1 axes
/// and empty tensors; element sizes 1, 4 and 8 (tiles of 16, 16 and 8 elements).
#[test]
fn transposes_of_every_permutation_up_to_rank_4() {
    let shapes: &[&[usize]] = &[
        &[7],
        &[0],
        &[3, 7],
        &[17, 33],
        &[16, 16],
        &[1, 19],
        &[70, 3],
        &[0, 5],
        &[2, 3, 5],
        &[5, 17, 19],
        &[1, 18, 1],
        &[33, 2, 17],
        &[3, 0, 2],
        &[2, 3, 4, 5],
        &[1, 13, 17, 3],
        &[3, 1, 1, 35],
        &[2, 0, 3, 1],
    ];
    for (seed, dims) in shapes.iter().enumerate() {
        for perm in permutations(dims.len()) {
            check_transpose(DType::F32, dims, &perm, seed as u64);
            if dims.len() <= 3 {
                check_transpose(DType::Bool, dims, &perm, seed as u64);
                check_transpose(DType::I64, dims, &perm, seed as u64);
            }
        }
    }
}

/// Ranks 5 and 6: a fixed pseudo-random sample of permutations per shape.
#[test]
fn transposes_of_rank_5_and_6() {
    let shapes: &[&[usize]] = &[
        &[2, 3, 1, 5, 7],
        &[3, 17, 2, 1, 5],
        &[2, 2, 3, 1, 3, 5],
        &[1, 5, 2, 3, 1, 7],
        &[2, 0, 3, 1, 2, 2],
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for (seed, dims) in shapes.iter().enumerate() {
        let all = permutations(dims.len());
        for _ in 0..12 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let perm = &all[(state % all.len() as u64) as usize];
            check_transpose(DType::F32, dims, perm, seed as u64);
        }
        let reversed: Vec<usize> = (0..dims.len()).rev().collect();
        check_transpose(DType::I32, dims, &reversed, seed as u64);
    }
}

/// The layouts networks use: NHWC <-> NCHW with sizes that leave partial tiles on both axes,
/// and channel shuffles (reshape to groups, swap the group and channel axes): f32 runs through
/// the 4 x 4 register blocks and the two-group interleave with leftover rows.
#[test]
fn layout_transposes_and_channel_shuffles() {
    for (dims, perm) in [
        (vec![2usize, 19, 21, 40], vec![0usize, 3, 1, 2]),
        (vec![2, 40, 19, 21], vec![0, 2, 3, 1]),
        (vec![1, 56, 9, 64], vec![0, 3, 1, 2]),
        (vec![1, 3, 31, 29], vec![0, 2, 3, 1]),
        (vec![2, 3, 5, 2, 58], vec![0, 1, 2, 4, 3]),
        (vec![1, 4, 4, 3, 20], vec![0, 1, 2, 4, 3]),
        (vec![1, 4, 4, 8, 3], vec![0, 1, 2, 4, 3]),
        (vec![1, 2, 3, 4, 9], vec![0, 1, 2, 4, 3]),
        (vec![3, 2, 8], vec![0, 2, 1]),
    ] {
        for dtype in [DType::F32, DType::Bool, DType::I64] {
            check_transpose(dtype, &dims, &perm, 5);
        }
    }
}

#[test]
fn concat_three_operands_along_each_axis() {
    let base = [3usize, 5, 7];
    for axis in 0..3 {
        for extra in [[1usize, 2, 4], [13, 1, 0]] {
            let parts: Vec<Tensor> = extra
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    let mut d = base;
                    d[axis] = n;
                    t(&d, 10 + k as u64)
                })
                .collect();
            for ax in [axis as i64, axis as i64 - 3] {
                let o = run_op(Op::Concat { axis: ax }, &parts, define_movement);
                assert_bit_exact(&o, &format!("concat axis {ax} sizes {extra:?}"));
            }
        }
    }
    // One operand, and integer operands along the last axis (interleaved block copies).
    let o = run_op(Op::Concat { axis: 0 }, &[t(&[7], 3)], define_movement);
    assert_bit_exact(&o, "concat of one");
    let ints = [
        typed(DType::I32, &[4, 3], 1),
        typed(DType::I32, &[4, 17], 2),
        typed(DType::I32, &[4, 1], 3),
    ];
    let o = run_op(Op::Concat { axis: 1 }, &ints, define_movement);
    assert_bit_exact(&o, "concat i32 last axis");
}

#[test]
fn slices() {
    let x = t(&[5, 7, 13], 4);
    let cases: &[(&[usize], &[i64])] = &[
        (&[0, 0, 0], &[-1, -1, -1]),
        (&[1, 2, 3], &[3, 4, 5]),
        (&[0, 0, 1], &[5, 7, 12]),
        (&[2, 0, 0], &[2, 7, 13]),
        (&[4, 6, 12], &[1, 1, 1]),
        (&[0, 3, 0], &[5, 1, 13]),
        (&[1, 1, 0], &[0, 3, 13]),
        (&[0, 0, 13], &[5, 7, 0]),
    ];
    for (begin, size) in cases {
        let op = Op::Slice {
            begin: begin.to_vec(),
            size: size.to_vec(),
        };
        let o = run_op(op.clone(), std::slice::from_ref(&x), define_movement);
        assert_bit_exact(&o, &format!("slice {begin:?} {size:?}"));
        let o = run_op(op, &[typed(DType::Bool, &[5, 7, 13], 2)], define_movement);
        assert_bit_exact(&o, &format!("bool slice {begin:?} {size:?}"));
    }
}

#[test]
fn pads_with_constants_and_dtypes() {
    let cases: &[(&[usize], &[[usize; 2]])] = &[
        (&[3, 5], &[[1, 2], [0, 3]]),
        (&[3, 5], &[[0, 0], [0, 0]]),
        (&[1, 7, 7, 3], &[[0, 0], [1, 1], [2, 0], [0, 0]]),
        (&[2, 3, 13], &[[0, 1], [0, 0], [5, 7]]),
        (&[0, 2], &[[1, 1], [1, 0]]),
        (&[7], &[[13, 0]]),
    ];
    for (dims, paddings) in cases {
        for value in [0.0f32, -1.5, 2.7e9, f32::NAN] {
            for dtype in DType::ALL {
                let op = Op::Pad {
                    paddings: paddings.to_vec(),
                    constant_value: Float(value),
                };
                // The graph form of pad is f32-only; the kernel is dtype-generic.
                let o = run_op_full(op, &[typed(dtype, dims, 7)], false, true, define_movement);
                assert_bit_exact(
                    &o,
                    &format!("pad {dims:?} by {paddings:?} with {value} {dtype}"),
                );
            }
        }
    }
}

#[test]
fn nan_payloads_survive_movement() {
    let payloads = [
        0x7fc0_0001u32,
        0xffc1_2345,
        0x7f80_0001,
        0x0000_0001,
        0x8000_0000,
    ];
    let v: Vec<f32> = (0..35)
        .map(|i| f32::from_bits(payloads[i % 5] ^ (i as u32) << 3))
        .collect();
    let x = Tensor::from_vec(&[5, 7], v).unwrap();
    let o = run_op(
        Op::Transpose { perm: vec![1, 0] },
        std::slice::from_ref(&x),
        define_movement,
    );
    assert_bit_exact(&o, "transpose of NaNs");
    let o = run_op(
        Op::Concat { axis: 1 },
        &[x.clone(), x.clone(), x.clone()],
        define_movement,
    );
    assert_bit_exact(&o, "concat of NaNs");
    let o = run_op(
        Op::Pad {
            paddings: vec![[1, 0], [0, 2]],
            constant_value: Float(1.0),
        },
        &[x],
        define_movement,
    );
    assert_bit_exact(&o, "pad of NaNs");
}

#[test]
fn assigns_write_the_new_value() {
    for dims in [vec![1usize], vec![3, 7], vec![2, 17], vec![0, 4]] {
        for op in [AssignOp::Assign, AssignOp::AssignAdd, AssignOp::AssignSub] {
            let (cur, val) = (t(&dims, 1), t(&dims, 2));
            let o = run_op_with(Op::Assign(op), &[cur, val], true, define_state);
            assert_bit_exact(&o, &format!("{} {dims:?}", op.name()));
        }
    }
    let (cur, val) = (typed(DType::I64, &[3, 5], 1), typed(DType::I64, &[3, 5], 2));
    let o = run_op_with(
        Op::Assign(AssignOp::Assign),
        &[cur, val],
        true,
        define_state,
    );
    assert_bit_exact(&o, "assign i64");
}

#[test]
fn larger_copies_use_every_tail_size() {
    // Row lengths around the 64-byte block and 16-byte vector boundaries.
    for cols in [15usize, 16, 17, 31, 33, 63, 64, 65, 100] {
        let x = t(&[3, cols], cols as u64);
        let o = run_op(
            Op::Slice {
                begin: vec![1, 1],
                size: vec![2, -1],
            },
            std::slice::from_ref(&x),
            define_movement,
        );
        assert_bit_exact(&o, &format!("slice cols {cols}"));
        let o = run_op(
            Op::Concat { axis: 1 },
            &[x.clone(), x.clone()],
            define_movement,
        );
        assert_bit_exact(&o, &format!("concat cols {cols}"));
        let b = typed(DType::Bool, &[3, cols], 3);
        let pad = Op::Pad {
            paddings: vec![[0, 1], [3, 0]],
            constant_value: Float(1.0),
        };
        let o = run_op_full(pad, &[b], false, true, define_movement);
        assert_bit_exact(&o, &format!("bool pad cols {cols}"));
    }
}

/// [`define_movement_range`], an error when the kernel cannot split.
fn ranged(jit: &mut Jit, program: &Program, kernel: &Kernel) -> Result<KernelId, String> {
    define_movement_range(jit, program, kernel)?.ok_or_else(|| "no ranged kernel".to_string())
}

/// Ranged movement kernels called part by part (each split of the parts below, in any order)
/// write exactly the reference's bytes and nothing outside the output: blocked transposes
/// under an outer loop (a shuffle's, NCHW -> NHWC's images), a concat of rows, a concat of one operand with a loop and
/// one without, a slice; every dtype.
#[test]
fn ranged_movement_kernels_copy_every_part_once() {
    let parts = MOVE_PARTS as i64;
    let splits: [Vec<[i64; 2]>; 4] = [
        vec![[0, parts]],
        vec![[0, 1], [1, parts]],
        vec![[40, parts], [0, 13], [13, 40]],
        (0..parts).rev().map(|p| [p, p + 1]).collect(),
    ];
    let shuffle = Op::Transpose {
        perm: vec![0, 1, 3, 2],
    };
    for dtype in DType::ALL {
        let cases: Vec<(Op, Vec<Tensor>)> = vec![
            (shuffle.clone(), vec![typed(dtype, &[3, 9, 2, 29], 1)]),
            (
                Op::Transpose {
                    perm: vec![0, 2, 3, 1],
                },
                vec![typed(dtype, &[2, 37, 5, 7], 2)],
            ),
            (
                Op::Concat { axis: 1 },
                vec![typed(dtype, &[70, 3], 3), typed(dtype, &[70, 11], 4)],
            ),
            // The first operand's five narrow runs are one unrolled row, no loop: the call
            // whose range starts at part 0 copies them.
            (
                Op::Concat { axis: 1 },
                vec![typed(dtype, &[5, 1], 5), typed(dtype, &[5, 40], 6)],
            ),
            (
                Op::Slice {
                    begin: vec![1, 0, 2],
                    size: vec![90, 5, 9],
                },
                vec![typed(dtype, &[97, 6, 13], 7)],
            ),
        ];
        for (op, inputs) in &cases {
            let whole = run_op(op.clone(), inputs, define_movement);
            assert_bit_exact(&whole, &format!("{op:?} {dtype}"));
            for split in &splits {
                let o = run_op_ranges(op.clone(), inputs, ranged, split);
                assert_bit_exact(&o, &format!("{op:?} {dtype} in {} parts", split.len()));
            }
        }
    }
}
