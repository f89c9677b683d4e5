//! The machine's measured FMA peak: what `kiln bench` compares achieved GFLOP/s against.
//!
//! Twelve independent multiply-add chains on the widest vectors the CPU has (AVX-512F zmm, else
//! AVX2+FMA ymm, else portable code the compiler vectorises for the baseline target, SSE on
//! x86_64, with separate multiply and add) run for a fixed short time on each of `threads` OS
//! threads; a multiply-add counts 2 FLOPs per lane. Twelve chains cover the FMA latency (about
//! 4 cycles) on two FMA pipes, so the loop is bound by FMA throughput, not latency.
//!
//! The figure is measured once per CPU model, instruction set, thread count and build profile,
//! and cached in `$XDG_CACHE_HOME/kiln/fma_peak.tsv` (else `~/.cache/kiln/`). The cache is a
//! convenience only: an unreadable, corrupt or unwritable cache means measuring again, never an
//! error.

use crate::gemm::Isa;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How long each thread runs the loop before timing starts (clock ramp-up, AVX-512 licence).
const WARMUP: Duration = Duration::from_millis(20);
/// How long each thread's timed loop runs, all rounds together.
const MEASURE: Duration = Duration::from_millis(150);
/// Timed rounds per measurement (the best one counts).
const ROUNDS: u32 = 6;
/// Loop iterations between two clock reads (12 vector FMAs each; tens of microseconds).
const CHUNK: u64 = 4096;
/// Independent accumulators per thread.
const CHAINS: u64 = 12;
/// The cache file's name inside the cache folder.
pub const CACHE_FILE: &str = "fma_peak.tsv";

/// A measured FMA peak and what it was measured for.
#[derive(Clone, Debug, PartialEq)]
pub struct FmaPeak {
    /// The CPU model as the OS names it (`/proc/cpuinfo`'s model name), or the architecture.
    pub cpu: String,
    /// The instruction set the loop used.
    pub isa: Isa,
    /// OS threads that ran the loop at once.
    pub threads: usize,
    /// Billions of floating-point operations per second, all threads together.
    pub gflops: f64,
}

/// The CPU's model name (`model name` in `/proc/cpuinfo`), else the target architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The widest instruction set this CPU runs (ignoring `KILN_CPU_FEATURES`, which caps what
/// kiln's kernels use, not what the machine can do).
pub fn best_isa() -> Isa {
    Isa::supported().into_iter().max().unwrap_or(Isa::Portable)
}

/// Lanes of one vector of `isa`'s loop (32-bit floats).
fn lanes(isa: Isa) -> u64 {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2Fma => 8,
        Isa::Portable => PORTABLE_LANES as u64,
    }
}

/// This machine's FMA peak on `threads` threads (at least 1): from the cache when it holds
/// this CPU, instruction set, thread count and build profile, else measured now and stored.
pub fn fma_peak(threads: usize) -> FmaPeak {
    fma_peak_cached(cache_dir().as_deref(), threads)
}

/// [`fma_peak`] with the cache in `dir` (`None`: no cache, always measure).
pub fn fma_peak_cached(dir: Option<&Path>, threads: usize) -> FmaPeak {
    let threads = threads.max(1);
    let (cpu, isa) = (cpu_model(), best_isa());
    let key = cache_key(&cpu, isa, threads);
    if let Some(gflops) = dir.and_then(|d| load_cached(d, &key)) {
        return FmaPeak {
            cpu,
            isa,
            threads,
            gflops,
        };
    }
    let gflops = measure(isa, threads, MEASURE);
    if let Some(d) = dir {
        // Best effort: a cache that cannot be written only means measuring next time.
        let _ = store_cached(d, &key, gflops);
    }
    FmaPeak {
        cpu,
        isa,
        threads,
        gflops,
    }
}

/// A peak can only be measured too low (other processes slow the loop down), so a cached
/// figure that a real workload just beat (`achieved_gflops`, the same threads) was taken on a
/// busy machine: measure again and keep, and cache, the larger of the two. Returns `peak`
/// unchanged otherwise.
pub fn remeasure_if_beaten(dir: Option<&Path>, peak: &FmaPeak, achieved_gflops: f64) -> FmaPeak {
    if achieved_gflops.is_nan() || achieved_gflops <= peak.gflops {
        return peak.clone();
    }
    let gflops = measure(peak.isa, peak.threads, MEASURE).max(peak.gflops);
    if let Some(d) = dir {
        // Best effort, as in `fma_peak_cached`.
        let _ = store_cached(d, &cache_key(&peak.cpu, peak.isa, peak.threads), gflops);
    }
    FmaPeak {
        gflops,
        ..peak.clone()
    }
}

/// Runs the FMA loop on `threads` threads at once for `duration` in all (after a warm-up) and
/// returns GFLOP/s, all threads together. The time is split into rounds that start together on
/// every thread, and the best round counts: on a shared machine other processes can only slow
/// a round down. An `isa` this CPU lacks is measured as [`Isa::Portable`].
pub fn measure(isa: Isa, threads: usize, duration: Duration) -> f64 {
    let threads = threads.max(1);
    let isa = if isa.is_supported() {
        isa
    } else {
        Isa::Portable
    };
    let round = duration / ROUNDS;
    let start = Barrier::new(threads);
    let per_thread: Vec<Vec<(u64, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    run_for(isa, WARMUP.min(duration));
                    (0..ROUNDS)
                        .map(|_| {
                            start.wait();
                            run_for(isa, round)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let flops_per_iteration = (CHAINS * lanes(isa) * 2) as f64;
    (0..ROUNDS as usize)
        .filter_map(|r| {
            let runs: Vec<&(u64, Duration)> = per_thread.iter().filter_map(|t| t.get(r)).collect();
            let iterations: u64 = runs.iter().map(|(n, _)| n).sum();
            let slowest = runs
                .iter()
                .map(|(_, t)| t.as_secs_f64())
                .fold(0.0, f64::max);
            (slowest > 0.0).then(|| iterations as f64 * flops_per_iteration / slowest / 1e9)
        })
        .fold(0.0, f64::max)
}

/// Runs chunks of the loop until `duration` has passed; returns iterations run and the time.
fn run_for(isa: Isa, duration: Duration) -> (u64, Duration) {
    let started = Instant::now();
    let mut iterations = 0u64;
    loop {
        black_box(fma_chunk(isa, black_box(CHUNK)));
        iterations += CHUNK;
        let elapsed = started.elapsed();
        if elapsed >= duration {
            return (iterations, elapsed);
        }
    }
}

/// `iterations` rounds of 12 independent multiply-adds on `isa`'s vectors; returns a value
/// depending on every accumulator so the work cannot be dropped.
fn fma_chunk(isa: Isa, iterations: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 if Isa::Avx512.is_supported() => {
            // SAFETY: AVX-512F was just checked; the function touches only registers.
            return unsafe { x86::fma_avx512(iterations) };
        }
        Isa::Avx2Fma if Isa::Avx2Fma.is_supported() => {
            // SAFETY: AVX2 and FMA were just checked; the function touches only registers.
            return unsafe { x86::fma_avx2(iterations) };
        }
        _ => {}
    }
    let _ = isa;
    mul_add_portable(iterations)
}

/// Lanes of the portable loop's vectors: 128 bits, the x86_64 baseline (SSE2).
const PORTABLE_LANES: usize = 4;

/// The portable loop: separate multiply and add (the baseline target has no FMA; calling
/// `f32::mul_add` there would call a slow libm routine), which the compiler vectorises.
fn mul_add_portable(iterations: u64) -> f32 {
    let (a, b) = (black_box(0.999_999_f32), black_box(1e-7_f32));
    let mut acc = [[0.0f32; PORTABLE_LANES]; CHAINS as usize];
    for _ in 0..iterations {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = *x * a + b;
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// One chain step per accumulator, written out so every accumulator stays in a register.
    macro_rules! fma_loop {
        ($iterations:expr, $zero:expr, $set1:ident, $fmadd:ident, $add:ident) => {{
            let (a, b) = ($set1(black_box(0.999_999)), $set1(black_box(1e-7)));
            let (mut c0, mut c1, mut c2, mut c3) = ($zero, $zero, $zero, $zero);
            let (mut c4, mut c5, mut c6, mut c7) = ($zero, $zero, $zero, $zero);
            let (mut c8, mut c9, mut c10, mut c11) = ($zero, $zero, $zero, $zero);
            for _ in 0..$iterations {
                c0 = $fmadd(c0, a, b);
                c1 = $fmadd(c1, a, b);
                c2 = $fmadd(c2, a, b);
                c3 = $fmadd(c3, a, b);
                c4 = $fmadd(c4, a, b);
                c5 = $fmadd(c5, a, b);
                c6 = $fmadd(c6, a, b);
                c7 = $fmadd(c7, a, b);
                c8 = $fmadd(c8, a, b);
                c9 = $fmadd(c9, a, b);
                c10 = $fmadd(c10, a, b);
                c11 = $fmadd(c11, a, b);
            }
            let s = $add(
                $add($add(c0, c1), $add(c2, c3)),
                $add($add(c4, c5), $add(c6, c7)),
            );
            $add(s, $add($add(c8, c9), $add(c10, c11)))
        }};
    }

    /// 12 zmm multiply-add chains; the caller checks AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512(iterations: u64) -> f32 {
        let sum = fma_loop!(
            iterations,
            _mm512_setzero_ps(),
            _mm512_set1_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps
        );
        _mm512_reduce_add_ps(sum)
    }

    /// 12 ymm multiply-add chains; the caller checks AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2(iterations: u64) -> f32 {
        let sum = fma_loop!(
            iterations,
            _mm256_setzero_ps(),
            _mm256_set1_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps
        );
        _mm256_cvtss_f32(sum)
    }
}

/// `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`; `None` when neither is set.
pub fn cache_dir() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("kiln"))
}

/// The cache line's key: CPU model, instruction set, threads and build profile (a debug
/// build's loop is slower and must not stand for a release build's), tab-separated.
fn cache_key(cpu: &str, isa: Isa, threads: usize) -> String {
    let cpu: String = cpu
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!("{cpu}\t{}\t{threads}\t{profile}", isa.name())
}

/// The cached GFLOP/s for `key` in `dir`, if the file has a well-formed positive one.
fn load_cached(dir: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(CACHE_FILE)).ok()?;
    text.lines().find_map(|line| {
        let (k, value) = line.rsplit_once('\t')?;
        let gflops: f64 = value.parse().ok()?;
        (k == key && gflops.is_finite() && gflops > 0.0).then_some(gflops)
    })
}

/// Stores `gflops` for `key` in `dir`, keeping other keys' lines; written to a temporary file
/// and renamed so a concurrent reader never sees half a file.
fn store_cached(dir: &Path, key: &str, gflops: f64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(CACHE_FILE);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|line| line.rsplit_once('\t').is_some_and(|(k, _)| k != key))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!("{key}\t{gflops}\n"));
    let temporary = dir.join(format!("{CACHE_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary folder, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("kiln-peak-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn every_supported_isa_measures_a_positive_finite_rate() {
        for isa in Isa::supported() {
            for threads in [1, 2] {
                let g = measure(isa, threads, Duration::from_millis(5));
                assert!(g.is_finite() && g > 0.0, "{isa:?} x{threads}: {g}");
            }
        }
    }

    #[test]
    fn the_cache_round_trips_and_keeps_other_keys() {
        let dir = TempDir::new("cache");
        store_cached(&dir.0, "cpu A\tavx2\t1\trelease", 12.5).unwrap();
        store_cached(&dir.0, "cpu B\tavx512\t2\trelease", 300.25).unwrap();
        store_cached(&dir.0, "cpu A\tavx2\t1\trelease", 13.0).unwrap();
        assert_eq!(load_cached(&dir.0, "cpu A\tavx2\t1\trelease"), Some(13.0));
        assert_eq!(
            load_cached(&dir.0, "cpu B\tavx512\t2\trelease"),
            Some(300.25)
        );
        assert_eq!(load_cached(&dir.0, "cpu A\tavx2\t2\trelease"), None);

        // The public entry point stores what it measured, and later reads it back unchanged.
        let first = fma_peak_cached(Some(&dir.0), 1);
        assert!(first.gflops.is_finite() && first.gflops > 0.0);
        let key = cache_key(&first.cpu, first.isa, 1);
        assert!(load_cached(&dir.0, &key).is_some());
        assert_eq!(fma_peak_cached(Some(&dir.0), 1), first);
    }

    #[test]
    fn a_cached_peak_that_a_workload_beats_is_measured_again() {
        let dir = TempDir::new("beaten");
        let measured = fma_peak_cached(Some(&dir.0), 1);
        // A figure cached on a busy machine: far below what the loop really does.
        let low = FmaPeak {
            gflops: measured.gflops / 1000.0,
            ..measured.clone()
        };
        let same = remeasure_if_beaten(Some(&dir.0), &low, low.gflops / 2.0);
        assert_eq!(
            same, low,
            "a workload below the peak must not trigger a measurement"
        );
        let raised = remeasure_if_beaten(Some(&dir.0), &low, low.gflops * 2.0);
        assert!(raised.gflops > low.gflops * 2.0, "{raised:?}");
        let key = cache_key(&raised.cpu, raised.isa, raised.threads);
        assert_eq!(load_cached(&dir.0, &key), Some(raised.gflops));
    }

    #[test]
    fn a_corrupt_or_unwritable_cache_means_measuring() {
        let dir = TempDir::new("corrupt");
        std::fs::create_dir_all(&dir.0).unwrap();
        let key = cache_key(&cpu_model(), best_isa(), 1);
        for junk in [
            "",
            "\t\t\t",
            &format!("{key}\tnot-a-number"),
            &format!("{key}\t-4"),
        ] {
            std::fs::write(dir.0.join(CACHE_FILE), junk).unwrap();
            assert_eq!(load_cached(&dir.0, &key), None, "{junk:?}");
        }
        // A file where the folder should be: nothing can be written, the peak is still there.
        let blocked = dir.0.join(CACHE_FILE).join("below-a-file");
        let peak = fma_peak_cached(Some(&blocked), 1);
        assert!(peak.gflops.is_finite() && peak.gflops > 0.0);
    }
}
