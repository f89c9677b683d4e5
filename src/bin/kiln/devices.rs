//! `kiln devices`: the OpenCL platforms and devices this machine has, numbered the way
//! `--backend opencl:SPEC` and `KILN_OPENCL_DEVICE` take them, with the default marked.
//!
//! Without the `opencl` feature, or without an OpenCL platform, it says so and exits non-zero
//! (never a panic).

/// Prints the device list (or one JSON object with `--json`).
#[cfg(feature = "opencl")]
pub fn devices(json: bool) -> Result<(), String> {
    use kiln_opencl::device::{DEVICE_ENV, choose, list};
    let devices = list().map_err(|e| e.to_string())?;
    let default = choose(&devices, None).ok();
    if json {
        let items: Vec<String> = devices
            .iter()
            .map(|d| {
                format!(
                    "{{\"index\":{},\"platform_index\":{},\"device_index\":{},\"platform\":{},\
                     \"name\":{},\"type\":\"{}\",\"version\":{},\"compute_units\":{},\
                     \"global_mem_bytes\":{},\"max_work_group\":{},\"default\":{}}}",
                    d.index,
                    d.platform_index,
                    d.device_index,
                    quote(&d.platform),
                    quote(&d.name),
                    d.kind,
                    quote(&d.version),
                    d.compute_units,
                    d.global_mem_bytes,
                    d.max_work_group,
                    default == Some(d.index)
                )
            })
            .collect();
        println!("{{\"devices\":[{}]}}", items.join(","));
        return Ok(());
    }
    println!("index (platform:device) platform / device [type, units, memory, version]");
    for d in &devices {
        let mark = if default == Some(d.index) {
            "  <- default"
        } else {
            ""
        };
        println!("{d}{mark}");
    }
    println!("choose with --backend opencl:INDEX, opencl:P:D or opencl:NAME, or set {DEVICE_ENV}");
    Ok(())
}

/// A JSON string literal.
#[cfg(feature = "opencl")]
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Without the feature there is nothing to list.
#[cfg(not(feature = "opencl"))]
pub fn devices(_json: bool) -> Result<(), String> {
    Err(
        "this kiln was built without OpenCL; rebuild with `--features opencl` \
         (and install an ICD, e.g. PoCL: apt-get install ocl-icd-opencl-dev pocl-opencl-icd)"
            .into(),
    )
}
