//! Which backend a session compiles for, by name, and how to make it.

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
    /// OpenCL kernels through `ocl`, on the device named or numbered (not yet built in).
    OpenCl {
        /// Platform/device index or name; `None` takes the first device.
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
        vec![BackendKind::Reference, BackendKind::Cpu]
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
            other => Err(Error::Invalid(format!(
                "backend {} is not available in this build (available: {})",
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
