//! Integration tests of `resnet-data`, one binary (see STYLE.md).

mod bad_input;
mod cifar10_jpg;
mod common;
mod detect;
#[cfg(feature = "download")]
mod download;
mod folder_walk;
mod formats;
mod loader;
#[cfg(feature = "download")]
mod pretrained;
#[cfg(feature = "download")]
mod stream_server;
