//! A parallel indexed map on plain scoped threads, for one-off passes over a dataset (decoding it
//! into memory, computing its mean). Results come back in index order, so whatever the number of
//! threads the caller sees the same thing.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads for a one-off pass: every core, since nothing else of ours runs while a dataset opens.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `(0..n).map(f)` on up to [`threads`] threads, in index order.
pub(crate) fn map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    // Blocks of indices handed out by an atomic counter balance uneven work (big and small JPEGs).
    const BLOCK: usize = 64;
    let workers = threads().min(n.div_ceil(BLOCK)).max(1);
    if workers == 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut blocks: Vec<(usize, Vec<T>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let start = next.fetch_add(BLOCK, Ordering::Relaxed);
                        if start >= n {
                            break;
                        }
                        let end = (start + BLOCK).min(n);
                        done.push((start, (start..end).map(&f).collect::<Vec<T>>()));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A panic in `f` is a bug in the caller; carry it to the calling thread.
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    blocks.sort_unstable_by_key(|b| b.0);
    blocks.into_iter().flat_map(|b| b.1).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_keeps_order() {
        let v = super::map(1000, |i| i * 2);
        assert_eq!(v, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::map(0, |i| i).is_empty());
    }
}
