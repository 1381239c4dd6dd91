//! The direct convolution: register-blocked AVX-512 micro-kernels reading the zero-padded input
//! in place (no im2col matrix), for the forward pass and the weight gradient.

#[cfg(target_arch = "x86_64")]
mod forward;
#[cfg(target_arch = "x86_64")]
mod gathered;
#[cfg(target_arch = "x86_64")]
mod kernels;
mod plan;
mod strip;
#[cfg(target_arch = "x86_64")]
mod weight_gradient;

#[cfg(target_arch = "x86_64")]
pub(super) use forward::forward_direct;
#[cfg(target_arch = "x86_64")]
pub(super) use gathered::{backward_weight_gathered, gathered_weight_gradient_fits};
#[cfg(target_arch = "x86_64")]
pub(super) use kernels::{conv_pixels, ConvKernel, Tile};
#[cfg(test)]
pub(super) use plan::transform_run_pixels;
pub(super) use plan::{input_run, DirectPlan, TaskBand, TASK_WEIGHT_BYTES};
pub(super) use weight_gradient::pairs_weight_gradient_fits;
#[cfg(target_arch = "x86_64")]
pub(super) use weight_gradient::{backward_weight_direct, backward_weight_pairs};
