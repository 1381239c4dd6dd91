//! Post-training static quantization of ResNets to int8 (the deployment form): calibrate the
//! activation ranges on a few images ([`Calibrator`]), record them ([`QuantRecord`]), and run
//! the network with 8-bit activations and weights ([`QuantizedResNet`]).
//!
//! - Weights: each convolution with its batch norm folded in, int8, symmetric, one scale per
//!   output channel.
//! - Activations: 8 bits per tensor. Every activation after a ReLU is unsigned with zero point
//!   0; the network input (normalised pixels, signed) gets a zero point.
//! - The requantizing epilogue of each convolution applies the scales, the folded shift, the
//!   residual addition and the ReLU before it writes 8-bit values
//!   (`resnet_kernels::conv::int8`).
//! - In higher precision: a projection shortcut's output (f32, added by the block's last
//!   convolution), the global average pool's output and the classifier (f32), which together
//!   are a negligible share of the work.
//!
//! Files: `record.rs` (what a quantized checkpoint carries), `calibrate.rs` (observers and
//! ranges), `network.rs` (the int8 network).

mod calibrate;
mod error;
mod network;
mod record;

pub use calibrate::Calibrator;
pub use error::QuantError;
pub use network::{QuantizedResNet, QuantizedWeights};
pub use record::{activation_points, projection, unit_name, ActivationQuant, Method, QuantRecord, RECORD_FORMAT};
