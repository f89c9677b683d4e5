//! AVX2+FMA micro-kernel: a 6x16 register tile (12 ymm accumulators, two ymm of B per step,
//! one broadcast), with `vmaskmov` loads and stores for edge columns.
//!
//! 6x16 is the classic AVX2 shape: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the
//! 16 ymm registers. The kernel is instantiated per row count (a partial tile computes only its
//! rows); columns past `cols` are excluded by the lane masks, and masked-off lanes of
//! `vmaskmovps` are not accessed, so nothing outside the caller's slices is touched.

use super::Tile;

/// Rows of the register tile.
pub(crate) const MR: usize = 6;
/// Columns of the register tile (two 8-lane vectors).
pub(crate) const NR: usize = 16;

/// Runs one strip of row tiles; panics if the tile's slices do not cover what the kernel reads
/// and writes (a driver bug, never caller input) or if the CPU lacks AVX2 or FMA.
pub(crate) fn run(t: &mut Tile<'_, '_>) {
    t.assert_valid(MR, NR);
    assert_eq!(t.panels, 1, "this kernel computes one panel a call");
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            "AVX2 kernel on a CPU without AVX2+FMA"
        );
        for q in 0..t.tiles {
            // SAFETY: the features were just checked; `assert_valid` established for the
            // strip the bounds the kernel's comments rely on, and `row_tile` keeps them per
            // tile.
            unsafe { imp::kernel(&mut t.row_tile::<MR>(q)) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("Isa::Avx2Fma is never supported off x86_64");
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{MR, NR, Tile};
    use crate::gemm::epilogue::Activation;
    use std::arch::x86_64::*;

    /// Lane mask (sign bit set) selecting the first `n` of 8 lanes; `n` may be negative.
    #[target_feature(enable = "avx2")]
    fn lanes(n: i32) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// Stores the lanes of `mask` of `v` at `p`, or all eight with a plain store when `full`
    /// (`vmaskmovps` stores are slow on AMD cores, and a masked store still wrote slower than a
    /// plain one where the output was not in cache).
    ///
    /// # Safety
    /// The lanes of `mask` at `p` are writable, all eight when `full`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store(p: *mut f32, mask: __m256i, full: bool, v: __m256) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            if full {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, mask, v)
            }
        }
    }

    #[derive(Clone, Copy)]
    enum Act {
        None,
        Clamp(__m256, Option<__m256>),
        Leaky(__m256),
    }

    #[target_feature(enable = "avx2,fma")]
    fn act_of(a: Activation) -> Act {
        match (a, a.bounds()) {
            (Activation::LeakyRelu(alpha), _) => Act::Leaky(_mm256_set1_ps(alpha)),
            (_, Some((lo, hi))) => Act::Clamp(
                _mm256_set1_ps(lo),
                if hi == f32::INFINITY {
                    None
                } else {
                    Some(_mm256_set1_ps(hi))
                },
            ),
            _ => Act::None,
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn activate(v: __m256, act: Act) -> __m256 {
        match act {
            Act::None => v,
            // max(lo, v) and min(hi, v) return v when v is NaN (the second operand wins).
            Act::Clamp(lo, hi) => {
                let v = _mm256_max_ps(lo, v);
                match hi {
                    Some(hi) => _mm256_min_ps(hi, v),
                    None => v,
                }
            }
            Act::Leaky(alpha) => {
                let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
                _mm256_blendv_ps(v, _mm256_mul_ps(v, alpha), neg)
            }
        }
    }

    /// Runs `$body` once per tile row with `$r` a literal, so every index into the
    /// accumulator array is a constant and the array lives in registers (see avx512.rs).
    macro_rules! each_row {
        ($r:ident => $body:block) => {
            crate::gemm::unrolled!($r in [0, 1, 2, 3, 4, 5] $body)
        };
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA, and `t.assert_valid(MR, NR)` holds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel(t: &mut Tile<'_, '_>) {
        // One instance per row count: a partial tile (the last rows of M, or a matrix-vector
        // product with m = 1) then costs only its own rows' FMAs, not a full tile's.
        // SAFETY: (both branches) forwarded from this function's contract; `TWO` is the branch's.
        unsafe {
            if t.cols > 8 {
                by_rows::<true>(t)
            } else {
                by_rows::<false>(t)
            }
        }
    }

    /// [`kernel`] for tiles with (`TWO`) or without a second vector of columns: a tile of at
    /// most one vector's columns (the 8 columns left of n = 24, the 2 of n = 34) then skips
    /// the FMAs of the empty half.
    ///
    /// # Safety
    /// As for [`kernel`], and `TWO == (t.cols > 8)`.
    #[target_feature(enable = "avx2,fma")]
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
                _ => unreachable!("assert_valid bounds rows to 1..=MR"),
            }
        }
    }

    /// [`kernel`] for a tile of exactly `R` valid rows.
    ///
    /// # Safety
    /// As for [`kernel`], `t.rows == R` and `TWO == (t.cols > 8)`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize, const TWO: bool>(t: &mut Tile<'_, '_>) {
        let (rows, ldc, kseg) = (R, t.ldc, t.kseg);
        // cols <= NR = 16, so the casts are exact.
        let (m0, m1) = (lanes(t.cols as i32), lanes(t.cols as i32 - 8));
        let (full0, full1) = (t.cols >= 8, t.cols >= 16);
        let two = TWO;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        if t.accumulate {
            let c = t.c.as_mut_ptr().cast_const();
            each_row!(r => {
                if r < rows {
                    // SAFETY: r < rows and the masks enable only columns < cols, so every lane
                    // read is at r * ldc + j < (rows - 1) * ldc + cols <= c.len(); masked-off
                    // lanes of vmaskmovps are not accessed.
                    unsafe {
                        let p = c.add(r * ldc);
                        acc[r][0] = _mm256_maskload_ps(p, m0);
                        if two {
                            acc[r][1] = _mm256_maskload_ps(p.add(8), m1);
                        }
                    }
                }
            });
        }
        let mut bp = t.b.as_ptr();
        // One k-step: B's two vectors times each row's broadcast value.
        macro_rules! k_step {
            ($rp:expr, $p:expr) => {
                // SAFETY: B holds nseg * kseg * NR values and bp has advanced NR per step, so
                // bp[0 .. NR] is in bounds; every segment of the rows read (r < R) holds at
                // least kseg values (`assert_valid`).
                unsafe {
                    let b0 = _mm256_loadu_ps(bp);
                    let b1 = if TWO { _mm256_loadu_ps(bp.add(8)) } else { b0 };
                    each_row!(r => {
                        if r < R {
                            let av = _mm256_broadcast_ss(&*$rp[r].add($p));
                            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                            if TWO {
                                acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
                            }
                        }
                    });
                    bp = bp.add(NR);
                }
            };
        }
        crate::gemm::k_loop!(t, MR, kseg, k_step);

        // Epilogue and store.
        // Plain matches, no closures: an `Option` combinator here was compiled as a call,
        // around which all 24 accumulators went to the stack and back (a tenth of the time of
        // a k = 27 first-layer conv).
        let (act, bias, res) = match t.epilogue {
            Some(e) => (e.activation, e.bias, e.add),
            None => (Activation::None, None, None),
        };
        let act = act_of(act);
        #[allow(clippy::manual_map)] // a match, not `Option::map`: see above
        let bias = match bias {
            None => None,
            Some(b) => Some({
                // SAFETY: the bias slice holds at least cols values; lanes >= cols are masked off.
                unsafe {
                    let lo = _mm256_maskload_ps(b.as_ptr(), m0);
                    if two {
                        [lo, _mm256_maskload_ps(b.as_ptr().add(8), m1)]
                    } else {
                        [lo, lo]
                    }
                }
            }),
        };
        let c = t.c.as_mut_ptr();
        each_row!(r => {
            if r < rows {
                let mut v = acc[r];
                if let Some(bias) = bias {
                    v[0] = _mm256_add_ps(v[0], bias[0]);
                    v[1] = _mm256_add_ps(v[1], bias[1]);
                }
                if let Some((res, ld)) = res {
                    // SAFETY: the residual slice holds (rows - 1) * ld + cols values from the
                    // tile's corner and r < rows; lanes >= cols are masked off.
                    unsafe {
                        let p = res.as_ptr().add(r * ld);
                        v[0] = _mm256_add_ps(v[0], _mm256_maskload_ps(p, m0));
                        if two {
                            v[1] = _mm256_add_ps(v[1], _mm256_maskload_ps(p.add(8), m1));
                        }
                    }
                }
                // SAFETY: as for the loads of C above: r < rows, lanes < cols only.
                unsafe {
                    let p = c.add(r * ldc);
                    store(p, m0, full0, activate(v[0], act));
                    if two {
                        store(p.add(8), m1, full1, activate(v[1], act));
                    }
                }
            }
        });
    }
}

/// Matrix-vector sums for the GEMV path: `out[(r * P + q) * NR + l] = sum_p a[r][p] *
/// panels[q][p * NR + l]` for `R = a.len()` rows (1..=3) and `P = panels.len()` panels (1, 2
/// or 4), summed in k order with FMA like [`run`]. Panics on short slices or without AVX2+FMA.
pub(crate) fn dots(a: &[&[f32]], panels: &[&[f32]], k: usize, out: &mut [f32]) {
    super::gemv::assert_dots(a, panels, k, out, NR);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            "AVX2 kernel on a CPU without AVX2+FMA"
        );
        // SAFETY: (all arms) the features were just checked, `assert_dots` established the
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
    unreachable!("Isa::Avx2Fma is never supported off x86_64");
}

#[cfg(target_arch = "x86_64")]
mod gemv {
    use super::NR;
    use std::arch::x86_64::*;

    /// [`super::dots`] for exactly `R` rows and `P` panels.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA, `a.len() == R`, `panels.len() == P`, and
    /// `gemv::assert_dots(a, panels, k, out, NR)` holds.
    #[allow(clippy::needless_range_loop)] // indices to the constants R and P, unrolled
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots<const R: usize, const P: usize>(
        a: &[&[f32]],
        panels: &[&[f32]],
        k: usize,
        out: &mut [f32],
    ) {
        // Loops to the constants R and P unroll fully, so the accumulators stay in registers.
        let mut acc = [[[_mm256_setzero_ps(); 2]; P]; R];
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
                let mut av = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    av[r] = _mm256_set1_ps(*ap[r].add(p));
                }
                for q in 0..P {
                    let b0 = _mm256_loadu_ps(bp[q].add(p * NR));
                    let b1 = _mm256_loadu_ps(bp[q].add(p * NR + 8));
                    for r in 0..R {
                        acc[r][q][0] = _mm256_fmadd_ps(av[r], b0, acc[r][q][0]);
                        acc[r][q][1] = _mm256_fmadd_ps(av[r], b1, acc[r][q][1]);
                    }
                }
            }
        }
        let o = out.as_mut_ptr();
        for r in 0..R {
            for q in 0..P {
                // SAFETY: out holds R * P * NR values; this writes NR of them at (r * P + q) * NR.
                unsafe {
                    _mm256_storeu_ps(o.add((r * P + q) * NR), acc[r][q][0]);
                    _mm256_storeu_ps(o.add((r * P + q) * NR + 8), acc[r][q][1]);
                }
            }
        }
    }
}
