//! End-to-end tests of the `resnet` binary: the commands a new user or a hostile input runs,
//! checked by exit code and message. One integration binary (as ripgrep's `tests/tests.rs`);
//! each file holds one area.

mod common;
// The data crate's test servers.
#[allow(dead_code)]
#[path = "../../../data/tests/integration/stream_server.rs"]
mod stream_server;

mod data_input;
mod experiment_runs;
mod export_outputs;
mod front_door;
mod interop_files;
mod memory;
mod train_runs;
mod weights_download;
mod wording;
