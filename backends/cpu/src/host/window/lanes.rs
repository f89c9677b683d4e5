//! A few f32 vector operations over one register type per width, for the channel-vectorised
//! window kernels (`channels.rs`): AVX-512 (16 lanes), AVX (8), SSE (4) and plain `f32` (1).
//!
//! The methods are `#[inline(always)]` and meant to be called only from inside a
//! `#[target_feature]` function enabling the type's ISA, where the intrinsics inline into
//! plain vector instructions; arrays of these types in such a function stay in registers,
//! which arrays of `f32` did not (measured: the accumulators were stored to the stack on
//! every tap).
//!
//! Semantics match the scalar definitions every kernel shares: `max_nan` returns NaN when
//! either operand is NaN (TensorFlow's max pool), `clamp(lo, hi)` is `min(max(x, lo), hi)`
//! keeping a NaN `x` (the fused activations, as in `gemm::epilogue`).

/// One vector of `LANES` f32 values.
pub(super) trait Lanes: Copy {
    /// Values per vector.
    const LANES: usize;
    /// All lanes `v`.
    fn splat(v: f32) -> Self;
    /// Reads `LANES` values at `p`.
    ///
    /// # Safety
    /// `p..p + LANES` must be readable f32s, and the CPU must have the type's ISA.
    unsafe fn load(p: *const f32) -> Self;
    /// Writes the lanes to `p..p + LANES`.
    ///
    /// # Safety
    /// As for [`Lanes::load`], writable.
    unsafe fn store(self, p: *mut f32);
    /// Lane-wise `self + o`.
    fn add(self, o: Self) -> Self;
    /// Lane-wise `self * o`.
    fn mul(self, o: Self) -> Self;
    /// Lane-wise `self / o`.
    fn div(self, o: Self) -> Self;
    /// Lane-wise maximum, NaN when either lane is NaN.
    fn max_nan(self, x: Self) -> Self;
    /// Lane-wise `min(max(self, lo), hi)`, a NaN lane kept.
    fn clamp(self, lo: Self, hi: Self) -> Self;
}

impl Lanes for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { p.write_unaligned(self) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    fn max_nan(self, x: Self) -> Self {
        if self < x || x.is_nan() { x } else { self }
    }
    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        let y = if self < lo { lo } else { self };
        if y > hi { hi } else { y }
    }
}

/// The x86 vector types; every method is only reached from functions compiled with the
/// type's ISA enabled (see the module docs), which is what makes the intrinsics sound.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 16 lanes (AVX-512F).
    #[derive(Clone, Copy)]
    pub(in super::super) struct F32x16(__m512);
    /// 8 lanes (AVX).
    #[derive(Clone, Copy)]
    pub(in super::super) struct F32x8(__m256);
    /// 4 lanes (SSE, baseline on x86_64).
    #[derive(Clone, Copy)]
    pub(in super::super) struct F32x4(__m128);

    // The comment above the impls, referred to by every `unsafe` block below: the intrinsics
    // need the type's ISA, which the enclosing `#[target_feature]` kernel enables and the
    // caller checked at run time; loads and stores are unaligned and within the caller's
    // contract.
    impl Lanes for F32x16 {
        const LANES: usize = 16;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm512_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the comment above the impls.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm512_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm512_mul_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm512_div_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn max_nan(self, x: Self) -> Self {
            // maxps(x, acc) yields acc when either is NaN; a NaN x is put back.
            // SAFETY: see the comment above the impls.
            unsafe {
                let m = _mm512_max_ps(x.0, self.0);
                let x_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x.0, x.0);
                Self(_mm512_mask_blend_ps(x_nan, m, x.0))
            }
        }
        #[inline(always)]
        fn clamp(self, lo: Self, hi: Self) -> Self {
            // SAFETY: see the comment above the impls.
            unsafe { Self(_mm512_min_ps(hi.0, _mm512_max_ps(lo.0, self.0))) }
        }
    }

    impl Lanes for F32x8 {
        const LANES: usize = 8;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the comment above the impls.
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm256_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm256_mul_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm256_div_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn max_nan(self, x: Self) -> Self {
            // SAFETY: see the comment above the impls.
            unsafe {
                let m = _mm256_max_ps(x.0, self.0);
                let x_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x.0, x.0);
                Self(_mm256_blendv_ps(m, x.0, x_nan))
            }
        }
        #[inline(always)]
        fn clamp(self, lo: Self, hi: Self) -> Self {
            // SAFETY: see the comment above the impls.
            unsafe { Self(_mm256_min_ps(hi.0, _mm256_max_ps(lo.0, self.0))) }
        }
    }

    impl Lanes for F32x4 {
        const LANES: usize = 4;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the comment above the impls.
            unsafe { _mm_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm_mul_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: see the comment above the impls.
            Self(unsafe { _mm_div_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn max_nan(self, x: Self) -> Self {
            // SSE2 has no blendv: select with and/andnot/or.
            // SAFETY: see the comment above the impls.
            unsafe {
                let m = _mm_max_ps(x.0, self.0);
                let x_nan = _mm_cmpunord_ps(x.0, x.0);
                Self(_mm_or_ps(_mm_and_ps(x_nan, x.0), _mm_andnot_ps(x_nan, m)))
            }
        }
        #[inline(always)]
        fn clamp(self, lo: Self, hi: Self) -> Self {
            // SAFETY: see the comment above the impls.
            unsafe { Self(_mm_min_ps(hi.0, _mm_max_ps(lo.0, self.0))) }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{F32x4, F32x8, F32x16};
