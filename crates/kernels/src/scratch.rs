//! Per-thread scratch memory for kernels (im2col tiles, transposed weights).
//!
//! Each worker keeps its buffers between calls, so after the first step of a network no kernel
//! allocates: the buffers only grow to the largest tile they have seen.

use std::cell::RefCell;

thread_local! {
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's tile buffer resized to at least `len` floats.
/// The contents are unspecified on entry.
///
/// # Panics
/// If called re-entrantly on the same thread (kernels never nest tile use).
pub(crate) fn with_tile<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    TILE.with(|cell| {
        let mut buf = cell.try_borrow_mut().expect("scratch tile used re-entrantly on one thread");
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}
