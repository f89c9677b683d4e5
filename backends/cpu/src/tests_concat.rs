//! Concat operands written in place on the CPU: which producers store into their slot of the
//! concat output (GEMM convolutions at a row stride, with their epilogue folded or run as a
//! strided elementwise stage; elementwise kernels), that the concat copies only the rest (no
//! stage at all when nothing is left), and that every case, including those that must keep
//! their copies, gives the reference's values.

use crate::plan::{Stage, plan, writes_rows_at_stride};
use crate::test_reference::{assert_matches_reference, lower_and_plan, parse_graph, request};
use kiln_ir::lower::{lower, write_concat_operands_in_place};
use kiln_ir::program::{BufferKind, Program};
use kiln_ir::{Graph, Tensor};

/// Two NHWC producers of every kind a channel concat meets in Inception and DenseNet: a GEMM
/// convolution with its bias and relu folded (%p), one whose epilogue is not foldable (%q, a
/// batch norm's scale and shift), a window kernel (%m, which must stay a copy) and an
/// elementwise kernel (%e). Batch 2, so rows run across images.
const PRODUCERS: &str = "kiln 2
input %x : f32[2,6,6,8]
const %w1 : f32[1,1,8,16] = normal(0.0, 0.3, 1)
const %w3 : f32[3,3,8,12] = normal(0.0, 0.2, 2)
const %b1 : f32[16] = uniform(-0.1, 0.1, 3)
const %s3 : f32[12] = uniform(0.5, 1.5, 4)
const %t3 : f32[12] = uniform(-0.2, 0.2, 5)
%p = fused_conv2d(%x, %w1, %b1, padding=\"SAME\", expr=\"relu(add(main, $2))\")
%q = fused_conv2d(%x, %w3, %s3, %t3, padding=\"SAME\", expr=\"relu(add(mul(main, $2), $3))\")
%m = max_pool(%x, ksize=[1,3,3,1], padding=\"SAME\")
%e = sigmoid(%x)
";

fn graph(body: &str) -> Graph {
    parse_graph(PRODUCERS, body)
}

/// The CPU backend's results (through `CpuBackend::compile`, as a session runs it) against the
/// reference's.
fn check_against_reference(g: &Graph, fetches: &[&str]) {
    let req = request(g, fetches);
    let x = Tensor::uniform(&[2, 6, 6, 8], -1.0, 1.0, 7);
    assert_matches_reference(&req, &[&x], fetches);
}

/// What the CPU backend plans: the program, the names of the kernels that got a stage, and
/// whether a GEMM convolution stores its rows at a stride wider than its channels.
fn planned(g: &Graph, fetches: &[&str]) -> (Program, Vec<String>, bool) {
    let (program, plan) = lower_and_plan(g, fetches);
    program.validate().unwrap();
    let staged = plan
        .stages
        .iter()
        .map(|(k, _)| program.kernels[*k].name.clone())
        .collect();
    let strided_conv = plan
        .stages
        .iter()
        .any(|(_, s)| matches!(s, Stage::Conv { ldc, cout, .. } if ldc > cout));
    (program, staged, strided_conv)
}

fn is_part(p: &Program, name: &str) -> bool {
    p.buffers
        .iter()
        .any(|b| b.name == name && matches!(b.kind, BufferKind::Part { .. }))
}

#[test]
fn inception_style_concat_is_written_in_place_by_its_producers() {
    let g = graph(
        "%c = concat(%p, %q, %e, axis=3)
%y = relu(%c)
output %y
",
    );
    let (p, staged, strided_conv) = planned(&g, &["y"]);
    for name in ["p", "q", "e"] {
        assert!(
            is_part(&p, name),
            "%{name} is not in place\n{}",
            p.describe()
        );
    }
    assert!(strided_conv);
    // The concat copies nothing, so it has no stage.
    assert!(!staged.iter().any(|k| k == "c"), "{staged:?}");
    check_against_reference(&g, &["y"]);
}

#[test]
fn a_window_operand_is_still_copied_beside_operands_in_place() {
    let g = graph(
        "%c = concat(%m, %p, %q, %e, axis=3)
output %c
",
    );
    let (p, staged, _) = planned(&g, &["c"]);
    assert!(!is_part(&p, "m"), "{}", p.describe());
    assert!(is_part(&p, "p") && is_part(&p, "q") && is_part(&p, "e"));
    assert!(staged.iter().any(|k| k == "c"), "{staged:?}");
    check_against_reference(&g, &["c"]);
}

#[test]
fn operands_seen_elsewhere_keep_their_copies_and_values() {
    // %p is fetched, %q read by another op, %e taken by two concats, %m twice by one.
    let g = graph(
        "%c1 = concat(%p, %q, %e, %m, %m, axis=3)
%c2 = concat(%e, %x, axis=3)
%z = neg(%q)
%s = reduce_sum(%c1, axes=[3], keepdims=true)
%t = reduce_sum(%c2, axes=[3], keepdims=true)
%y = add(%s, %t)
output %p
output %y
output %z
",
    );
    let fetches = ["p", "y", "z"];
    let (p, _, _) = planned(&g, &fetches);
    for name in ["p", "q", "e", "m"] {
        assert!(
            !is_part(&p, name),
            "%{name} must be copied\n{}",
            p.describe()
        );
    }
    check_against_reference(&g, &fetches);
}

#[test]
fn densenet_chain_copies_the_previous_concat_and_places_the_new_layer() {
    let g = graph(
        "%c1 = concat(%m, %p, axis=3)
%r1 = relu(%c1)
%c2 = concat(%c1, %q, axis=3)
%r2 = relu(%c2)
%c3 = concat(%c2, %e, axis=3)
%y = add(%c3, %c3)
output %r1
output %r2
output %y
",
    );
    let fetches = ["r1", "r2", "y"];
    let (p, _, _) = planned(&g, &fetches);
    assert!(is_part(&p, "p") && is_part(&p, "q") && is_part(&p, "e"));
    assert!(!is_part(&p, "c1") && !is_part(&p, "c2"));
    check_against_reference(&g, &fetches);
}

#[test]
fn a_strided_slot_the_stage_cannot_store_is_an_error_not_a_wrong_result() {
    // A caller more permissive than `writes_rows_at_stride` places the max_pool's output at a
    // channel stride; the window kernel stores contiguous rows, so planning must refuse.
    let g = graph(
        "%c = concat(%m, %p, axis=3)
output %c
",
    );
    let mut program = lower(&request(&g, &["c"])).unwrap();
    write_concat_operands_in_place(&mut program, |_, _, _, _| true).unwrap();
    program.validate().unwrap();
    let e = plan(&program)
        .err()
        .expect("planning must fail")
        .to_string();
    assert!(
        e.contains("m") && e.contains("rows of 8 values 24 apart"),
        "{e}"
    );
}

/// A 3x3 conv the plan runs as Winograd writes its concat slot in place too (Inception's
/// branches): one Winograd stage storing at the concat's stride, the reference's values.
#[test]
fn a_winograd_conv_writes_its_concat_slot() {
    let g = kiln_ir::text::parse(
        "kiln 2
input %x : f32[1,16,16,64]
const %w : f32[3,3,64,64] = normal(0.0, 0.05, 1)
const %b : f32[64] = uniform(-0.5, 0.5, 2)
const %w1 : f32[1,1,64,16] = normal(0.0, 0.1, 3)
%a = fused_conv2d(%x, %w, %b, padding=\"SAME\", expr=\"relu(add(main, $2))\")
%p = conv2d(%x, %w1, padding=\"SAME\")
%c = concat(%p, %a, axis=3)
output %c
",
        None,
    )
    .unwrap();
    let req = request(&g, &["c"]);
    let mut program = lower(&req).unwrap();
    write_concat_operands_in_place(&mut program, writes_rows_at_stride).unwrap();
    program.validate().unwrap();
    assert!(is_part(&program, "a"), "{}", program.describe());
    let simd = crate::gemm::detect() != crate::gemm::Isa::Portable;
    let strided_winograd = plan(&program)
        .unwrap()
        .stages
        .iter()
        .any(|(_, s)| matches!(s, Stage::Winograd { ldc: 80, .. }));
    assert_eq!(strided_winograd, simd);
    let x = Tensor::uniform(&[1, 16, 16, 64], -1.0, 1.0, 7);
    assert_matches_reference(&req, &[&x], &["c"]);
}
