//! Reductions over the middle of a shape (global pooling) run as one channel window over the
//! reduced axes: which reductions take that path (sum, mean and max over one run of axes with
//! at least eight values kept inside it, size-1 axes anywhere, keepdims or not, with and
//! without a fused activation) and which keep the generated kernel, each against the
//! reference's values.

use crate::plan::Stage;
use crate::test_reference::{assert_matches_reference, lower_and_plan, parse_graph, request};
use kiln_ir::Tensor;

/// Whether the plan for `body` (output `%y`, input `%x` of `dims`) runs a reduction as a
/// channel window, after checking its values against the reference.
fn windowed(dims: &[usize], body: &str) -> bool {
    let dims_text: Vec<String> = dims.iter().map(usize::to_string).collect();
    let header = format!("kiln 2\ninput %x : f32[{}]\n", dims_text.join(","));
    let g = parse_graph(&header, body);
    let x = Tensor::uniform(dims, -2.0, 2.0, 5);
    assert_matches_reference(&request(&g, &["y"]), &[&x], &[body]);
    lower_and_plan(&g, &["y"])
        .1
        .stages
        .iter()
        .any(|(_, s)| matches!(s, Stage::Window { .. }))
}

#[test]
fn middle_reductions_run_as_channel_windows() {
    for (dims, body) in [
        (
            &[2, 5, 7, 12][..],
            "%y = reduce_mean(%x, axes=[1,2])\noutput %y\n",
        ),
        (
            &[2, 5, 7, 12],
            "%y = reduce_sum(%x, axes=[1,2], keepdims=true)\noutput %y\n",
        ),
        (&[3, 6, 20], "%y = reduce_max(%x, axes=[1])\noutput %y\n"),
        (&[4, 6, 17], "%y = reduce_mean(%x, axes=[0,1])\noutput %y\n"),
        (
            &[2, 1, 5, 1, 9],
            "%y = reduce_sum(%x, axes=[2,3])\noutput %y\n",
        ),
        (
            &[3, 4, 9, 16],
            "%m = reduce_mean(%x, axes=[1,2])\n%y = relu(%m)\noutput %y\n",
        ),
    ] {
        assert!(windowed(dims, body), "not a window: {body} on {dims:?}");
    }
}

#[test]
fn other_reductions_keep_the_generated_kernel() {
    for (dims, body) in [
        // Fewer than eight values kept inside the run.
        (
            &[2, 5, 7, 4][..],
            "%y = reduce_mean(%x, axes=[1,2])\noutput %y\n",
        ),
        // No min window.
        (
            &[2, 5, 7, 12],
            "%y = reduce_min(%x, axes=[1,2])\noutput %y\n",
        ),
        // Two runs of reduced axes.
        (
            &[2, 5, 7, 12],
            "%y = reduce_sum(%x, axes=[1,3])\noutput %y\n",
        ),
        // The innermost axis reduced, or every axis.
        (&[2, 5, 7, 12], "%y = reduce_sum(%x, axes=[3])\noutput %y\n"),
        (&[2, 5, 7, 12], "%y = reduce_max(%x)\noutput %y\n"),
        // A run longer than one window sums in sequence (64 x 65 values).
        (
            &[1, 64, 65, 8],
            "%y = reduce_sum(%x, axes=[1,2])\noutput %y\n",
        ),
    ] {
        assert!(!windowed(dims, body), "a window: {body} on {dims:?}");
    }
}
