//! A depthwise conv whose only reader is a 1x1 conv runs as one band-by-band stage: which
//! pairs merge (stride 1 and 2, SAME and VALID, with the 1x1's bias, activation and residual),
//! which must not (the depthwise output fetched or read twice, a 1x1 with padding or stride),
//! the reference's values, and the same bits as the two stages run apart.

use crate::CpuBackend;
use crate::plan::Stage;
use crate::test_reference::{assert_one_profile_entry, lower_and_plan, parse_graph, request};
use kiln_ir::backend::Backend;
use kiln_ir::compare::{Tolerance, assert_close};
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{Graph, Tensor};

/// An NHWC input of odd size and batch 2, a depthwise filter and bias for its 12 channels, a
/// 1x1 filter to 10 channels with a bias, and a shortcut of the 1x1's output shape.
const INPUTS: &str = "kiln 2
input %x : f32[2,9,11,12]
input %r : f32[2,9,11,10]
const %dw : f32[3,3,12,1] = normal(0.0, 0.4, 1)
const %db : f32[12] = uniform(-0.5, 0.5, 2)
const %pw : f32[1,1,12,10] = normal(0.0, 0.3, 3)
const %pb : f32[10] = uniform(-0.5, 0.5, 4)
";

fn graph(body: &str) -> Graph {
    parse_graph(INPUTS, body)
}

/// Whether the CPU plan merges a depthwise conv into the 1x1 conv after it.
fn merges(g: &Graph, fetches: &[&str]) -> bool {
    lower_and_plan(g, fetches)
        .1
        .stages
        .iter()
        .any(|(_, s)| matches!(s, Stage::DepthwisePointwise { .. }))
}

fn feeds() -> Vec<Tensor> {
    vec![
        Tensor::uniform(&[2, 9, 11, 12], -1.0, 1.0, 7),
        Tensor::uniform(&[2, 9, 11, 10], -1.0, 1.0, 8),
    ]
}

/// The CPU backend's values of `fetches`.
fn run_cpu(g: &Graph, fetches: &[&str]) -> Vec<Tensor> {
    let feeds = feeds();
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    CpuBackend
        .compile(&request(g, fetches))
        .unwrap()
        .run(&feeds, &mut [])
        .unwrap()
}

/// `y` against the reference, and bit for bit against the unmerged stages (fetching the
/// depthwise output `d` too keeps them apart).
fn check(g: &Graph, what: &str) {
    let feeds_owned = feeds();
    let feeds: Vec<&Tensor> = feeds_owned.iter().collect();
    let want = ReferenceBackend
        .compile(&request(g, &["y"]))
        .unwrap()
        .run(&feeds, &mut [])
        .unwrap();
    let merged = run_cpu(g, &["y"]);
    assert_close(&merged[0], &want[0], Tolerance::KERNEL, what);
    assert!(
        !merges(g, &["y", "d"]),
        "{what}: a fetched depthwise output merged"
    );
    let apart = run_cpu(g, &["y", "d"]);
    assert_eq!(merged[0], apart[0], "{what}: merged and apart differ");
}

#[test]
fn depthwise_then_1x1_merge_into_one_stage() {
    for (strides, padding) in [
        ("[1,1]", "SAME"),
        ("[2,2]", "SAME"),
        ("[1,1]", "VALID"),
        ("[2,1]", "VALID"),
    ] {
        for tail in [
            "%y = fused_conv2d(%d, %pw, %pb, padding=\"SAME\", expr=\"add(main, $2)\")",
            "%y = fused_conv2d(%d, %pw, %pb, padding=\"SAME\", expr=\"relu(add(main, $2))\")",
            "%y = fused_conv2d(%d, %pw, %pb, %r, padding=\"SAME\", expr=\"add(add(main, $2), $3)\")",
        ] {
            if tail.contains("%r") && (strides != "[1,1]" || padding != "SAME") {
                continue; // the shortcut has the full-size output's shape
            }
            let g = graph(&format!(
                "%d = fused_depthwise_conv2d(%x, %dw, %db, strides={strides}, padding=\"{padding}\", expr=\"relu6(add(main, $2))\")
{tail}
output %y
"
            ));
            let what = format!("{strides} {padding}: {tail}");
            assert!(merges(&g, &["y"]), "{what}");
            check(&g, &what);
        }
    }
}

/// MobileNet's order: a 1x1 expansion, the depthwise conv, the 1x1 projection with the
/// block's input added, and a next layer. Planned kernel by kernel, the arena gives the
/// projection's output the bytes of the expansion (dead once the depthwise conv has run);
/// merged, early bands would overwrite expansion rows that later bands still read. The
/// backend plans the arena keeping the expansion live through the projection, so the pair
/// merges and its output has bytes of its own.
#[test]
fn a_pair_whose_output_would_take_its_inputs_bytes_keeps_them_live() {
    let g = graph(
        "const %pe : f32[1,1,12,12] = normal(0.0, 0.3, 5)
const %pz : f32[1,1,10,10] = normal(0.0, 0.3, 6)
%e = fused_conv2d(%x, %pe, padding=\"SAME\", expr=\"relu6(main)\")
%d = fused_depthwise_conv2d(%e, %dw, %db, padding=\"SAME\", expr=\"relu6(add(main, $2))\")
%y = fused_conv2d(%d, %pw, %pb, %r, padding=\"SAME\", expr=\"add(add(main, $2), $3)\")
%z = conv2d(%y, %pz, padding=\"SAME\")
output %z
",
    );
    let overlap = |program: &kiln_ir::program::Program| {
        let bytes = |name: &str| {
            let kernel = program.kernels.iter().find(|k| k.name == name).unwrap();
            crate::plan::arena_bytes(program, kernel.output).unwrap()
        };
        let (e, y) = (bytes("e"), bytes("y"));
        e.start < y.end && y.start < e.end
    };
    let by_kernels = kiln_ir::lower::lower(&request(&g, &["z"])).unwrap();
    assert!(overlap(&by_kernels), "the case needs y in e's bytes");
    let (program, _) = lower_and_plan(&g, &["z"]);
    assert!(!overlap(&program), "e is kept live through y");
    assert!(merges(&g, &["z"]));
    let feeds_owned = feeds();
    let feeds: Vec<&Tensor> = feeds_owned.iter().collect();
    let want = ReferenceBackend
        .compile(&request(&g, &["z"]))
        .unwrap()
        .run(&feeds, &mut [])
        .unwrap();
    assert_close(&run_cpu(&g, &["z"])[0], &want[0], Tolerance::KERNEL, "z");
}

#[test]
fn depthwise_outputs_read_elsewhere_stay_apart() {
    // Read by two 1x1 convs.
    let g = graph(
        "%d = fused_depthwise_conv2d(%x, %dw, %db, padding=\"SAME\", expr=\"relu6(add(main, $2))\")
%a = conv2d(%d, %pw, padding=\"SAME\")
%b = conv2d(%d, %pw, strides=[1,1], padding=\"SAME\")
%y = add(%a, %b)
output %y
",
    );
    assert!(!merges(&g, &["y"]));
    // A 1x1 with stride 2 reads every other pixel.
    let g = graph(
        "%d = fused_depthwise_conv2d(%x, %dw, %db, padding=\"SAME\", expr=\"relu6(add(main, $2))\")
%y = conv2d(%d, %pw, strides=[2,2], padding=\"SAME\")
output %y
",
    );
    assert!(!merges(&g, &["y"]));
    let feeds_owned = feeds();
    let feeds: Vec<&Tensor> = feeds_owned.iter().collect();
    let want = ReferenceBackend
        .compile(&request(&g, &["y"]))
        .unwrap()
        .run(&feeds, &mut [])
        .unwrap();
    assert_close(
        &run_cpu(&g, &["y"])[0],
        &want[0],
        Tolerance::KERNEL,
        "stride 2",
    );
}

/// A profile lists the merged pair once, under the 1x1 conv: both kernels' ops and nodes and
/// the sum of their flops, so its GFLOP/s counts all the work its time covers.
#[test]
fn a_merged_pair_is_one_profile_entry_with_both_kernels_work() {
    let g = graph(
        "%d = fused_depthwise_conv2d(%x, %dw, %db, padding=\"SAME\", expr=\"relu6(add(main, $2))\")
%y = fused_conv2d(%d, %pw, %pb, padding=\"SAME\", expr=\"add(main, $2)\")
output %y
",
    );
    assert!(merges(&g, &["y"]));
    let feeds_owned = feeds();
    let feeds: Vec<&Tensor> = feeds_owned.iter().collect();
    assert_one_profile_entry(&g, "y", &feeds, "depthwise_conv2d", "conv2d");
}
