//! Runnable examples of the `resnet` crates; see the `examples` of this package:
//! `cargo run --release -p resnet-examples --example train_cifar [CIFAR-10 folder]`, then
//! `--example evaluate CHECKPOINT` and `--example predict CHECKPOINT IMAGE`; `--example
//! linear_probe TRAIN TEST` fits a logistic regression to features written by `resnet embed`.
#![forbid(unsafe_code)]
