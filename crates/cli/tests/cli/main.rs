//! End-to-end tests of the `resnet` binary: the commands a new user or a hostile input runs,
//! checked by exit code and message. One integration binary (as ripgrep's `tests/tests.rs`);
//! each file holds one area.

mod common;
// The data crate's test servers.
#[allow(dead_code)]
#[path = "../../../data/tests/integration/stream_server.rs"]
mod stream_server;

// The interop crate's generator of deterministic weights, the twin of its PyTorch fixtures'.
#[allow(dead_code)]
#[path = "../../../interop/tests/interop/common.rs"]
mod generator;

mod data_input;
mod embed_features;
mod experiment_runs;
mod export_outputs;
mod fine_tune;
mod front_door;
mod interop_files;
mod memory;
mod quantize;
mod train_runs;
mod weights_download;
mod wording;
