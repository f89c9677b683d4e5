//! The process's CPU time (user + system, every thread), for timing compilation on shared
//! machines: waiting for a core inflates wall time but not CPU time.

use std::time::Duration;

/// User plus system CPU time of the whole process so far; `None` where the platform does not
/// report it.
#[cfg(unix)]
pub fn process_cpu_time() -> Option<Duration> {
    // SAFETY: `getrusage` only writes the `rusage` it is given, a plain C struct for which all
    // zero bytes are a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    }?;
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

/// User plus system CPU time of the whole process so far; `None` where the platform does not
/// report it.
#[cfg(not(unix))]
pub fn process_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::process_cpu_time;
    use std::time::{Duration, Instant};

    #[test]
    fn cpu_time_grows_with_work() {
        let Some(before) = process_cpu_time() else {
            return;
        };
        // Spin until 20 ms of CPU time show up, for at most 10 s of wall time (a busy machine
        // may give this thread little CPU, but not none).
        let started = Instant::now();
        let mut x = 0u64;
        while process_cpu_time().is_some_and(|t| t < before + Duration::from_millis(20))
            && started.elapsed() < Duration::from_secs(10)
        {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = process_cpu_time().unwrap() - before;
        assert!(
            spent >= Duration::from_millis(20),
            "{spent:?} after {:?}",
            started.elapsed()
        );
    }
}
