//! The front door: what a new user's first commands and a shell pipeline do to the binary.

use crate::common::{command, scratch};
use std::process::Stdio;

/// `resnet info resnet18 --json | head -1`, with the reader gone before the first line is written.
/// A Unix tool stops quietly there (killed by SIGPIPE, or a clean exit), never with a panic.
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    let dir = scratch();
    // The read end is closed before the child starts, so its very first write meets a broken pipe.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = command(dir.path())
        .args(["info", "resnet18", "--json"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("the resnet binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic reached the user:\n{stderr}");
    assert_ne!(out.status.code(), Some(101), "exit 101 (a panic):\n{stderr}");
    assert!(stderr.is_empty(), "a closed pipe is not an error to report:\n{stderr}");
}
