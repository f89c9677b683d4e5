//! Tests of the window arithmetic and of conv/depthwise/pool inference: hand-computed cases,
//! a brute-force cross-check of [`window_dim`], and every error path.

use super::super::{assert_err, run, ty};
use super::*;
use crate::op::{ConvAttrs, DataFormat, Op, Padding, PoolAttrs};

#[test]
fn same_stride_two_on_odd_and_even_sizes() {
    // in=7, k=3, s=2: out 4; total (4-1)*2+3-7 = 2 -> 1 before, 1 after.
    let w = window_dim(7, 3, 2, 1, Padding::Same, 0).unwrap();
    assert_eq!(
        w,
        WindowDim {
            out: 4,
            pad_before: 1,
            pad_after: 1
        }
    );
    // in=8, k=3, s=2: out 4; total (4-1)*2+3-8 = 1 -> 0 before, 1 after (extra at the end).
    let w = window_dim(8, 3, 2, 1, Padding::Same, 1).unwrap();
    assert_eq!(
        w,
        WindowDim {
            out: 4,
            pad_before: 0,
            pad_after: 1
        }
    );
    assert_eq!(conv_output_dim(7, 3, 2, 1, Padding::Same, 0), Ok((4, 1)));
    assert_eq!(conv_output_dim(8, 3, 2, 1, Padding::Same, 0), Ok((4, 0)));
    // Stride 1, k=5: out = in, total 4 split 2/2.
    assert_eq!(conv_output_dim(10, 5, 1, 1, Padding::Same, 0), Ok((10, 2)));
    // A kernel smaller than the stride needs no padding: in=8, k=1, s=2 -> total max(-1, 0).
    let w = window_dim(8, 1, 2, 1, Padding::Same, 0).unwrap();
    assert_eq!(
        w,
        WindowDim {
            out: 4,
            pad_before: 0,
            pad_after: 0
        }
    );
    // An empty input has an empty output and no padding.
    assert_eq!(window_dim(0, 3, 2, 1, Padding::Same, 0).unwrap().out, 0);
}

#[test]
fn valid_and_explicit_hand_computed() {
    assert_eq!(
        window_dim(7, 3, 2, 1, Padding::Valid, 0).unwrap(),
        WindowDim {
            out: 3,
            pad_before: 0,
            pad_after: 0
        }
    );
    assert_eq!(window_dim(8, 3, 2, 1, Padding::Valid, 0).unwrap().out, 3);
    assert_eq!(window_dim(3, 3, 1, 1, Padding::Valid, 0).unwrap().out, 1);
    let p = Padding::Explicit([[1, 2], [0, 3]]);
    // height: (5+1+2-3)/2+1 = 3; width: (5+0+3-3)/2+1 = 3.
    assert_eq!(
        window_dim(5, 3, 2, 1, p, 0).unwrap(),
        WindowDim {
            out: 3,
            pad_before: 1,
            pad_after: 2
        }
    );
    assert_eq!(
        window_dim(5, 3, 2, 1, p, 1).unwrap(),
        WindowDim {
            out: 3,
            pad_before: 0,
            pad_after: 3
        }
    );
    assert_eq!(
        window_dim(2, 3, 1, 1, Padding::Explicit([[1, 0], [0, 0]]), 0)
            .unwrap()
            .out,
        1
    );
}

#[test]
fn dilation_widens_the_kernel() {
    assert_eq!(effective_kernel(3, 2), Ok(5));
    assert_eq!(effective_kernel(1, 7), Ok(1));
    // in=10, k=3, d=2 (eff 5): VALID out 6; SAME out 10 with total 4 -> 2/2.
    assert_eq!(window_dim(10, 3, 1, 2, Padding::Valid, 0).unwrap().out, 6);
    assert_eq!(
        window_dim(10, 3, 1, 2, Padding::Same, 0).unwrap(),
        WindowDim {
            out: 10,
            pad_before: 2,
            pad_after: 2
        }
    );
    let e = window_dim(4, 3, 1, 2, Padding::Valid, 0).unwrap_err();
    assert!(
        e.contains("effective size 5: 3 dilated by 2") && e.contains("input (4)"),
        "{e}"
    );
}

#[test]
fn window_dim_errors() {
    assert!(
        window_dim(5, 3, 0, 1, Padding::Same, 0)
            .unwrap_err()
            .contains("stride must be >= 1")
    );
    assert!(
        window_dim(5, 3, 1, 0, Padding::Same, 0)
            .unwrap_err()
            .contains("dilation must be >= 1")
    );
    assert!(
        window_dim(5, 0, 1, 1, Padding::Same, 0)
            .unwrap_err()
            .contains("kernel size must be >= 1")
    );
    assert!(
        window_dim(2, 3, 1, 1, Padding::Valid, 0)
            .unwrap_err()
            .contains("larger than the input (2)")
    );
    let e = window_dim(1, 5, 1, 1, Padding::Explicit([[1, 1], [0, 0]]), 0).unwrap_err();
    assert!(e.contains("padded input (1 + 1 + 1 = 3)"), "{e}");
    assert!(
        window_dim(5, 1, 1, 1, Padding::Explicit([[0, 0]; 2]), 2)
            .unwrap_err()
            .contains("axis 2")
    );
    assert!(
        effective_kernel(usize::MAX, 2)
            .unwrap_err()
            .contains("overflows")
    );
    let huge = Padding::Explicit([[usize::MAX, 1], [0, 0]]);
    assert!(
        window_dim(5, 1, 1, 1, huge, 0)
            .unwrap_err()
            .contains("overflows")
    );
}

/// Brute force: count window positions directly, and find SAME's minimal total padding.
#[test]
fn window_dim_matches_brute_force() {
    for input in 1..20usize {
        for k in 1..6 {
            for s in 1..5 {
                for d in 1..4 {
                    let eff = (k - 1) * d + 1;
                    let count = |padded: usize| (0..).take_while(|o| o * s + eff <= padded).count();
                    let valid = window_dim(input, k, s, d, Padding::Valid, 0);
                    if eff > input {
                        assert!(valid.is_err());
                    } else {
                        assert_eq!(
                            valid.unwrap().out,
                            count(input),
                            "valid {input} {k} {s} {d}"
                        );
                    }
                    let (b, a) = (input % 3, (input + k) % 4);
                    let explicit =
                        window_dim(input, k, s, d, Padding::Explicit([[b, a], [0, 0]]), 0);
                    if eff > input + b + a {
                        assert!(explicit.is_err());
                    } else {
                        assert_eq!(explicit.unwrap().out, count(input + b + a));
                    }
                    let same = window_dim(input, k, s, d, Padding::Same, 0).unwrap();
                    assert_eq!(same.out, input.div_ceil(s));
                    let total = (0..).find(|t| count(input + t) >= same.out).unwrap();
                    assert_eq!(
                        same.pad_before + same.pad_after,
                        total,
                        "same {input} {k} {s} {d}"
                    );
                    assert!(
                        same.pad_after == same.pad_before || same.pad_after == same.pad_before + 1
                    );
                }
            }
        }
    }
}

fn conv(a: ConvAttrs) -> Op {
    Op::Conv2d(a)
}

#[test]
fn conv2d_shapes() {
    let c = conv(ConvAttrs::same());
    assert_eq!(
        run(&c, &["f32[1,100,100,1]", "f32[5,5,1,1]"]).unwrap(),
        ty("f32[1,100,100,1]")
    );
    assert_eq!(
        run(&c, &["f32[?,100,100,1]", "f32[5,5,1,8]"]).unwrap(),
        ty("f32[?,100,100,8]")
    );
    let v = conv(ConvAttrs::valid().strides(2, 2));
    assert_eq!(
        run(&v, &["f32[2,7,8,3]", "f32[3,3,3,4]"]).unwrap(),
        ty("f32[2,3,3,4]")
    );
    let s2 = conv(ConvAttrs::same().strides(2, 2));
    assert_eq!(
        run(&s2, &["f32[2,7,8,3]", "f32[3,3,3,4]"]).unwrap(),
        ty("f32[2,4,4,4]")
    );
    let e = conv(ConvAttrs::with_padding(Padding::Explicit([[1, 1], [2, 0]])));
    assert_eq!(
        run(&e, &["f32[1,5,5,2]", "f32[3,3,2,6]"]).unwrap(),
        ty("f32[1,5,5,6]")
    );
    let dil = conv(ConvAttrs::valid().dilations(2, 1));
    assert_eq!(
        run(&dil, &["f32[1,10,10,1]", "f32[3,3,1,1]"]).unwrap(),
        ty("f32[1,6,8,1]")
    );
    let nchw = conv(ConvAttrs::valid().format(DataFormat::Nchw));
    assert_eq!(
        run(&nchw, &["f32[1,3,10,12]", "f32[3,3,3,16]"]).unwrap(),
        ty("f32[1,16,8,10]")
    );
}

#[test]
fn grouped_conv2d_shapes() {
    // TensorFlow 2 grouping: x channels = groups * w's cin, cout a multiple of groups.
    let c = conv(ConvAttrs::same().strides(2, 2));
    assert_eq!(
        run(&c, &["f32[1,9,9,8]", "f32[3,3,4,6]"]).unwrap(),
        ty("f32[1,5,5,6]")
    );
    assert_eq!(
        run(&c, &["f32[2,8,8,16]", "f32[3,3,4,8]"]).unwrap(),
        ty("f32[2,4,4,8]")
    );
    let nchw = conv(ConvAttrs::valid().format(DataFormat::Nchw));
    assert_eq!(
        run(&nchw, &["f32[1,6,5,5]", "f32[3,3,2,9]"]).unwrap(),
        ty("f32[1,9,3,3]")
    );
    // cout unknown: the group count is not checked against it.
    assert_eq!(
        run(&c, &["f32[1,8,8,6]", "f32[1,1,2,?]"]).unwrap(),
        ty("f32[1,4,4,?]")
    );
    // Depthwise keeps the exact channel match.
    assert_err(
        &Op::DepthwiseConv2d(ConvAttrs::same()),
        &["f32[1,8,8,8]", "f32[3,3,4,1]"],
        &["input channels differ", "(8 channels)", "(expects 4)"],
    );
}

#[test]
fn conv2d_unknown_dims_propagate() {
    let v = conv(ConvAttrs::valid());
    assert_eq!(
        run(&v, &["f32[?,?,10,?]", "f32[3,3,4,8]"]).unwrap(),
        ty("f32[?,?,8,8]")
    );
    assert_eq!(
        run(&v, &["f32[1,10,10,4]", "f32[?,3,4,?]"]).unwrap(),
        ty("f32[1,?,8,?]")
    );
    // SAME does not need the kernel size.
    let s = conv(ConvAttrs::same().strides(2, 2));
    assert_eq!(
        run(&s, &["f32[1,7,?,4]", "f32[?,?,?,8]"]).unwrap(),
        ty("f32[1,4,?,8]")
    );
    // A known kernel is still validated when the input size is unknown.
    assert_err(
        &v,
        &["f32[1,?,10,4]", "f32[0,3,4,8]"],
        &["height", "kernel size must be >= 1"],
    );
}

#[test]
fn conv2d_errors() {
    let c = conv(ConvAttrs::same());
    assert_err(
        &c,
        &["f32[1,10,10,3]", "f32[3,3,4,8]"],
        &[
            "input channels differ: x is f32[1,10,10,3] (3 channels), filter is f32[3,3,4,8] \
             (expects 4, or a multiple of it for a grouped convolution)",
        ],
    );
    let nchw = conv(ConvAttrs::same().format(DataFormat::Nchw));
    assert_err(
        &nchw,
        &["f32[1,10,10,3]", "f32[3,3,3,8]"],
        &["(10 channels)", "(expects 3, or a multiple"],
    );
    // Grouped: 12 channels = 3 groups of 4, but 8 outputs do not split into 3.
    assert_err(
        &c,
        &["f32[1,10,10,12]", "f32[3,3,4,8]"],
        &["(expects 4 per group: 3 groups, whose 8 output channels do not split evenly)"],
    );
    assert_err(
        &c,
        &["f32[1,10,10,0]", "f32[3,3,4,8]"],
        &["(0 channels)", "(expects 4)"],
    );
    assert_err(
        &c,
        &["f32[10,10,3]", "f32[3,3,3,8]"],
        &["x must be rank 4", "NHWC", "f32[10,10,3]"],
    );
    assert_err(
        &c,
        &["f32[1,10,10,3]", "f32[3,3,3]"],
        &["filter must be rank 4", "HWIO", "f32[3,3,3]"],
    );
    assert_err(&c, &["i32[1,10,10,3]", "f32[3,3,3,8]"], &["x must be f32"]);
    assert_err(
        &conv(ConvAttrs::same().strides(0, 1)),
        &["f32[1,10,10,3]", "f32[3,3,3,8]"],
        &["strides must be >= 1, got [0,1]"],
    );
    assert_err(
        &conv(ConvAttrs::same().dilations(1, 0)),
        &["f32[1,10,10,3]", "f32[3,3,3,8]"],
        &["dilations must be >= 1"],
    );
    assert_err(
        &conv(ConvAttrs::same().strides(2, 1).dilations(1, 2)),
        &["f32[1,10,10,3]", "f32[3,3,3,8]"],
        &["strides > 1 cannot be combined with dilations > 1"],
    );
    assert_err(
        &conv(ConvAttrs::valid()),
        &["f32[1,2,10,3]", "f32[3,3,3,8]"],
        &[
            "height:",
            "larger than the input (2)",
            "x is f32[1,2,10,3]",
            "filter is f32[3,3,3,8]",
        ],
    );
    assert_err(
        &conv(ConvAttrs::with_padding(Padding::Explicit([[0, 0], [0, 1]]))),
        &["f32[1,5,1,3]", "f32[3,3,3,8]"],
        &["width:", "padded input (1 + 0 + 1 = 2)"],
    );
    assert_err(
        &c,
        &[
            "f32[1,5,5,1]",
            "f32[usize::MAX,3,1,1]"
                .replace("usize::MAX", &usize::MAX.to_string())
                .as_str(),
        ],
        &["overflows"],
    );
}

#[test]
fn depthwise_shapes_and_errors() {
    let d = Op::DepthwiseConv2d(ConvAttrs::same());
    assert_eq!(
        run(&d, &["f32[1,8,8,3]", "f32[3,3,3,2]"]).unwrap(),
        ty("f32[1,8,8,6]")
    );
    assert_eq!(
        run(&d, &["f32[1,8,8,?]", "f32[3,3,3,2]"]).unwrap(),
        ty("f32[1,8,8,6]")
    );
    assert_eq!(
        run(&d, &["f32[1,8,8,3]", "f32[3,3,3,?]"]).unwrap(),
        ty("f32[1,8,8,?]")
    );
    let nchw = Op::DepthwiseConv2d(ConvAttrs::valid().format(DataFormat::Nchw).strides(2, 2));
    assert_eq!(
        run(&nchw, &["f32[2,4,9,9]", "f32[3,3,4,3]"]).unwrap(),
        ty("f32[2,12,4,4]")
    );
    assert_err(
        &d,
        &["f32[1,8,8,3]", "f32[3,3,4,2]"],
        &["input channels differ", "(3 channels)", "(expects 4)"],
    );
    assert_err(
        &d,
        &["f32[1,8,8,3]", "f32[3,3,3]"],
        &["[kh,kw,cin,multiplier]"],
    );
    let both = Op::DepthwiseConv2d(ConvAttrs::same().strides(2, 2).dilations(2, 2));
    assert_err(
        &both,
        &["f32[1,8,8,3]", "f32[3,3,3,2]"],
        &["cannot be combined"],
    );
    let big = usize::MAX / 2;
    let w = format!("f32[1,1,{big},4]");
    assert_err(&d, &["f32[1,1,1,?]", &w], &["overflow"]);
}

#[test]
fn pools() {
    for mk in [Op::MaxPool as fn(PoolAttrs) -> Op, Op::AvgPool] {
        let p = mk(PoolAttrs::new(2, 2, Padding::Valid));
        assert_eq!(run(&p, &["f32[1,7,8,3]"]).unwrap(), ty("f32[1,3,4,3]"));
        assert_eq!(run(&p, &["f32[?,?,8,?]"]).unwrap(), ty("f32[?,?,4,?]"));
        let s = mk(PoolAttrs::new(3, 2, Padding::Same));
        assert_eq!(run(&s, &["f32[1,7,8,3]"]).unwrap(), ty("f32[1,4,4,3]"));
        let mut nchw = PoolAttrs::new(3, 1, Padding::Valid);
        nchw.data_format = DataFormat::Nchw;
        assert_eq!(
            run(&mk(nchw), &["f32[1,3,7,8]"]).unwrap(),
            ty("f32[1,3,5,6]")
        );
        let e = mk(PoolAttrs::new(3, 1, Padding::Explicit([[1, 2], [0, 0]])));
        assert_eq!(run(&e, &["f32[1,4,4,1]"]).unwrap(), ty("f32[1,5,2,1]"));

        assert_err(
            &mk(PoolAttrs::new(0, 1, Padding::Same)),
            &["f32[1,4,4,1]"],
            &["ksize must be >= 1"],
        );
        assert_err(
            &mk(PoolAttrs::new(2, 0, Padding::Same)),
            &["f32[1,4,4,1]"],
            &["strides must be >= 1"],
        );
        assert_err(
            &mk(PoolAttrs::new(5, 1, Padding::Valid)),
            &["f32[1,4,4,1]"],
            &["height:", "larger than the input (4)", "f32[1,4,4,1]"],
        );
        assert_err(
            &mk(PoolAttrs::new(2, 1, Padding::Explicit([[0, 0], [2, 0]]))),
            &["f32[1,4,4,1]"],
            &["width padding [2,0]", "smaller than the window"],
        );
        assert_err(&p, &["f32[4,4,1]"], &["x must be rank 4"]);
        assert_err(&p, &["i64[1,4,4,1]"], &["x must be f32"]);
    }
}
