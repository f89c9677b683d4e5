//! Keeping the pool's other workers awake for the length of one run.
//!
//! A program is a sequence of stages, most of which split their work across the rayon pool and
//! join. Between two stages the other workers find nothing to do, and after a few dozen idle
//! rounds rayon puts them to sleep; the next stage then waits for a futex wake-up, which on
//! these virtual machines costs tens of microseconds. A network of 50 small kernels paid it on
//! about half of them (25 context switches per MobileNet-v2 run). ONNX Runtime's pool spins
//! instead; so do the workers here, but only while a run is in progress: each of them runs a
//! job that keeps taking the pool's pending work (`rayon::yield_now`) until the run is over.
//!
//! Two rules keep the spinning jobs from deadlocking the run they serve. A spinner that finds
//! itself on the thread running the stages returns at once (that thread popped it from its own
//! queue while waiting inside a stage; spinning there would wait on a run that is below it on
//! the same stack), and so does a spinner started on a thread that is already spinning.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Whether this thread is inside a spinner.
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Idle rounds (no pending job found) between two yields to the operating system, so that a
/// spinner gives its core up to another process now and then instead of holding it for the
/// whole run.
const ROUNDS_PER_OS_YIELD: u32 = 64;

/// Runs `work` on this thread while the other workers of the current rayon pool keep looking
/// for its jobs, and returns its result. Outside a pool, or in a pool of one thread, it just
/// runs `work`. The spinners are detached jobs: they end by themselves once `work` has
/// returned or unwound.
pub(crate) fn with_workers_awake<R>(work: impl FnOnce() -> R) -> R {
    let Some(main) = rayon::current_thread_index() else {
        return work();
    };
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 || SPINNING.get() {
        return work();
    }
    let done = Arc::new(AtomicBool::new(false));
    for _ in 0..others {
        let done = done.clone();
        rayon::spawn(move || spin(&done, main));
    }
    let _end = EndOfRun(done);
    work()
}

/// Sets the run's flag when dropped: when the work returns, and when it unwinds (a spinner
/// left waiting would hold its worker forever).
struct EndOfRun(Arc<AtomicBool>);

impl Drop for EndOfRun {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Takes the pool's pending jobs until `done` (see the module comment for the two early
/// returns).
fn spin(done: &AtomicBool, main: usize) {
    if rayon::current_thread_index() == Some(main) || SPINNING.get() {
        return;
    }
    SPINNING.set(true);
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle = 0,
            Some(rayon::Yield::Idle) => {
                idle = idle.wrapping_add(1);
                if idle.is_multiple_of(ROUNDS_PER_OS_YIELD) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            None => break,
        }
    }
    SPINNING.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Work that forks and joins many times (as a run's stages do) completes with the right
    /// result, from several callers at once, nested, and outside any pool.
    #[test]
    fn awake_runs_forking_work_without_deadlock() {
        let work = || {
            (0..200)
                .map(|i| (0..1000u64).into_par_iter().map(|x| x * i).sum::<u64>())
                .sum::<u64>()
        };
        let want: u64 = (0..200).map(|i| 499_500 * i).sum();
        assert_eq!(with_workers_awake(work), want);
        for threads in [1, 2, 3] {
            let pool = pool(threads);
            let results: Vec<u64> = pool.install(|| {
                (0..4)
                    .into_par_iter()
                    .map(|_| with_workers_awake(|| with_workers_awake(work)))
                    .collect()
            });
            assert_eq!(results, vec![want; 4], "{threads} threads");
        }
    }

    /// Work that panics ends its spinners: the panic reaches the caller and the pool still
    /// runs the next job on every thread.
    #[test]
    fn awake_panicking_work_releases_the_workers() {
        let pool = pool(2);
        let caught = pool.install(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_workers_awake(|| -> u32 { panic!("stage failed") })
            }))
        });
        assert!(caught.is_err());
        let sum: u64 = pool.install(|| with_workers_awake(|| (0..10_000u64).into_par_iter().sum()));
        assert_eq!(sum, 49_995_000);
        // No thread is left spinning (a spinner that never saw the end of its run would run
        // this job from inside its loop, flag set). A finished spinner may take a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let spinning = pool.broadcast(|_| SPINNING.get());
            if !spinning.contains(&true) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{spinning:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
