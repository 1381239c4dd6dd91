//! Reusable buffers a layer hands to its kernels, so a training step allocates nothing.

/// Scratch memory owned by one layer and lent to its kernels. Each buffer only grows, to the
/// largest size the layer's shapes need, which happens during the first step.
///
/// Buffers as large as a layer's weight or input that a pass needs only while it runs are not
/// here but [`shared`]: one of each per thread for every layer, not one per layer.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    /// Per-thread partial sums in double precision.
    pub(crate) f64s: Vec<f64>,
    /// Per-channel totals of a reduction.
    pub(crate) sums: Vec<f64>,
    /// The weight in the direct forward pass's panels, kept between calls (see [`PanelCache`]).
    pub(crate) panels: PanelCache,
}

/// Buffers that every layer's passes on a thread share: a pass takes one with [`take_shared`]
/// and puts it back with [`put_shared`] when it is done, so a network holds the largest of
/// each that one of its layers needs rather than the sum over its layers (a weight-sized
/// buffer per layer is the network's size again). A nested pass that finds one taken (another
/// network run by the same worker while it waits) gets a new buffer, and the larger of the two
/// is kept.
pub(crate) mod shared {
    use std::cell::Cell;

    thread_local! {
        /// Transformed weights (flipped or transposed for the backward-data pass).
        pub(crate) static WEIGHTS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        /// Per-thread partial results of a reduction (a weight gradient per thread).
        pub(crate) static PARTIALS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        /// Weights packed as bf16 channel pairs.
        pub(crate) static BF16_WEIGHTS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
        /// Gathered input windows (im2col rows) of a strided layer's direct forward pass.
        pub(crate) static WINDOWS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        /// A bf16 input widened for a pass that reads only f32.
        pub(crate) static WIDENED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        /// The f32 output of a pass that writes one before rounding it to bf16 storage.
        pub(crate) static STAGING: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    }
}

/// Takes this thread's buffer `key` (empty when it is taken already).
pub(crate) fn take_shared<T: 'static>(key: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>) -> Vec<T> {
    key.with(std::cell::Cell::take)
}

/// Puts back a buffer [`take_shared`] gave, keeping the larger where a nested pass put one
/// back first.
pub(crate) fn put_shared<T: 'static>(key: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>, buf: Vec<T>) {
    key.with(|cell| {
        let held = cell.take();
        cell.set(if held.capacity() >= buf.capacity() { held } else { buf });
    });
}

/// A weight's panels (see `conv::pack_panels`) kept for the next forward pass of the same
/// weight version. They are made on the second pass that sees a version, so training, whose
/// weights change every step, never holds a copy, while inference makes one once.
#[derive(Debug, Default, Clone)]
pub(crate) struct PanelCache {
    /// The panels, when `key` is set.
    pub(crate) data: Vec<f32>,
    /// Weight version and panel width the panels were made from.
    pub(crate) key: Option<(u64, usize)>,
    /// The weight version of the previous pass.
    pub(crate) last_version: Option<u64>,
}

/// Grows `buf` to at least `len` and returns its first `len` elements.
pub(crate) fn take<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently held (the [`shared`] buffers are the thread's, not the layer's).
    pub fn bytes(&self) -> usize {
        self.panels.data.capacity() * 4 + (self.f64s.capacity() + self.sums.capacity()) * 8
    }
}
