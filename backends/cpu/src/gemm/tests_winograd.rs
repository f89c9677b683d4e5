//! Winograd F(2x2, 3x3) and F(4x4, 3x3) tests: every supported ISA against a naive f64
//! convolution over odd and even sizes (partial tiles at the borders), every padding,
//! bias/residual/activation epilogues; the measured error; caller errors.

use super::tests::{CANARY, check, reference, values};
use super::winograd::{WinogradVariant, pack_winograd_for};
use super::*;
use kiln_ir::op::Padding;

/// Runs one case on `isa` in `wv` and checks every output; returns the largest absolute error
/// and the largest error relative to the magnitude of the summed terms.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    wv: WinogradVariant,
    n: usize,
    hw: [usize; 2],
    cin: usize,
    cout: usize,
    pad: Padding,
    variant: usize,
) -> (f64, f64) {
    let [h, w] = hw;
    let g = ConvGeometry::new(hw, [3, 3], [1, 1], [1, 1], pad).unwrap();
    let tag = format!("{isa:?} {wv:?} n={n} {h}x{w}x{cin} -> {cout} {pad:?} variant {variant}");
    let input = values(variant as u64 + 3, n * h * w * cin);
    let kdim = 9 * cin;
    let filter = values(variant as u64 + 5, kdim * cout);
    let packed = pack_winograd_for(isa, &filter, cin, cout, wv).unwrap();
    let bias = values(variant as u64 + 9, cout);
    let m = n * g.out_h * g.out_w;
    let res = values(variant as u64 + 11, m * cout);
    let act = [Activation::Relu, Activation::None, Activation::Relu6][variant % 3];
    let epi = Epilogue {
        bias: variant.is_multiple_of(2).then_some(&bias[..]),
        add: (variant % 4 == 1).then(|| Residual {
            data: &res,
            ld: cout,
        }),
        activation: act,
    };
    let mut in_big = input.clone();
    in_big.extend([CANARY; 8]);
    let mut out = vec![CANARY; m * cout + 10];
    conv2d_winograd(
        &in_big[..input.len()],
        [n, h, w, cin],
        &packed,
        &g,
        &mut out[3..3 + m * cout],
        &epi,
    )
    .expect(&tag);
    assert!(
        out[..3]
            .iter()
            .chain(&out[3 + m * cout..])
            .all(|v| v.to_bits() == CANARY.to_bits()),
        "{tag}: wrote outside the output"
    );
    let at = |i: usize, p: usize| -> f64 {
        let (img, oy, ox) = (i / (g.out_h * g.out_w), i / g.out_w % g.out_h, i % g.out_w);
        let (tap, ci) = (p / cin, p % cin);
        let iy = (oy + tap / 3) as isize - g.pad_top as isize;
        let ix = (ox + tap % 3) as isize - g.pad_left as isize;
        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
            return 0.0;
        }
        input[((img * h + iy as usize) * w + ix as usize) * cin + ci] as f64
    };
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..cout {
            let r = epi.add.map(|_| res[i * cout + j] as f64);
            let (want, mag) = reference(
                i,
                j,
                kdim,
                at,
                |p, j| filter[p * cout + j] as f64,
                epi.bias,
                r,
                act,
            );
            let got = out[3 + i * cout + j];
            check(&format!("{tag} out[{i},{j}]"), got, want, mag);
            let err = (got as f64 - want).abs();
            max_abs = max_abs.max(err);
            max_rel = max_rel.max(err / mag.max(1e-30));
        }
    }
    (max_abs, max_rel)
}

#[test]
fn gemm_winograd_matches_naive_convolution() {
    let explicit = Padding::Explicit([[2, 0], [1, 3]]);
    for wv in [WinogradVariant::F2, WinogradVariant::F4] {
        let mut variant = 0;
        let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
        for isa in Isa::supported() {
            for (cin, cout) in [(16, 16), (17, 17), (16, 64), (64, 17)] {
                for h in 1..=9 {
                    let w = (h * 5) % 9 + 1;
                    for pad in [Padding::Same, Padding::Valid, explicit] {
                        if pad == Padding::Valid && (h < 3 || w < 3) {
                            continue;
                        }
                        let n = 1 + variant % 2;
                        let (a, r) = run(isa, wv, n, [h, w], cin, cout, pad, variant);
                        (max_abs, max_rel) = (max_abs.max(a), max_rel.max(r));
                        variant += 1;
                    }
                }
            }
            for pad in [Padding::Same, Padding::Valid, explicit] {
                let (a, r) = run(isa, wv, 1, [56, 56], 16, 17, pad, variant);
                (max_abs, max_rel) = (max_abs.max(a), max_rel.max(r));
                variant += 1;
            }
        }
        // The measured error, for the record (`cargo test ... -- --nocapture`).
        println!("winograd {wv:?}: max abs error {max_abs:e}, max error / sum|terms| {max_rel:e}");
    }
}

#[test]
fn gemm_winograd_rejects_bad_calls() {
    let isa = detect();
    let filter = values(1, 9 * 16 * 16);
    let packed = pack_winograd_for(isa, &filter, 16, 16, WinogradVariant::F4).unwrap();
    let input = values(2, 5 * 5 * 16);
    let mut out = vec![0.0; 5 * 5 * 16];
    let same = ConvGeometry::new([5, 5], [3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
    let strided = ConvGeometry::new([5, 5], [3, 3], [2, 2], [1, 1], Padding::Same).unwrap();
    let err = conv2d_winograd(
        &input,
        [1, 5, 5, 16],
        &packed,
        &strided,
        &mut out,
        &Epilogue::none(),
    )
    .unwrap_err();
    assert!(
        err.contains("stride 1") && err.contains("stride_h: 2"),
        "{err}"
    );
    let err = conv2d_winograd(
        &input,
        [1, 5, 5, 17],
        &packed,
        &same,
        &mut out,
        &Epilogue::none(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "winograd: input [1, 5, 5, 17] has 17 channels, the filter expects 16"
    );
    let err = conv2d_winograd(
        &input[1..],
        [1, 5, 5, 16],
        &packed,
        &same,
        &mut out,
        &Epilogue::none(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "winograd: input has 399 values, expected at least 400 for [1, 5, 5, 16]"
    );
    let err = conv2d_winograd(
        &input,
        [1, 5, 5, 16],
        &packed,
        &same,
        &mut out[1..],
        &Epilogue::none(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "winograd: output has 399 values, expected at least 400 for [1, 5, 5, 16] at 16 values \
         a pixel"
    );
    let err = conv2d_winograd_strided(
        &input,
        [1, 5, 5, 16],
        &packed,
        &same,
        &mut out,
        15,
        &Epilogue::none(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "winograd: output pixels 15 values apart hold only part of 16 channels"
    );
    let err = pack_winograd_for(isa, &filter[1..], 16, 16, WinogradVariant::F2).unwrap_err();
    assert_eq!(
        err,
        "winograd: filter has 2303 values, expected 2304 for [3, 3, 16, 16]"
    );
}

#[test]
fn gemm_winograd_default_channels_error_next_to_direct() {
    // The channel counts and sizes the plan now sends to Winograd by default, and in which
    // variant (see auto_min_channels and default_variant): its error, measured against the
    // f64 reference, next to the implicit GEMM's on the same convolution. Every output is also
    // checked against the suite tolerance inside `run`.
    use super::winograd::{auto_choice, auto_min_channels};
    use WinogradVariant::{F2, F4};
    // F(4x4) where 4x4 tiles cover the output with little waste, at least 16 of them per
    // image, from a channel mean of 32 (W4's 32 -> 32, 48 -> 48); F(2x2) at 14x14 and 13x13
    // (4x4 tiles would compute 1.3-1.5x the outputs) and one image's 7x7 tiles (49) from a mean
    // of 40; neither at 7x7 on one image (16 2x2 tiles), below those means, or on the portable
    // kernels.
    let g = |hw| ConvGeometry::new([hw, hw], [3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
    assert_eq!(auto_choice(&g(56), 8, 64, 64, Isa::Avx512), Some(F4));
    assert_eq!(auto_choice(&g(56), 1, 64, 64, Isa::Avx512), Some(F4));
    assert_eq!(auto_choice(&g(27), 1, 32, 128, Isa::Avx512), Some(F4));
    assert_eq!(auto_choice(&g(14), 1, 64, 64, Isa::Avx512), Some(F2));
    assert_eq!(auto_choice(&g(13), 1, 64, 256, Isa::Avx512), Some(F2));
    assert_eq!(auto_choice(&g(14), 1, 256, 256, Isa::Avx512), Some(F2));
    assert_eq!(auto_choice(&g(7), 1, 512, 512, Isa::Avx512), None);
    assert_eq!(auto_choice(&g(7), 2, 512, 512, Isa::Avx512), Some(F2));
    assert_eq!(auto_choice(&g(16), 16, 32, 64, Isa::Avx512), Some(F4));
    assert_eq!(auto_choice(&g(28), 1, 48, 48, Isa::Avx2Fma), Some(F4));
    assert_eq!(auto_choice(&g(32), 16, 32, 32, Isa::Avx512), Some(F4));
    assert_eq!(auto_choice(&g(14), 1, 32, 32, Isa::Avx512), None);
    assert_eq!(auto_choice(&g(56), 1, 16, 64, Isa::Avx512), None);
    assert_eq!(auto_choice(&g(56), 8, 64, 64, Isa::Portable), None);
    assert_eq!(auto_min_channels(Isa::Avx512, F2), Some(40));
    assert_eq!(auto_min_channels(Isa::Avx2Fma, F4), Some(32));
    assert_eq!(auto_min_channels(Isa::Portable, F4), None);
    for isa in Isa::supported() {
        for (hw, ch) in [([9, 7], 48), ([9, 7], 64), ([6, 7], 128), ([5, 5], 256)] {
            let (direct_abs, direct_rel) = direct_error(isa, hw, ch);
            // F(2x2,3x3) adds a few roundings per value: same order as the direct sum's.
            // F(4x4,3x3) multiplies values by up to 8 in its transforms and divides by up to
            // 24 in the filter's, so each rounding weighs more.
            for (wv, bound) in [(WinogradVariant::F2, 10.0), (WinogradVariant::F4, 40.0)] {
                // Variant 7: no bias, no residual, no activation, so both compare raw sums.
                let (wino_abs, wino_rel) = run(isa, wv, 1, hw, ch, ch, Padding::Same, 7);
                println!(
                    "{isa:?} {hw:?}x{ch}->{ch}: {wv:?} max abs {wino_abs:e} rel {wino_rel:e}; \
                     direct max abs {direct_abs:e} rel {direct_rel:e}"
                );
                assert!(
                    wino_rel <= bound * direct_rel.max(1e-7),
                    "{isa:?} {wv:?} {ch}"
                );
            }
        }
    }
}

/// The implicit GEMM's largest absolute and relative error on the inputs `run` uses for
/// variant 7 (no epilogue).
fn direct_error(isa: Isa, hw: [usize; 2], ch: usize) -> (f64, f64) {
    let [h, w] = hw;
    let variant = 7u64;
    let g = ConvGeometry::new(hw, [3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
    let input = values(variant + 3, h * w * ch);
    let kdim = 9 * ch;
    let filter = values(variant + 5, kdim * ch);
    let packed = pack_b_for(isa, kdim, ch, &filter, false).unwrap();
    let mut out = vec![0.0f32; h * w * ch];
    conv2d_nhwc(
        &input,
        [1, h, w, ch],
        &packed,
        &g,
        &mut out,
        &Epilogue::none(),
    )
    .unwrap();
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for i in 0..h * w {
        let (oy, ox) = (i / w, i % w);
        for j in 0..ch {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for p in 0..kdim {
                let (tap, ci) = (p / ch, p % ch);
                let iy = (oy + tap / 3) as isize - g.pad_top as isize;
                let ix = (ox + tap % 3) as isize - g.pad_left as isize;
                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                    continue;
                }
                let t = input[(iy as usize * w + ix as usize) * ch + ci] as f64
                    * filter[p * ch + j] as f64;
                sum += t;
                mag += t.abs();
            }
            let err = (out[i * ch + j] as f64 - sum).abs();
            max_abs = max_abs.max(err);
            max_rel = max_rel.max(err / mag.max(1e-30));
        }
    }
    (max_abs, max_rel)
}

/// Stored at a wider stride (a concat slot), every pixel's channels hold the bits of the
/// contiguous output and the values between pixels are left alone, on every ISA, with one
/// block and with several (the row bands then start at strided offsets).
#[test]
fn gemm_winograd_writes_a_strided_slot() {
    for isa in Isa::supported() {
        for (n, hw, cin, cout, wv) in [
            (1, [7, 9], 16, 32, WinogradVariant::F2),
            (2, [30, 27], 32, 48, WinogradVariant::F2),
            (1, [7, 9], 16, 32, WinogradVariant::F4),
            (2, [30, 27], 32, 48, WinogradVariant::F4),
        ] {
            let [h, w] = hw;
            let g = ConvGeometry::new(hw, [3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
            let input = values(3, n * h * w * cin);
            let filter = values(4, 9 * cin * cout);
            let packed = pack_winograd_for(isa, &filter, cin, cout, wv).unwrap();
            let bias = values(5, cout);
            let epi = Epilogue {
                bias: Some(&bias),
                add: None,
                activation: Activation::Relu,
            };
            let m = n * h * w;
            let mut whole = vec![0.0f32; m * cout];
            conv2d_winograd(&input, [n, h, w, cin], &packed, &g, &mut whole, &epi).unwrap();
            let ldc = cout + 5;
            let mut slot = vec![CANARY; (m - 1) * ldc + cout];
            conv2d_winograd_strided(&input, [n, h, w, cin], &packed, &g, &mut slot, ldc, &epi)
                .unwrap();
            for p in 0..m {
                let got: Vec<u32> = slot[p * ldc..p * ldc + cout]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let want: Vec<u32> = whole[p * cout..(p + 1) * cout]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(got, want, "{isa:?} {wv:?} {hw:?} pixel {p}");
                if p + 1 < m {
                    assert!(
                        slot[p * ldc + cout..(p + 1) * ldc]
                            .iter()
                            .all(|v| v.to_bits() == CANARY.to_bits()),
                        "{isa:?} {wv:?} {hw:?}: wrote between pixels {p} and {}",
                        p + 1
                    );
                }
            }
        }
    }
}
