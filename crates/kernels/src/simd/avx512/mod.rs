//! AVX-512 micro-kernels for direct convolution over NHWC data.
//!
//! Both kernels keep a tile of accumulators in the 32 zmm registers and stream the reduction
//! dimension through them, broadcasting one input value per FMA (the broadcast folds into the
//! FMA's memory operand):
//! - [`conv_tile`]: `R` consecutive output pixels x `NB` vectors of 16 output channels, reduced
//!   over the kernel window and input channels (forward pass, and stride-1 backward-data pass
//!   with flipped weights);
//! - [`wgrad_tile`]: `RC` input channels x `NB` vectors of output channels of one kernel tap,
//!   reduced over output pixels (weight gradient).
//!
//! Partial channel vectors use masked loads and stores, so any channel count works.

//!
//! Files: [`forward`] (f32 forward tiles), [`weight_gradient`] (f32 weight-gradient tiles),
//! [`bf16`] (the bf16 tiles and conversions), `int8` (the `vpdpbusd` tile and its requantizing
//! epilogue).

/// Mask with the low `n` (at most 16) lanes set.
pub fn lane_mask(n: usize) -> std::arch::x86_64::__mmask16 {
    debug_assert!(n <= 16);
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as std::arch::x86_64::__mmask16
    }
}

mod bf16;
mod forward;
mod int8;
mod weight_gradient;

pub(crate) use bf16::IntoBh;
pub use bf16::{
    conv_tile_bf16, conv_tile_s1k3_bf16, to_bf16, transpose16_bf16, wgrad_pairs_bf16, ConvTileArgsBf16, WgradPairsArgs,
};
pub use forward::{conv_tile, conv_tile_s1k3, ConvTileArgs, RawOutputTransform};
pub use int8::{channel_masks, conv_tile_i8};
pub use weight_gradient::{wgrad_tile, wgrad_tile_s1k3, WgradTileArgs};
