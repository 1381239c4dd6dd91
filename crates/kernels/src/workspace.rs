//! Reusable buffers a layer hands to its kernels, so a training step allocates nothing.

/// Scratch memory owned by one layer and lent to its kernels. Each buffer only grows, to the
/// largest size the layer's shapes need, which happens during the first step.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    /// Transformed weights (flipped or transposed for the backward-data pass).
    pub(crate) weights: Vec<f32>,
    /// Per-thread partial results of a reduction.
    pub(crate) partials: Vec<f32>,
    /// Per-thread partial sums in double precision.
    pub(crate) f64s: Vec<f64>,
    /// Per-channel totals of a reduction.
    pub(crate) sums: Vec<f64>,
    /// Weights packed as bf16 channel pairs.
    pub(crate) bf16: Vec<u32>,
    /// Gathered input windows (im2col rows) of a strided layer's direct forward pass.
    pub(crate) windows: Vec<f32>,
    /// The weight in the direct forward pass's panels, kept between calls (see [`PanelCache`]).
    pub(crate) panels: PanelCache,
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

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        (self.weights.capacity()
            + self.partials.capacity()
            + self.bf16.capacity()
            + self.windows.capacity()
            + self.panels.data.capacity())
            * 4
            + (self.f64s.capacity() + self.sums.capacity()) * 8
    }
}
