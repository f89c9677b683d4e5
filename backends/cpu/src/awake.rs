//! Keeping the pool's other workers awake for the length of one run, and a moment after it.
//!
//! A program is a sequence of stages, most of which split their work across the rayon pool and
//! join. Between two stages the other workers find nothing to do, and after a few dozen idle
//! rounds rayon puts them to sleep; the next stage then waits for a futex wake-up, which on
//! these virtual machines costs tens of microseconds. A network of 50 small kernels paid it on
//! about half of them (25 context switches per MobileNet-v2 run). ONNX Runtime's pool spins
//! instead; so do the workers here, but only while a run is in progress: each of them runs a
//! job that keeps taking the pool's pending work (`rayon::yield_now`) until the run is over.
//!
//! Then each keeps spinning for [`GRACE`] more while no run is in progress anywhere in the
//! process, so that the next of back-to-back runs finds its workers awake. Without it the
//! workers slept between runs and their idle virtual CPUs were taken back by the host: the
//! next run often went a whole stage before the other worker woke: a 3x3 conv on 56x56x64
//! (`kiln bench --runs 30`, 2 threads, 24 processes on a 2-core Zen 5 EPYC, FMA peak 286
//! GFLOP/s a core) took 0.37-0.44 ms, one thread's time, in half of them and 0.25-0.28 ms in
//! the others; ONNX Runtime, whose workers spin between runs, took 0.45 on every run of four
//! sessions timed right after. With the linger: 0.25-0.29 ms in 22 of 24.
//!
//! Three rules keep the spinning jobs from deadlocking the run they serve or delaying another.
//! A spinner that finds itself on the thread running the stages returns at once (that thread
//! popped it from its own queue while waiting inside a stage; spinning there would wait on a
//! run that is below it on the same stack), and so does a spinner started on a thread that is
//! already spinning. A spinner lingers only while no run is in progress: a run below it on its
//! thread's stack (a stage job it stole) would be in progress, so it never waits on one.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

thread_local! {
    /// Whether this thread is inside a spinner, following a run.
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Runs in progress in the process, in every pool (see the module comment's last rule).
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// How long a spinner keeps going after its run while no other run is in progress.
const GRACE: Duration = Duration::from_millis(1);

/// Idle rounds (no pending job found) between two yields to the operating system, so that a
/// spinner gives its core up to another process now and then instead of holding it for the
/// whole run.
const ROUNDS_PER_OS_YIELD: u32 = 64;

/// Runs `work` on this thread while the other workers of the current rayon pool keep looking
/// for its jobs, and returns its result. Outside a pool, or in a pool of one thread, it just
/// runs `work`. The spinners are detached jobs: they end by themselves once `work` has
/// returned or unwound, and [`GRACE`] later.
pub(crate) fn with_workers_awake<R>(work: impl FnOnce() -> R) -> R {
    let Some(main) = rayon::current_thread_index() else {
        return work();
    };
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 || SPINNING.get() {
        return work();
    }
    RUNS.fetch_add(1, Ordering::AcqRel);
    let done = Arc::new(AtomicBool::new(false));
    let _end = EndOfRun(done.clone());
    for _ in 0..others {
        let done = done.clone();
        rayon::spawn(move || spin(&done, main));
    }
    work()
}

/// Ends the run when dropped: when the work returns, and when it unwinds (a spinner left
/// waiting would hold its worker forever).
struct EndOfRun(Arc<AtomicBool>);

impl Drop for EndOfRun {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
        RUNS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes the pool's pending jobs until `done`, then lingers (see the module comment for the
/// early returns).
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
    linger();
}

/// Keeps taking the pool's pending jobs for [`GRACE`] after the last one, while no run is in
/// progress. A run started meanwhile from outside the pool is one of those jobs: it runs
/// here with this thread as its main, and spawns its own spinners (this thread no longer
/// counts as spinning). Each idle round gives the core up to the operating system: the
/// caller of the run just finished is waking up, and waited 26 us on average for a core
/// (MobileNet-v2, 2 threads on a 2-core Zen 5 EPYC, FMA peak 286 GFLOP/s a core) when a
/// lingering worker yielded only every [`ROUNDS_PER_OS_YIELD`] rounds, 6 us when it yields
/// every round.
fn linger() {
    let mut last_job = Instant::now();
    while RUNS.load(Ordering::Acquire) == 0 && last_job.elapsed() < GRACE {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => last_job = Instant::now(),
            Some(rayon::Yield::Idle) => std::thread::yield_now(),
            None => return,
        }
    }
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
