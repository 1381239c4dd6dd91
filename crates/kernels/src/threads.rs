//! The process-wide worker pool every kernel runs on.
//!
//! The thread count comes from [`set_num_threads`] (the CLI's `--threads` or
//! `RESNET_NUM_THREADS`, through `KernelConfig::install`), else the number of available cores. It is fixed once the
//! pool has started, because reductions partition their work by it and changing it midway would
//! change results in the last bits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
static REQUESTED: OnceLock<usize> = OnceLock::new();

/// Error returned when the thread count is chosen after the pool has already started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyStarted {
    /// The thread count the running pool uses.
    pub running: usize,
}

impl std::fmt::Display for AlreadyStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the compute thread pool already runs with {} threads; choose the count before any work starts",
            self.running
        )
    }
}

impl std::error::Error for AlreadyStarted {}

/// Chooses the number of compute threads. Call it before any kernel runs.
///
/// # Errors
/// [`AlreadyStarted`] if the pool already runs with a different count.
///
/// # Panics
/// If `n` is zero.
pub fn set_num_threads(n: usize) -> Result<(), AlreadyStarted> {
    assert!(n > 0, "thread count must be at least 1");
    if let Some(pool) = POOL.get() {
        return if pool.current_num_threads() == n {
            Ok(())
        } else {
            Err(AlreadyStarted { running: pool.current_num_threads() })
        };
    }
    let _ = REQUESTED.set(n);
    let running = num_threads();
    if running == n {
        Ok(())
    } else {
        Err(AlreadyStarted { running })
    }
}

fn default_threads() -> usize {
    if let Some(&n) = REQUESTED.get() {
        return n;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The worker pool, started on first use.
pub fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(default_threads())
            .thread_name(|i| format!("resnet-compute-{i}"))
            .build()
            .expect("failed to start the compute thread pool")
    })
}

/// Number of compute threads.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f` inside the pool, so that rayon's parallel iterators in it use our workers.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

thread_local! {
    /// Whether this thread runs a pass inside [`install_awake`] (a nested call adds no spinners).
    static IN_PASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a network's pass: dozens of kernels one after another) on a worker of the pool
/// while the other workers keep looking for its kernels' parallel parts instead of sleeping
/// between them.
///
/// A rayon worker that finds no work spins briefly and then sleeps; the next kernel then waits
/// for it to wake (docs/tuning.md). Here each other worker runs a job that takes pending work as
/// soon as it appears (`rayon::yield_now`) and otherwise yields to the OS (so other threads of
/// the process, such as data loaders, still run), until `f` returns. Nested calls run `f`
/// directly.
pub fn install_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(|| {
        let threads = pool().current_num_threads();
        if threads == 1 || IN_PASS.get() {
            return f();
        }
        let owner = rayon::current_thread_index();
        let done = AtomicBool::new(false);
        rayon::in_place_scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| keep_awake(&done, owner));
            }
            // Ends the spinners even if `f` panics (the scope waits for them).
            struct Finish<'a>(&'a AtomicBool);
            impl Drop for Finish<'_> {
                fn drop(&mut self) {
                    IN_PASS.set(false);
                    self.0.store(true, Ordering::Release);
                }
            }
            let _finish = Finish(&done);
            IN_PASS.set(true);
            f()
        })
    })
}

/// Runs pending pool work until `done`. On the thread that runs the pass itself (which may pick
/// this job up while it waits for a parallel part), it returns at once: spinning there would
/// hold the pass up.
fn keep_awake(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::yield_now();
        }
    }
}

/// Splits `len` items into `parts` contiguous ranges of near-equal size (the first ones one larger).
pub fn split_even(len: usize, parts: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let parts = parts.max(1);
    let base = len / parts;
    let extra = len % parts;
    (0..parts).map(move |i| {
        let start = i * base + i.min(extra);
        let size = base + usize::from(i < extra);
        start..start + size
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass with the other workers kept awake computes what it computes without them, nests,
    /// passes a panic on to its caller without hanging, and can run again after one.
    #[test]
    fn passes_with_workers_kept_awake() {
        use rayon::prelude::*;
        let sum = |n: u64| (0..n).into_par_iter().map(|i| i * i).sum::<u64>();
        let want: u64 = (0..100_000u64).map(|i| i * i).sum();
        assert_eq!(install_awake(|| (0..50).map(|_| sum(100_000)).collect::<Vec<_>>()), vec![want; 50]);
        assert_eq!(install_awake(|| install_awake(|| sum(100_000))), want);
        let caught = std::panic::catch_unwind(|| install_awake(|| -> u64 { panic!("a failing pass") }));
        assert!(caught.is_err());
        assert_eq!(install_awake(|| sum(100_000)), want);
        // From several threads at once (each pass's spinners may run the other passes).
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..3).map(|_| s.spawn(|| install_awake(|| sum(100_000)))).collect();
            runs.into_iter().for_each(|r| assert_eq!(r.join().unwrap(), want));
        });
    }

    #[test]
    fn split_even_covers_everything_once() {
        for len in [0, 1, 7, 128, 1000] {
            for parts in [1, 2, 3, 8] {
                let ranges: Vec<_> = split_even(len, parts).collect();
                assert_eq!(ranges.len(), parts);
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges.last().unwrap().end, len);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len());
                }
            }
        }
    }

    #[test]
    fn pool_runs_work() {
        let n = install(rayon::current_num_threads);
        assert_eq!(n, num_threads());
    }
}
