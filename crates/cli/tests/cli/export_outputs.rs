//! `resnet export` with two outputs: they may not be one file under two spellings (a refused
//! torchvision half writing nothing is tested with the v1 import in `interop_files`).

use crate::common::{run, scratch};
use std::path::Path;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/tests/fixtures").join(name).display().to_string()
}

#[test]
fn two_spellings_of_one_output_are_refused() {
    let dir = scratch();
    run(dir.path(), ["import", "--from", "torchvision", &fixture("tiny_basic.safetensors"), "--out", "t.safetensors"])
        .ok();
    run(dir.path(), ["export", "--checkpoint", "t.safetensors", "--onnx", "a.onnx", "--safetensors", "./a.onnx"])
        .fails_with(&["name the same file"]);
    assert!(!dir.path().join("a.onnx").exists());
}
