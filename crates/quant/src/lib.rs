//! Post-training static quantization of ResNets to int8 (the deployment form): calibrate the
//! activation ranges on a few images ([`Calibrator`]), record them ([`QuantRecord`]), and run
//! the network with 8-bit activations and weights ([`QuantizedResNet`]).
//!
//! - Weights: each convolution with its batch norm folded in, int8, symmetric, one scale per
//!   output channel.
//! - Activations: 8 bits per tensor. Every activation after a ReLU is unsigned with zero point
//!   0; the network input (normalised pixels, signed) gets a zero point; a projection
//!   shortcut's output is signed and symmetric.
//! - The requantizing epilogue of each convolution applies the scales, the folded shift, the
//!   residual addition and the ReLU before it writes 8-bit values
//!   (`resnet_kernels::conv::int8`).
//! - The classifier: int8 weights, symmetric, one step per output, on the global average
//!   pool's output kept real (f32): one value per channel and image, nothing to save there.
//!
//! Files: `record.rs` (what a quantized checkpoint carries), `calibrate.rs` (observers and
//! ranges), `network.rs` (the int8 network), `classifier.rs` (its classifier).

mod calibrate;
mod classifier;
mod error;
mod network;
mod record;

pub use calibrate::Calibrator;
pub use classifier::QuantizedClassifier;
pub use error::QuantError;
pub use network::{QuantizedResNet, QuantizedWeights, GROUP_BYTES};
pub use record::{activation_points, projection, unit_name, ActivationQuant, Method, QuantRecord, RECORD_FORMAT};
