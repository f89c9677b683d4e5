//! Tests of reshape, transpose, concat, slice and pad inference, including every error path.

use super::super::{assert_err, run, ty};
use crate::op::{Float, Op};

fn reshape(shape: &[i64]) -> Op {
    Op::Reshape {
        shape: shape.to_vec(),
    }
}

#[test]
fn reshape_known() {
    assert_eq!(
        run(&reshape(&[3, 4]), &["f32[2,6]"]).unwrap(),
        ty("f32[3,4]")
    );
    assert_eq!(
        run(&reshape(&[-1]), &["f32[2,3,4]"]).unwrap(),
        ty("f32[24]")
    );
    assert_eq!(
        run(&reshape(&[4, -1, 2]), &["f32[2,3,4]"]).unwrap(),
        ty("f32[4,3,2]")
    );
    assert_eq!(run(&reshape(&[]), &["f32[1,1]"]).unwrap(), ty("f32[]"));
    assert_eq!(run(&reshape(&[1, 1]), &["f32[]"]).unwrap(), ty("f32[1,1]"));
    assert_eq!(
        run(&reshape(&[0, 5]), &["f32[3,0]"]).unwrap(),
        ty("f32[0,5]")
    );
    assert_eq!(
        run(&reshape(&[-1, 5]), &["f32[3,0]"]).unwrap(),
        ty("f32[0,5]")
    );
    // Any dtype moves.
    assert_eq!(run(&reshape(&[6]), &["i32[2,3]"]).unwrap(), ty("i32[6]"));
}

#[test]
fn reshape_unknown_input() {
    assert_eq!(
        run(&reshape(&[-1, 10]), &["f32[?,5,2]"]).unwrap(),
        ty("f32[?,10]")
    );
    assert_eq!(
        run(&reshape(&[2, 6]), &["f32[?,3]"]).unwrap(),
        ty("f32[2,6]")
    );
    assert_eq!(
        run(&reshape(&[0, 6]), &["f32[?,3]"]).unwrap(),
        ty("f32[0,6]")
    );
    // The known dims of x (3) cannot divide 4 elements.
    assert_err(
        &reshape(&[4]),
        &["f32[?,3]"],
        &["x = f32[?,3]", "multiply to 3", "does not divide 4"],
    );
    // x has a 0 dim, so it is empty, but the target is not.
    assert_err(&reshape(&[4]), &["f32[?,0]"], &["multiply to 0"]);
}

#[test]
fn reshape_errors() {
    assert_err(
        &reshape(&[5, 5]),
        &["f32[2,3,4]"],
        &["cannot reshape x = f32[2,3,4] (24 elements) to [5,5] (25 elements)"],
    );
    assert_err(
        &reshape(&[-1, 5]),
        &["f32[2,3,4]"],
        &["24 is not a multiple of 5"],
    );
    assert_err(&reshape(&[-1, -1]), &["f32[2,3]"], &["more than one -1"]);
    assert_err(&reshape(&[-2, 3]), &["f32[2,3]"], &["-2 at axis 0", ">= 0"]);
    assert_err(&reshape(&[-1, 0]), &["f32[0,3]"], &["cannot infer the -1"]);
    let big = i64::MAX;
    assert_err(&reshape(&[big, big]), &["f32[2]"], &["overflows"]);
    assert_err(&reshape(&[big, big, 0]), &["f32[0]"], &["overflows"]);
}

#[test]
fn transpose_perms() {
    let t = |p: &[usize]| Op::Transpose { perm: p.to_vec() };
    assert_eq!(
        run(&t(&[0, 3, 1, 2]), &["f32[1,?,5,3]"]).unwrap(),
        ty("f32[1,3,?,5]")
    );
    assert_eq!(run(&t(&[1, 0]), &["i64[2,7]"]).unwrap(), ty("i64[7,2]"));
    assert_eq!(run(&t(&[]), &["f32[]"]).unwrap(), ty("f32[]"));
    assert_err(
        &t(&[0, 0]),
        &["f32[2,3]"],
        &["perm [0, 0] is not a permutation of 0..2", "f32[2,3]"],
    );
    assert_err(&t(&[0, 2]), &["f32[2,3]"], &["not a permutation"]);
    assert_err(&t(&[0]), &["f32[2,3]"], &["not a permutation"]);
    assert_err(&t(&[0, 1, 2]), &["f32[2,3]"], &["not a permutation"]);
}

#[test]
fn concat_shapes() {
    let c = |axis| Op::Concat { axis };
    assert_eq!(run(&c(0), &["f32[2,3]"]).unwrap(), ty("f32[2,3]"));
    assert_eq!(
        run(&c(0), &["f32[2,3]", "f32[4,3]", "f32[1,3]"]).unwrap(),
        ty("f32[7,3]")
    );
    assert_eq!(
        run(&c(-1), &["f32[2,3]", "f32[2,5]"]).unwrap(),
        ty("f32[2,8]")
    );
    assert_eq!(
        run(&c(1), &["f32[?,3]", "f32[2,?]"]).unwrap(),
        ty("f32[2,?]")
    );
    assert_eq!(
        run(&c(0), &["f32[?,3]", "f32[2,?]"]).unwrap(),
        ty("f32[?,3]")
    );
    assert_eq!(run(&c(0), &["i32[2]", "i32[0]"]).unwrap(), ty("i32[2]"));
}

#[test]
fn concat_errors() {
    let c = |axis| Op::Concat { axis };
    assert_err(
        &c(0),
        &["f32[2,3]", "f32[2,4]"],
        &[
            "operand 0 is f32[2,3]",
            "operand 1 is f32[2,4]",
            "axis 1: 3 vs 4",
        ],
    );
    assert_err(
        &c(0),
        &["f32[2,3]", "f32[3]"],
        &["same dtype and rank", "f32[3]"],
    );
    assert_err(
        &c(0),
        &["f32[2]", "i32[2]"],
        &["same dtype and rank", "i32[2]"],
    );
    assert_err(
        &c(2),
        &["f32[2,3]", "f32[2,3]"],
        &["axis 2 is out of range"],
    );
    assert_err(&c(-3), &["f32[2,3]"], &["out of range"]);
    assert_err(&c(0), &["f32[]", "f32[]"], &["rank >= 1"]);
    let big = usize::MAX / 8;
    let x = format!("bool[{big}]");
    assert_err(&c(0), &[&x, &x, &x, &x, &x, &x, &x, &x, &x], &["overflows"]);
}

#[test]
fn slice_shapes_and_errors() {
    let s = |b: &[usize], z: &[i64]| Op::Slice {
        begin: b.to_vec(),
        size: z.to_vec(),
    };
    assert_eq!(
        run(&s(&[1, 0], &[2, -1]), &["f32[4,5]"]).unwrap(),
        ty("f32[2,5]")
    );
    assert_eq!(
        run(&s(&[1, 2], &[-1, 3]), &["f32[?,?]"]).unwrap(),
        ty("f32[?,3]")
    );
    assert_eq!(run(&s(&[4], &[-1]), &["f32[4]"]).unwrap(), ty("f32[0]"));
    assert_eq!(run(&s(&[2], &[0]), &["i32[4]"]).unwrap(), ty("i32[0]"));
    assert_err(
        &s(&[3, 0], &[2, 1]),
        &["f32[4,5]"],
        &["axis 0", "begin 3 + size 2 = 5", "f32[4,5]", "(dim 4)"],
    );
    assert_err(&s(&[5], &[-1]), &["f32[4]"], &["begin 5 is past the end"]);
    assert_err(&s(&[0], &[-2]), &["f32[4]"], &["size -2 is invalid"]);
    assert_err(
        &s(&[0], &[1, 1]),
        &["f32[4]"],
        &["one entry per axis", "f32[4]"],
    );
    assert_err(&s(&[0, 0], &[1]), &["f32[4,4]"], &["one entry per axis"]);
    assert_err(&s(&[usize::MAX], &[2]), &["f32[?]"], &["overflows"]);
}

#[test]
fn pad_shapes_and_errors() {
    let p = |v: &[[usize; 2]]| Op::Pad {
        paddings: v.to_vec(),
        constant_value: Float(0.0),
    };
    assert_eq!(
        run(&p(&[[1, 2], [0, 0]]), &["f32[3,?]"]).unwrap(),
        ty("f32[6,?]")
    );
    assert_eq!(run(&p(&[]), &["f32[]"]).unwrap(), ty("f32[]"));
    assert_err(
        &p(&[[1, 1]]),
        &["f32[3,3]"],
        &["one [before, after] per axis", "f32[3,3]", "got 1"],
    );
    assert_err(&p(&[[usize::MAX, 1]]), &["f32[3]"], &["overflows"]);
    assert_err(&p(&[[1, 1]]), &["i32[3]"], &["x must be f32"]);
    // The result of a pad must still fit in memory.
    let half = usize::MAX / 2;
    assert_err(&p(&[[half, 0], [0, 0]]), &["f32[1,4]"], &["too large"]);
}

#[test]
fn one_hot_shapes_and_errors() {
    let oh = |axis| Op::OneHot {
        depth: 5,
        on_value: Float(1.0),
        off_value: Float(0.0),
        axis,
    };
    assert_eq!(run(&oh(-1), &["i32[?,3]"]).unwrap(), ty("f32[?,3,5]"));
    assert_eq!(run(&oh(0), &["i64[4]"]).unwrap(), ty("f32[5,4]"));
    assert_eq!(run(&oh(1), &["i64[2,3]"]).unwrap(), ty("f32[2,5,3]"));
    assert_eq!(run(&oh(-1), &["i32[]"]).unwrap(), ty("f32[5]"));
    assert_err(
        &oh(-1),
        &["f32[3]"],
        &["indices must be i32 or i64", "f32[3]"],
    );
    assert_err(&oh(2), &["i32[3]"], &["axis 2 is out of range", "rank 2"]);
}

#[test]
fn gather_grad_shapes_and_errors() {
    let gg = |axis, size| Op::GatherGrad { axis, size };
    assert_eq!(
        run(&gg(0, 7), &["f32[4,3]", "i32[4]"]).unwrap(),
        ty("f32[7,3]")
    );
    assert_eq!(
        run(&gg(1, 7), &["f32[2,4,5,3]", "i64[4,5]"]).unwrap(),
        ty("f32[2,7,3]")
    );
    assert_eq!(
        run(&gg(-1, 7), &["f32[2,?]", "i32[6]"]).unwrap(),
        ty("f32[2,7]")
    );
    assert_eq!(
        run(&gg(0, 7), &["f32[3]", "i32[]"]).unwrap(),
        ty("f32[7,3]")
    );
    assert_err(
        &gg(0, 7),
        &["f32[4,3]", "i32[5]"],
        &["indices' shape", "axes 0..1"],
    );
    assert_err(
        &gg(2, 7),
        &["f32[4,3]", "i32[4]"],
        &["axis 2 is out of range"],
    );
    assert_err(&gg(0, 7), &["f32[4]", "i32[4,1,1]"], &["at least the rank"]);
    assert_err(&gg(0, 7), &["i32[4]", "i32[4]"], &["grad must be f32"]);
    assert_err(
        &gg(0, 7),
        &["f32[4]", "f32[4]"],
        &["indices must be i32 or i64"],
    );
}
