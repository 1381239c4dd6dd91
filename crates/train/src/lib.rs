//! Training and evaluation of the networks of He et al. 2015, "Deep Residual Learning for Image
//! Recognition": SGD with momentum and weight decay, the paper's schedules (Section 3.4 for
//! ImageNet, Section 4.2 for CIFAR-10), checkpoints that resume exactly, metrics and plots.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod evaluate;
pub mod fine_tune;
pub mod fsutil;
pub mod inference;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod plot;
pub mod schedule;
pub mod step;
pub mod system;
pub mod trainer;
