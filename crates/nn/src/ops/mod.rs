//! The operators of a ResNet, one per file, each with its forward and backward pass.
//!
//! A backward pass takes its arguments in the order of the forward pass, adds parameter gradients
//! into [`crate::Param::grad`], and writes (or, with `accumulate`, adds) the input gradient.

mod add;
mod batch_norm;
mod conv2d;
mod cross_entropy;
mod global_avg_pool;
mod linear;
mod max_pool;
mod pad_shortcut;
mod relu;

pub use add::{add_backward, add_forward};
pub use batch_norm::{BatchNorm2d, BatchNormMode, BnReluMask, InputGradient, StatisticsSync};
pub use conv2d::Conv2d;
pub use cross_entropy::{label_rank, softmax_cross_entropy, softmax_rows, CrossEntropy};
pub use global_avg_pool::{global_avg_pool_backward, global_avg_pool_forward};
pub use linear::Linear;
pub use max_pool::MaxPool2d;
pub use pad_shortcut::PadShortcut;
pub use relu::{relu_backward, relu_forward};
