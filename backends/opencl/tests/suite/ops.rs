//! Every kernel family on the OpenCL runtime against the reference interpreter running the same
//! lowered program (`Tolerance::KERNEL`). Skipped, visibly, without an OpenCL platform; a
//! failure then when `KILN_REQUIRE_OPENCL=1` (CI).

#![cfg(feature = "runtime")]

use crate::common;

use common::{backend, check};

#[test]
fn elementwise_unary_and_binary() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 1
input %x : f32[3,5]
input %y : f32[5]
%a = add(%x, %y)
%s = sigmoid(%a)
%t = tanh(%x)
%m = maximum(%s, %t)
%e = exp(%m)
%l = log(%x)
%r = relu6(%x)
%q = leaky_relu(%x, alpha=0.3)
%p = pow(%e, %y)
%d = div(%p, %x)
output %d, %l, %r, %q",
    );
}

#[test]
fn matmul_direct_tiled_transposed_and_batched() {
    let Some(b) = backend() else { return };
    // Direct (small) and tiled (every dim >= 16, 140k MACs) paths, ragged edges.
    for (m, k, n) in [(3, 4, 5), (70, 40, 50), (33, 17, 65)] {
        check(
            &b,
            &format!(
                "kiln 1
input %a : f32[{m},{k}]
input %b : f32[{k},{n}]
input %at : f32[{k},{m}]
input %bt : f32[{n},{k}]
%y = matmul(%a, %b)
%y2 = matmul(%at, %bt, transpose_a=true, transpose_b=true)
%y3 = matmul(%a, %bt, transpose_b=true)
output %y, %y2, %y3"
            ),
        );
    }
    // Batched, and a rank-2 operand broadcast over the batch.
    check(
        &b,
        "kiln 1
input %a : f32[3,20,24]
input %b : f32[3,24,40]
input %w : f32[1,24,40]
%y = matmul(%a, %b)
%z = matmul(%a, %w)
output %y, %z",
    );
}

#[test]
fn conv2d_layouts_strides_dilations_padding_groups() {
    let Some(b) = backend() else { return };
    let cases = [
        // The seed case: one channel in and out (direct path).
        ("f32[1,9,9,1]", "f32[5,5,1,1]", "padding=\"SAME\""),
        // Tiled: M = 288, N = 24, K = 144.
        ("f32[2,12,12,16]", "f32[3,3,16,24]", "padding=\"SAME\""),
        (
            "f32[2,13,11,16]",
            "f32[3,3,16,20]",
            "strides=[2,2], padding=\"SAME\"",
        ),
        (
            "f32[1,14,14,16]",
            "f32[3,3,16,32]",
            "dilations=[2,2], padding=\"VALID\"",
        ),
        (
            "f32[1,10,10,8]",
            "f32[3,2,8,4]",
            "padding=[[2,0],[1,3]], strides=[1,2]",
        ),
        // Grouped: 32 channels = 2 groups of 16; 32 outputs.
        ("f32[1,12,12,32]", "f32[3,3,16,32]", "padding=\"SAME\""),
        // Grouped and small: 6 channels = 3 groups of 2 (direct path).
        ("f32[1,5,5,6]", "f32[3,3,2,9]", "padding=\"SAME\""),
        // NCHW, tiled and direct.
        (
            "f32[2,16,12,12]",
            "f32[3,3,16,24]",
            "padding=\"SAME\", data_format=\"NCHW\"",
        ),
        (
            "f32[1,3,7,7]",
            "f32[3,3,3,2]",
            "strides=[2,2], padding=\"VALID\", data_format=\"NCHW\"",
        ),
    ];
    for (x, w, attrs) in cases {
        check(
            &b,
            &format!(
                "kiln 1
input %x : {x}
input %w : {w}
%y = conv2d(%x, %w, {attrs})
output %y"
            ),
        );
    }
}

#[test]
fn depthwise_and_pools() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 1
input %x : f32[2,9,8,3]
input %w : f32[3,3,3,2]
input %xc : f32[1,3,9,8]
%d = depthwise_conv2d(%x, %w, strides=[2,1], padding=\"SAME\")
%d2 = depthwise_conv2d(%x, %w, dilations=[2,2], padding=\"VALID\")
%mp = max_pool(%x, ksize=[3,3], strides=[2,2], padding=\"SAME\")
%ap = avg_pool(%x, ksize=[3,2], strides=[2,1], padding=\"SAME\")
%ap2 = avg_pool(%x, ksize=[3,3], strides=[1,1], padding=[[1,1],[2,0]])
%mpc = max_pool(%xc, ksize=[2,2], strides=[2,2], padding=\"VALID\", data_format=\"NCHW\")
%apc = avg_pool(%xc, ksize=[3,3], strides=[2,2], padding=\"SAME\", data_format=\"NCHW\")
output %d, %d2, %mp, %ap, %ap2, %mpc, %apc",
    );
}

#[test]
fn reductions_softmax_per_item_and_per_group() {
    let Some(b) = backend() else { return };
    for dims in ["f32[4,6,5]", "f32[3,700]", "f32[2,5000]", "f32[1,40,3]"] {
        check(
            &b,
            &format!(
                "kiln 1
input %x : {dims}
%s = reduce_sum(%x, axes=[-1])
%m = reduce_mean(%x, axes=[0], keepdims=true)
%mx = reduce_max(%x, axes=[0, -1])
%mn = reduce_min(%x)
%sm = softmax(%x)
%ls = log_softmax(%x, axis=0)
%s0 = softmax(%x, axis=1)
output %s, %m, %mx, %mn, %sm, %ls, %s0"
            ),
        );
    }
}

#[test]
fn data_movement_and_batch_norm() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 1
input %x : f32[2,3,4,5]
input %y : f32[2,3,2,5]
const %scale : f32[5] = [1, 2, 3, 4, 5]
const %offset : f32[5] = [0, 0.5, -1, 2, 0]
const %mean : f32[5] = [0.1, 0.2, 0.3, 0.4, 0.5]
const %var : f32[5] = [1, 2, 0.5, 3, 4]
%r = reshape(%x, shape=[6, -1])
%t = transpose(%x, perm=[3, 1, 0, 2])
%c = concat(%x, %y, %x, axis=2)
%s = slice(%x, begin=[1, 0, 1, 2], size=[1, -1, 2, 3])
%p = pad(%x, paddings=[[0, 1], [2, 0], [1, 1], [0, 0]], constant_value=-3)
%bn = batch_norm(%x, %scale, %offset, %mean, %var, epsilon=0.01)
%xc = transpose(%x, perm=[0, 3, 1, 2])
%bnc = batch_norm(%xc, %mean, %var, %scale, %offset, data_format=\"NCHW\")
output %r, %t, %c, %s, %p, %bn, %bnc",
    );
}

#[test]
fn lrn_argmax_cast() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 2
input %x : f32[2,3,4,7]
const %i32 : i32[2,2] = [[0, 2], [-1, 1]]
const %i64 : i64[3] = [3, -4, 0]
%n = lrn(%x, depth_radius=2, bias=1.5, alpha=0.3, beta=0.75)
%n2 = lrn(%x)
%a = argmax(%x, axis=1)
%a32 = argmax(%x, axis=-1, output_type=\"i32\")
%c = cast(%x, to=\"i32\")
%c64 = cast(%x, to=\"i64\")
%cb = cast(%x, to=\"bool\")
%cf = cast(%cb, to=\"f32\")
%ci = cast(%c, to=\"f32\")
output %n, %n2, %a, %a32, %c, %c64, %cb, %cf, %ci",
    );
}

#[test]
fn gather_any_dtype_and_negative_indices() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 2
input %x : f32[2,3,4,7]
const %i32 : i32[2,2] = [[0, 2], [-1, 1]]
const %i64 : i64[3] = [3, -4, 0]
%g = gather(%x, %i32, axis=1)
%g2 = gather(%x, %i64, axis=2)
%c = cast(%x, to=\"i32\")
%gi = gather(%c, %i64, axis=2)
output %g, %g2, %gi",
    );
}

#[test]
fn fused_epilogues() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 2
input %x : f32[2,12,12,16]
input %w : f32[3,3,16,24]
input %bias : f32[24]
input %s : f32[2,12,12,24]
input %a : f32[40,30]
input %m : f32[30,20]
input %row : f32[20]
%c = fused_conv2d(%x, %w, %bias, padding=\"SAME\", expr=\"relu(add(main, $2))\")
%c2 = fused_conv2d(%x, %w, %s, padding=\"SAME\", expr=\"tanh(mul(main, $2))\")
%mm = fused_matmul(%a, %m, %row, expr=\"sigmoid(sub(main, $2))\")
%p = fused_max_pool(%x, %bias, ksize=[2,2], strides=[2,2], padding=\"VALID\", expr=\"neg(main)\")
%e = elementwise(%a, %a, expr=\"maximum(square($0), exp($1))\")
output %c, %c2, %mm, %p, %e",
    );
}

#[test]
fn integer_data_movement() {
    let Some(b) = backend() else { return };
    check(
        &b,
        "kiln 2
input %x : f32[3,4]
%i = cast(%x, to=\"i64\")
%t = transpose(%i, perm=[1, 0])
%c = concat(%t, %t, axis=0)
%s = slice(%c, begin=[1, 1], size=[3, 2])
%r = reshape(%s, shape=[-1])
%bo = cast(%x, to=\"bool\")
%bt = transpose(%bo, perm=[1, 0])
output %r, %bt",
    );
}
