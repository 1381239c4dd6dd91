//! Training and evaluation of the networks of He et al. 2015, "Deep Residual Learning for Image
//! Recognition" (Section 3.4 for ImageNet, Section 4.2 for CIFAR-10).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod step;
pub mod system;
