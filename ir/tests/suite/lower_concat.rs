//! Concat operands written in place (`write_concat_operands_in_place`): which operands become
//! parts of the concat output, and that a program with parts still computes the reference's
//! values bit for bit on the interpreter, which poisons outputs and scatters parts into their
//! concat's bytes exactly as planned. The cases where writing in place would be wrong (an
//! operand also fetched, read by another op, viewed by a reshape, taken by two concats or twice
//! by one, a concat output holding parts, a source) must keep their copies.

use crate::lower_common::{assert_no_live_overlap, inputs, parse, request};
use kiln_ir::Tensor;
use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::lower::{lower, run_program, write_concat_operands_in_place};
use kiln_ir::program::{BufferId, BufferKind, Kernel, Program};
use kiln_ir::reference::ReferenceBackend;

/// Lowers `req`, writes concat operands in place where `strided` allows (contiguous slots
/// always), validates, checks the arena and compares the interpreter with the reference bit for
/// bit. Returns the program and how many operands were placed.
fn check_in_place(req: &CompileRequest<'_>, strided: bool, seed: u64) -> (Program, usize) {
    let mut program = lower(req).unwrap_or_else(|e| panic!("lower: {e}"));
    let copying = program.clone();
    let placed = write_concat_operands_in_place(&mut program, |_, _, _, _| strided)
        .unwrap_or_else(|e| panic!("in place: {e}"));
    program
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", program.describe()));
    assert_no_live_overlap(&program);
    assert!(
        program.sum_temporary_bytes <= copying.sum_temporary_bytes,
        "{}",
        program.describe()
    );
    let (feeds, vars) = inputs(req, seed);
    let feed_refs: Vec<&Tensor> = feeds.iter().collect();
    let got = run_program(&program, &feed_refs, &mut vars.clone())
        .unwrap_or_else(|e| panic!("run_program: {e}\n{}", program.describe()));
    let want = ReferenceBackend
        .compile(req)
        .and_then(|exe| exe.run(&feed_refs, &mut vars.clone()))
        .expect("reference run");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "fetch {i} differs\n{}", program.describe());
    }
    (program, placed)
}

fn buffer(p: &Program, name: &str) -> BufferId {
    let i = p.buffers.iter().position(|b| b.name == name).unwrap();
    BufferId(i as u32)
}

fn kind<'p>(p: &'p Program, name: &str) -> &'p BufferKind {
    &p.buffer(buffer(p, name)).kind
}

fn kernel<'p>(p: &'p Program, name: &str) -> &'p Kernel {
    p.kernels.iter().find(|k| k.name == name).unwrap()
}

/// Two producers and a channel concat (the NHWC Inception case): rows of 3 and 5 channels in
/// rows of 8.
const CHANNEL_CONCAT: &str = "kiln 1
input %x : f32[2,4,4,3]
input %w : f32[2,4,4,5]
%a = relu(%x)
%b = sigmoid(%w)
%c = concat(%a, %b, axis=3)
%y = neg(%c)
output %y
";

#[test]
fn channel_concat_operands_are_written_at_their_channel_offsets() {
    let g = parse(CHANNEL_CONCAT);
    let (p, placed) = check_in_place(&request(&g, &["y"], &[]), true, 1);
    assert_eq!(placed, 2, "{}", p.describe());
    let c = buffer(&p, "c");
    let part = |offset, row| BufferKind::Part {
        of: c,
        offset,
        row,
        stride: 8,
    };
    assert_eq!(kind(&p, "a"), &part(0, 3));
    assert_eq!(kind(&p, "b"), &part(3, 5));
    // The concat output is live from its first producer on, so nothing in between is put in
    // its bytes (assert_no_live_overlap checked that); the concat still names its operands.
    assert_eq!(p.live_ranges()[c.index()].unwrap().0, 0);
    assert_eq!(kernel(&p, "c").inputs, [buffer(&p, "a"), buffer(&p, "b")]);
    // A backend that cannot store rows at a stride keeps the copies.
    let (p, placed) = check_in_place(&request(&g, &["y"], &[]), false, 1);
    assert_eq!(placed, 0);
    assert!(matches!(kind(&p, "a"), BufferKind::Temporary { .. }));
}

#[test]
fn outer_axis_and_fetched_concats_take_contiguous_parts() {
    // Along axis 0 each operand is one block (one row): placed even without strided stores, and the
    // fetched concat's producers write straight into the caller's tensor.
    let g = parse(
        "kiln 1
input %x : f32[2,3,4]
input %w : f32[1,3,4]
%a = tanh(%x)
%b = exp(%w)
%c = concat(%a, %b, axis=0)
output %c
",
    );
    let (p, placed) = check_in_place(&request(&g, &["c"], &[]), false, 2);
    assert_eq!(placed, 2, "{}", p.describe());
    assert_eq!(kind(&p, "c"), &BufferKind::Output(0));
    let c = buffer(&p, "c");
    assert_eq!(
        kind(&p, "b"),
        &BufferKind::Part {
            of: c,
            offset: 24,
            row: 12,
            stride: 36
        }
    );
    assert_eq!(p.arena_bytes, 0, "{}", p.describe());
}

#[test]
fn operands_seen_by_anything_else_keep_their_copies() {
    let g = parse(
        "kiln 1
input %x : f32[2,4]
input %w : f32[2,4]
const %k : f32[2,4] = uniform(-1, 1, 5)
%fetched = relu(%x)
%shared = sigmoid(%x)
%viewed = tanh(%x)
%twice = exp(%w)
%both = neg(%w)
%alone = abs(%w)
%other = mul(%shared, %x)
%r = reshape(%viewed, shape=[8])
%c1 = concat(%fetched, %shared, %viewed, %twice, %twice, %both, %x, %k, axis=1)
%c2 = concat(%both, %alone, axis=1)
%s = reduce_sum(%c1, axes=[1], keepdims=true)
%t = reduce_sum(%c2, axes=[1], keepdims=true)
%u = reduce_sum(%r, axes=[0], keepdims=false)
%y = add(%s, %t)
%z = add(%y, %other)
output %fetched
output %z
output %u
",
    );
    let (p, placed) = check_in_place(&request(&g, &["fetched", "z", "u"], &[]), true, 3);
    // Only %alone, read by %c2 alone, is written in place.
    assert_eq!(placed, 1, "{}", p.describe());
    assert!(matches!(kind(&p, "alone"), BufferKind::Part { .. }));
    assert_eq!(kind(&p, "fetched"), &BufferKind::Output(0));
    for name in ["shared", "viewed", "twice", "both"] {
        assert!(
            matches!(kind(&p, name), BufferKind::Temporary { .. }),
            "%{name} must keep its copy\n{}",
            p.describe()
        );
    }
    assert_eq!(kind(&p, "x"), &BufferKind::Feed(0));
    assert!(matches!(kind(&p, "k"), BufferKind::Constant(_)));
}

#[test]
fn a_concat_holding_parts_is_copied_into_the_next_concat() {
    // DenseNet's chain: %c1's operands are written into %c1, so %c1 itself is not made a part
    // of %c2 (parts of parts are not supported) and %c2 copies it.
    let g = parse(
        "kiln 1
input %x : f32[1,2,2,3]
%a = relu(%x)
%b = neg(%x)
%c1 = concat(%a, %b, axis=3)
%d = abs(%x)
%c2 = concat(%c1, %d, axis=3)
%y = exp(%c2)
output %y
",
    );
    let (p, placed) = check_in_place(&request(&g, &["y"], &[]), true, 4);
    assert_eq!(placed, 3, "{}", p.describe());
    assert!(matches!(kind(&p, "c1"), BufferKind::Temporary { .. }));
    assert!(matches!(kind(&p, "d"), BufferKind::Part { .. }));
}

#[test]
fn validate_rejects_parts_outside_their_slot_or_read_elsewhere() {
    let g = parse(CHANNEL_CONCAT);
    let (p, _) = check_in_place(&request(&g, &["y"], &[]), true, 1);
    let (a, c) = (buffer(&p, "a"), buffer(&p, "c"));
    let broken = |kind: BufferKind| {
        let mut q = p.clone();
        q.buffers[a.index()].kind = kind;
        q.validate().unwrap_err().to_string()
    };
    let part = |offset, row, stride| BufferKind::Part {
        of: c,
        offset,
        row,
        stride,
    };
    // Another operand's channels.
    let e = broken(part(5, 3, 8));
    assert!(e.contains("outside that concat's slot"), "{e}");
    // Rows that run past the concat output.
    let e = broken(part(6, 3, 8));
    assert!(e.contains("inconsistent kind"), "{e}");
    // Rows longer than their stride.
    let e = broken(part(0, 3, 2));
    assert!(e.contains("inconsistent kind"), "{e}");
    // A part of a feed.
    let e = broken(BufferKind::Part {
        of: buffer(&p, "x"),
        offset: 0,
        row: 3,
        stride: 3,
    });
    assert!(e.contains("inconsistent kind"), "{e}");
    // A part read by a kernel other than its concat.
    let mut q = p.clone();
    let y = q.kernels.iter().position(|k| k.name == "y").unwrap();
    q.kernels[y].epilogue.loads[0].buffer = a;
    q.kernels[y].epilogue.loads[0].strides = vec![0, 0, 0, 0];
    let e = q.validate().unwrap_err().to_string();
    assert!(e.contains("outside that concat's slot"), "{e}");
}
