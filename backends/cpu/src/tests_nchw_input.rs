//! An NCHW -> NHWC transpose whose only reader is a conv that copies its input padded (few
//! channels, a filter wider than one tap) runs inside that conv: which pairs merge (RGB and
//! four channels, strides 1 and 2, SAME and VALID, with bias and activation), which must not
//! (the transposed input fetched or read twice, a 1x1 conv, 64 channels, another
//! permutation), the reference's values, and the profile's one entry for the pair.

use crate::plan::Stage;
use crate::test_reference::{
    assert_fetches_match_reference, assert_one_profile_entry, lower_and_plan, parse_graph,
};
use kiln_ir::{Graph, Tensor};

/// Channels-first inputs of odd sizes and batch 2 (3 and 64 channels) and filters for them.
const INPUTS: &str = "kiln 2
input %x : f32[2,3,13,11]
input %x64 : f32[2,64,7,6]
const %w3 : f32[3,3,3,8] = normal(0.0, 0.4, 1)
const %w7 : f32[7,7,3,5] = normal(0.0, 0.2, 2)
const %w1 : f32[1,1,3,8] = normal(0.0, 0.4, 3)
const %w64 : f32[3,3,64,4] = normal(0.0, 0.1, 4)
const %b8 : f32[8] = uniform(-0.5, 0.5, 5)
";

fn graph(body: &str) -> Graph {
    parse_graph(INPUTS, body)
}

/// Whether the CPU plan runs some conv on a channels-first input, with no transpose stage
/// left for it.
fn merges(g: &Graph, fetches: &[&str]) -> bool {
    lower_and_plan(g, fetches).1.stages.iter().any(|(_, s)| {
        matches!(
            s,
            Stage::Conv {
                nchw_from: Some(_),
                ..
            }
        )
    })
}

fn feeds() -> Vec<Tensor> {
    vec![
        Tensor::uniform(&[2, 3, 13, 11], -2.0, 2.0, 10),
        Tensor::uniform(&[2, 64, 7, 6], -1.0, 1.0, 11),
    ]
}

/// `fetches` on the CPU backend against the reference.
fn check(g: &Graph, fetches: &[&str]) {
    assert_fetches_match_reference(g, fetches, &feeds());
}

#[test]
fn an_nchw_input_transposes_inside_its_conv() {
    for conv in [
        "%c = conv2d(%t, %w3, padding=\"SAME\")\n%d = bias_add(%c, %b8)\n%y = relu(%d)",
        "%y = conv2d(%t, %w3, strides=[2,2], padding=\"SAME\")",
        "%y = conv2d(%t, %w7, strides=[2,2], padding=\"SAME\")",
        "%y = conv2d(%t, %w3, padding=\"VALID\")",
    ] {
        let g = graph(&format!(
            "%t = transpose(%x, perm=[0,2,3,1])\n{conv}\noutput %y\n"
        ));
        assert!(merges(&g, &["y"]), "{conv}");
        check(&g, &["y"]);
    }
}

#[test]
fn transposes_the_conv_cannot_take_stay_apart() {
    for (body, fetches) in [
        // Fetched: its values must exist.
        (
            "%t = transpose(%x, perm=[0,2,3,1])\n%y = conv2d(%t, %w3, padding=\"SAME\")\noutput %y\noutput %t\n",
            &["y", "t"][..],
        ),
        // Read by a second conv.
        (
            "%t = transpose(%x, perm=[0,2,3,1])\n%a = conv2d(%t, %w3, padding=\"SAME\")\n%b = conv2d(%t, %w3, padding=\"SAME\")\n%y = add(%a, %b)\noutput %y\n",
            &["y"][..],
        ),
        // A 1x1 conv copies nothing; 64 channels are read in place.
        (
            "%t = transpose(%x, perm=[0,2,3,1])\n%y = conv2d(%t, %w1, padding=\"SAME\")\noutput %y\n",
            &["y"][..],
        ),
        (
            "%t = transpose(%x64, perm=[0,2,3,1])\n%y = conv2d(%t, %w64, padding=\"SAME\")\noutput %y\n",
            &["y"][..],
        ),
        // Another permutation (height and width swapped as well).
        (
            "%t = transpose(%x, perm=[0,3,2,1])\n%y = conv2d(%t, %w3, padding=\"SAME\")\noutput %y\n",
            &["y"][..],
        ),
    ] {
        let g = graph(body);
        assert!(!merges(&g, fetches), "{body}");
        check(&g, fetches);
    }
}

/// A profile lists the pair once, under the conv: both kernels' ops and nodes.
#[test]
fn a_merged_transpose_is_one_profile_entry_with_its_conv() {
    let g = graph(
        "%t = transpose(%x, perm=[0,2,3,1])\n%y = conv2d(%t, %w3, padding=\"SAME\")\noutput %y\n",
    );
    assert!(merges(&g, &["y"]));
    let feeds_owned = feeds();
    let feeds: Vec<&Tensor> = feeds_owned.iter().collect();
    assert_one_profile_entry(&g, "y", &feeds, "transpose", "conv2d");
}
