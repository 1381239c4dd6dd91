//! The process-wide worker pool every kernel runs on.
//!
//! The thread count comes from, in order: [`set_num_threads`] (the CLI's `--threads`), the
//! `RESNET_NUM_THREADS` environment variable, the number of available cores. It is fixed once the
//! pool has started, because reductions partition their work by it and changing it midway would
//! change results in the last bits.

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
    std::env::var("RESNET_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
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
