//! Runnable examples of the `resnet` crates; see the `examples` of this package:
//! `cargo run --release -p resnet-examples --example train_cifar [CIFAR-10 folder]`, then
//! `--example evaluate CHECKPOINT` and `--example predict CHECKPOINT IMAGE`.
#![forbid(unsafe_code)]
