//! Integration tests of `resnet-data`, one binary (see STYLE.md).

mod bad_input;
mod cifar10_jpg;
mod common;
#[cfg(feature = "download")]
mod download;
mod formats;
mod loader;
