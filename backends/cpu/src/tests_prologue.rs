//! A batch norm (with per-channel factors and terms and an activation after it) whose only
//! reader is a plain 1x1 conv becomes that conv's prologue: which kernels merge (DenseNet's
//! `relu(batch_norm(x) * s + t)`, a subtraction either way round, relu6, no activation, a conv
//! with bias, activation and residual), which must not (the batch norm's output fetched or
//! read twice, a strided 1x1, a 3x3, parameters fed at run time), the reference's values, and
//! the profile's one entry for the pair.

use crate::plan::Stage;
use crate::test_reference::{
    assert_fetches_match_reference, assert_one_profile_entry, lower_and_plan, parse_graph,
};
use kiln_ir::{Graph, Tensor};

/// An NHWC input of odd size and batch 2 with 12 channels, batch-norm parameters, a
/// per-channel factor and term, a 1x1 filter to 10 channels with a bias, and a shortcut of
/// the conv's output shape.
const INPUTS: &str = "kiln 2
input %x : f32[2,9,11,12]
input %r : f32[2,9,11,10]
input %fed : f32[12]
const %g : f32[12] = uniform(0.5, 1.5, 1)
const %be : f32[12] = uniform(-0.5, 0.5, 2)
const %m : f32[12] = uniform(-0.5, 0.5, 3)
const %v : f32[12] = uniform(0.5, 2.0, 4)
const %s : f32[12] = uniform(-1.5, 1.5, 5)
const %t : f32[12] = uniform(-0.5, 0.5, 6)
const %pw : f32[1,1,12,10] = normal(0.0, 0.3, 7)
const %p3 : f32[3,3,12,10] = normal(0.0, 0.3, 8)
const %pb : f32[10] = uniform(-0.5, 0.5, 9)
";

fn graph(body: &str) -> Graph {
    parse_graph(INPUTS, body)
}

/// Whether the CPU plan runs some conv with a prologue.
fn merges(g: &Graph, fetches: &[&str]) -> bool {
    lower_and_plan(g, fetches).1.stages.iter().any(|(_, s)| {
        matches!(
            s,
            Stage::Conv {
                prologue: Some(_),
                ..
            }
        )
    })
}

fn feeds() -> Vec<Tensor> {
    vec![
        Tensor::uniform(&[2, 9, 11, 12], -2.0, 2.0, 10),
        Tensor::uniform(&[2, 9, 11, 10], -1.0, 1.0, 11),
        Tensor::uniform(&[12], 0.5, 1.5, 12),
    ]
}

/// `fetches` on the CPU backend against the reference.
fn check(g: &Graph, fetches: &[&str]) {
    assert_fetches_match_reference(g, fetches, &feeds());
}

#[test]
fn a_batch_norm_before_a_1x1_conv_becomes_its_prologue() {
    for norm in [
        "expr=\"relu(add(mul(main, $5), $6))\"",
        "expr=\"relu6(sub(main, $6))\"",
        "expr=\"sub($6, mul(main, $5))\"",
        "expr=\"leaky_relu(main, 0.2)\"",
        "expr=\"relu(add(main, $6))\"",
    ] {
        for conv in [
            "%y = conv2d(%a, %pw, padding=\"VALID\")",
            "%y = fused_conv2d(%a, %pw, %pb, %r, padding=\"SAME\", expr=\"relu(add(add(main, $2), $3))\")",
        ] {
            let g = graph(&format!(
                "%a = fused_batch_norm(%x, %g, %be, %m, %v, %s, %t, epsilon=0.001, {norm})
{conv}
output %y
"
            ));
            let what = format!("{norm} / {conv}");
            assert!(merges(&g, &["y"]), "{what}");
            check(&g, &["y"]);
        }
    }
    // A plain batch norm, then the activation.
    let g = graph(
        "%a = fused_batch_norm(%x, %g, %be, %m, %v, epsilon=0.001, expr=\"relu(main)\")
%y = conv2d(%a, %pw, padding=\"SAME\")
output %y
",
    );
    assert!(merges(&g, &["y"]));
    check(&g, &["y"]);
}

#[test]
fn batch_norms_the_conv_cannot_take_stay_apart() {
    let norm = "%a = fused_batch_norm(%x, %g, %be, %m, %v, %s, %t, epsilon=0.001, expr=\"relu(add(mul(main, $5), $6))\")\n";
    for (body, fetches) in [
        // Fetched: its values must exist.
        (
            "%y = conv2d(%a, %pw, padding=\"VALID\")\noutput %y\noutput %a\n",
            &["y", "a"][..],
        ),
        // Read by a second conv.
        (
            "%b = conv2d(%a, %pw, padding=\"VALID\")\n%c = conv2d(%a, %pw, padding=\"SAME\")\n%y = add(%b, %c)\noutput %y\n",
            &["y"][..],
        ),
        // A strided 1x1 and a 3x3 are not plain products over the pixels.
        (
            "%y = conv2d(%a, %pw, strides=[2,2], padding=\"VALID\")\noutput %y\n",
            &["y"][..],
        ),
        (
            "%y = conv2d(%a, %p3, padding=\"SAME\")\noutput %y\n",
            &["y"][..],
        ),
    ] {
        let g = graph(&format!("{norm}{body}"));
        assert!(!merges(&g, fetches), "{body}");
        check(&g, fetches);
    }
    // A factor fed at run time, and a nonlinearity other than the activations.
    for norm in [
        "%a = fused_batch_norm(%x, %g, %be, %m, %v, %fed, epsilon=0.001, expr=\"relu(mul(main, $5))\")\n",
        "%a = fused_batch_norm(%x, %g, %be, %m, %v, epsilon=0.001, expr=\"relu(tanh(main))\")\n",
        "%a = fused_batch_norm(%x, %g, %be, %m, %v, epsilon=0.001, expr=\"mul(relu(main), main)\")\n",
    ] {
        let g = graph(&format!(
            "{norm}%y = conv2d(%a, %pw, padding=\"VALID\")\noutput %y\n"
        ));
        assert!(!merges(&g, &["y"]), "{norm}");
        check(&g, &["y"]);
    }
}

/// A profile lists the pair once, under the conv: both kernels' ops and nodes and the sum of
/// their flops.
#[test]
fn a_merged_batch_norm_is_one_profile_entry_with_its_conv() {
    let g = graph(
        "%a = fused_batch_norm(%x, %g, %be, %m, %v, %s, %t, epsilon=0.001, expr=\"relu(add(mul(main, $5), $6))\")
%y = conv2d(%a, %pw, padding=\"VALID\")
output %y
",
    );
    assert!(merges(&g, &["y"]));
    let feeds_owned = feeds();
    let feeds: Vec<&Tensor> = feeds_owned.iter().collect();
    assert_one_profile_entry(&g, "y", &feeds, "batch_norm", "conv2d");
}
