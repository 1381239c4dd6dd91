//! The network layer of `resnet`: NHWC tensors, parameters, the operators of He et al. 2015
//! ("Deep Residual Learning for Image Recognition") each with its forward and backward pass, and
//! SGD with momentum and weight decay (Section 3.4).
//!
//! Layers own their parameters and the per-step state their backward pass needs (batch-norm
//! statistics, pooling indices, kernel workspaces). Activations are passed in and out as
//! [`Tensor`]s whose storage is reused from step to step, so a network built for a batch size
//! allocates nothing per step. Backward passes add into parameter gradients (`+=`), so a caller
//! zeroes them once per step.
//!
//! Every operator is checked against central finite differences in its tests (see
//! [`gradcheck`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod gradcheck;
pub mod ops;
pub mod optim;
mod param;
mod tensor;

pub use param::{Param, ParamKind};
pub use tensor::{Tensor, TensorPool};
