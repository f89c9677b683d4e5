//! AVX-512 micro-kernel: a 12x32 register tile (24 zmm accumulators, two zmm of B per step,
//! one broadcast of A per row), masked loads and stores for edge columns.
//!
//! Why 12x32: 24 independent FMA chains cover the FMA latency on both pipes, each k-step loads
//! 2 vectors and 12 scalars for 24 FMAs, and 12 row pointers plus B and the counter still fit
//! the 15 usable general registers (checked in the disassembly: no spills in the k-loop). It
//! reaches about 105 GFLOP/s per core against a measured FMA peak of about 115 on the 2-core
//! EPYC. The kernel is instantiated per row count, so a partial tile computes only its rows;
//! columns past `cols` are masked off in every load and store of C, bias and residual, so
//! nothing outside the caller's slices is touched. One call runs the tile for several full
//! column panels in turn (`Tile::panels`), so thin layers pay the call's setup once per row
//! tile rather than once per panel.

use super::Tile;

/// Rows of the register tile.
pub(crate) const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
pub(crate) const NR: usize = 32;

/// Runs one strip of row tiles; panics if the tile's slices do not cover what the kernel reads
/// and writes (a driver bug, never caller input) or if the CPU lacks AVX-512F.
pub(crate) fn run(t: &mut Tile<'_, '_>) {
    t.assert_valid(MR, NR);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            is_x86_feature_detected!("avx512f"),
            "AVX-512 kernel on a CPU without AVX-512F"
        );
        for q in 0..t.tiles {
            // SAFETY: the feature was just checked; `assert_valid` established for the strip
            // the bounds the kernel's comments rely on, and `row_tile` keeps them per tile.
            unsafe { imp::kernel(&mut t.row_tile::<MR>(q)) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("Isa::Avx512 is never supported off x86_64");
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{MR, NR, Tile};
    use crate::gemm::epilogue::Activation;
    use std::arch::x86_64::*;

    /// Lane mask selecting the first `n` of 16 lanes (`n` may exceed 16).
    fn lanes(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    /// The activation, with its constants already broadcast.
    #[derive(Clone, Copy)]
    enum Act {
        None,
        Clamp(__m512, Option<__m512>),
        Leaky(__m512),
    }

    #[target_feature(enable = "avx512f")]
    fn act_of(a: Activation) -> Act {
        match (a, a.bounds()) {
            (Activation::LeakyRelu(alpha), _) => Act::Leaky(_mm512_set1_ps(alpha)),
            (_, Some((lo, hi))) => Act::Clamp(
                _mm512_set1_ps(lo),
                if hi == f32::INFINITY {
                    None
                } else {
                    Some(_mm512_set1_ps(hi))
                },
            ),
            _ => Act::None,
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn activate(v: __m512, act: Act) -> __m512 {
        match act {
            Act::None => v,
            // max(lo, v) and min(hi, v) return v when v is NaN (the second operand wins).
            Act::Clamp(lo, hi) => {
                let v = _mm512_max_ps(lo, v);
                match hi {
                    Some(hi) => _mm512_min_ps(hi, v),
                    None => v,
                }
            }
            Act::Leaky(alpha) => {
                let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
                _mm512_mask_mul_ps(v, neg, v, alpha)
            }
        }
    }

    /// Stores the lanes of `mask` of `v` at `p`: a plain store when the mask has all 16.
    /// (A masked store with every lane on still wrote slower than a plain one where the
    /// output was not in cache: the first conv of ResNet-50 in the model, Zen 5.)
    ///
    /// # Safety
    /// The lanes of `mask` at `p` are writable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(p: *mut f32, mask: __mmask16, v: __m512) {
        // SAFETY: forwarded from this function's contract (all lanes with a full mask).
        unsafe {
            if mask == 0xFFFF {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, mask, v)
            }
        }
    }

    /// The accumulator tile: MR rows of two 16-lane vectors.
    type Acc = [[__m512; 2]; MR];

    /// Runs `$body` once per tile row with `$r` a literal, so every index into the
    /// accumulator array is a constant and the array lives in registers. (A loop to a
    /// run-time row count would index it at run time and keep it in memory: one store per
    /// FMA, 4x slower.)
    macro_rules! each_row {
        ($r:ident => $body:block) => {
            crate::gemm::unrolled!($r in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] $body)
        };
    }

    /// # Safety
    /// The CPU supports AVX-512F and `t.assert_valid(MR, NR)` holds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel(t: &mut Tile<'_, '_>) {
        // One instance per row count: a partial tile (the last rows of M, or a matrix-vector
        // product with m = 1) then costs only its own rows' FMAs, not a full tile's.
        // SAFETY: (both branches) forwarded from this function's contract; `TWO` is the branch's.
        unsafe {
            if t.cols > 16 {
                by_rows::<true>(t)
            } else {
                by_rows::<false>(t)
            }
        }
    }

    /// [`kernel`] for tiles with (`TWO`) or without a second vector of columns: a tile of at
    /// most one vector's columns (n = 16, or the 2 columns left of n = 34) then skips the
    /// FMAs of the empty half.
    ///
    /// # Safety
    /// As for [`kernel`], and `TWO == (t.cols > 16)`.
    #[target_feature(enable = "avx512f")]
    unsafe fn by_rows<const TWO: bool>(t: &mut Tile<'_, '_>) {
        // SAFETY: (all arms) forwarded from this function's contract; `rows` is the arm's.
        unsafe {
            match t.rows {
                1 => rows::<1, TWO>(t),
                2 => rows::<2, TWO>(t),
                3 => rows::<3, TWO>(t),
                4 => rows::<4, TWO>(t),
                5 => rows::<5, TWO>(t),
                6 => rows::<6, TWO>(t),
                7 => rows::<7, TWO>(t),
                8 => rows::<8, TWO>(t),
                9 => rows::<9, TWO>(t),
                10 => rows::<10, TWO>(t),
                11 => rows::<11, TWO>(t),
                12 => rows::<12, TWO>(t),
                _ => unreachable!("assert_valid bounds rows to 1..=MR"),
            }
        }
    }

    /// [`kernel`] for a tile of exactly `R` valid rows, panel by panel.
    ///
    /// # Safety
    /// As for [`kernel`], `t.rows == R` and `TWO == (t.cols > 16)`.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize, const TWO: bool>(t: &mut Tile<'_, '_>) {
        let (rows, ldc, kseg) = (R, t.ldc, t.kseg);
        // `assert_valid`: with several panels every one is full (so `TWO` holds for each).
        let (m0, m1) = (lanes(t.cols), lanes(t.cols.saturating_sub(16)));
        let two = TWO;
        // Plain matches, no closures: an `Option` combinator here was compiled as a call,
        // around which all 24 accumulators went to the stack and back (a tenth of the time of
        // a k = 27 first-layer conv).
        let (act, bias, res) = match t.epilogue {
            Some(e) => (e.activation, e.bias, e.add),
            None => (Activation::None, None, None),
        };
        let act = act_of(act);
        let c_tile = t.c.as_mut_ptr();
        for panel in 0..t.panels {
            // Panel `panel` of C, B, the bias and the residual starts NR columns (B: b_stride
            // values) after the one before.
            let c = c_tile.wrapping_add(panel * NR);
            let mut acc: Acc = [[_mm512_setzero_ps(); 2]; MR];
            if t.accumulate {
                each_row!(r => {
                    if r < rows {
                        // SAFETY: r < rows and the masks enable only the panel's columns < cols,
                        // so every lane read is at r * ldc + panel * NR + j <= (rows - 1) * ldc +
                        // (panels - 1) * NR + cols <= c.len(); masked-off lanes are not
                        // accessed (AVX-512 masked loads suppress them), and with cols <= 16
                        // the second vector is not loaded at all.
                        unsafe {
                            let p = c.add(r * ldc);
                            acc[r][0] = _mm512_maskz_loadu_ps(m0, p);
                            if two {
                                acc[r][1] = _mm512_maskz_loadu_ps(m1, p.add(16));
                            }
                        }
                    }
                });
            }
            // SAFETY: panel < panels and B holds (panels - 1) * b_stride + nseg * kseg * NR
            // values (`assert_valid`).
            let mut bp = unsafe { t.b.as_ptr().add(panel * t.b_stride) };
            // One k-step: B's two vectors times each row's broadcast value.
            macro_rules! k_step {
                ($rp:expr, $p:expr) => {
                    // SAFETY: the panel's B rows hold nseg * kseg * NR values and bp has
                    // advanced NR per step, so bp[0 .. NR] is in bounds; every segment of the
                    // rows read (r < R) holds at least kseg values (`assert_valid`).
                    unsafe {
                        let b0 = _mm512_loadu_ps(bp);
                        let b1 = if TWO { _mm512_loadu_ps(bp.add(16)) } else { b0 };
                        each_row!(r => {
                            if r < R {
                                let av = _mm512_set1_ps(*$rp[r].add($p));
                                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                                if TWO {
                                    acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
                                }
                            }
                        });
                        bp = bp.add(NR);
                    }
                };
            }
            crate::gemm::k_loop!(t, MR, kseg, k_step);

            // Epilogue and store.
            #[allow(clippy::manual_map)] // a match, not `Option::map`: see above
            let bias = match bias {
                None => None,
                Some(b) => Some({
                    // SAFETY: the bias slice holds at least (panels - 1) * NR + cols values;
                    // lanes >= cols are masked off.
                    unsafe {
                        let b = b.as_ptr().add(panel * NR);
                        let lo = _mm512_maskz_loadu_ps(m0, b);
                        if two {
                            [lo, _mm512_maskz_loadu_ps(m1, b.add(16))]
                        } else {
                            [lo, lo]
                        }
                    }
                }),
            };
            each_row!(r => {
                if r < rows {
                    let mut v = acc[r];
                    if let Some(bias) = bias {
                        v[0] = _mm512_add_ps(v[0], bias[0]);
                        v[1] = _mm512_add_ps(v[1], bias[1]);
                    }
                    if let Some((res, ld)) = res {
                        // SAFETY: the residual slice holds (rows - 1) * ld + (panels - 1) * NR
                        // + cols values from the tile's corner and r < rows; lanes >= cols are
                        // masked off.
                        unsafe {
                            let p = res.as_ptr().add(r * ld + panel * NR);
                            v[0] = _mm512_add_ps(v[0], _mm512_maskz_loadu_ps(m0, p));
                            if two {
                                v[1] = _mm512_add_ps(v[1], _mm512_maskz_loadu_ps(m1, p.add(16)));
                            }
                        }
                    }
                    // SAFETY: as for the loads of C above: r < rows, the panel's lanes < cols.
                    unsafe {
                        let p = c.add(r * ldc);
                        store(p, m0, activate(v[0], act));
                        if two {
                            store(p.add(16), m1, activate(v[1], act));
                        }
                    }
                }
            });
        }
    }
}

/// Matrix-vector sums for the GEMV path: `out[(r * P + q) * NR + l] = sum_p a[r][p] *
/// panels[q][p * NR + l]` for `R = a.len()` rows (1..=3) and `P = panels.len()` panels (1, 2
/// or 4), summed in k order with FMA like [`run`]. Panics on short slices or without AVX-512F.
pub(crate) fn dots(a: &[&[f32]], panels: &[&[f32]], k: usize, out: &mut [f32]) {
    super::gemv::assert_dots(a, panels, k, out, NR);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            is_x86_feature_detected!("avx512f"),
            "AVX-512 kernel on a CPU without AVX-512F"
        );
        // SAFETY: (all arms) the feature was just checked, `assert_dots` established the
        // bounds, and each arm's R and P are the slices' lengths.
        unsafe {
            match (a.len(), panels.len()) {
                (1, 1) => gemv::dots::<1, 1>(a, panels, k, out),
                (1, 2) => gemv::dots::<1, 2>(a, panels, k, out),
                (1, 3) => gemv::dots::<1, 3>(a, panels, k, out),
                (1, 4) => gemv::dots::<1, 4>(a, panels, k, out),
                (2, 1) => gemv::dots::<2, 1>(a, panels, k, out),
                (2, 2) => gemv::dots::<2, 2>(a, panels, k, out),
                (3, 1) => gemv::dots::<3, 1>(a, panels, k, out),
                (3, 2) => gemv::dots::<3, 2>(a, panels, k, out),
                (r, p) => unreachable!("gemv: no kernel for {r} rows x {p} panels"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("Isa::Avx512 is never supported off x86_64");
}

#[cfg(target_arch = "x86_64")]
mod gemv {
    use super::NR;
    use std::arch::x86_64::*;

    /// [`super::dots`] for exactly `R` rows and `P` panels.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, `a.len() == R`, `panels.len() == P`, and
    /// `gemv::assert_dots(a, panels, k, out, NR)` holds.
    #[allow(clippy::needless_range_loop)] // indices to the constants R and P, unrolled
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots<const R: usize, const P: usize>(
        a: &[&[f32]],
        panels: &[&[f32]],
        k: usize,
        out: &mut [f32],
    ) {
        // Loops to the constants R and P unroll fully, so the accumulators stay in registers.
        let mut acc = [[[_mm512_setzero_ps(); 2]; P]; R];
        let mut ap = [std::ptr::null::<f32>(); R];
        for r in 0..R {
            ap[r] = a[r].as_ptr();
        }
        let mut bp = [std::ptr::null::<f32>(); P];
        for q in 0..P {
            bp[q] = panels[q].as_ptr();
        }
        for p in 0..k {
            // SAFETY: p < k, every row holds k values and every panel k * NR.
            unsafe {
                let mut av = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    av[r] = _mm512_set1_ps(*ap[r].add(p));
                }
                for q in 0..P {
                    let b0 = _mm512_loadu_ps(bp[q].add(p * NR));
                    let b1 = _mm512_loadu_ps(bp[q].add(p * NR + 16));
                    for r in 0..R {
                        acc[r][q][0] = _mm512_fmadd_ps(av[r], b0, acc[r][q][0]);
                        acc[r][q][1] = _mm512_fmadd_ps(av[r], b1, acc[r][q][1]);
                    }
                }
            }
        }
        let o = out.as_mut_ptr();
        for r in 0..R {
            for q in 0..P {
                // SAFETY: out holds R * P * NR values; this writes NR of them at (r * P + q) * NR.
                unsafe {
                    _mm512_storeu_ps(o.add((r * P + q) * NR), acc[r][q][0]);
                    _mm512_storeu_ps(o.add((r * P + q) * NR + 16), acc[r][q][1]);
                }
            }
        }
    }
}
