//! What an int8 micro-kernel call is told, whichever instruction set runs it: the tile's
//! geometry and its requantizing epilogue's pointers.

/// Geometry of an int8 tile: like the f32 kernels' `ConvTileArgs`, with the input and the
/// weights packed in groups of input channels, one `u32` each, so strides count groups: quads of
/// bytes for `vpdpbusd` (channels `4q .. 4q + 3`, the lowest byte channel `4q`), pairs of 16-bit
/// values for `vpmaddwd` (channels `2p`, `2p + 1`, the low half channel `2p`).
#[derive(Clone, Copy, Debug)]
pub struct ConvTileArgsI8 {
    /// Groups between the input windows of consecutive output pixels (`stride * groups`).
    pub a_pixel_stride: usize,
    /// Groups between consecutive input rows (`padded width * groups`).
    pub a_row_stride: usize,
    /// Input channel groups per pixel.
    pub groups: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Elements between consecutive weight rows (the block's width for a `[kh, kw, groups, width]` block).
    pub w_row_stride: usize,
    /// Elements between consecutive output pixels (`cout` for an NHWC output).
    pub y_pixel_stride: usize,
}

/// Where the requantizing epilogue reads the residual of a tile's first output element, laid
/// out as the output.
#[derive(Clone, Copy, Debug)]
pub enum RawResidual {
    /// No residual.
    None,
    /// 8-bit values `q` standing for `q * scale` (an activation after a ReLU).
    U8 {
        /// The tile's first residual element.
        at: *const u8,
        /// Real value of one step.
        scale: f32,
    },
    /// Signed 8-bit values `q` standing for `q * scale` (a projection shortcut's output).
    I8 {
        /// The tile's first residual element.
        at: *const i8,
        /// Real value of one step.
        scale: f32,
    },
}

/// Where and how the epilogue writes a tile.
#[derive(Clone, Copy, Debug)]
pub enum RawOutput {
    /// `clamp(round(v / scale), 0, 255)`: the ReLU and the requantization in one.
    U8 {
        /// The tile's first output element.
        at: *mut u8,
        /// `1 / scale` of the output.
        inv_scale: f32,
    },
    /// `clamp(round(v / scale), -128, 127)`: signed 8-bit values, no activation.
    I8 {
        /// The tile's first output element.
        at: *mut i8,
        /// `1 / scale` of the output.
        inv_scale: f32,
    },
}

/// The requantizing epilogue of a tile: `v = sum * mult + offset` per output channel (the
/// input and weight scales, the folded batch norm's shift and the input zero point's share),
/// plus the residual, then the output's own quantization (unsigned after a ReLU, or signed).
#[derive(Clone, Copy, Debug)]
pub struct RawRequant {
    /// Multiplier of the tile's first output channel (the others follow).
    pub mult: *const f32,
    /// Offset of the tile's first output channel (the others follow).
    pub offset: *const f32,
    /// The residual.
    pub residual: RawResidual,
    /// The output.
    pub output: RawOutput,
}
