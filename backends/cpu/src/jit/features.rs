//! Target feature selection for the JIT: the host's features, a portable baseline, or a chosen
//! subset (`KILN_CPU_FEATURES`).
//!
//! Invariant: a feature is only ever enabled when the host has it, so generated code never
//! executes an instruction the CPU lacks (a chosen subset naming a missing feature is an error).

use cranelift_codegen::isa::{self, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};

/// Which instruction-set extensions generated code may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CpuFeatures {
    /// Everything the host has (the default).
    #[default]
    Native,
    /// The architecture's baseline (x86-64: SSE2, no FMA); kernels use separate mul and add.
    Baseline,
    /// The host's features up to AVX2 and FMA, none of AVX-512 (`avx2`, the GEMM family name).
    UpToAvx2,
    /// Only these Cranelift ISA features (e.g. `sse41`, `avx`, `fma`; a `has_` prefix is
    /// optional); each must be present on the host. Cranelift emits FMA only with `avx` too.
    Only(Vec<String>),
}

impl CpuFeatures {
    /// Reads `KILN_CPU_FEATURES`: unset, empty, `native` or `avx512` → [`CpuFeatures::Native`],
    /// `avx2` → [`CpuFeatures::UpToAvx2`], `none` or `portable` → [`CpuFeatures::Baseline`]
    /// (the family names `kiln bench` prints, which also cap the GEMM micro-kernels),
    /// otherwise a comma-separated list of Cranelift features.
    pub fn from_env() -> Result<CpuFeatures, String> {
        match std::env::var("KILN_CPU_FEATURES") {
            Err(std::env::VarError::NotPresent) => Ok(CpuFeatures::Native),
            Err(e) => Err(format!("KILN_CPU_FEATURES: {e}")),
            Ok(v) => CpuFeatures::parse(&v),
        }
    }

    /// Parses a `KILN_CPU_FEATURES` value (family names in any case).
    pub fn parse(value: &str) -> Result<CpuFeatures, String> {
        Ok(match value.trim().to_ascii_lowercase().as_str() {
            "" | "native" | "avx512" => CpuFeatures::Native,
            "avx2" => CpuFeatures::UpToAvx2,
            "none" | "portable" => CpuFeatures::Baseline,
            _ => CpuFeatures::Only(
                value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
        })
    }

    /// Checks that these features can be used on this host: the error names
    /// `KILN_CPU_FEATURES` and the values it accepts.
    pub fn check(&self) -> Result<(), String> {
        self.isa_builder().map(|_| ())
    }

    /// A Cranelift ISA builder for the host with these features.
    pub(super) fn isa_builder(&self) -> Result<isa::Builder, String> {
        let host = |infer| {
            cranelift_native::builder_with_options(infer)
                .map_err(|e| format!("Cranelift does not support this host: {e}"))
        };
        match self {
            CpuFeatures::Native => host(true),
            CpuFeatures::Baseline => host(false),
            CpuFeatures::UpToAvx2 => {
                let native = host(true)?
                    .finish(settings::Flags::new(settings::builder()))
                    .map_err(|e| format!("cannot configure Cranelift for this host: {e}"))?;
                let mut builder = host(false)?;
                for flag in native.isa_flags() {
                    let wanted = flag.as_bool() == Some(true)
                        && !flag.name.starts_with("has_avx512")
                        && AVX2_FAMILY.contains(&flag.name.trim_start_matches("has_"));
                    if wanted {
                        builder
                            .enable(flag.name)
                            .map_err(|e| format!("KILN_CPU_FEATURES=avx2: '{}': {e}", flag.name))?;
                    }
                }
                Ok(builder)
            }
            CpuFeatures::Only(names) => {
                let native = host(true)?
                    .finish(settings::Flags::new(settings::builder()))
                    .map_err(|e| format!("cannot configure Cranelift for this host: {e}"))?;
                let host_flags = native.isa_flags();
                let mut builder = host(false)?;
                for name in names {
                    let key = if name.starts_with("has_") {
                        name.clone()
                    } else {
                        format!("has_{name}")
                    };
                    match host_flags
                        .iter()
                        .find(|f| f.name == key)
                        .and_then(|f| f.as_bool())
                    {
                        Some(true) => builder
                            .enable(&key)
                            .map_err(|e| format!("KILN_CPU_FEATURES: '{name}': {e}"))?,
                        Some(false) => {
                            return Err(format!("KILN_CPU_FEATURES: this CPU lacks '{name}'"));
                        }
                        None => {
                            let known: Vec<&str> = host_flags
                                .iter()
                                .filter(|f| f.as_bool().is_some())
                                .map(|f| f.name.trim_start_matches("has_"))
                                .collect();
                            return Err(format!(
                                "KILN_CPU_FEATURES: unknown value '{name}': expected native, \
                                 avx512, avx2, none (or portable), or a comma list of this \
                                 CPU's features: {}",
                                known.join(", ")
                            ));
                        }
                    }
                }
                Ok(builder)
            }
        }
    }
}

/// The x86 features up to AVX2 and FMA (`KILN_CPU_FEATURES=avx2`), without the `has_` prefix.
const AVX2_FAMILY: &[&str] = &[
    "sse3",
    "ssse3",
    "cmpxchg16b",
    "sse41",
    "sse42",
    "popcnt",
    "avx",
    "avx2",
    "fma",
    "bmi1",
    "bmi2",
    "lzcnt",
];

/// `triple:feature,feature,...` with the enabled boolean ISA flags, sorted.
pub(super) fn target_key(isa: &dyn TargetIsa) -> String {
    let mut on: Vec<&str> = isa
        .isa_flags()
        .iter()
        .filter(|f| f.as_bool() == Some(true))
        .map(|f| f.name.trim_start_matches("has_"))
        .collect();
    on.sort_unstable();
    format!("{}:{}", isa.triple(), on.join(","))
}
