//! A convolution's residual connection folded into the GEMM's store: which epilogues fold
//! (`relu((conv + bias) + shortcut)`, as ResNet blocks and ShuffleNet units end), which must
//! not (shortcut before the bias, a broadcast shortcut, a matmul), and that every case gives
//! the reference's values, including a folded conv writing its slot of a concat and a 3x3
//! conv large enough to run as Winograd, which adds the shortcut in its output transform.

use crate::plan::Stage;
use crate::test_reference::{assert_matches_reference, lower_and_plan, parse_graph, request};
use kiln_ir::backend::Backend;
use kiln_ir::{Graph, Tensor};

/// An NHWC input, a shortcut of the conv's output shape, one batch-broadcast shortcut, and
/// 3x3 and 1x1 filters (12 -> 10 channels, deep enough for the GEMM path) with a bias. Odd
/// sizes: 5x7 pixels, batch 2.
const INPUTS: &str = "kiln 2
input %x : f32[2,5,7,12]
input %r : f32[2,5,7,10]
input %rb : f32[1,5,7,10]
const %w3 : f32[3,3,12,10] = normal(0.0, 0.3, 1)
const %w1 : f32[1,1,12,10] = normal(0.0, 0.3, 2)
const %b : f32[10] = uniform(-0.5, 0.5, 3)
";

fn graph(body: &str) -> Graph {
    parse_graph(INPUTS, body)
}

/// Whether the CPU plan folds a residual into a convolution's store, and how many stages the
/// program has.
fn folds_residual(g: &Graph, fetch: &str) -> (bool, usize) {
    let (_, plan) = lower_and_plan(g, &[fetch]);
    let folded = plan
        .stages
        .iter()
        .any(|(_, s)| matches!(s, Stage::Conv { epilogue, .. } if epilogue.residual.is_some()));
    (folded, plan.stages.len())
}

/// The CPU backend's result against the reference's.
fn check_against_reference(g: &Graph, fetch: &str) {
    let req = request(g, &[fetch]);
    let feeds = [
        Tensor::uniform(&[2, 5, 7, 12], -1.0, 1.0, 7),
        Tensor::uniform(&[2, 5, 7, 10], -1.0, 1.0, 8),
        Tensor::uniform(&[1, 5, 7, 10], -1.0, 1.0, 9),
    ];
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    assert_matches_reference(&req, &feeds, &[fetch]);
}

#[test]
fn conv_bias_shortcut_relu_folds_into_one_stage() {
    for w in ["w3", "w1"] {
        let g = graph(&format!(
            "%y = fused_conv2d(%x, %{w}, %b, %r, padding=\"SAME\", expr=\"relu(add(add(main, $2), $3))\")
output %y
"
        ));
        assert_eq!(folds_residual(&g, "y"), (true, 1), "{w}");
        check_against_reference(&g, "y");
    }
    // The shortcut alone, no bias, no activation.
    let g = graph(
        "%y = fused_conv2d(%x, %w1, %r, padding=\"SAME\", expr=\"add($2, main)\")
output %y
",
    );
    assert_eq!(folds_residual(&g, "y"), (true, 1));
    check_against_reference(&g, "y");
}

#[test]
fn shortcuts_the_store_cannot_apply_stay_a_separate_stage() {
    for expr in [
        // The shortcut before the bias: folding would round the sums in another order.
        "relu(add(add(main, $3), $2))",
        // A shortcut broadcast over the batch is not the output's shape.
        "relu(add(add(main, $2), $4))",
        // Two shortcuts: the store adds one.
        "add(add(add(main, $2), $3), $3)",
    ] {
        let g = graph(&format!(
            "%y = fused_conv2d(%x, %w3, %b, %r, %rb, padding=\"SAME\", expr=\"{expr}\")
output %y
"
        ));
        assert_eq!(folds_residual(&g, "y"), (false, 2), "{expr}");
        check_against_reference(&g, "y");
    }
}

#[test]
fn a_folded_conv_writes_its_concat_slot() {
    let g = graph(
        "%y = fused_conv2d(%x, %w1, %b, %r, padding=\"SAME\", expr=\"relu(add(add(main, $2), $3))\")
%c = concat(%y, %r, axis=3)
output %c
",
    );
    assert!(folds_residual(&g, "c").0);
    check_against_reference(&g, "c");
}

/// ResNet's 56x56x64 block end: the plan picks Winograd by default on SIMD kernels, and the
/// shortcut is added in its output transform, not in a separate stage; F(4x4, 3x3) on 24x24
/// (4x4 tiles fit), F(2x2, 3x3) on 14x14 (they would compute 16x16); the profile names each.
#[test]
fn a_winograd_conv_folds_its_shortcut() {
    use crate::gemm::WinogradVariant::{F2, F4};
    for (hw, variant) in [(24, F4), (14, F2)] {
        let text = format!(
            "kiln 2
input %x : f32[1,{hw},{hw},64]
input %r : f32[1,{hw},{hw},64]
const %w : f32[3,3,64,64] = normal(0.0, 0.05, 1)
const %b : f32[64] = uniform(-0.5, 0.5, 2)
%y = fused_conv2d(%x, %w, %b, %r, padding=\"SAME\", expr=\"relu(add(add(main, $2), $3))\")
output %y
"
        );
        let g = kiln_ir::text::parse(&text, None).unwrap();
        let (_, plan) = lower_and_plan(&g, &["y"]);
        let stages = plan.stages;
        let simd = crate::gemm::detect() != crate::gemm::Isa::Portable;
        let winograd = stages.iter().any(|(_, s)| {
            matches!(s, Stage::Winograd { epilogue, filter, .. }
                if epilogue.residual.is_some() && filter.variant() == variant)
        });
        assert_eq!((winograd, stages.len()), (simd, 1), "{hw}x{hw}");
        let req = request(&g, &["y"]);
        let feeds = [
            Tensor::uniform(&[1, hw, hw, 64], -1.0, 1.0, 7),
            Tensor::uniform(&[1, hw, hw, 64], -1.0, 1.0, 8),
        ];
        let feeds: Vec<&Tensor> = feeds.iter().collect();
        assert_matches_reference(&req, &feeds, &["winograd + shortcut"]);
        // The profile names the algorithm (its GFLOP/s count the direct FLOPs), and the
        // executable's facts count it, so that `kiln bench` does not take a rate above the
        // machine's peak for a sign that the peak was measured too low.
        let exe = crate::CpuBackend.compile(&req).unwrap();
        assert_eq!(exe.info().fast_algorithm_kernels, usize::from(simd));
        let (_, times) = exe.run_profiled(&feeds, &mut []).unwrap();
        let tile = variant.tile();
        let ops: Vec<String> = times.iter().map(|t| t.ops_text()).collect();
        let named = format!("conv2d(winograd {tile}x{tile})+add+add+relu");
        assert_eq!(ops.contains(&named), simd, "{ops:?}");
        // A 1x1 conv runs the direct algorithm: none counted.
        let direct =
            kiln_ir::text::parse(&text.replace("f32[3,3,64,64]", "f32[1,1,64,64]"), None).unwrap();
        let exe = crate::CpuBackend
            .compile(&request(&direct, &["y"]))
            .unwrap();
        assert_eq!(exe.info().fast_algorithm_kernels, 0);
    }
}
