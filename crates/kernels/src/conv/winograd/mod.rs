//! 3x3 stride-1 convolutions by Winograd's F(4x4, 3x3): each 4x4 block of output pixels costs
//! 36 multiply-adds per (input, output) channel pair instead of 144, for a few adds per pixel
//! in the transforms ([`crate::simd::winograd`]).
//!
//! The output is cut into 4x4 tiles, numbered over the whole batch; each task takes a run of
//! tiles and
//! 1. transforms their 6x6 input tiles into `v = [tiles, 36, cin]` (applying the fused batch
//!    norm and ReLU of the input as it reads it; the padding stays zero);
//! 2. multiplies, for each of the 36 positions, `v[:, p]` (`tiles x cin`) by the transformed filter
//!    `u[p]` (`cin x cout`) into `m[:, p]` (`m = [tiles, 36, cout]`), with the direct
//!    convolution's register-blocked micro-kernel seen as a 1x1 convolution;
//! 3. transforms `m` back into 4x4 output tiles, cut at the image's edge (gathering a
//!    training-mode batch norm's sums of the output as it writes it).
//!
//! With few tiles (ResNet-50's deep layers at small batches) the forward pass runs by blocks
//! of output channels instead ([`forward_by_channels`]): all tiles transformed once, then each
//! task transforms its block's part of the filter and runs steps 2 and 3 for its channels.
//!
//! The weight gradient runs the adjoint: the same transformed inputs, the output gradient's 4x4
//! tiles through `A dy A^T`, their products summed over the tiles per position, then `G^T du G`;
//! per thread over runs of tiles where its gradient stays in cache, else a chunk of tiles at a
//! time with each position summed by one thread.
//!
//! Both buffers of a task live in the per-thread scratch tile, sized to stay in L2. The
//! transformed filter is computed once per call. The rounding error is several times the
//! direct sum's, as the transforms' constants reach 8 (docs/tuning.md, "Rounding").

use crate::conv::algorithm::bf16_supported;
use crate::conv::shape::ConvShape;
use crate::simd::{self, Isa};
use crate::threads::{self};

/// Output pixels per tile side, and positions (input pixels) per tile.
pub(super) const M: usize = 4;
pub(super) const POSITIONS: usize = 36;

/// Floats of per-task scratch (transformed input and products): 128 KiB, so that narrow layers
/// keep their tiles close to L1 (docs/tuning.md)...
pub(super) const TASK_FLOATS: usize = 32 * 1024;
/// ...but at least this many tiles, over which wide layers spread the reading of their
/// transformed filter (docs/tuning.md).
pub(super) const MIN_TILES: usize = 16;

/// Most floats of a whole transformed filter: up to 256 channels in and out (ResNet-50's third
/// stage, 9.4 MB; a thread's buffer for it, and for the weight gradient's per-thread partials, is
/// shared by all layers). Wider layers run here only by channel blocks ([`runs_by_channels`]),
/// which never hold the whole transformed filter (docs/tuning.md).
pub(super) const FILTER_FLOATS: usize = 36 * 256 * 256;

/// Fewest output tiles for which transforming the filter on every call pays, run by runs of
/// tiles (docs/tuning.md).
pub(super) const MIN_TILES_TO_PAY: usize = 32;

/// Fewest output tiles for which Winograd pays when run by channel blocks (docs/tuning.md).
pub(super) const MIN_TILES_BY_CHANNELS: usize = 16;

/// Most output tiles for which [`forward`] runs by blocks of output channels
/// ([`forward_by_channels`]) rather than by runs of tiles, each of which would read the whole
/// filter (docs/tuning.md).
pub(super) const FEW_TILES: usize = 64;

/// [`FEW_TILES`] for layers whose transformed filter is too large to hold whole
/// ([`FILTER_FLOATS`]), which run here only by channel blocks: ResNet-50's 7x7 layers at batch
/// 32 (docs/tuning.md).
pub(super) const FEW_TILES_WIDE: usize = 128;

/// Floats of a channel block's transformed filter chunk (256 KiB), to stay in L2 with the
/// transformed inputs it meets.
pub(super) const BLOCK_FILTER_FLOATS: usize = 64 * 1024;

/// Whether a layer's shape runs here on an AVX-512 CPU: 3x3, stride 1, padding up to 2,
/// channel counts in whole vectors, transformed filter small enough (or never held whole).
pub(super) fn shape_fits(s: &ConvShape) -> bool {
    s.kh == 3
        && s.kw == 3
        && s.stride == 1
        && s.pad <= 2
        && s.cin.is_multiple_of(16)
        && s.cout.is_multiple_of(16)
        && (holds_filter(s) || runs_by_channels(s))
}

/// Whether a layer runs here on this CPU: its shape [`shape_fits`] and the CPU has AVX-512.
pub(super) fn fits(s: &ConvShape) -> bool {
    shape_fits(s) && simd::isa() >= Isa::Avx512
}

/// Whether a shape that fits runs with bf16 products: square layers of 16, 32 or 64 channels
/// (constant-stride kernels), and any other that runs by runs of tiles with its transformed
/// filter held whole, in both its forward and its backward-data pass (the direct bf16
/// micro-kernel; layers with few tiles keep the f32 channel blocks).
pub(super) fn has_bf16_products(s: &ConvShape) -> bool {
    let square = s.cin == s.cout && matches!(s.cin, 16 | 32 | 64);
    let by_tiles = |s: &ConvShape| !runs_by_channels(s);
    square || (holds_filter(s) && by_tiles(s) && by_tiles(&ConvShape { cin: s.cout, cout: s.cin, ..*s }))
}

/// Most floats of a transformed filter gradient, which the weight gradient of wide layers holds
/// once for all threads (`weight_gradient::by_positions`): 512 channels in and out (37.7 MB),
/// ResNets' widest 3x3 layers.
pub(super) const GRADIENT_FLOATS: usize = 36 * 512 * 512;

/// Whether the weight gradient of a shape runs here: it [`fits`] and its transformed filter
/// gradient stays within [`GRADIENT_FLOATS`].
pub(super) fn fits_weight_gradient(s: &ConvShape) -> bool {
    fits(s) && fits_gradient_size(s)
}

/// Whether a layer's transformed filter gradient stays within [`GRADIENT_FLOATS`].
pub(super) fn fits_gradient_size(s: &ConvShape) -> bool {
    POSITIONS * s.cin * s.cout <= GRADIENT_FLOATS
}

/// Whether a layer's transformed filter is small enough to hold whole ([`FILTER_FLOATS`]).
pub(super) fn holds_filter(s: &ConvShape) -> bool {
    POSITIONS * s.cin * s.cout <= FILTER_FLOATS
}

/// Whether a shape that [`fits`] runs with bf16 products ([`forward`] with `bf16`): it
/// [`has_bf16_products`], on a CPU with AVX512_BF16.
pub(super) fn fits_bf16(s: &ConvShape) -> bool {
    fits(s) && has_bf16_products(s) && bf16_supported()
}

/// Whether Winograd is worth choosing for a shape that [`fits`]: enough output tiles to repay
/// the filter transform.
pub(super) fn pays_off(s: &ConvShape) -> bool {
    let tiles = tile_count(s);
    tiles >= if runs_by_channels(s) { MIN_TILES_BY_CHANNELS } else { MIN_TILES_TO_PAY }
}

/// Output tiles of a layer, over the whole batch.
pub(super) fn tile_count(s: &ConvShape) -> usize {
    s.n * s.out_h().div_ceil(M) * s.out_w().div_ceil(M)
}

/// Tiles per task: as many as the scratch budget holds (at least [`MIN_TILES`]), but at least
/// four tasks per thread.
pub(super) fn tiles_per_task(s: &ConvShape, tiles: usize) -> usize {
    let fit = (TASK_FLOATS / (POSITIONS * (s.cin + s.cout))).max(MIN_TILES);
    let spread = tiles.div_ceil(4 * threads::num_threads());
    fit.min(spread).max(1)
}

mod forward;
mod product;
#[cfg(test)]
mod tests;
mod tiles;
mod weight_gradient;

pub(super) use forward::forward;
use forward::runs_by_channels;
pub(super) use weight_gradient::backward_weight;
