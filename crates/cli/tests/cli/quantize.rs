//! `resnet quantize` and the int8 checkpoints it writes: eval and predict take them like any
//! other, and bad input (a record that does not fit, calibration images of another shape,
//! int8 training) gets a clear error.

use crate::common::{idx, png, run, scratch};
use resnet_train::checkpoint::Checkpoint;
use std::path::Path;

/// Trains a CIFAR ResNet-8 for a few steps on the synthetic dataset into `dir/run`.
fn trained(dir: &Path) {
    let args = ["train", "--model", "cifar-resnet8", "--synthetic-train", "64", "--synthetic-test", "32"];
    let more = ["--synthetic-size", "16", "--batch-size", "16", "--epochs", "1", "--out", "run", "--quiet"];
    run(dir, args.iter().chain(&more)).ok();
}

#[test]
fn a_quantized_checkpoint_evaluates_and_predicts_like_its_float_one() {
    let dir = scratch();
    trained(dir.path());
    let float = "run/checkpoints/last.safetensors";
    let q = run(dir.path(), ["quantize", "--checkpoint", float, "--calibration", "40", "--out", "q.safetensors"]).ok();
    assert!(q.stdout.contains("int8 cifar-resnet8") && q.stdout.contains("40 synthetic images"), "{}", q.stdout);
    let ckpt = Checkpoint::load(&dir.path().join("q.safetensors")).unwrap();
    let record = ckpt.quantization.expect("a quantization record");
    assert_eq!(record.calibration_images, 40);
    assert!(ckpt.training.is_none());
    // The dataset comes from the run the float network was trained in, as for the float file.
    let json = |path: &str| -> serde_json::Value {
        let r = run(dir.path(), ["eval", "--checkpoint", path, "--json"]).ok();
        serde_json::from_str(&r.stdout).unwrap()
    };
    let (f, i) = (json(float), json("q.safetensors"));
    assert_eq!((f["count"].as_u64(), i["count"].as_u64()), (Some(32), Some(32)));
    assert_eq!(i["precision"], "int8");
    assert_eq!(f["precision"], "fp32");
    let image = dir.path().join("image.png");
    let pixels: Vec<u8> = (0..16 * 16 * 3).map(|v| (v * 13 % 251) as u8).collect();
    std::fs::write(&image, png(16, 16, &pixels)).unwrap();
    let p = run(dir.path(), ["predict", "--checkpoint", "q.safetensors", "image.png", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(v[0]["predictions"].as_array().map(Vec::len), Some(5));
    // Never over its input, never over an existing file without --force.
    run(dir.path(), ["quantize", "--checkpoint", float, "--out", float]).fails_with(&["input of this command"]);
    run(dir.path(), ["quantize", "--checkpoint", float, "--out", "q.safetensors"]).fails_with(&["already exists"]);
}

#[test]
fn a_record_that_does_not_fit_its_network_is_refused_naming_the_file() {
    let dir = scratch();
    trained(dir.path());
    run(
        dir.path(),
        [
            "quantize",
            "--checkpoint",
            "run/checkpoints/last.safetensors",
            "--calibration",
            "16",
            "--out",
            "q.safetensors",
        ],
    )
    .ok();
    let path = dir.path().join("q.safetensors");
    let mut ckpt = Checkpoint::load(&path).unwrap();
    ckpt.quantization.as_mut().unwrap().activations.remove("layer2.0.conv1");
    std::fs::write(dir.path().join("bad.safetensors"), ckpt.to_bytes()).unwrap();
    run(dir.path(), ["eval", "--checkpoint", "bad.safetensors"]).fails_with(&["bad.safetensors", "layer2.0.conv1"]);
    let mut ckpt = Checkpoint::load(&path).unwrap();
    ckpt.quantization.as_mut().unwrap().activations.get_mut("input").unwrap().scale = -1.0;
    std::fs::write(dir.path().join("neg.safetensors"), ckpt.to_bytes()).unwrap();
    run(dir.path(), ["predict", "--checkpoint", "neg.safetensors", "x.png"]).fails_with(&[
        "neg.safetensors",
        "'input'",
        "not positive",
    ]);
}

#[test]
fn calibration_images_of_another_shape_are_refused() {
    let dir = scratch();
    trained(dir.path());
    // One-channel 8x8 images for a three-channel network.
    let data = dir.path().join("gray");
    std::fs::create_dir_all(&data).unwrap();
    for (prefix, n) in [("train", 16u32), ("t10k", 8)] {
        let pixels: Vec<u8> = (0..n * 64).map(|i| (i * 7) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(data.join(format!("{prefix}-images-idx3-ubyte")), idx(&[n, 8, 8], &pixels)).unwrap();
        std::fs::write(data.join(format!("{prefix}-labels-idx1-ubyte")), idx(&[n], &labels)).unwrap();
    }
    let args = ["quantize", "--checkpoint", "run/checkpoints/last.safetensors", "--dataset", "idx", "--data", "gray"];
    run(dir.path(), args.iter().chain(&["--out", "q.safetensors"])).fails_with(&["8x8x1", "mean image"]);
    assert!(!dir.path().join("q.safetensors").exists());
    run(dir.path(), args.iter().chain(&["--method", "percentile", "--percentile", "0", "--out", "q.safetensors"]))
        .fails_with(&["percentile 0"]);
}

#[test]
fn bench_times_int8_inference_and_refuses_int8_training() {
    let dir = scratch();
    let args = ["bench", "--model", "resnet20", "--batch", "4", "--steps", "1", "--warmup", "0", "--precision", "int8"];
    let r = run(dir.path(), args.iter().chain(&["--mode", "infer", "--json"])).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["precision"], "int8");
    assert!(v["images_per_sec"].as_f64().is_some_and(|x| x > 0.0));
    run(dir.path(), args.iter().chain(&["--mode", "train"])).fails_with(&["int8", "--mode infer"]);
}
