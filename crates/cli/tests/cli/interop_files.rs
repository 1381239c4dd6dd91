//! Checkpoints, weights, eval, predict, import and export end to end: files that disagree with
//! themselves, weights that overflow, outputs that would overwrite inputs, hostile sizes, and the
//! ONNX input contract checked in onnxruntime against `predict`.

use crate::common::*;
use resnet_data::{EvalView, Normalize};
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{InitConfig, ResNet, TensorData};
use resnet_train::checkpoint::{Checkpoint, Preprocess};
use std::path::{Path, PathBuf};
use std::process::Command;

// ----- fixtures built here -----

/// A 32x32 RGB image file of noise.
fn image(dir: &Path, name: &str, seed: u64) -> (PathBuf, Vec<u8>) {
    let pixels = noise(32 * 32 * 3, seed);
    let path = dir.join(name);
    std::fs::write(&path, png(32, 32, &pixels)).unwrap();
    (path, pixels)
}

/// A checkpoint of a CIFAR ResNet-8 (random weights) with `classes` classes and `normalize`.
pub fn checkpoint(classes: usize, normalize: Normalize) -> Checkpoint {
    let opts = ModelOptions { num_classes: Some(classes), ..Default::default() };
    let mut net = ResNet::new(spec("cifar-resnet8", &opts).unwrap()).unwrap();
    net.init(&InitConfig { seed: 3, ..InitConfig::default() });
    let pre = Preprocess { normalize, input_size: (32, 32), channels: 3, eval_view: EvalView::Full };
    Checkpoint::from_network(&net, (0..classes).map(|i| format!("class{i}")).collect(), pre)
}

pub fn pixel_mean() -> Normalize {
    let mean = noise(32 * 32 * 3, 99).iter().map(|&v| f32::from(v) / 2.0 + 60.0).collect();
    Normalize::PixelMean { mean, scale: 1.0 / 64.0 }
}

pub fn save(dir: &Path, name: &str, c: &Checkpoint) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, c.to_bytes()).unwrap();
    path
}

fn f32_tensor<'a>(c: &'a mut Checkpoint, name: &str) -> &'a mut Vec<f32> {
    match &mut c.state.iter_mut().find(|t| t.name == name).unwrap().data {
        TensorData::F32(v) => v,
        TensorData::I64(_) => panic!("{name} is not F32"),
    }
}

/// A tiny training run on the synthetic set; returns its run directory and what it printed.
fn trained_run(dir: &Path) -> (PathBuf, String) {
    let r = run(
        dir,
        [
            "train",
            "--model",
            "cifar-resnet8",
            "--dataset",
            "synthetic",
            "--synthetic-train",
            "16",
            "--synthetic-test",
            "8",
            "--synthetic-size",
            "32",
            "--batch-size",
            "8",
            "--iterations",
            "2",
            "--quiet",
            "--out",
            "run",
        ],
    )
    .ok();
    (dir.join("run"), r.stdout)
}

fn checkpoint_arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

// ----- item 5: metadata that disagrees with the tensors -----

#[test]
fn a_checkpoint_with_fewer_class_names_than_outputs_is_refused_everywhere() {
    let dir = scratch();
    let mut c = checkpoint(10, pixel_mean());
    c.classes.truncate(2);
    let ckpt = checkpoint_arg(&save(dir.path(), "short.safetensors", &c));
    let (img, _) = image(dir.path(), "x.png", 1);
    let img = img.to_str().unwrap();
    let r = run(dir.path(), ["predict", "--checkpoint", &ckpt, img]).fails_with(&[
        "short.safetensors",
        "2 class names",
        "10 outputs",
    ]);
    assert!(!r.stdout.contains('%'), "{}", r.stdout);
    run(dir.path(), ["eval", "--checkpoint", &ckpt, "--dataset", "synthetic"]).fails_with(&["2 class names"]);
    run(dir.path(), ["export", "--checkpoint", &ckpt, "--onnx", "x.onnx"]).fails_with(&["2 class names"]);

    let mut c = checkpoint(10, pixel_mean());
    c.spec.widths = vec![16, 32, 128];
    let ckpt = checkpoint_arg(&save(dir.path(), "wide.safetensors", &c));
    run(dir.path(), ["predict", "--checkpoint", &ckpt, img]).fails_with(&["wide.safetensors", "layer3.0.conv1.weight"]);
}

// ----- item 6: weights that overflow -----

#[test]
fn non_finite_buffers_are_refused_at_load_and_overflowing_outputs_at_prediction() {
    let dir = scratch();
    let (img, _) = image(dir.path(), "x.png", 2);
    let img = img.to_str().unwrap();
    let mut c = checkpoint(10, pixel_mean());
    f32_tensor(&mut c, "layer2.0.bn1.running_var")[0] = f32::INFINITY;
    let ckpt = checkpoint_arg(&save(dir.path(), "inf.safetensors", &c));
    run(dir.path(), ["predict", "--checkpoint", &ckpt, img, "--json"]).fails_with(&[
        "inf.safetensors",
        "layer2.0.bn1.running_var",
        "not finite",
    ]);
    run(dir.path(), ["eval", "--checkpoint", &ckpt, "--dataset", "synthetic"])
        .fails_with(&["layer2.0.bn1.running_var"]);

    // Finite weights whose products overflow: the logits are infinite.
    let mut c = checkpoint(10, pixel_mean());
    f32_tensor(&mut c, "fc.weight").iter_mut().for_each(|v| *v = 3e38);
    let ckpt = checkpoint_arg(&save(dir.path(), "huge.safetensors", &c));
    let r = run(dir.path(), ["predict", "--checkpoint", &ckpt, img, "--json"]).fails_with(&["not finite"]);
    assert!(!r.stdout.contains("null"), "{}", r.stdout);
    run(dir.path(), ["eval", "--checkpoint", &ckpt, "--dataset", "synthetic", "--synthetic", "4", "4", "32"])
        .fails_with(&["not finite on 4 of 4 images"]);
}

// ----- item 8: outputs over inputs -----

#[test]
fn export_and_import_never_write_over_their_input_nor_an_existing_file_without_force() {
    let dir = scratch();
    let ckpt_path = save(dir.path(), "c.safetensors", &checkpoint(10, pixel_mean()));
    let ckpt = checkpoint_arg(&ckpt_path);
    let before = std::fs::read(&ckpt_path).unwrap();
    run(dir.path(), ["export", "--checkpoint", &ckpt, "--onnx", &ckpt]).fails_with(&["input", "c.safetensors"]);
    run(dir.path(), ["export", "--checkpoint", &ckpt, "--onnx", "./c.safetensors", "--force"]).fails_with(&["input"]);
    run(dir.path(), ["export", "--checkpoint", &ckpt, "--safetensors", &ckpt, "--force"]).fails_with(&["input"]);
    assert_eq!(std::fs::read(&ckpt_path).unwrap(), before, "the checkpoint was changed");

    std::fs::write(dir.path().join("m.onnx"), b"keep").unwrap();
    run(dir.path(), ["export", "--checkpoint", &ckpt, "--onnx", "m.onnx"]).fails_with(&["m.onnx", "--force"]);
    assert_eq!(std::fs::read(dir.path().join("m.onnx")).unwrap(), b"keep");
    run(dir.path(), ["export", "--checkpoint", &ckpt, "--onnx", "m.onnx", "--force"]).ok();

    // import: the input itself, and an existing run's checkpoint.
    let weights = dir.path().join("w.safetensors");
    resnet_interop::export_torchvision(&checkpoint(10, pixel_mean()).network(Path::new("c")).unwrap(), &weights)
        .unwrap();
    let w = checkpoint_arg(&weights);
    run(dir.path(), ["import", "--from", "torchvision", &w, "--out", &w, "--force"]).fails_with(&["input"]);
    run(dir.path(), ["import", "--from", "torchvision", &w, "--out", &ckpt]).fails_with(&["already exists", "--force"]);
    assert_eq!(std::fs::read(&ckpt_path).unwrap(), before, "the checkpoint was changed");
    run(dir.path(), ["import", "--from", "torchvision", &w, "--out", &ckpt, "--force"]).ok();
}

// ----- item 2: the paper's v1 ResNet-50 is not torchvision's -----

#[test]
fn importing_torchvision_weights_as_v1_warns_and_v1_is_not_exported_as_torchvision() {
    let dir = scratch();
    let opts = ModelOptions { num_classes: Some(2), ..Default::default() };
    let net = ResNet::new(spec("resnet50-v1.5", &opts).unwrap()).unwrap();
    resnet_interop::export_torchvision(&net, &dir.path().join("tv.safetensors")).unwrap();
    let r = run(
        dir.path(),
        ["import", "--from", "torchvision", "tv.safetensors", "--model", "resnet50", "--out", "c.safetensors"],
    )
    .ok();
    assert!(r.stderr.contains("warning") && r.stderr.contains("resnet50-v1.5"), "{}", r.stderr);
    run(dir.path(), ["export", "--checkpoint", "c.safetensors", "--safetensors", "out.safetensors"])
        .fails_with(&["v1 stride placement", "v1.5"]);
    assert!(!dir.path().join("out.safetensors").exists());
    // The refusal comes before anything is written: no ONNX half is left behind.
    run(
        dir.path(),
        ["export", "--checkpoint", "c.safetensors", "--onnx", "m.onnx", "--safetensors", "out.safetensors"],
    )
    .fails_with(&["--safetensors", "v1 stride placement"]);
    assert!(!dir.path().join("m.onnx").exists(), "the ONNX half was written before the refusal");
    let r = run(dir.path(), ["import", "--from", "torchvision", "tv.safetensors", "--out", "d.safetensors"]).ok();
    assert!(r.stdout.contains("resnet50-v1.5") && !r.stderr.contains("warning"), "{}{}", r.stdout, r.stderr);
}

// ----- item 12: file names that are not UTF-8 -----

#[cfg(unix)]
#[test]
fn predict_takes_file_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch();
    let ckpt = checkpoint_arg(&save(dir.path(), "c.safetensors", &checkpoint(10, pixel_mean())));
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    std::fs::write(dir.path().join(name), png(32, 32, &noise(32 * 32 * 3, 4))).unwrap();
    let r = run(dir.path(), [std::ffi::OsStr::new("predict"), "--checkpoint".as_ref(), ckpt.as_ref(), name]).ok();
    assert!(r.stdout.contains("caf\u{fffd}.png"), "{}", r.stdout);
    let r = run(
        dir.path(),
        [std::ffi::OsStr::new("predict"), "--json".as_ref(), "--checkpoint".as_ref(), ckpt.as_ref(), name],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["image"], "caf\u{fffd}.png");
}

// ----- items 13 and 17: sizes that would exhaust memory -----

#[test]
fn absurd_sizes_are_errors_not_aborts() {
    let dir = scratch();
    let mut c = checkpoint(10, pixel_mean());
    c.spec.depths = vec![100_000_000, 1, 1];
    let ckpt = checkpoint_arg(&save(dir.path(), "deep.safetensors", &c));
    let (img, _) = image(dir.path(), "x.png", 5);
    run(dir.path(), ["predict", "--checkpoint", &ckpt, img.to_str().unwrap()])
        .fails_with(&["deep.safetensors", "blocks; at most"]);
    run(dir.path(), ["eval", "--checkpoint", "deep.safetensors", "--dataset", "synthetic"])
        .fails_with(&["blocks; at most"]);
    let c = checkpoint_arg(&save(dir.path(), "c.safetensors", &checkpoint(10, pixel_mean())));
    run(
        dir.path(),
        [
            "eval",
            "--checkpoint",
            &c,
            "--dataset",
            "synthetic",
            "--synthetic",
            "4",
            "4",
            "32",
            "--multi-scale",
            "224,100000",
        ],
    )
    .fails_with(&["--multi-scale", "100000", "at most"]);
    run(dir.path(), ["bench", "--size", "100000", "--steps", "1"]).fails_with(&["100000x100000", "at most"]);
    run(dir.path(), ["bench", "--model", "resnet18", "--classes", "4000000000"])
        .fails_with(&["4000000000 classes", "at most"]);
    run(dir.path(), ["info", "cifar-resnet600002"]).fails_with(&["300000 blocks", "at most"]);
    run(dir.path(), ["bench", "--model", "resnet18", "--size", "8000", "--batch", "100000"])
        .fails_with(&["GB", "--batch"]);
}

// ----- item 20: the ONNX input contract -----

fn python_with_onnxruntime() -> Option<String> {
    let python = std::env::var("RESNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python).args(["-c", "import onnxruntime, numpy"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// Softmax of the ONNX graph's output for one raw image, run in onnxruntime.
fn onnx_probabilities(python: &str, model: &Path, pixels: &[u8], format: &str) -> Vec<f64> {
    let script = r#"
import json, sys
import numpy as np
import onnxruntime as ort
model, raw, fmt = sys.argv[1:4]
x = np.fromfile(raw, dtype=np.uint8).reshape(1, 32, 32, 3)
if fmt == "float-nchw":
    x = x.astype(np.float32).transpose(0, 3, 1, 2).copy()
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
z = s.run(["logits"], {"input": x})[0][0].astype(np.float64)
p = np.exp(z - z.max())
print(json.dumps((p / p.sum()).tolist()))
"#;
    let raw = model.with_extension("raw");
    std::fs::write(&raw, pixels).unwrap();
    let out = Command::new(python).args(["-c", script]).arg(model).arg(&raw).arg(format).output().unwrap();
    assert!(out.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn onnx_with_preprocessing_on_raw_pixels_gives_predicts_probabilities() {
    let dir = scratch();
    let (img, pixels) = image(dir.path(), "x.png", 7);
    let img = img.to_str().unwrap();
    let torchvision = Normalize::ChannelMeanStd { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] };
    let python = python_with_onnxruntime();
    if python.is_none() {
        resnet_kernels::skip::skip_unless_ci(
            "onnxruntime not available (set RESNET_PYTHON); the graphs were only built",
        );
    }
    for (name, normalize) in [("mean-image", pixel_mean()), ("channel-stats", torchvision)] {
        let ckpt = checkpoint_arg(&save(dir.path(), &format!("{name}.safetensors"), &checkpoint(10, normalize)));
        let r = run(dir.path(), ["predict", "--checkpoint", &ckpt, img, "--json", "--top", "10"]).ok();
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let mut ours = [0.0f64; 10];
        for p in v[0]["predictions"].as_array().unwrap() {
            ours[p["index"].as_u64().unwrap() as usize] = p["probability"].as_f64().unwrap();
        }
        for format in ["uint8-nhwc", "float-nchw"] {
            let model = dir.path().join(format!("{name}-{format}.onnx"));
            let m = checkpoint_arg(&model);
            let args =
                ["export", "--checkpoint", &ckpt, "--onnx", &m, "--include-preprocessing", "--input-format", format];
            let r = run(dir.path(), args).ok();
            assert!(r.stdout.contains("raw pixels"), "{}", r.stdout);
            let Some(python) = &python else { continue };
            let theirs = onnx_probabilities(python, &model, &pixels, format);
            let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(diff < 1e-5, "{name} {format}: predict {ours:?}, onnxruntime {theirs:?}");
        }
    }
    // Without preprocessing the export says what the input must be.
    let ckpt = checkpoint_arg(&save(dir.path(), "plain.safetensors", &checkpoint(10, pixel_mean())));
    let r = run(dir.path(), ["export", "--checkpoint", &ckpt, "--onnx", "plain.onnx"]).ok();
    assert!(r.stdout.contains("normalised") && r.stdout.contains("mean image"), "{}", r.stdout);
}

// ----- item 21: eval knows what the checkpoint knows -----

#[test]
fn eval_takes_the_dataset_from_a_training_checkpoint_and_names_both_sources() {
    let dir = scratch();
    let (run_dir, printed) = trained_run(dir.path());
    let last = checkpoint_arg(&run_dir.join("checkpoints").join("last.safetensors"));
    // The end-of-run hint is a command that runs as printed.
    let hint =
        printed.lines().find(|l| l.trim_start().starts_with("resnet eval")).unwrap_or_else(|| panic!("{printed}"));
    assert!(!hint.contains('<'), "placeholders in the hint: {hint}");
    let args: Vec<&str> = hint.split_whitespace().skip(1).collect();
    run(dir.path(), &args).ok();
    let r = run(dir.path(), ["eval", "--checkpoint", &last, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["count"], 8);
    run(dir.path(), ["eval", "--dataset", "synthetic"]).fails_with(&["--checkpoint", "--weights"]);
    let imported = save(dir.path(), "imported.safetensors", &checkpoint(10, pixel_mean()));
    run(dir.path(), ["eval", "--checkpoint", &checkpoint_arg(&imported)]).fails_with(&[
        "--data",
        "--dataset",
        "imported.safetensors",
    ]);
    // Weights that record no dataset take the format of --data's files.
    tiny_cifar(&dir.path().join("cifar"));
    let r = run(dir.path(), ["eval", "--checkpoint", &checkpoint_arg(&imported), "--data", "cifar", "--json"]).ok();
    assert!(r.stderr.contains("recognised as cifar10"), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["count"], 16);
}

// ----- item 23: polish -----

#[test]
fn top_k_out_of_range_is_an_error() {
    let dir = scratch();
    let ckpt = checkpoint_arg(&save(dir.path(), "c.safetensors", &checkpoint(10, pixel_mean())));
    let (img, _) = image(dir.path(), "x.png", 8);
    let img = img.to_str().unwrap();
    let r = run(dir.path(), ["predict", "--checkpoint", &ckpt, img, "--top", "0"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    run(dir.path(), ["predict", "--checkpoint", &ckpt, img, "--top", "5000"]).fails_with(&["--top 5000", "10 classes"]);
    let r = run(dir.path(), ["predict", "--checkpoint", &ckpt, img, "--top", "10"]).ok();
    assert_eq!(r.stdout.lines().filter(|l| l.contains('%')).count(), 10);
    // Two classes: two lines by default, not a silent five.
    let two = checkpoint_arg(&save(dir.path(), "two.safetensors", &checkpoint(2, pixel_mean())));
    let r = run(dir.path(), ["predict", "--checkpoint", &two, img]).ok();
    assert_eq!(r.stdout.lines().filter(|l| l.contains('%')).count(), 2);
}

#[test]
fn eval_of_two_classes_shows_no_top5_and_a_labelled_confusion_matrix() {
    let dir = scratch();
    for (split, n) in [("train", 2), ("test", 3)] {
        for class in ["ant", "bee"] {
            let d = dir.path().join("data").join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                image(&d, &format!("{i}.png"), i as u64 + 11);
            }
        }
    }
    let mut c = checkpoint(2, pixel_mean());
    c.classes = vec!["ant".into(), "bee".into()];
    let ckpt = checkpoint_arg(&save(dir.path(), "two.safetensors", &c));
    let r = run(dir.path(), ["eval", "--checkpoint", &ckpt, "--dataset", "imagefolder", "--data", "data"]).ok();
    assert!(!r.stdout.contains("top-5"), "{}", r.stdout);
    assert!(r.stdout.contains("on imagefolder test split"), "internal names: {}", r.stdout);
    assert!(r.stdout.contains("top-1 error"), "{}", r.stdout);
    let header =
        r.stdout.lines().find(|l| l.starts_with("true \\ predicted")).unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(header.split_whitespace().rev().take(2).eq(["1", "0"]), "{header}");
    assert!(r.stdout.lines().any(|l| l.starts_with(" 0 ant")), "{}", r.stdout);
}

#[test]
fn info_names_the_stride_placement_as_users_know_it() {
    let dir = scratch();
    let r = run(dir.path(), ["info", "resnet50-v1.5"]).ok();
    assert!(r.stdout.contains("v1.5 (torchvision) stride placement") && !r.stdout.contains("V1_5"), "{}", r.stdout);
}

#[test]
fn the_models_table_is_aligned() {
    let dir = scratch();
    let r = run(dir.path(), ["models"]).ok();
    let mut lines = r.stdout.lines();
    let header = lines.next().unwrap();
    let params_end = header.find("params").unwrap() + "params".len();
    let depth_end = header.find("depth").unwrap() + "depth".len();
    for row in lines.take_while(|l| !l.is_empty()) {
        for end in [params_end, depth_end] {
            let b = row.as_bytes();
            assert!(b[end - 1].is_ascii_digit() && b[end] == b' ', "misaligned at {end}:\n{header}\n{row}");
        }
    }
}

#[test]
fn integer_weights_are_named_as_a_type_problem() {
    let dir = scratch();
    let net = checkpoint(10, pixel_mean()).network(Path::new("c")).unwrap();
    let mut state = net.state_dict();
    let t = state.iter_mut().find(|t| t.name == "conv1.weight").unwrap();
    t.data = TensorData::I64(vec![0; t.data.len()]);
    resnet_interop::write_safetensors(&dir.path().join("i64.safetensors"), &state).unwrap();
    let (img, _) = image(dir.path(), "x.png", 9);
    run(dir.path(), ["predict", "--weights", "i64.safetensors", img.to_str().unwrap()]).fails_with(&[
        "i64.safetensors",
        "wrong element type",
        "conv1.weight (I64, expected F32)",
    ]);
}

#[test]
fn exporting_a_network_torchvision_lacks_says_so() {
    let dir = scratch();
    let ckpt = checkpoint_arg(&save(dir.path(), "c.safetensors", &checkpoint(10, pixel_mean())));
    let r = run(dir.path(), ["export", "--checkpoint", &ckpt, "--safetensors", "tv.safetensors"]).ok();
    assert!(r.stderr.contains("note: cifar-resnet8 is not one of torchvision's models"), "{}", r.stderr);
    let opts = ModelOptions { num_classes: Some(2), ..Default::default() };
    let net = ResNet::new(spec("resnet18", &opts).unwrap()).unwrap();
    let pre = Preprocess {
        normalize: Normalize::ChannelMeanStd { mean: vec![0.5; 3], std: vec![0.25; 3] },
        input_size: (224, 224),
        channels: 3,
        eval_view: EvalView::Full,
    };
    let c = Checkpoint::from_network(&net, vec!["a".into(), "b".into()], pre);
    let ckpt = checkpoint_arg(&save(dir.path(), "r18.safetensors", &c));
    let r = run(dir.path(), ["export", "--checkpoint", &ckpt, "--safetensors", "r18-tv.safetensors"]).ok();
    assert!(!r.stderr.contains("note"), "{}", r.stderr);
}

// ----- checkpoints and weights that are not regular files -----

/// Address space for the runs below: far more than refusing a file needs, far less than reading
/// `/dev/zero` whole tries to take, so a reader without a bound aborts instead of filling memory.
#[cfg(unix)]
const DEVICE_CAP_MIB: u64 = 1024;

#[cfg(unix)]
#[test]
fn a_device_given_as_checkpoint_or_weights_is_refused_before_reading() {
    let dir = scratch();
    let (img, _) = image(dir.path(), "x.png", 10);
    let img = img.to_str().unwrap();
    let needles = ["/dev/zero", "is not a regular file"];
    run_capped(dir.path(), ["predict", "--checkpoint", "/dev/zero", img], DEVICE_CAP_MIB).fails_with(&needles);
    run_capped(dir.path(), ["predict", "--weights", "/dev/zero", img], DEVICE_CAP_MIB).fails_with(&needles);
    run_capped(dir.path(), ["import", "--from", "torchvision", "/dev/zero", "--out", "x.safetensors"], DEVICE_CAP_MIB)
        .fails_with(&needles);
    assert!(!dir.path().join("x.safetensors").exists());
}
