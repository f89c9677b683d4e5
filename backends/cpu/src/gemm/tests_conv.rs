//! Convolution tests: implicit GEMM on every supported ISA against a naive f64 convolution,
//! over paddings, strides, dilations, odd sizes and channel counts; geometry; errors.

use super::tests::{CANARY, check, reference, values};
use super::*;
use kiln_ir::op::Padding;

struct Case {
    n: usize,
    hw: [usize; 2],
    cin: usize,
    cout: usize,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    pad: Padding,
}

fn run(isa: Isa, c: &Case, variant: usize) {
    let [h, w] = c.hw;
    let g = ConvGeometry::new(c.hw, c.k, c.s, c.d, c.pad).unwrap();
    let tag = format!(
        "{isa:?} n={} {h}x{w}x{} -> {} k={:?} s={:?} d={:?} {:?} {g:?}",
        c.n, c.cin, c.cout, c.k, c.s, c.d, c.pad
    );
    let input = values(variant as u64 + 3, c.n * h * w * c.cin);
    let kdim = c.k[0] * c.k[1] * c.cin;
    let filter = values(variant as u64 + 5, kdim * c.cout);
    let packed = pack_b_for(isa, kdim, c.cout, &filter, false).unwrap();
    let bias = values(variant as u64 + 9, c.cout);
    let m = c.n * g.out_h * g.out_w;
    let res = values(variant as u64 + 11, m * c.cout);
    let act = [
        Activation::Relu,
        Activation::None,
        Activation::LeakyRelu(0.1),
    ][variant % 3];
    let epi = Epilogue {
        bias: variant.is_multiple_of(2).then_some(&bias[..]),
        add: (variant % 4 == 1).then(|| Residual {
            data: &res,
            ld: c.cout,
        }),
        activation: act,
    };
    // Output with canaries on both sides; input followed by NaN canaries a stray read would
    // turn into NaN results.
    let mut in_big = input.clone();
    in_big.extend([CANARY; 8]);
    let mut out = vec![CANARY; m * c.cout + 10];
    conv2d_nhwc(
        &in_big[..input.len()],
        [c.n, h, w, c.cin],
        &packed,
        &g,
        &mut out[3..3 + m * c.cout],
        &epi,
    )
    .expect(&tag);
    assert!(
        out[..3]
            .iter()
            .chain(&out[3 + m * c.cout..])
            .all(|v| v.to_bits() == CANARY.to_bits()),
        "{tag}"
    );
    let at = |i: usize, p: usize| -> f64 {
        let (img, oy, ox) = (i / (g.out_h * g.out_w), i / g.out_w % g.out_h, i % g.out_w);
        let (tap, ci) = (p / c.cin, p % c.cin);
        let iy = (oy * c.s[0] + tap / c.k[1] * c.d[0]) as isize - g.pad_top as isize;
        let ix = (ox * c.s[1] + tap % c.k[1] * c.d[1]) as isize - g.pad_left as isize;
        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
            return 0.0;
        }
        input[((img * h + iy as usize) * w + ix as usize) * c.cin + ci] as f64
    };
    for i in 0..m {
        for j in 0..c.cout {
            let r = epi.add.map(|_| res[i * c.cout + j] as f64);
            let (want, mag) = reference(
                i,
                j,
                kdim,
                at,
                |p, j| filter[p * c.cout + j] as f64,
                epi.bias,
                r,
                act,
            );
            check(
                &format!("{tag} out[{i},{j}]"),
                out[3 + i * c.cout + j],
                want,
                mag,
            );
        }
    }
}

#[test]
fn gemm_conv_matches_naive_convolution() {
    let explicit = Padding::Explicit([[2, 0], [1, 3]]);
    let mut cases = Vec::new();
    for (cin, cout) in [
        (1, 1),
        (3, 10),
        (64, 64),
        (3, 64),
        (64, 10),
        (1, 10),
        (17, 33),
    ] {
        for pad in [Padding::Same, Padding::Valid, explicit] {
            cases.push(Case {
                n: 1,
                hw: [7, 9],
                cin,
                cout,
                k: [3, 3],
                s: [1, 1],
                d: [1, 1],
                pad,
            });
        }
        cases.push(Case {
            n: 2,
            hw: [9, 8],
            cin,
            cout,
            k: [3, 3],
            s: [2, 2],
            d: [1, 1],
            pad: Padding::Same,
        });
        cases.push(Case {
            n: 1,
            hw: [11, 10],
            cin,
            cout,
            k: [3, 2],
            s: [1, 2],
            d: [2, 2],
            pad: Padding::Same,
        });
    }
    // 5x5 with stride and dilation, valid; taps across k-blocks; one tap split (cin > KC).
    cases.push(Case {
        n: 1,
        hw: [13, 12],
        cin: 5,
        cout: 7,
        k: [5, 5],
        s: [2, 1],
        d: [1, 2],
        pad: Padding::Valid,
    });
    cases.push(Case {
        n: 1,
        hw: [5, 5],
        cin: 300,
        cout: 20,
        k: [3, 3],
        s: [1, 1],
        d: [1, 1],
        pad: Padding::Same,
    });
    cases.push(Case {
        n: 1,
        hw: [3, 4],
        cin: 1100,
        cout: 5,
        k: [3, 3],
        s: [1, 1],
        d: [1, 1],
        pad: Padding::Same,
    });
    // 1x1: stride 1 goes straight to GEMM, stride 2 and padding do not.
    cases.push(Case {
        n: 3,
        hw: [6, 5],
        cin: 64,
        cout: 31,
        k: [1, 1],
        s: [1, 1],
        d: [1, 1],
        pad: Padding::Same,
    });
    cases.push(Case {
        n: 2,
        hw: [7, 7],
        cin: 16,
        cout: 40,
        k: [1, 1],
        s: [2, 2],
        d: [1, 1],
        pad: Padding::Valid,
    });
    cases.push(Case {
        n: 1,
        hw: [4, 4],
        cin: 8,
        cout: 8,
        k: [1, 1],
        s: [1, 1],
        d: [1, 1],
        pad: explicit,
    });
    for isa in Isa::supported() {
        for (v, c) in cases.iter().enumerate() {
            run(isa, c, v);
        }
    }
}

#[test]
fn gemm_conv_streaming_its_filter_matches_naive() {
    // 7x7 outputs and a filter past the L2 (`driver::streams`): padded first so that the row
    // tiles form one strip; SAME and VALID, stride 1 and 2.
    let cin = 64;
    let cout = super::cache::caches().l2 / (9 * cin * 4) + 40;
    for (hw, s, pad) in [
        ([7, 7], [1, 1], Padding::Same),
        ([14, 14], [2, 2], Padding::Same),
        ([9, 9], [1, 1], Padding::Valid),
    ] {
        let c = Case {
            n: 1,
            hw,
            cin,
            cout,
            k: [3, 3],
            s,
            d: [1, 1],
            pad,
        };
        assert!(
            driver::streams(49, cout, 9 * cin),
            "{cout} channels do not stream"
        );
        for isa in Isa::supported() {
            run(isa, &c, 1);
        }
    }
}

#[test]
fn gemm_conv_bigger_than_one_task_is_thread_independent() {
    // 1x20x20x32 -> 48, 3x3: 8 MFLOP, split over threads; must match bitwise and the reference.
    let c = Case {
        n: 1,
        hw: [20, 20],
        cin: 32,
        cout: 48,
        k: [3, 3],
        s: [1, 1],
        d: [1, 1],
        pad: Padding::Same,
    };
    for isa in Isa::supported() {
        run(isa, &c, 0);
        let g = ConvGeometry::new(c.hw, c.k, c.s, c.d, c.pad).unwrap();
        let input = values(1, 20 * 20 * 32);
        let b = pack_b_for(isa, 9 * 32, 48, &values(2, 9 * 32 * 48), false).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.0; 400 * 48];
            pool.install(|| {
                conv2d_nhwc(&input, [1, 20, 20, 32], &b, &g, &mut out, &Epilogue::none())
            })
            .unwrap();
            outs.push(out);
        }
        assert!(
            outs[0]
                .iter()
                .zip(&outs[1])
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{isa:?}"
        );
    }
}

#[test]
fn gemm_conv_geometry_follows_tensorflow() {
    let g = |hw, k, s, d, p| ConvGeometry::new(hw, k, s, d, p).unwrap();
    // SAME 5, k3, s2: out 3, total pad 2 -> 1 on top.
    let a = g([5, 5], [3, 3], [2, 2], [1, 1], Padding::Same);
    assert_eq!((a.out_h, a.pad_top, a.out_w, a.pad_left), (3, 1, 3, 1));
    // SAME 4, k3, s2: out 2, total pad 1 -> 0 on top (the extra cell goes to the bottom).
    let b = g([4, 4], [3, 3], [2, 2], [1, 1], Padding::Same);
    assert_eq!((b.out_h, b.pad_top), (2, 0));
    // VALID 5, k3 dilated 2 (extent 5): one output.
    let c = g([5, 6], [3, 3], [1, 1], [2, 2], Padding::Valid);
    assert_eq!((c.out_h, c.out_w, c.pad_top), (1, 2, 0));
    // Explicit [[2, 0], [1, 3]] on 7x9 with k3: (7 + 2 - 3) + 1 = 7, (9 + 4 - 3) + 1 = 11.
    let e = g(
        [7, 9],
        [3, 3],
        [1, 1],
        [1, 1],
        Padding::Explicit([[2, 0], [1, 3]]),
    );
    assert_eq!((e.out_h, e.out_w, e.pad_top, e.pad_left), (7, 11, 2, 1));
    assert!(ConvGeometry::new([2, 2], [3, 3], [1, 1], [1, 1], Padding::Valid).is_err());
    assert!(ConvGeometry::new([4, 4], [3, 3], [0, 1], [1, 1], Padding::Same).is_err());
}

#[test]
fn gemm_conv_caller_errors_are_reported() {
    let g = ConvGeometry::new([4, 4], [3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
    let f = pack_b_for(Isa::Portable, 9 * 2, 3, &[0.0; 54], false).unwrap();
    let mut out = vec![0.0; 48];
    let none = Epilogue::none();
    let e = conv2d_nhwc(&[0.0; 31], [1, 4, 4, 2], &f, &g, &mut out, &none).unwrap_err();
    assert!(e.contains("input has 31"), "{e}");
    let e = conv2d_nhwc(&[0.0; 48], [1, 4, 4, 3], &f, &g, &mut out, &none).unwrap_err();
    assert!(e.contains("k = 18"), "{e}");
    let e = conv2d_nhwc(&[0.0; 32], [1, 4, 4, 2], &f, &g, &mut out[..47], &none).unwrap_err();
    assert!(e.contains("output has 47"), "{e}");
    let zero_stride = ConvGeometry { stride_w: 0, ..g };
    let e = conv2d_nhwc(&[0.0; 32], [1, 4, 4, 2], &f, &zero_stride, &mut out, &none).unwrap_err();
    assert!(e.contains("must be positive"), "{e}");
    let huge = [usize::MAX / 2, 4, 4, 2];
    let e = conv2d_nhwc(&[0.0; 32], huge, &f, &g, &mut out, &none).unwrap_err();
    assert!(e.contains("overflow"), "{e}");
}

/// A grouped convolution against a naive f64 one written out here: output channel `o` of
/// group `o / per` sums input channels `group * cin ..` only.
#[test]
fn gemm_grouped_conv_matches_naive_convolution() {
    // (n, hw, cin per group, groups, cout, k, s, pad): the merged-taps path (cin < 32), the
    // in-place path (cin >= 32), pointwise GEMM, stride 2, and groups of one channel.
    let explicit = Padding::Explicit([[1, 0], [2, 1]]);
    let cases = [
        (1, [7, 6], 2, 2, 6, [3, 3], [2, 2], Padding::Same),
        (2, [5, 5], 3, 4, 8, [3, 2], [1, 1], explicit),
        (1, [6, 5], 33, 2, 10, [3, 3], [1, 1], Padding::Same),
        (2, [4, 3], 5, 3, 9, [1, 1], [1, 1], Padding::Valid),
        (1, [5, 5], 1, 8, 8, [3, 3], [2, 2], Padding::Same),
    ];
    for isa in Isa::supported() {
        for (v, &(n, hw, cin, groups, cout, k, s, pad)) in cases.iter().enumerate() {
            let [h, w] = hw;
            let channels = cin * groups;
            let g = ConvGeometry::new(hw, k, s, [1, 1], pad).unwrap();
            let tag = format!("{isa:?} case {v}: {g:?}");
            let input = values(v as u64 + 1, n * h * w * channels);
            let depth = k[0] * k[1] * cin;
            let filter = values(v as u64 + 2, depth * cout);
            let packed = conv::pack_conv_groups_for(isa, &filter, depth, cout, groups).unwrap();
            assert_eq!(packed.len(), groups);
            let bias = values(v as u64 + 3, cout);
            let m = n * g.out_h * g.out_w;
            let res = values(v as u64 + 4, m * cout);
            let epi = Epilogue {
                bias: Some(&bias),
                add: (v % 2 == 1).then(|| Residual {
                    data: &res,
                    ld: cout,
                }),
                activation: Activation::LeakyRelu(0.1),
            };
            let mut out = vec![CANARY; m * cout + 5];
            conv2d_nhwc_grouped(
                &input,
                [n, h, w, channels],
                &packed,
                &g,
                &mut out[..m * cout],
                &epi,
            )
            .expect(&tag);
            assert!(
                out[m * cout..]
                    .iter()
                    .all(|x| x.to_bits() == CANARY.to_bits())
            );
            let per = cout / groups;
            for i in 0..m {
                let (img, oy, ox) = (i / (g.out_h * g.out_w), i / g.out_w % g.out_h, i % g.out_w);
                for j in 0..cout {
                    let c0 = (j / per) * cin;
                    let at = |_: usize, p: usize| -> f64 {
                        let (tap, ci) = (p / cin, p % cin);
                        let iy = (oy * s[0] + tap / k[1]) as isize - g.pad_top as isize;
                        let ix = (ox * s[1] + tap % k[1]) as isize - g.pad_left as isize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            return 0.0;
                        }
                        let pix = (img * h + iy as usize) * w + ix as usize;
                        input[pix * channels + c0 + ci] as f64
                    };
                    let r = epi.add.map(|_| res[i * cout + j] as f64);
                    let (want, mag) = reference(
                        i,
                        j,
                        depth,
                        at,
                        |p, j| filter[p * cout + j] as f64,
                        epi.bias,
                        r,
                        epi.activation,
                    );
                    check(&format!("{tag} out[{i},{j}]"), out[i * cout + j], want, mag);
                }
            }
        }
    }
    // Channels that do not split, and groups whose filters differ, are errors.
    let g = ConvGeometry::new([3, 3], [1, 1], [1, 1], [1, 1], Padding::Same).unwrap();
    let two = conv::pack_conv_groups_for(Isa::Portable, &[1.0; 8], 2, 4, 2).unwrap();
    let mut out = vec![0.0; 36];
    let none = Epilogue::none();
    let e = conv2d_nhwc_grouped(&[0.0; 45], [1, 3, 3, 5], &two, &g, &mut out, &none).unwrap_err();
    assert!(
        e.contains("5 input channels do not split into 2 groups"),
        "{e}"
    );
    assert!(conv::pack_conv_groups_for(Isa::Portable, &[1.0; 8], 2, 4, 3).is_err());
    assert!(conv::pack_conv_groups_for(Isa::Portable, &[1.0; 7], 2, 4, 2).is_err());
}

/// Grouped 1x1 convolutions whose groups are each too small for the driver to split run as
/// row bands in parallel, every band doing all groups: on odd sizes (a partial last tile, 34
/// channels a group: a one-vector last panel), with a strided output whose gaps must survive,
/// a residual at its own stride, bias and Relu6, against a naive f64 loop, with the same bits
/// on 1, 2 and 3 threads.
#[test]
fn gemm_grouped_pointwise_bands_match_naive_and_thread_count() {
    let (n, h, w, cin, groups, per) = (1, 23, 29, 34, 4, 34);
    let (channels, cout, m) = (cin * groups, per * groups, n * h * w);
    let (ldc, ldr) = (cout + 3, cout + 1);
    let g = ConvGeometry::new([h, w], [1, 1], [1, 1], [1, 1], Padding::Valid).unwrap();
    let input = values(11, m * channels);
    let filter = values(12, cin * cout);
    let bias = values(13, cout);
    let res = values(14, (m - 1) * ldr + cout);
    let epi = Epilogue {
        bias: Some(&bias),
        add: Some(Residual {
            data: &res,
            ld: ldr,
        }),
        activation: Activation::Relu6,
    };
    for isa in Isa::supported() {
        let packed = conv::pack_conv_groups_for(isa, &filter, cin, cout, groups).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let tag = format!("{isa:?} {threads} threads");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let bands = pool.install(|| conv::group_bands(groups, m, per, cin, isa.mr()));
            assert_eq!(bands > 1, threads > 1, "{tag}: {bands} bands");
            let mut out = vec![CANARY; (m - 1) * ldc + cout + 4];
            let len = (m - 1) * ldc + cout;
            pool.install(|| {
                conv2d_nhwc_grouped_strided(
                    &input,
                    [n, h, w, channels],
                    &packed,
                    &g,
                    &mut out[..len],
                    ldc,
                    &epi,
                )
            })
            .expect(&tag);
            for i in 0..m {
                let gap = if i + 1 < m { ldc } else { cout + 4 };
                assert!(
                    out[i * ldc + cout..i * ldc + gap]
                        .iter()
                        .all(|x| x.to_bits() == CANARY.to_bits()),
                    "{tag}: row {i} wrote past its channels"
                );
                for j in 0..cout {
                    let c0 = (j / per) * cin;
                    let r = Some(res[i * ldr + j] as f64);
                    let (want, mag) = reference(
                        i,
                        j,
                        cin,
                        |i, p| input[i * channels + c0 + p] as f64,
                        |p, j| filter[p * cout + j] as f64,
                        epi.bias,
                        r,
                        epi.activation,
                    );
                    check(&format!("{tag} out[{i},{j}]"), out[i * ldc + j], want, mag);
                }
            }
            outs.push(out);
        }
        for out in &outs[1..] {
            assert!(
                out.iter()
                    .zip(&outs[0])
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{isa:?}: bits depend on the thread count"
            );
        }
    }
}

/// A channels-first input gives the same bits as transposing it to channels last first, on
/// every ISA, for RGB and other small channel counts, strides 1 and 2, SAME and VALID, 3x3
/// and 7x7 filters and batches of two; convolutions it cannot take are errors.
#[test]
fn gemm_conv_nchw_input_equals_transposing_first() {
    for isa in Isa::supported() {
        for (n, [h, w], cin, cout, k, s, pad) in [
            (1, [9, 11], 3, 20, 3, 1, Padding::Same),
            (2, [16, 13], 3, 32, 3, 2, Padding::Same),
            (1, [23, 19], 3, 33, 7, 2, Padding::Same),
            (2, [10, 7], 4, 16, 3, 1, Padding::Valid),
            (1, [37, 8], 3, 8, 5, 1, Padding::Valid),
        ] {
            let g = ConvGeometry::new([h, w], [k, k], [s, s], [1, 1], pad).unwrap();
            let nchw = values(21, n * cin * h * w);
            let mut nhwc = vec![0.0; nchw.len()];
            for (i, v) in nchw.iter().enumerate() {
                let (img, ch, y, x) = (i / (cin * h * w), i / (h * w) % cin, i / w % h, i % w);
                nhwc[((img * h + y) * w + x) * cin + ch] = *v;
            }
            let kdim = k * k * cin;
            let filter = pack_b_for(isa, kdim, cout, &values(22, kdim * cout), false).unwrap();
            let bias = values(23, cout);
            let epi = Epilogue {
                bias: Some(&bias),
                add: None,
                activation: Activation::Relu,
            };
            let m = n * g.out_h * g.out_w;
            let (mut want, mut got) = (vec![0.0; m * cout], vec![0.0; m * cout]);
            let dims = [n, h, w, cin];
            let filters = std::slice::from_ref(&filter);
            conv2d_nhwc_grouped_strided(&nhwc, dims, filters, &g, &mut want, cout, &epi).unwrap();
            conv2d_nchw_input_strided(&nchw, dims, &filter, &g, &mut got, cout, &epi).unwrap();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?} {dims:?} k{k} s{s} {pad:?}"
            );
        }
    }
    let isa = detect();
    let g = ConvGeometry::new([8, 8], [1, 1], [1, 1], [1, 1], Padding::Same).unwrap();
    let filter = pack_b_for(isa, 3, 4, &values(1, 12), false).unwrap();
    let mut out = vec![0.0; 64 * 4];
    let err = conv2d_nchw_input_strided(
        &values(2, 192),
        [1, 8, 8, 3],
        &filter,
        &g,
        &mut out,
        4,
        &Epilogue::none(),
    )
    .unwrap_err();
    assert!(err.contains("channels-first input of 3 channels"), "{err}");
}
