//! OpenCL platforms and devices: listing them, and choosing one from a user's spec.
//!
//! A spec is `P:D` (platform index, device index on it), `D` (index in the flat list `kiln
//! devices` prints), or any other text, matched case-insensitively against "platform / device"
//! names (first match). With no spec, the environment variable [`DEVICE_ENV`] is used, and
//! without that the first GPU or accelerator, else the first device.
//!
//! Invariant: nothing here panics when OpenCL is absent or broken. `ocl::Platform::list()` and
//! `Platform::default()` panic without a platform, so platforms come from
//! `ocl::core::get_platform_ids`, whose error becomes [`NO_PLATFORM`].

use kiln_ir::{Error, Result};
use ocl::enums::{DeviceInfo as Info, DeviceInfoResult as InfoResult};
use ocl::flags::DeviceType;
use ocl::{Device, Platform};
use std::fmt;
use std::sync::OnceLock;

/// The environment variable naming the default device (same syntax as `opencl:SPEC`).
pub const DEVICE_ENV: &str = "KILN_OPENCL_DEVICE";

/// The error text when no platform exists.
pub const NO_PLATFORM: &str = "no OpenCL platform found; install an ICD, e.g. PoCL \
     (Debian/Ubuntu: apt-get install ocl-icd-opencl-dev pocl-opencl-icd)";

/// One device as `kiln devices` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Position in the flat list of all devices.
    pub index: usize,
    /// Platform index.
    pub platform_index: usize,
    /// Device index on its platform.
    pub device_index: usize,
    /// Platform name (e.g. "Portable Computing Language").
    pub platform: String,
    /// Device name.
    pub name: String,
    /// "GPU", "CPU", "accelerator" or "other".
    pub kind: &'static str,
    /// The device's OpenCL version string.
    pub version: String,
    /// Compute units.
    pub compute_units: u32,
    /// Global memory in bytes.
    pub global_mem_bytes: u64,
    /// Most work-items per work-group.
    pub max_work_group: usize,
    /// Local memory per work-group in bytes.
    pub local_mem_bytes: u64,
    /// Whether f32 division and sqrt can be correctly rounded (a build option then asks so).
    pub correctly_rounded_div_sqrt: bool,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}:{}) {} / {} [{}, {} compute units, {} MiB, {}]",
            self.index,
            self.platform_index,
            self.device_index,
            self.platform,
            self.name,
            self.kind,
            self.compute_units,
            self.global_mem_bytes >> 20,
            self.version
        )
    }
}

/// An `ocl` error as a kiln error, with what was being done.
pub(crate) fn cl_err(what: &str) -> impl Fn(ocl::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("opencl: {what}: {e}"))
}

/// A device's listing and `ocl` handles.
pub(crate) type Found = (DeviceInfo, Platform, Device);

/// Every platform's devices: the listing and the `ocl` handles, in the same order.
///
/// Discovered once per process: the devices do not change while it runs, and discovery must
/// not run concurrently (PoCL crashes when two threads enumerate platforms at once, measured
/// with 8 threads listing devices).
pub(crate) fn discover() -> Result<Vec<Found>> {
    static FOUND: OnceLock<Result<Vec<Found>>> = OnceLock::new();
    FOUND.get_or_init(discover_now).clone()
}

fn discover_now() -> Result<Vec<Found>> {
    let ids = ocl::core::get_platform_ids().map_err(|_| Error::Invalid(NO_PLATFORM.into()))?;
    if ids.is_empty() {
        return Err(Error::Invalid(NO_PLATFORM.into()));
    }
    let mut out = Vec::new();
    for (pi, id) in ids.into_iter().enumerate() {
        let platform = Platform::new(id);
        let pname = platform.name().unwrap_or_else(|_| format!("platform {pi}"));
        // A platform without devices answers CL_DEVICE_NOT_FOUND: it just has none.
        let devices = Device::list_all(platform).unwrap_or_default();
        for (di, device) in devices.into_iter().enumerate() {
            let info = describe(out.len(), pi, di, &pname, &device);
            out.push((info, platform, device));
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "OpenCL platforms exist but none has a device; {NO_PLATFORM}"
        )));
    }
    Ok(out)
}

/// Queries what kiln needs to know about `device` (unknown values become 0 or empty).
fn describe(index: usize, pi: usize, di: usize, platform: &str, device: &Device) -> DeviceInfo {
    let q = |i: Info| device.info(i).ok();
    let kind = match q(Info::Type) {
        Some(InfoResult::Type(t)) if t.contains(DeviceType::GPU) => "GPU",
        Some(InfoResult::Type(t)) if t.contains(DeviceType::CPU) => "CPU",
        Some(InfoResult::Type(t)) if t.contains(DeviceType::ACCELERATOR) => "accelerator",
        _ => "other",
    };
    let compute_units = match q(Info::MaxComputeUnits) {
        Some(InfoResult::MaxComputeUnits(n)) => n,
        _ => 0,
    };
    let global_mem_bytes = match q(Info::GlobalMemSize) {
        Some(InfoResult::GlobalMemSize(n)) => n,
        _ => 0,
    };
    let local_mem_bytes = match q(Info::LocalMemSize) {
        Some(InfoResult::LocalMemSize(n)) => n,
        _ => 0,
    };
    let correctly_rounded_div_sqrt = match q(Info::SingleFpConfig) {
        Some(InfoResult::SingleFpConfig(c)) => {
            c.contains(ocl::flags::DeviceFpConfig::CORRECTLY_ROUNDED_DIVIDE_SQRT)
        }
        _ => false,
    };
    let version = match q(Info::Version) {
        Some(v) => v.to_string(),
        None => String::new(),
    };
    DeviceInfo {
        index,
        platform_index: pi,
        device_index: di,
        platform: platform.to_string(),
        name: device.name().unwrap_or_else(|_| format!("device {di}")),
        kind,
        version,
        compute_units,
        global_mem_bytes,
        max_work_group: device.max_wg_size().unwrap_or(1),
        local_mem_bytes,
        correctly_rounded_div_sqrt,
    }
}

/// Every device of every platform, or [`NO_PLATFORM`].
pub fn list() -> Result<Vec<DeviceInfo>> {
    Ok(discover()?.into_iter().map(|(i, _, _)| i).collect())
}

/// The position in `devices` that `spec` (or, without one, [`DEVICE_ENV`], or the default
/// rule) picks.
pub fn choose(devices: &[DeviceInfo], spec: Option<&str>) -> Result<usize> {
    let env = std::env::var(DEVICE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let spec = spec.map(str::to_string).or(env);
    let Some(spec) = spec else {
        let gpu = devices
            .iter()
            .position(|d| d.kind == "GPU" || d.kind == "accelerator");
        return Ok(gpu.unwrap_or(0));
    };
    let spec = spec.trim();
    let listing = || {
        devices
            .iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let found = if let Some((p, d)) = spec.split_once(':')
        && let (Ok(p), Ok(d)) = (p.parse::<usize>(), d.parse::<usize>())
    {
        devices
            .iter()
            .position(|x| x.platform_index == p && x.device_index == d)
    } else if let Ok(i) = spec.parse::<usize>() {
        (i < devices.len()).then_some(i)
    } else {
        let needle = spec.to_lowercase();
        devices.iter().position(|d| {
            format!("{} / {}", d.platform, d.name)
                .to_lowercase()
                .contains(&needle)
        })
    };
    found.ok_or_else(|| {
        Error::Invalid(format!(
            "no OpenCL device matches {spec:?} (give P:D, an index or part of a name); \
             devices:\n{}",
            listing()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: usize, p: usize, d: usize, name: &str, kind: &'static str) -> DeviceInfo {
        DeviceInfo {
            index,
            platform_index: p,
            device_index: d,
            platform: format!("Platform{p}"),
            name: name.into(),
            kind,
            version: "OpenCL 1.2".into(),
            compute_units: 1,
            global_mem_bytes: 1 << 30,
            max_work_group: 256,
            local_mem_bytes: 1 << 15,
            correctly_rounded_div_sqrt: false,
        }
    }

    #[test]
    fn specs_pick_by_position_index_or_name() {
        let devs = [
            dev(0, 0, 0, "pthread-cpu", "CPU"),
            dev(1, 1, 0, "Tesla", "GPU"),
            dev(2, 1, 1, "Radeon", "GPU"),
        ];
        assert_eq!(choose(&devs, Some("1:1")).unwrap(), 2);
        assert_eq!(choose(&devs, Some("0")).unwrap(), 0);
        assert_eq!(choose(&devs, Some("radeon")).unwrap(), 2);
        assert_eq!(choose(&devs, Some("platform1")).unwrap(), 1);
        let err = choose(&devs, Some("9")).unwrap_err().to_string();
        assert!(
            err.contains("no OpenCL device matches") && err.contains("Tesla"),
            "{err}"
        );
        assert!(choose(&devs, Some("2:0")).is_err());
    }
}
