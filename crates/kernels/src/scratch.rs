//! Per-thread scratch memory for kernels (im2col tiles, bf16 rows, Winograd filters).
//!
//! Each worker keeps its buffers between calls, so after the first step of a network no kernel
//! allocates: the buffers only grow to the largest tile they have seen.

use crate::workspace::take;
use std::cell::RefCell;
use std::thread::LocalKey;

thread_local! {
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BF16: RefCell<(Vec<u16>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static FILTER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's tile buffer resized to at least `len` floats.
/// The contents are unspecified on entry.
///
/// # Panics
/// If called re-entrantly on the same thread (kernels never nest tile use).
pub(crate) fn with_tile<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    lend(&TILE, "scratch tile", len, f)
}

/// Runs `f` with the first `len` floats of this thread's buffer `key`, grown if needed.
fn lend<R>(key: &'static LocalKey<RefCell<Vec<f32>>>, what: &str, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    key.with(|cell| {
        let mut buf = cell.try_borrow_mut().unwrap_or_else(|_| panic!("{what} used re-entrantly on one thread"));
        f(take(&mut buf, len))
    })
}

/// Runs `f` with this thread's bf16 buffers resized to at least `len16` bf16 values and `len32`
/// bf16 pairs (usable inside [`with_tile`]). The contents are unspecified on entry.
///
/// # Panics
/// If called re-entrantly on the same thread.
pub(crate) fn with_bf16<R>(len16: usize, len32: usize, f: impl FnOnce(&mut [u16], &mut [u32]) -> R) -> R {
    BF16.with(|cell| {
        let mut bufs = cell.try_borrow_mut().expect("bf16 scratch used re-entrantly on one thread");
        let (a, b) = &mut *bufs;
        f(take(a, len16), take(b, len32))
    })
}

/// Runs `f` with this thread's filter buffer resized to at least `len` floats: a transformed
/// filter the calling thread prepares and the workers read, one buffer for all layers rather
/// than one per layer. The contents are unspecified on entry.
///
/// # Panics
/// If called re-entrantly on the same thread.
pub(crate) fn with_filter<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    lend(&FILTER, "filter scratch", len, f)
}
