//! 2-D convolution over NHWC batches, forward and both backward passes.
//!
//! Layouts: input `x` is `[n, h, w, cin]`, output `y` is `[n, oh, ow, cout]`, and the weight is
//! `[kh, kw, cin, cout]` ("HWIO"), so that a convolution is the product of the im2col matrix
//! `[n*oh*ow, kh*kw*cin]` with the weight matrix `[kh*kw*cin, cout]`.
//!
//! The API: [`forward`], [`backward_data`] and [`backward_weight`], each taking a
//! [`ConvParams`] (shape, [`ConvAlgorithm`], weight, input transform); the forward pass also an
//! [`Epilogue`] applied as it writes. [`ConvAlgorithm::choose`] picks the algorithm.
//!
//! Three algorithms (the direct and Winograd ones also with bf16 products):
//! - **direct** (AVX-512, `direct/`): the input is zero-padded a band at a time, then
//!   register-blocked micro-kernels read it in place: no im2col matrix at all;
//! - **im2col + GEMM** (any CPU, `im2col.rs`): the im2col matrix is packed one tile of output
//!   rows at a time into a per-thread buffer small enough to stay in cache, then multiplied by
//!   the GEMM backend;
//! - **Winograd F(4x4, 3x3)** (AVX-512, 3x3 stride-1 layers, `winograd/`): a quarter of the
//!   direct multiply-adds, in all three passes.
//!
//! Passes:
//! - forward (`forward.rs`): any algorithm;
//! - backward data (`backward_data.rs`), 1x1 and stride 1: a forward convolution of `dy` with
//!   the (spatially flipped) transposed weight; strided: GEMM into column tiles, scattered back
//!   per image (col2im);
//! - backward weight (`backward_weight.rs`): any algorithm, accumulated per thread over a fixed
//!   split of the rows, then summed in order (reproducible for a given thread count).
//!
//! Int8 inference convolutions (`int8/`): VNNI or AVX2 micro-kernels with a requantizing
//! epilogue.
//!
//! The other files: `shape.rs` (geometry), `input.rs` and `epilogue.rs` (what is fused on the
//! way in and out), `params.rs`, `bf16.rs` (packing to bf16 pairs), `shared_output.rs`.

mod algorithm;
mod backward_data;
mod backward_weight;
mod bf16;
mod direct;
mod epilogue;
mod forward;
mod im2col;
mod input;
pub mod int8;
mod params;
mod shape;
mod shared_output;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub use algorithm::{amx_supported, bf16_supported, ConvAlgorithm, ConvPass, Precision};
pub use backward_data::{backward_data, backward_data_reads_bf16};
pub use backward_weight::{backward_weight, backward_weight_reads_bf16};
pub use epilogue::{Epilogue, OutputTransform};
pub use forward::{adds_residual_in_place, forward};
pub(crate) use input::load_pixels;
pub use input::InputTransform;
pub use params::{ConvParams, ConvWeight};
pub(crate) use shape::output_size;
pub use shape::ConvShape;
