//! `resnet export` with two outputs: they may not be one file under two spellings, and a refused
//! half leaves nothing written.

use crate::common::{run, scratch};
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::ResNet;
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

#[test]
fn a_refused_torchvision_half_writes_no_onnx_either() {
    let dir = scratch();
    // torchvision weights imported as the paper's v1 network, which torchvision's class does not compute.
    let opts = ModelOptions { num_classes: Some(2), ..Default::default() };
    let net = ResNet::new(spec("resnet50-v1.5", &opts).unwrap()).unwrap();
    resnet_interop::export_torchvision(&net, &dir.path().join("tv.safetensors")).unwrap();
    run(
        dir.path(),
        ["import", "--from", "torchvision", "tv.safetensors", "--model", "resnet50", "--out", "v1.safetensors"],
    )
    .ok();
    run(
        dir.path(),
        ["export", "--checkpoint", "v1.safetensors", "--onnx", "m.onnx", "--safetensors", "tv1.safetensors"],
    )
    .fails_with(&["--safetensors", "v1 stride placement"]);
    assert!(!dir.path().join("m.onnx").exists(), "the ONNX half was written before the refusal");
}
