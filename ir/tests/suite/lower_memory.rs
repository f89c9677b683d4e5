//! Arena planning: temporaries share memory when their lifetimes do not overlap, never when
//! they do, and a deliberately broken plan is caught both by `validate` and, through
//! corrupted results, by the interpreter.

use crate::lower_common;

use kiln_ir::lower::{lower, plan_keeping, run_program};
use kiln_ir::program::BufferKind;
use kiln_ir::{Graph, Tensor};
use lower_common::*;

/// `h0 = x`, `h{i} = matmul(h{i-1}, w{i})` for i in 1..=n, with the given widths; fetches `h{n}`.
fn matmul_chain(widths: &[usize]) -> Graph {
    let mut text = format!("kiln 1\ninput %h0 : f32[4,{}]\n", widths[0]);
    for i in 1..widths.len() {
        let (k, n) = (widths[i - 1], widths[i]);
        text += &format!("const %w{i} : f32[{k},{n}] = uniform(-0.5, 0.5, {i})\n");
        text += &format!("%h{i} = matmul(%h{}, %w{i})\n", i - 1);
    }
    parse(&text)
}

fn offset_of(p: &kiln_ir::program::Program, name: &str) -> usize {
    let b = p.buffers.iter().find(|b| b.name == name).unwrap();
    match b.kind {
        BufferKind::Temporary { offset } => offset,
        ref k => panic!("%{name} is {k:?}, not a temporary"),
    }
}

#[test]
fn chain_of_ten_equal_matmuls_uses_two_slots() {
    let g = matmul_chain(&[16; 11]);
    let p = check_against_reference(&request(&g, &["h10"], &[]), 1);
    assert_eq!(p.kernels.len(), 10);
    // h1..h9 are temporaries of 4*16*4 = 256 bytes; each is live with its neighbours only.
    assert_eq!(p.sum_temporary_bytes, 9 * 256);
    assert_eq!(p.arena_bytes, 2 * 256);
    assert!(p.arena_bytes < p.sum_temporary_bytes);
    let offsets: Vec<usize> = (1..10).map(|i| offset_of(&p, &format!("h{i}"))).collect();
    assert_eq!(offsets, [0, 256, 0, 256, 0, 256, 0, 256, 0]);
}

/// A backend that runs kernels 1 and 2 as one stage keeps kernel 1's input (h1) live through
/// kernel 2: h3 no longer takes h1's bytes, the plan is still valid, and it still computes
/// the same.
#[test]
fn kept_inputs_stay_live_through_the_given_kernel() {
    let g = matmul_chain(&[16; 11]);
    let mut p = check_against_reference(&request(&g, &["h10"], &[]), 1);
    assert_eq!(offset_of(&p, "h1"), offset_of(&p, "h3"));
    let h1 = p.kernels[0].output;
    plan_keeping(&mut p, &[(h1, 2)]).unwrap();
    p.validate().unwrap();
    assert_no_live_overlap(&p);
    let (h1, h2, h3) = (
        offset_of(&p, "h1"),
        offset_of(&p, "h2"),
        offset_of(&p, "h3"),
    );
    assert!(h1 != h2 && h2 != h3 && h1 != h3, "{h1} {h2} {h3}");
    assert_eq!(p.arena_bytes, 3 * 256);
    let (feeds, _) = inputs(&request(&g, &["h10"], &[]), 1);
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    let got = run_program(&p, &feeds, &mut []).unwrap();
    let want = run_program(
        &lower(&request(&g, &["h10"], &[])).unwrap(),
        &feeds,
        &mut [],
    )
    .unwrap();
    assert_eq!(got, want);
}

#[test]
fn chain_of_ten_mixed_widths_shares_memory() {
    let widths = [8, 64, 8, 40, 3, 96, 5, 17, 64, 1, 9];
    let g = matmul_chain(&widths);
    let p = check_against_reference(&request(&g, &["h10"], &[]), 2);
    assert!(
        p.arena_bytes < p.sum_temporary_bytes,
        "{} vs {}",
        p.arena_bytes,
        p.sum_temporary_bytes
    );
    // At any kernel only two neighbours are live, so the arena never needs more than the two
    // largest adjacent pairs, rounded up: h1 (1024 bytes) and h2 (128) or h8 (1024) and h9.
    let aligned = |w: usize| (4 * 4 * w).next_multiple_of(64);
    let worst_pair = (1..9)
        .map(|i| aligned(widths[i]) + aligned(widths[i + 1]))
        .max()
        .unwrap();
    assert!(
        p.arena_bytes <= worst_pair,
        "{}\n{}",
        worst_pair,
        p.describe()
    );
}

#[test]
fn diamonds_in_a_chain_reuse_the_arena() {
    // Unfused (lowering fuses nothing by itself): every node is a kernel and a temporary.
    let mut text = String::from("kiln 1\ninput %a0 : f32[5,7]\n");
    for i in 1..=10 {
        let p = i - 1;
        text +=
            &format!("%r{i} = relu(%a{p})\n%s{i} = sigmoid(%a{p})\n%a{i} = add(%r{i}, %s{i})\n");
    }
    let g = parse(&text);
    let p = check_against_reference(&request(&g, &["a10"], &[]), 3);
    assert_eq!(p.kernels.len(), 30);
    // 29 temporaries of 140 bytes (192 aligned); at most three are live at once (a{i-1}
    // while r{i} and s{i} are made, then r{i}, s{i} and a{i}), so three slots suffice.
    assert_eq!(p.sum_temporary_bytes, 29 * 192);
    assert_eq!(p.arena_bytes, 3 * 192);
}

#[test]
fn long_lived_values_keep_their_space() {
    // %a is read at the very end, so nothing may be placed over it while the chain runs.
    let g = parse(
        "kiln 1
input %x : f32[4,16]
const %w : f32[16,16] = uniform(-0.5, 0.5, 9)
%a = matmul(%x, %w)
%b = matmul(%a, %w)
%c = matmul(%b, %w)
%d = matmul(%c, %w)
%e = matmul(%d, %w)
%y = add(%e, %a)
output %y
",
    );
    let p = check_against_reference(&request(&g, &["y"], &[]), 4);
    let a = offset_of(&p, "a");
    for other in ["b", "c", "d"] {
        assert_ne!(offset_of(&p, other), a, "%{other} placed over the live %a");
    }
    assert_eq!(p.arena_bytes, 3 * 256);
}

#[test]
fn variable_updates_stay_live_until_the_commit() {
    let g = parse(
        "kiln 1
input %x : f32[4,16]
var %v : f32[4,16] = zeros
const %w : f32[16,16] = uniform(-0.5, 0.5, 9)
%n = assign_add(%v, %x)
%a = matmul(%x, %w)
%b = matmul(%a, %w)
%c = matmul(%b, %w)
output %c
",
    );
    let p = check_against_reference(&request(&g, &["c"], &["n"]), 5);
    let n = offset_of(&p, "n");
    assert_ne!(offset_of(&p, "a"), n);
    assert_ne!(offset_of(&p, "b"), n);
    let ranges = p.live_ranges();
    let nb = p.buffers.iter().position(|b| b.name == "n").unwrap();
    assert_eq!(ranges[nb].unwrap().1, p.kernels.len());
}

#[test]
fn an_optimizer_update_commits_each_variable_from_its_part_of_one_kernel() {
    let g = parse(
        "kiln 3
input %g : f32[3,5]
var %w : f32[3,5] = zeros
var %m : f32[3,5] = zeros
var %v : f32[3,5] = zeros
var %b1p : f32[] = fill(0.9)
var %b2p : f32[] = fill(0.999)
const %lr : f32[] = [0.1]
const %b1 : f32[] = [0.9]
const %b2 : f32[] = [0.999]
const %eps : f32[] = [1e-8]
%up = apply_adam(%w, %m, %v, %b1p, %b2p, %lr, %b1, %b2, %eps, %g)
%next = mul(%b1p, %b1)
%pow = assign(%b1p, %next)
%train = group(%up, %pow)
%y = reduce_sum(%w)
output %y
",
    );
    let p = check_against_reference(&request(&g, &["y", "train"], &["train"]), 11);
    // One kernel writes the three new values; the group has none (its value is a constant).
    let adam: Vec<_> = p.kernels.iter().filter(|k| k.name == "up").collect();
    assert_eq!(adam.len(), 1);
    assert!(
        p.kernels.iter().all(|k| k.name != "train"),
        "{}",
        p.describe()
    );
    let offsets: Vec<usize> = p.updates.iter().map(|u| u.offset).collect();
    assert_eq!(offsets, [0, 15, 30, 0], "{}", p.describe());
    assert!(
        p.describe().contains("at element 30 (%up)"),
        "{}",
        p.describe()
    );
    // An update reaching past its value buffer, or starting mid-variable, is invalid.
    for offset in [45, 7] {
        let mut bad = p.clone();
        bad.updates[2].offset = offset;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("update %up of variable 2"), "{err}");
    }
}

#[test]
fn empty_tensors_lower_and_run() {
    let g = parse(
        "kiln 1
input %x : f32[0,3]
%a = exp(%x)
%b = add(%a, %a)
%c = neg(%a)
%y = mul(%b, %c)
output %y
",
    );
    let p = check_against_reference(&request(&g, &["y"], &[]), 6);
    assert_eq!(p.arena_bytes, 0);
}

#[test]
fn overlapping_live_buffers_are_caught() {
    let g = matmul_chain(&[16; 4]);
    let req = request(&g, &["h3"], &[]);
    let mut p = lower(&req).unwrap();
    // h1 and h2 are both live at the kernel that computes h2: put them on the same bytes.
    let h1 = offset_of(&p, "h1");
    let h2 = p.buffers.iter().position(|b| b.name == "h2").unwrap();
    p.buffers[h2].kind = BufferKind::Temporary { offset: h1 };
    let err = p.validate().unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    // The interpreter does not trust the plan: the result is corrupted, not silently right.
    let (feeds, mut vars) = inputs(&req, 7);
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    let good = run_program(&lower(&req).unwrap(), &feeds, &mut vars).unwrap();
    let bad = run_program(&p, &feeds, &mut vars).unwrap();
    assert_ne!(good, bad);
    assert!(bad[0].as_f32().unwrap().iter().any(|v| v.is_nan()));
}

#[test]
fn misaligned_or_out_of_arena_offsets_are_invalid() {
    let g = matmul_chain(&[16; 4]);
    let mut p = lower(&request(&g, &["h3"], &[])).unwrap();
    let h1 = p.buffers.iter().position(|b| b.name == "h1").unwrap();
    p.buffers[h1].kind = BufferKind::Temporary { offset: 32 };
    assert!(p.validate().is_err());
    p.buffers[h1].kind = BufferKind::Temporary {
        offset: p.arena_bytes,
    };
    assert!(p.validate().is_err());
}

#[test]
fn run_program_checks_its_inputs() {
    let g = matmul_chain(&[16; 3]);
    let req = request(&g, &["h2"], &[]);
    let p = lower(&req).unwrap();
    let wrong = Tensor::zeros(&[4, 15]);
    let err = run_program(&p, &[&wrong], &mut []).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected f32[4,16], got f32[4,15]"),
        "{err}"
    );
    assert!(run_program(&p, &[], &mut []).is_err());
}

/// `%r` and `%c` reshape temporaries. Kernels run in the order t, a, b, m, y: `%a` is `%t`'s
/// last direct reader, but `%m` reads `%t`'s bytes later through `%r`, and `%b`, written in
/// between, needs bytes of `%t`'s size.
const RESHAPED_TEMPORARIES: &str = "kiln 1
input %x : f32[4,6]
const %w : f32[4,4] = uniform(-0.5, 0.5, 3)
%t = relu(%x)
%r = reshape(%t, shape=[6,4])
%a = sigmoid(%t)
%b = neg(%a)
%c = reshape(%b, shape=[6,4])
%m = matmul(%r, %w)
%y = add(%c, %m)
output %y
";

fn buffer_id(p: &kiln_ir::program::Program, name: &str) -> kiln_ir::program::BufferId {
    let i = p.buffers.iter().position(|b| b.name == name).unwrap();
    kiln_ir::program::BufferId(i as u32)
}

fn kernel_of(p: &kiln_ir::program::Program, name: &str) -> usize {
    p.kernels.iter().position(|k| k.name == name).unwrap()
}

#[test]
fn a_reshape_of_a_temporary_is_a_view_without_a_kernel() {
    let g = parse(RESHAPED_TEMPORARIES);
    let p = check_against_reference(&request(&g, &["y"], &[]), 8);
    assert_eq!(p.kernels.len(), 5, "{}", p.describe());
    assert!(p.kernels.iter().all(|k| k.op_name() != "reshape"));
    let (t, b) = (buffer_id(&p, "t"), buffer_id(&p, "b"));
    assert_eq!(
        p.buffer(buffer_id(&p, "r")).kind,
        BufferKind::Alias { of: t }
    );
    assert_eq!(
        p.buffer(buffer_id(&p, "c")).kind,
        BufferKind::Alias { of: b }
    );
    // The view shares %t's bytes, so %t stays live until %m reads them through %r, and %b,
    // written in between, gets bytes of its own.
    assert_eq!(p.arena_offset(buffer_id(&p, "r")), Some(offset_of(&p, "t")));
    assert_eq!(p.live_ranges()[t.index()].unwrap().1, kernel_of(&p, "m"));
    let order: Vec<&str> = p.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(order, ["t", "a", "b", "m", "y"]);
    assert_ne!(offset_of(&p, "b"), offset_of(&p, "t"));
    // A view of a view is a view of the first buffer.
    let g = parse(
        "kiln 1
input %x : f32[4,6]
%t = relu(%x)
%r = reshape(%t, shape=[24])
%s = reshape(%r, shape=[2,12])
%y = neg(%s)
output %y
",
    );
    let p = check_against_reference(&request(&g, &["y"], &[]), 9);
    assert_eq!(p.kernels.len(), 2, "{}", p.describe());
    let t = buffer_id(&p, "t");
    assert_eq!(
        p.buffer(buffer_id(&p, "s")).kind,
        BufferKind::Alias { of: t }
    );
}

#[test]
fn reshapes_of_sources_are_views_and_of_outputs_or_assigns_are_copies() {
    let g = parse(
        "kiln 1
input %x : f32[4,6]
var %v : f32[6,4] = zeros
%fx = reshape(%x, shape=[6,4])
%rv = reshape(%v, shape=[4,6])
%t = relu(%x)
%out = reshape(%t, shape=[24])
%s = assign_add(%v, %fx)
%rs = reshape(%s, shape=[24])
%z = neg(%rs)
%y = add(%rv, %t)
output %out
output %y
output %z
",
    );
    let p = check_against_reference(&request(&g, &["out", "y", "z"], &["s"]), 10);
    let (x, v) = (buffer_id(&p, "x"), buffer_id(&p, "v"));
    assert_eq!(
        p.buffer(buffer_id(&p, "fx")).kind,
        BufferKind::Alias { of: x }
    );
    assert_eq!(
        p.buffer(buffer_id(&p, "rv")).kind,
        BufferKind::Alias { of: v }
    );
    // A fetched reshape writes the caller's tensor; an assign's result keeps its own buffer.
    assert_eq!(p.buffer(buffer_id(&p, "out")).kind, BufferKind::Output(0));
    assert!(matches!(
        p.buffer(buffer_id(&p, "rs")).kind,
        BufferKind::Temporary { .. }
    ));
    let copies: Vec<&str> = p
        .kernels
        .iter()
        .filter(|k| k.op_name() == "reshape")
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(copies, ["out", "rs"]);
}

#[test]
fn an_alias_whose_source_dies_early_or_that_views_the_wrong_buffer_is_invalid() {
    let g = parse(RESHAPED_TEMPORARIES);
    let req = request(&g, &["y"], &[]);
    let good = lower(&req).unwrap();
    // %b is written while %m still has to read %t through %r: put %b on %t's bytes, as a plan
    // that ended %t's life at its last direct reader (%a) would.
    let mut p = good.clone();
    let b = buffer_id(&p, "b").index();
    p.buffers[b].kind = BufferKind::Temporary {
        offset: offset_of(&p, "t"),
    };
    let err = p.validate().unwrap_err().to_string();
    assert!(err.contains("are live together and overlap"), "{err}");
    // The interpreter shows the damage: %m reads %b's values through %r.
    let (feeds, mut vars) = inputs(&req, 11);
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    let want = run_program(&good, &feeds, &mut vars).unwrap();
    assert_ne!(run_program(&p, &feeds, &mut vars).unwrap(), want);

    let r = buffer_id(&good, "r").index();
    let broken = |kind: BufferKind, dims: Option<&[usize]>| {
        let mut p = good.clone();
        p.buffers[r].kind = kind;
        if let Some(d) = dims {
            p.buffers[r].dims = d.iter().copied().collect();
        }
        p.validate().unwrap_err().to_string()
    };
    let (y, c, w) = (
        buffer_id(&good, "y"),
        buffer_id(&good, "c"),
        buffer_id(&good, "w"),
    );
    let t = buffer_id(&good, "t");
    // A view of an output, of another view, of a buffer of another size, or of itself.
    for err in [
        broken(BufferKind::Alias { of: y }, None),
        broken(BufferKind::Alias { of: c }, None),
        broken(BufferKind::Alias { of: w }, None),
        broken(BufferKind::Alias { of: t }, Some(&[5, 4])),
        broken(
            BufferKind::Alias {
                of: kiln_ir::program::BufferId(r as u32),
            },
            None,
        ),
        broken(
            BufferKind::Alias {
                of: kiln_ir::program::BufferId(9999),
            },
            None,
        ),
    ] {
        assert!(
            err.contains("b") && err.contains("inconsistent kind"),
            "{err}"
        );
    }
}
