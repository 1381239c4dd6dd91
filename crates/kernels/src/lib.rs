//! Compute kernels for deep residual networks (He, Zhang, Ren, Sun, "Deep Residual Learning for
//! Image Recognition", 2015).
//!
//! Everything here works on plain `f32` slices holding NHWC (channels-last) activations, so a
//! tensor of shape `n,h,w,c` is a `[n*h*w, c]` row-major matrix: convolutions become GEMMs over
//! pixel rows and per-channel operations (batch norm) vectorise along the contiguous channel axis.
//!
//! The layers above (`resnet-nn`) own the buffers and the shapes; this crate only computes, and it
//! is the one place where `unsafe` code (the GEMM call and the SIMD paths) is allowed.
//!
//! Work is spread over the process-wide thread pool of [`threads`]. Results are bitwise
//! reproducible for a given thread count: every reduction uses a fixed partition of its input.
#![deny(missing_docs)]

pub mod activations;
pub mod alloc;
pub mod batch_norm;
mod config;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod pool;
pub mod profile;
pub mod quantized;
pub mod rng;
mod scratch;
mod simd;
pub mod skip;
pub mod threads;
mod workspace;

pub use config::{CpuFeatures, KernelConfig};
pub use simd::Isa;
pub use workspace::Workspace;
