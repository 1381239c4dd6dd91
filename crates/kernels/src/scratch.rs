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
    static HELD_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's tile buffer resized to at least `len` floats.
/// The contents are unspecified on entry.
///
/// A buffer already lent on this thread is not lent again: a nested use gets a fresh one (see
/// [`lend`]).
pub(crate) fn with_tile<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    lend(&TILE, len, f)
}

/// Runs `f` with the first `len` elements of this thread's buffer `key`, grown if needed; if that
/// buffer is already lent further up this thread's stack, with a fresh buffer instead.
///
/// Nesting happens when passes run on pool workers: a worker that holds a buffer while it waits
/// for a parallel part of its kernel may meanwhile run another job, such as a kernel of a second
/// network that another thread runs at the same time, which asks for the same buffer.
fn lend<T: Copy + Default, R>(key: &'static LocalKey<RefCell<Vec<T>>>, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(take(&mut buf, len)),
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

/// Runs `f` with this thread's bf16 buffers resized to at least `len16` bf16 values and `len32`
/// bf16 pairs (usable inside [`with_tile`]). The contents are unspecified on entry; a nested use
/// gets fresh buffers (see [`lend`]).
pub(crate) fn with_bf16<R>(len16: usize, len32: usize, f: impl FnOnce(&mut [u16], &mut [u32]) -> R) -> R {
    BF16.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            f(take(a, len16), take(b, len32))
        }
        Err(_) => f(&mut vec![0; len16], &mut vec![0; len32]),
    })
}

/// Runs `f` with this thread's buffer of held pairs resized to at least `len` bf16 pairs: for
/// pairs a thread holds while the tasks of a parallel part, some of which it runs itself, use
/// [`with_bf16`] (which would otherwise be nested there, and allocate). The contents are
/// unspecified on entry; a nested use gets a fresh buffer (see [`lend`]).
pub(crate) fn with_held_pairs<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    lend(&HELD_PAIRS, len, f)
}

/// Runs `f` with this thread's filter buffer resized to at least `len` floats: a transformed
/// filter the calling thread prepares and the workers read, one buffer for all layers rather
/// than one per layer. The contents are unspecified on entry; a nested use gets a fresh buffer
/// (see [`lend`]).
pub(crate) fn with_filter<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    lend(&FILTER, len, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nested use of a buffer gets a separate one of its own length, and the outer one keeps
    /// its contents.
    #[test]
    fn nested_uses_get_their_own_buffers() {
        with_filter(8, |outer| {
            outer.fill(1.0);
            with_filter(5, |inner| {
                assert_eq!(inner.len(), 5);
                inner.fill(2.0);
                with_tile(3, |tile| tile.fill(3.0));
                with_tile(3, |tile| with_tile(4, |nested| assert_eq!((tile.len(), nested.len()), (3, 4))));
            });
            assert!(outer.iter().all(|&v| v == 1.0));
        });
        with_bf16(4, 2, |a, b| with_bf16(6, 3, |c, d| assert_eq!((a.len(), b.len(), c.len(), d.len()), (4, 2, 6, 3))));
    }
}
