//! GEMM tests: every ISA this CPU supports against a naive f64 product, over many shapes and
//! every epilogue; canaries around every operand; thread-count independence; caller errors.

use super::*;

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
pub(super) fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A canary that no computation produces: a signalling-NaN bit pattern. A kernel that reads
/// it turns results into NaN; one that writes over it changes the bits.
pub(super) const CANARY: f32 = f32::from_bits(0x7FA5_A5A5);

/// Checks `got` against `want` with tolerance relative to the magnitude `scale` of the terms.
pub(super) fn check(what: &str, got: f32, want: f64, scale: f64) {
    let tol = 1e-4 * scale + 1e-6;
    assert!(
        (got as f64 - want).abs() <= tol,
        "{what}: got {got}, expected {want} (tolerance {tol})"
    );
}

/// Reference `act(sum_p a[i, p] * b[p, j] + bias[j] + res[i, j])` in f64, and the magnitude.
#[allow(clippy::too_many_arguments)]
pub(super) fn reference(
    i: usize,
    j: usize,
    k: usize,
    a: impl Fn(usize, usize) -> f64,
    b: impl Fn(usize, usize) -> f64,
    bias: Option<&[f32]>,
    res: Option<f64>,
    act: Activation,
) -> (f64, f64) {
    let (mut sum, mut mag) = (0.0f64, 0.0f64);
    for p in 0..k {
        sum += a(i, p) * b(p, j);
        mag += (a(i, p) * b(p, j)).abs();
    }
    if let Some(bias) = bias {
        sum += bias[j] as f64;
        mag += (bias[j] as f64).abs();
    }
    if let Some(r) = res {
        sum += r;
        mag += r.abs();
    }
    let out = match act {
        Activation::None => sum,
        Activation::Relu => sum.max(0.0),
        Activation::Relu6 => sum.clamp(0.0, 6.0),
        Activation::LeakyRelu(alpha) if sum < 0.0 => sum * alpha as f64,
        Activation::LeakyRelu(_) => sum,
        Activation::Clamp { min, max } => sum.clamp(min as f64, max as f64),
    };
    (out, mag.max(1.0))
}

const ACTS: [Activation; 5] = [
    Activation::None,
    Activation::Relu,
    Activation::Relu6,
    Activation::LeakyRelu(0.2),
    Activation::Clamp {
        min: -0.5,
        max: 0.75,
    },
];

/// One checked GEMM with canaries around and between every operand's rows.
fn run_case(isa: Isa, m: usize, n: usize, k: usize, variant: usize) {
    let transposed = variant % 2 == 1;
    let act = ACTS[variant % ACTS.len()];
    let with_bias = !variant.is_multiple_of(3);
    let with_res = variant % 4 >= 2;
    let (lda, ldc, ldr) = (k + variant % 3, n + (variant / 2) % 3, n + variant % 2);
    let pre = 7;
    let tag = format!("{isa:?} m={m} n={n} k={k} variant={variant}");

    // A with canaries before, after and in the gaps between rows.
    let a_vals = values(variant as u64 + 1, m * k);
    let a_len = if m == 0 { 0 } else { (m - 1) * lda + k };
    let mut a_big = vec![CANARY; pre + a_len + 9];
    for i in 0..m {
        a_big[pre + i * lda..pre + i * lda + k].copy_from_slice(&a_vals[i * k..(i + 1) * k]);
    }
    let b_vals = values(variant as u64 + 1000, k * n);
    let b_in: Vec<f32> = if transposed {
        (0..n * k).map(|t| b_vals[(t % k) * n + t / k]).collect()
    } else {
        b_vals.clone()
    };
    let packed = pack_b_for(isa, k, n, &b_in, transposed).expect(&tag);
    let mut bias_big = vec![CANARY; n + 2];
    bias_big[1..n + 1].copy_from_slice(&values(variant as u64 + 7, n));
    let r_len = if m == 0 { 0 } else { (m - 1) * ldr + n };
    let mut r_big = vec![CANARY; r_len + 2];
    let r_vals = values(variant as u64 + 13, m * n);
    for i in 0..m {
        r_big[1 + i * ldr..1 + i * ldr + n].copy_from_slice(&r_vals[i * n..(i + 1) * n]);
    }
    let c_len = if m == 0 { 0 } else { (m - 1) * ldc + n };
    let mut c_big = vec![CANARY; pre + c_len + 5];
    // Stale values in C must not leak into the result (the first k-block starts from zero).
    for i in 0..m {
        c_big[pre + i * ldc..pre + i * ldc + n].fill(1e30);
    }
    let epi = Epilogue {
        bias: with_bias.then(|| &bias_big[1..n + 1]),
        add: with_res.then(|| Residual {
            data: &r_big[1..1 + r_len],
            ld: ldr,
        }),
        activation: act,
    };
    sgemm(
        m,
        n,
        k,
        &a_big[pre..pre + a_len],
        lda,
        &packed,
        &mut c_big[pre..pre + c_len],
        ldc,
        &epi,
    )
    .expect(&tag);

    for (t, v) in c_big.iter().enumerate() {
        let (rel, i, j) = (
            t.wrapping_sub(pre),
            t.wrapping_sub(pre) / ldc,
            t.wrapping_sub(pre) % ldc,
        );
        let inside = t >= pre && rel < c_len && j < n && i < m;
        if !inside {
            assert_eq!(
                v.to_bits(),
                CANARY.to_bits(),
                "{tag}: canary at {t} overwritten"
            );
            continue;
        }
        let (want, mag) = reference(
            i,
            j,
            k,
            |i, p| a_vals[i * k + p] as f64,
            |p, j| b_vals[p * n + j] as f64,
            epi.bias,
            with_res.then(|| r_vals[i * n + j] as f64),
            act,
        );
        check(&format!("{tag} C[{i},{j}]"), *v, want, mag);
    }
}

const SIZES: [usize; 12] = [1, 2, 3, 5, 7, 13, 16, 17, 31, 33, 64, 100];

#[test]
fn gemm_all_isas_all_shapes_match_reference() {
    let mut variant = 0;
    for isa in Isa::supported() {
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &SIZES {
                    // All small shapes; a rotating third of those with a dimension of 64+
                    // (they take most of the time and add no new edge cases beyond those).
                    if m.max(n).max(k) < 64 || (m + n + k) % 3 == variant % 3 {
                        run_case(isa, m, n, k, variant);
                    }
                    variant += 1;
                }
            }
        }
    }
}

#[test]
fn gemm_deep_and_wide_shapes_cross_cache_blocks() {
    // k > KC (several k-blocks, partial sums kept in C), n > NC, lda that thrashes L1 (copied).
    for isa in Isa::supported() {
        for (m, n, k, v) in [
            (37, 530, 1500, 0),
            (29, 40, 2100, 3),
            (13, 1030, 70, 5),
            (50, 33, 1025, 6),
        ] {
            run_case(isa, m, n, k, v);
        }
        // Rows enough not to stream B, with B wider than a column block (`block_cols`) and
        // deeper than a k-block: every strip's rows run through the column blocks of each
        // k-block in turn, the partial sums kept in C; the last block's last panel partial.
        let (m, k) = (100, 2100);
        let n = 2 * driver::block_cols_for(k, 1, isa.nr()) + 45;
        run_case(isa, m, n, k, 6);
        run_case(isa, 4, 9, 0, 2); // k = 0: epilogue of zero
        run_case(isa, 0, 5, 3, 1); // m = 0: nothing to do
    }
}

/// Odd and edge sizes for the matrix-vector path: one lane, partial vectors, partial panels
/// and panel groups, and a B wider than the threading threshold.
const GEMV_SIZES: [usize; 5] = [1, 3, 17, 1000, 1001];

#[test]
fn gemm_small_m_matches_reference() {
    let mut variant = 0;
    for isa in Isa::supported() {
        // m = 4 is the first product left to the blocked driver.
        for m in 1..=4 {
            for &n in &GEMV_SIZES {
                for &k in &GEMV_SIZES {
                    run_case(isa, m, n, k, variant);
                    variant += 1;
                }
            }
        }
    }
}

#[test]
fn gemm_small_m_gives_the_blocked_drivers_bits() {
    let bias = values(5, 1001);
    let res = values(6, 3 * 1001);
    let epilogues = [
        Epilogue::none(),
        Epilogue {
            bias: Some(&bias),
            add: None,
            activation: Activation::Relu,
        },
        Epilogue {
            bias: Some(&bias),
            add: Some(Residual {
                data: &res,
                ld: 1001,
            }),
            activation: Activation::LeakyRelu(0.1),
        },
    ];
    for isa in Isa::supported() {
        for m in 1..=gemv::MAX_ROWS {
            for &n in &GEMV_SIZES {
                for &k in &GEMV_SIZES {
                    let a = values(1, m * k);
                    let b = pack_b_for(isa, k, n, &values(2, k * n), false).unwrap();
                    for (e, epi) in epilogues.iter().enumerate() {
                        let tag = format!("{isa:?} m={m} n={n} k={k} epilogue {e}");
                        let mut fast = vec![CANARY; m * n];
                        gemv::run(m, &a, k, &b, &mut fast, n, epi).expect(&tag);
                        let mut blocked = vec![CANARY; m * n];
                        let src = DenseA {
                            a: &a,
                            lda: k,
                            m,
                            k,
                            prologue: None,
                        };
                        driver::run(&src, &b, &mut blocked, n, epi).expect(&tag);
                        let differs = fast
                            .iter()
                            .zip(&blocked)
                            .position(|(x, y)| x.to_bits() != y.to_bits());
                        if let Some(t) = differs {
                            panic!("{tag}: C[{t}] = {} vs {}", fast[t], blocked[t]);
                        }
                    }
                }
            }
        }
    }
}

/// `sgemm` of the `m` x `k` `a` by `b` on pools of 1, 2 and 3 threads; asserts that all three
/// give the same bits and returns them.
fn on_1_2_3_threads(
    tag: &str,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &PackedB,
    epi: &Epilogue<'_>,
) -> Vec<f32> {
    let outs: Vec<Vec<f32>> = [1, 2, 3]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0f32; m * n];
            pool.install(|| sgemm(m, n, k, a, k, b, &mut c, n, epi))
                .unwrap();
            c
        })
        .collect();
    assert!(
        outs.iter().all(|c| c
            .iter()
            .zip(&outs[0])
            .all(|(x, y)| x.to_bits() == y.to_bits())),
        "{tag}: results depend on the thread count"
    );
    outs.into_iter().next().unwrap()
}

#[test]
fn gemm_streamed_b_matches_reference_whatever_the_threads() {
    // Few rows and a B twice the L2 (whatever this machine's): B streamed a panel a call,
    // each call prefetching the next (`driver::streams`), across k-blocks and column blocks;
    // a residual and a partial last panel on the edges.
    let n = 530;
    let k = 2 * super::cache::caches().l2 / (4 * n) + 37;
    for isa in Isa::supported() {
        for m in [13, 49, 64] {
            assert!(driver::streams(m, n, k), "{m}x{n}x{k} does not stream");
            let tag = format!("{isa:?} {m}x{n}x{k}");
            let a = values(1, m * k);
            let b_vals = values(2, k * n);
            let b = pack_b_for(isa, k, n, &b_vals, false).unwrap();
            let res = values(4, m * n);
            let epi = Epilogue {
                bias: None,
                add: Some(Residual { data: &res, ld: n }),
                activation: Activation::None,
            };
            let c = on_1_2_3_threads(&tag, m, n, k, &a, &b, &epi);
            for i in 0..m {
                for j in (0..n).step_by(7).chain([n - 1]) {
                    let (want, mag) = reference(
                        i,
                        j,
                        k,
                        |i, p| a[i * k + p] as f64,
                        |p, j| b_vals[p * n + j] as f64,
                        None,
                        Some(res[i * n + j] as f64),
                        Activation::None,
                    );
                    check(&format!("{tag} C[{i},{j}]"), c[i * n + j], want, mag);
                }
            }
        }
    }
}

/// Operands of an `m` x `n` x `k` product from seeds `seed..seed + 3`: A, B as given and
/// packed for `isa`, and a bias (for [`bias_relu`]).
fn bias_relu_case(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, PackedB, Vec<f32>) {
    let b_vals = values(seed + 1, k * n);
    let b = pack_b_for(isa, k, n, &b_vals, false).unwrap();
    (values(seed, m * k), b_vals, b, values(seed + 2, n))
}

/// The epilogue adding `bias`, then Relu.
fn bias_relu(bias: &[f32]) -> Epilogue<'_> {
    Epilogue {
        bias: Some(bias),
        add: None,
        activation: Activation::Relu,
    }
}

#[test]
fn gemm_results_do_not_depend_on_thread_count() {
    for isa in Isa::supported() {
        // Row split, column split (few row tiles), thin ones, one across k-blocks.
        for (m, n, k) in [
            (301, 97, 130),
            (3, 2048, 512),
            (1, 777, 3000),
            (3, 1001, 2100), // matrix-vector path, B over 8 MiB: split along n
            (49, 300, 1100),
            (1000, 64, 576),  // several row bands per thread
            (150, 700, 2100), // column blocks inside each strip (`driver::block_cols`)
        ] {
            let (a, b_vals, b, bias) = bias_relu_case(isa, m, n, k, 1);
            let epi = bias_relu(&bias);
            let tag = format!("{isa:?} {m}x{n}x{k}");
            let c = on_1_2_3_threads(&tag, m, n, k, &a, &b, &epi);
            for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
                let (want, mag) = reference(
                    i,
                    j,
                    k,
                    |i, p| a[i * k + p] as f64,
                    |p, j| b_vals[p * n + j] as f64,
                    Some(&bias),
                    None,
                    Activation::Relu,
                );
                check(&format!("{tag} C[{i},{j}]"), c[i * n + j], want, mag);
            }
        }
    }
}

/// The column split's tasks write their columns of every row in place (`out.rs`): into a C
/// whose rows are further apart than `n` (a concat slot), with canaries in the gaps and
/// around, on 2 and 3 threads, the values equal the 1-thread bits and no canary moves.
#[test]
fn gemm_column_split_writes_only_its_columns() {
    for isa in Isa::supported() {
        // One row tile, and three (a partial last one), across panels and a partial panel.
        for (m, n, k) in [(3, 2048, 512), (25, 1000, 512), (13, 530, 700)] {
            let (ldc, pre) = (n + 5, 3);
            let (a, _, b, bias) = bias_relu_case(isa, m, n, k, 21);
            let epi = bias_relu(&bias);
            let tag = format!("{isa:?} {m}x{n}x{k}");
            let want = on_1_2_3_threads(&tag, m, n, k, &a, &b, &epi);
            let len = (m - 1) * ldc + n;
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut c = vec![CANARY; pre + len + 4];
                pool.install(|| sgemm(m, n, k, &a, k, &b, &mut c[pre..pre + len], ldc, &epi))
                    .unwrap();
                for (t, v) in c.iter().enumerate() {
                    let (i, j) = (t.wrapping_sub(pre) / ldc, t.wrapping_sub(pre) % ldc);
                    let expect = if t >= pre && i < m && j < n {
                        want[i * n + j]
                    } else {
                        CANARY
                    };
                    assert_eq!(
                        v.to_bits(),
                        expect.to_bits(),
                        "{tag} {threads} threads: c[{t}]"
                    );
                }
            }
        }
    }
}

#[test]
fn gemm_nan_propagates_through_relu() {
    for isa in Isa::supported() {
        let mut a = vec![1.0f32; 4 * 3];
        a[4] = f32::NAN; // row 1
        let b = pack_b_for(isa, 3, 5, &[1.0; 15], false).unwrap();
        let mut c = vec![0.0; 20];
        let epi = Epilogue {
            activation: Activation::Relu,
            ..Epilogue::none()
        };
        sgemm(4, 5, 3, &a, 3, &b, &mut c, 5, &epi).unwrap();
        assert!(c[5..10].iter().all(|v| v.is_nan()), "{isa:?}: {c:?}");
        assert!(
            c[..5].iter().chain(&c[10..]).all(|&v| v == 3.0),
            "{isa:?}: {c:?}"
        );
    }
}

#[test]
fn gemm_caller_errors_are_reported() {
    let b = pack_b_for(Isa::Portable, 4, 3, &[0.5; 12], false).unwrap();
    let a = [1.0; 8];
    let mut c = [0.0; 6];
    let none = Epilogue::none();
    let err = |r: Result<(), String>| r.unwrap_err();
    assert!(err(sgemm(2, 3, 4, &a[..7], 4, &b, &mut c, 3, &none)).contains("A has 7"));
    assert!(err(sgemm(2, 3, 4, &a, 3, &b, &mut c, 3, &none)).contains("lda 3"));
    assert!(err(sgemm(2, 3, 4, &a, 4, &b, &mut c[..5], 3, &none)).contains("C has 5"));
    assert!(err(sgemm(2, 3, 5, &a, 4, &b, &mut c, 3, &none)).contains("packed as [4, 3]"));
    let short = [0.0; 2];
    let epi = Epilogue {
        bias: Some(&short),
        ..Epilogue::none()
    };
    assert!(err(sgemm(2, 3, 4, &a, 4, &b, &mut c, 3, &epi)).contains("bias has 2"));
    let epi = Epilogue {
        add: Some(Residual {
            data: &[0.0; 5],
            ld: 3,
        }),
        ..Epilogue::none()
    };
    assert!(err(sgemm(2, 3, 4, &a, 4, &b, &mut c, 3, &epi)).contains("residual has 5"));
    // A correct call on the same operands still works: 4 * 0.5 = 2.
    sgemm(2, 3, 4, &a, 4, &b, &mut c, 3, &none).unwrap();
    assert_eq!(c, [2.0; 6]);
}

/// A row source claiming two dense rows of 4 while its dense matrix holds only 5 values.
struct ShortDense;

impl RowSource for ShortDense {
    fn rows(&self) -> usize {
        2
    }
    fn depth(&self) -> usize {
        4
    }
    fn segment_len(&self) -> usize {
        4
    }
    fn segments<'s>(
        &'s self,
        _i0: usize,
        _rows: usize,
        _k0: usize,
        _len: usize,
        _nseg: usize,
        _out: &mut Vec<Option<&'s [f32]>>,
    ) {
    }
    fn dense(&self) -> Option<(&[f32], usize)> {
        Some((&[1.0; 5], 4))
    }
}

#[test]
fn gemm_small_m_short_dense_source_is_an_error() {
    let b = pack_b_for(Isa::Portable, 4, 3, &[0.5; 12], false).unwrap();
    let mut c = [0.0; 6];
    let err = sgemm_rows(&ShortDense, &b, &mut c, 3, &Epilogue::none()).unwrap_err();
    assert_eq!(
        err,
        "gemv: A has 5 values, expected 2 rows of 4 at stride 4"
    );
}

/// A row source serving A's rows in reverse order, in segments of 3, with segment 1 of every
/// row zero (`None`); `short` makes it return slices one value too short (a broken source).
struct Reversed<'a> {
    a: &'a [f32],
    m: usize,
    k: usize,
    short: bool,
}

impl RowSource for Reversed<'_> {
    fn rows(&self) -> usize {
        self.m
    }
    fn depth(&self) -> usize {
        self.k
    }
    fn segment_len(&self) -> usize {
        3
    }
    fn segments<'s>(
        &'s self,
        i0: usize,
        rows: usize,
        k0: usize,
        len: usize,
        nseg: usize,
        out: &mut Vec<Option<&'s [f32]>>,
    ) {
        for s in 0..nseg {
            for i in i0..i0 + rows {
                let k = k0 + s * len;
                let start = (self.m - 1 - i) * self.k + k;
                let end = start + len - usize::from(self.short);
                out.push((k / 3 != 1).then(|| &self.a[start..end]));
            }
        }
    }
}

#[test]
fn gemm_row_source_is_read_as_documented() {
    let (m, n, k) = (17, 20, 12);
    let a = values(5, m * k);
    let b_vals = values(6, k * n);
    for isa in Isa::supported() {
        let b = pack_b_for(isa, k, n, &b_vals, false).unwrap();
        let mut c = vec![0.0; m * n];
        let src = Reversed {
            a: &a,
            m,
            k,
            short: false,
        };
        sgemm_rows(&src, &b, &mut c, n, &Epilogue::none()).unwrap();
        let a_at = |i: usize, p: usize| {
            if p / 3 == 1 {
                0.0
            } else {
                a[(m - 1 - i) * k + p] as f64
            }
        };
        for i in 0..m {
            for j in 0..n {
                let (want, mag) = reference(
                    i,
                    j,
                    k,
                    a_at,
                    |p, j| b_vals[p * n + j] as f64,
                    None,
                    None,
                    Activation::None,
                );
                check(&format!("{isa:?} C[{i},{j}]"), c[i * n + j], want, mag);
            }
        }
        let broken = Reversed { short: true, ..src };
        let err = sgemm_rows(&broken, &b, &mut c, n, &Epilogue::none()).unwrap_err();
        assert!(err.contains("segment of 2 values, expected 3"), "{err}");
    }
}

/// A dense A's `strip_starts` covers every row asked for, each row's start where `segments`
/// puts its first segment and each segment at its offset from it, with starts of 0 up to a
/// whole tile, for whole depths, later k-blocks and pieces.
#[test]
fn gemm_dense_strip_starts_match_segments() {
    let (m, k, lda) = (29, 12, 15);
    let a = values(7, (m - 1) * lda + k);
    let src = DenseA {
        a: &a,
        lda,
        m,
        k,
        prologue: None,
    };
    for mr in [12, 6, 4] {
        for (k0, len, nseg) in [(0, 12, 1), (0, 4, 3), (4, 4, 2), (5, 7, 1)] {
            for (i0, rows) in [(0, m), (mr, m - mr), (0, 1), (m - 1, 1)] {
                let mut raw = Vec::new();
                src.segments(i0, rows, k0, len, nseg, &mut raw);
                let (mut starts, mut offsets) = (Vec::new(), Vec::new());
                let (whole, covered) = src
                    .strip_starts(i0, rows, mr, k0, len, nseg, &mut starts, &mut offsets)
                    .unwrap();
                let at = format!("mr={mr} i0={i0} rows={rows} k0={k0} len={len} nseg={nseg}");
                assert_eq!((whole.as_ptr(), covered), (a.as_ptr(), rows), "{at}");
                assert_eq!(starts.len(), rows.next_multiple_of(mr), "{at}");
                assert!(starts[rows..].iter().all(|&s| s == 0), "{at}");
                assert_eq!(offsets.len(), nseg, "{at}");
                for (s, &off) in offsets.iter().enumerate() {
                    for r in 0..rows {
                        let want = raw[s * rows + r].unwrap();
                        let got = &a[starts[r] + off..][..len];
                        assert_eq!(got.as_ptr(), want.as_ptr(), "{at} s={s} r={r}");
                    }
                }
            }
        }
    }
}

/// `apply_all` is `apply` on every value, NaN and infinities included, for every activation.
#[test]
fn gemm_activation_apply_all_matches_apply() {
    let xs = [
        -7.0,
        -1.5,
        -0.0,
        0.0,
        0.25,
        5.5,
        6.0,
        9.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for act in [
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu(0.1),
        Activation::Clamp {
            min: -1.0,
            max: 2.0,
        },
    ] {
        let mut got = xs;
        act.apply_all(&mut got);
        for (g, x) in got.iter().zip(xs) {
            assert_eq!(g.to_bits(), act.apply(x).to_bits(), "{act:?} on {x}");
        }
    }
}

/// A prologue gives the bits of mapping A first and multiplying after: for every ISA, with
/// rows of a wider matrix (lda > k), few rows (the matrix-vector sizes, which it takes
/// through the blocked driver), several k-blocks, the column split and every activation.
#[test]
fn gemm_prologue_equals_mapping_a_first() {
    let activations = [
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu(0.1),
    ];
    for isa in Isa::supported() {
        for (case, (m, n, k, lda)) in [
            (50, 40, 24, 24),
            (37, 33, 20, 29),
            (2, 70, 30, 30),
            (25, 17, 2100, 2100),
            (5, 1000, 64, 64),
        ]
        .into_iter()
        .enumerate()
        {
            let a = values(1, m * lda);
            let b = pack_b_for(isa, k, n, &values(2, k * n), false).unwrap();
            let scale = values(3, k);
            let shift = values(4, k);
            let bias = values(5, n);
            let epi = Epilogue {
                bias: Some(&bias),
                add: None,
                activation: Activation::Relu,
            };
            for &activation in &activations {
                let tag = format!("{isa:?} case {case} {activation:?}");
                let prologue = Prologue {
                    scale: &scale,
                    shift: &shift,
                    activation,
                };
                let mut mapped = vec![0.0f32; m * k];
                for i in 0..m {
                    for p in 0..k {
                        let x = a[i * lda + p] * scale[p] + shift[p];
                        mapped[i * k + p] = activation.apply(x);
                    }
                }
                let mut want = vec![CANARY; m * n];
                sgemm(m, n, k, &mapped, k, &b, &mut want, n, &epi).expect(&tag);
                let mut got = vec![CANARY; m * n];
                let src = MatrixA {
                    a: &a,
                    lda,
                    prologue: Some(prologue),
                };
                sgemm_prologue(m, n, k, src, &b, &mut got, n, &epi).expect(&tag);
                let differs = got
                    .iter()
                    .zip(&want)
                    .position(|(x, y)| x.to_bits() != y.to_bits());
                if let Some(t) = differs {
                    panic!("{tag}: C[{t}] = {} vs {}", got[t], want[t]);
                }
            }
        }
    }
    // Too few scales for A's columns: an error, not a panic.
    let b = pack_b(4, 4, &values(2, 16), false).unwrap();
    let src = MatrixA {
        a: &[0.0; 16],
        lda: 4,
        prologue: Some(Prologue {
            scale: &[1.0; 3],
            shift: &[0.0; 4],
            activation: Activation::None,
        }),
    };
    let err = sgemm_prologue(4, 4, 4, src, &b, &mut [0.0; 16], 4, &Epilogue::none()).unwrap_err();
    assert!(err.contains("prologue"), "{err}");
}
