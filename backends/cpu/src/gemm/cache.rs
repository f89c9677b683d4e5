//! Data-cache sizes of the CPU, detected once at run time for cache blocking (Winograd sizes
//! its blocks of tiles to the L2).
//!
//! Read from Linux's `/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}` where it
//! exists, else from CPUID (leaf 4 on Intel, leaf 0x8000001D on AMD: both describe one cache
//! per sub-leaf in the same layout), else conservative defaults small enough for any x86 core
//! of the last decade (32 KiB L1d, 256 KiB L2), so a failed detection costs speed, never
//! correctness.

use std::sync::OnceLock;

/// Per-core data caches, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caches {
    /// Level-1 data cache.
    pub l1d: usize,
    /// Level-2 cache (unified or data).
    pub l2: usize,
    /// The last level, shared between cores (L3 where there is one, else the L2).
    pub last: usize,
}

/// Used when neither sysfs nor CPUID says anything.
const FALLBACK: Caches = Caches {
    l1d: 32 << 10,
    l2: 256 << 10,
    last: 256 << 10,
};

/// The caches of this machine (detected once per process).
pub(crate) fn caches() -> Caches {
    static DETECTED: OnceLock<Caches> = OnceLock::new();
    *DETECTED.get_or_init(|| from_sysfs().or_else(from_cpuid).unwrap_or(FALLBACK))
}

/// One cache as the kernel or CPUID describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CacheInfo {
    level: u32,
    /// Holds data (a data or unified cache, not an instruction cache).
    data: bool,
    bytes: usize,
}

/// The L1d, L2 and last level of a list of caches; `None` unless the L1d and L2 are there.
fn pick(list: &[CacheInfo]) -> Option<Caches> {
    let find = |level| {
        list.iter()
            .find(|c| c.level == level && c.data && c.bytes > 0)
            .map(|c| c.bytes)
    };
    let l2 = find(2)?;
    Some(Caches {
        l1d: find(1)?,
        l2,
        last: find(3).unwrap_or(l2).max(l2),
    })
}

/// Whether a batch of `batch` images runs faster one image at a time (the batch-1 program
/// once per image) than whole, for a graph whose images are independent, whose weights take
/// `weight_bytes` and whose largest activation takes `largest_image_bytes` per image: when
/// the weights fit in half the last-level cache (every image then reads them from there) and
/// the largest activation of the whole batch does not (the batch would stream it through
/// memory, where each image's stays in cache). Measured on Zen 5 (32 MiB L3; kiln bench, 2
/// threads): MobileNet-v2 at batch 8 (14 MB of weights, 4.8 MB a image at 112x112x96) 25.2 ms
/// whole against 8 x 2.3 ms one at a time; ResNet-18 (47 MB of weights) and W3 (6.4 MB of
/// activations at batch 8) stay whole.
pub fn images_apart(weight_bytes: usize, largest_image_bytes: usize, batch: usize) -> bool {
    let half = caches().last / 2;
    batch >= 2 && weight_bytes <= half && largest_image_bytes.saturating_mul(batch) > half
}

/// Whether a batch of `batch` images of `image_bytes` each is small enough to run whole
/// after images ran apart ([`images_apart`]): a quarter of the last-level cache, so that
/// the value, the next one and the weights between them stay there together.
pub fn batch_fits_cache(image_bytes: usize, batch: usize) -> bool {
    image_bytes.saturating_mul(batch) <= caches().last / 4
}

fn from_sysfs() -> Option<Caches> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut list = Vec::new();
    for index in 0..8 {
        let d = dir.join(format!("index{index}"));
        let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        list.push(CacheInfo {
            level: level.trim().parse().ok()?,
            data: kind.trim() != "Instruction",
            bytes: parse_size(&size)?,
        });
    }
    pick(&list)
}

/// Parses sysfs sizes such as `32K`, `1024K`, `2M` or `512`.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// Decodes one deterministic-cache-parameters sub-leaf (EAX, EBX, ECX of CPUID leaf 4 or
/// 0x8000001D); `None` for the terminating "no more caches" entry.
fn decode_cpuid_leaf(eax: u32, ebx: u32, ecx: u32) -> Option<CacheInfo> {
    let kind = eax & 0x1f; // 0 none, 1 data, 2 instruction, 3 unified
    if kind == 0 {
        return None;
    }
    let ways = ((ebx >> 22) & 0x3ff) as usize + 1;
    let partitions = ((ebx >> 12) & 0x3ff) as usize + 1;
    let line = (ebx & 0xfff) as usize + 1;
    let sets = ecx as usize + 1;
    Some(CacheInfo {
        level: (eax >> 5) & 0x7,
        data: kind != 2,
        bytes: ways * partitions * line * sets,
    })
}

#[cfg(target_arch = "x86_64")]
fn from_cpuid() -> Option<Caches> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // Vendor string "AuthenticAMD" ends in "cAMD" (ECX of leaf 0); AMD's leaf 4 is reserved.
    let leaf0 = __cpuid(0);
    let amd = leaf0.ecx == u32::from_le_bytes(*b"cAMD");
    let leaf = if amd { 0x8000_001d } else { 4 };
    let max = if amd {
        __cpuid(0x8000_0000).eax
    } else {
        leaf0.eax
    };
    if max < leaf {
        return None;
    }
    let list: Vec<CacheInfo> = (0..8)
        .map_while(|sub| {
            let r = __cpuid_count(leaf, sub);
            decode_cpuid_leaf(r.eax, r.ebx, r.ecx)
        })
        .collect();
    pick(&list)
}

#[cfg(not(target_arch = "x86_64"))]
fn from_cpuid() -> Option<Caches> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_cache_sizes_parse() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn gemm_cache_cpuid_leaf_decodes() {
        // A 32 KiB, 8-way L1d with 64-byte lines and 64 sets, as Zen 4 and most Intel cores.
        let eax = 1 | (1 << 5);
        let ebx = (7 << 22) | 63;
        assert_eq!(
            decode_cpuid_leaf(eax, ebx, 63),
            Some(CacheInfo {
                level: 1,
                data: true,
                bytes: 32 << 10
            })
        );
        assert_eq!(decode_cpuid_leaf(0, ebx, 63), None);
        let icache = decode_cpuid_leaf(2 | (1 << 5), ebx, 63).unwrap();
        assert!(!icache.data);
        // An instruction cache never stands in for the L1d.
        let l2 = decode_cpuid_leaf(3 | (2 << 5), (7 << 22) | 63, 2047).unwrap();
        assert_eq!((l2.level, l2.bytes), (2, 1 << 20));
        assert_eq!(pick(&[icache, l2]), None);
        // Without an L3 the last level is the L2.
        let l1 = decode_cpuid_leaf(eax, ebx, 63).unwrap();
        assert_eq!(pick(&[l1, l2]).map(|c| c.last), Some(1 << 20));
    }

    #[test]
    fn gemm_cache_detection_is_plausible() {
        let c = caches();
        assert!(c.l1d >= 4 << 10 && c.l2 >= c.l1d && c.last >= c.l2, "{c:?}");
    }
}
