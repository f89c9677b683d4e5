//! Which backend a session compiles for, by name, and how to make it.
//!
//! `opencl` is compiled in only with the cargo feature `opencl` (it links libOpenCL). With the
//! feature it is always listed as available; making it on a machine without an OpenCL platform
//! fails with a clear error ("no OpenCL platform found; install an ICD, e.g. PoCL") rather than
//! being silently left out, so a test run that asked for OpenCL cannot pass without it.

use kiln_ir::backend::Backend;
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{Error, Result};
use std::fmt;

/// A backend choice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The reference evaluator: plain loops, the oracle every backend is tested against.
    Reference,
    /// Native code: Cranelift-generated loops and SIMD micro-kernels.
    Cpu,
    /// OpenCL kernels through `ocl` (cargo feature `opencl`), on the device named or numbered.
    OpenCl {
        /// `P:D` (platform and device index), a device index as `kiln devices` lists it, or
        /// part of a platform/device name; `None` takes `KILN_OPENCL_DEVICE`, else the first
        /// GPU, else the first device.
        device: Option<String>,
    },
}

impl BackendKind {
    /// Every backend name kiln knows, compiled in or not.
    pub fn all_names() -> &'static [&'static str] {
        &["reference", "cpu", "opencl"]
    }

    /// The backends compiled into this build and usable on this machine.
    pub fn available() -> Vec<BackendKind> {
        let mut kinds = vec![BackendKind::Reference, BackendKind::Cpu];
        if cfg!(feature = "opencl") {
            kinds.push(BackendKind::OpenCl { device: None });
        }
        kinds
    }

    /// The backend a session uses when none is named.
    pub fn default_kind() -> BackendKind {
        BackendKind::Cpu
    }

    /// The name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::OpenCl { .. } => "opencl",
        }
    }

    /// Parses a CLI name (`reference`, `cpu`, `opencl`, `opencl:DEVICE`).
    pub fn from_name(name: &str) -> Result<BackendKind> {
        match name {
            "reference" => Ok(BackendKind::Reference),
            "cpu" => Ok(BackendKind::Cpu),
            "opencl" => Ok(BackendKind::OpenCl { device: None }),
            _ => match name.strip_prefix("opencl:") {
                Some(dev) => Ok(BackendKind::OpenCl {
                    device: Some(dev.to_string()),
                }),
                None => Err(Error::Invalid(format!(
                    "unknown backend {name:?}; expected one of: {}",
                    BackendKind::all_names().join(", ")
                ))),
            },
        }
    }

    /// Makes the backend, or says why it is not available in this build.
    pub(crate) fn create(&self) -> Result<Box<dyn Backend>> {
        match self {
            BackendKind::Reference => Ok(Box::new(ReferenceBackend)),
            BackendKind::Cpu => Ok(Box::new(kiln_cpu::CpuBackend)),
            #[cfg(feature = "opencl")]
            BackendKind::OpenCl { device } => Ok(Box::new(kiln_opencl::OpenClBackend::new(
                device.as_deref(),
            )?)),
            #[cfg(not(feature = "opencl"))]
            other => Err(Error::Invalid(format!(
                "backend {} is not available in this build (rebuild with `--features {}`; \
                 available: {})",
                other.name(),
                other.name(),
                BackendKind::available()
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendKind::OpenCl { device: Some(d) } => write!(f, "opencl:{d}"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opencl_is_listed_exactly_when_built_in() {
        let listed = BackendKind::available()
            .iter()
            .any(|b| matches!(b, BackendKind::OpenCl { .. }));
        assert_eq!(listed, cfg!(feature = "opencl"));
        let kind = BackendKind::from_name("opencl:1:0").unwrap();
        assert_eq!(
            kind,
            BackendKind::OpenCl {
                device: Some("1:0".into())
            }
        );
        assert_eq!(kind.to_string(), "opencl:1:0");
    }

    #[cfg(not(feature = "opencl"))]
    #[test]
    fn opencl_without_the_feature_says_how_to_get_it() {
        let err = BackendKind::OpenCl { device: None }.create().err().unwrap();
        assert!(err.to_string().contains("--features opencl"), "{err}");
    }
}
