//! Run-time choice of the instruction set the micro-kernels use.
//!
//! The best kernel family the CPU supports is detected once (`is_x86_feature_detected!`) and
//! can be lowered, never raised, with the environment variable `KILN_CPU_FEATURES`:
//! `none` or `portable` forces the portable kernels, `avx2` allows at most AVX2+FMA, `avx512`
//! allows everything the hardware has. Invariant: an `Isa` returned by [`detect`] or listed by
//! [`Isa::supported`] is always safe to run on this CPU; the kernels re-check before running.

use std::sync::OnceLock;

/// A family of micro-kernels, from the widest vectors down to plain Rust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust loops the compiler vectorises for the baseline target; correct everywhere.
    Portable,
    /// 256-bit AVX2 with fused multiply-add (6x16 register tile).
    Avx2Fma,
    /// 512-bit AVX-512F (12x32 register tile, masked edge loads and stores).
    Avx512,
}

impl Isa {
    /// Short lower-case name, as accepted by `KILN_CPU_FEATURES`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the kernels of this family (ignores `KILN_CPU_FEATURES`).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2Fma => has_avx2_fma(),
            Isa::Avx512 => has_avx512(),
        }
    }

    /// Every family this CPU can run, best last (ignores `KILN_CPU_FEATURES`).
    pub fn supported() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|i| i.is_supported())
            .collect()
    }

    /// Rows of the register tile (the broadcast operand, A).
    pub(crate) fn mr(self) -> usize {
        match self {
            Isa::Portable => super::portable::MR,
            Isa::Avx2Fma => super::avx2::MR,
            Isa::Avx512 => super::avx512::MR,
        }
    }

    /// Columns of the register tile (the vector operand, B); also the width of a B panel.
    pub(crate) fn nr(self) -> usize {
        match self {
            Isa::Portable => super::portable::NR,
            Isa::Avx2Fma => super::avx2::NR,
            Isa::Avx512 => super::avx512::NR,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2_fma() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// The best supported family, capped by `KILN_CPU_FEATURES` (read once per process).
pub fn detect() -> Isa {
    static CHOICE: OnceLock<Isa> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let best = Isa::supported().into_iter().max().unwrap_or(Isa::Portable);
        choose(best, std::env::var("KILN_CPU_FEATURES").ok().as_deref())
    })
}

/// Applies a `KILN_CPU_FEATURES` value to the best supported family. Unknown values leave the
/// choice unchanged: a typo must not silently slow every run down to the portable kernels, and
/// the value is only a cap, so ignoring it can never select an unsupported family.
pub fn choose(best: Isa, features: Option<&str>) -> Isa {
    let cap = match features.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("none" | "portable") => Isa::Portable,
        Some("avx2") => Isa::Avx2Fma,
        _ => Isa::Avx512,
    };
    best.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_isa_override_only_lowers() {
        assert_eq!(choose(Isa::Avx512, Some("none")), Isa::Portable);
        assert_eq!(choose(Isa::Avx512, Some("portable")), Isa::Portable);
        assert_eq!(choose(Isa::Avx512, Some("avx2")), Isa::Avx2Fma);
        assert_eq!(choose(Isa::Avx512, Some("AVX512")), Isa::Avx512);
        assert_eq!(choose(Isa::Avx2Fma, Some("avx512")), Isa::Avx2Fma);
        assert_eq!(choose(Isa::Portable, Some("avx2")), Isa::Portable);
        assert_eq!(choose(Isa::Avx2Fma, Some("bogus")), Isa::Avx2Fma);
        assert_eq!(choose(Isa::Avx512, None), Isa::Avx512);
    }

    #[test]
    fn gemm_isa_detect_is_supported() {
        assert!(detect().is_supported());
        assert!(Isa::supported().contains(&Isa::Portable));
    }
}
