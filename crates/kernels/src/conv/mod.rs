//! 2-D convolution over NHWC batches, forward and both backward passes.
//!
//! Layouts: input `x` is `[n, h, w, cin]`, output `y` is `[n, oh, ow, cout]`, and the weight is
//! `[kh, kw, cin, cout]` ("HWIO"), so that a convolution is the product of the im2col matrix
//! `[n*oh*ow, kh*kw*cin]` with the weight matrix `[kh*kw*cin, cout]`.
//!
//! Three algorithms ([`ConvAlgorithm`]; the direct and Winograd ones also with bf16 products):
//! - **direct** (AVX-512): the input is zero-padded once, then register-blocked micro-kernels
//!   ([`crate::simd::avx512`]) read it in place: no im2col matrix at all;
//! - **im2col + GEMM** (portable): the im2col matrix is packed one tile of output rows at a time
//!   into a per-thread buffer small enough to stay in cache, then multiplied by the GEMM backend;
//! - **Winograd F(4x4, 3x3)** (AVX-512, f32, 3x3 stride-1 layers): a quarter of the direct
//!   multiply-adds, in all three passes ([`winograd`]).
//!
//! Passes:
//! - forward: either algorithm;
//! - backward data, stride 1: a forward convolution of `dy` with the spatially flipped,
//!   transposed weight (no scatter, same fast path as forward);
//! - backward data, strided: GEMM into column tiles, scattered back per image (col2im);
//! - backward weight: either algorithm, accumulated per thread over a fixed split of the rows,
//!   then summed in order (reproducible for a given thread count).

mod algorithm;
mod backward_data;
mod backward_weight;
mod bf16;
mod direct;
mod epilogue;
mod forward;
mod im2col;
mod input;
mod params;
mod shape;
mod shared_output;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub use algorithm::{amx_supported, bf16_supported, ConvAlgorithm, ConvPass, Precision};
pub use backward_data::backward_data;
pub use backward_weight::backward_weight;
pub use epilogue::{Epilogue, OutputTransform};
pub use forward::{adds_residual_in_place, forward};
pub use input::InputTransform;
pub use params::{ConvParams, ConvWeight};
pub(crate) use shape::output_size;
pub use shape::ConvShape;
