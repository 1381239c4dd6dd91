//! `resnet embed`: features files of dataset splits and image files, checked against the
//! library's `ResNet::embed` and against `predict`'s network, and the errors of bad layers,
//! outputs and inputs.

use crate::common::*;
use crate::common::{noise, png};
use crate::interop_files::{checkpoint, pixel_mean, save};
use resnet_data::{open, prepare_views, read_image, DatasetKind, EvalView, OpenOptions, SyntheticConfig};
use resnet_interop::FeatureSet;
use resnet_models::FeatureLayer;
use resnet_nn::Tensor;
use resnet_train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};

/// The synthetic set the tests embed: 12 training and 7 test images of 32x32.
const SYNTHETIC: [&str; 6] = ["--dataset", "synthetic", "--synthetic", "12", "7", "32"];

fn synthetic_config() -> SyntheticConfig {
    SyntheticConfig { train: 12, test: 7, size: 32, seed: 0 }
}

/// A tiny training run on the synthetic set; returns its last checkpoint.
fn trained(dir: &Path) -> PathBuf {
    let args = ["train", "--model", "cifar-resnet8", "--synthetic-train", "16", "--synthetic-test", "8"];
    let more = ["--synthetic-size", "32", "--batch-size", "8", "--iterations", "2", "--quiet", "--out", "run"];
    run(dir, args.iter().chain(&more)).ok();
    dir.join("run").join("checkpoints").join("last.safetensors")
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The features of `image` as the library computes them with the checkpoint's preprocessing:
/// `net.embed` of its views, averaged.
fn library_features(ckpt_path: &Path, image: &Path, view: &EvalView, layer: FeatureLayer) -> Vec<f32> {
    let ckpt = Checkpoint::load(ckpt_path).unwrap();
    let mut net = ckpt.network(ckpt_path).unwrap();
    let pre = &ckpt.preprocess;
    let img = read_image(image, pre.channels).unwrap();
    let (x, shape) = prepare_views(&img, view, &pre.normalize, pre.input_size).unwrap();
    let out = net.embed(&Tensor::from_vec(shape, x), layer).unwrap();
    let c = out.c();
    let mut mean = vec![0.0f32; c];
    for row in out.data().chunks_exact(c) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / shape[0] as f32);
    }
    mean
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * scale, "{what}: feature {i} is {g}, the library's {w}");
    }
}

#[test]
fn a_dataset_split_gives_one_row_per_image_with_its_label_and_source() {
    let dir = scratch();
    let ckpt = trained(dir.path());
    // The run's own dataset, recorded in the checkpoint.
    let r = run(dir.path(), ["embed", "--checkpoint", arg(&ckpt), "--out", "test.safetensors"]).ok();
    assert!(r.stdout.contains("8 x 64 features of features (cifar-resnet8), with labels"), "{}", r.stdout);
    let set = FeatureSet::load(&dir.path().join("test.safetensors")).unwrap();
    assert_eq!((set.rows, set.channels, set.features.len()), (8, 64, 8 * 64));
    assert_eq!((set.layer.as_str(), set.model.as_str()), ("features", "cifar-resnet8"));
    assert_eq!(set.classes.as_ref().map(Vec::len), Some(10));
    assert_eq!(set.sources.len(), 8);

    // Another split of a dataset named on the command line, at a stage; each row equals the
    // library's features of that sample.
    let mut args = vec!["embed", "--checkpoint", arg(&ckpt), "--split", "train", "--layer", "layer2"];
    args.extend(SYNTHETIC);
    args.extend(["--batch-size", "5", "--out", "train.safetensors"]);
    run(dir.path(), &args).ok();
    let set = FeatureSet::load(&dir.path().join("train.safetensors")).unwrap();
    assert_eq!((set.rows, set.channels, set.layer.as_str()), (12, 32, "layer2"));
    let splits =
        open(DatasetKind::Synthetic, None, &OpenOptions { synthetic: synthetic_config(), ..Default::default() })
            .unwrap();
    let labels: Vec<i64> = (0..12).map(|i| i64::from(splits.train.label(i))).collect();
    assert_eq!(set.labels.as_ref(), Some(&labels));
    let sources: Vec<String> = (0..12).map(|i| splits.train.describe(i)).collect();
    assert_eq!(set.sources, sources);
    let c = Checkpoint::load(&ckpt).unwrap();
    let mut net = c.network(&ckpt).unwrap();
    let pre = &c.preprocess;
    for i in [0, 6, 11] {
        let img = splits.train.load(i).unwrap();
        let (x, shape) = prepare_views(&img, &pre.eval_view, &pre.normalize, pre.input_size).unwrap();
        let want = net.embed(&Tensor::from_vec(shape, x), FeatureLayer::Stage(2)).unwrap();
        assert_close(set.row(i), want.data(), &format!("sample {i}"));
    }
}

#[test]
fn image_files_give_the_features_of_predicts_network() {
    let dir = scratch();
    let ckpt = trained(dir.path());
    let mut images = Vec::new();
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        std::fs::write(dir.path().join(name), png(32, 32, &noise(32 * 32 * 3, 10 + i as u64))).unwrap();
        images.push(dir.path().join(name));
    }
    let names = ["a.png", "b.png", "c.png"];
    let mut args = vec!["embed", "--checkpoint", arg(&ckpt), "--batch-size", "2", "--out", "f.safetensors"];
    args.extend(names);
    run(dir.path(), &args).ok();
    let set = FeatureSet::load(&dir.path().join("f.safetensors")).unwrap();
    assert_eq!((set.rows, set.channels, set.labels.is_none(), set.classes.is_none()), (3, 64, true, true));
    assert_eq!(set.sources, names);
    let c = Checkpoint::load(&ckpt).unwrap();
    let view = c.preprocess.eval_view.clone();
    for (i, image) in images.iter().enumerate() {
        assert_close(set.row(i), &library_features(&ckpt, image, &view, FeatureLayer::Final), names[i]);
    }
    // The classifier on these features gives predict's probabilities.
    let net = c.network(&ckpt).unwrap();
    let r = run(dir.path(), ["predict", "--checkpoint", arg(&ckpt), "b.png", "--json", "--top", "10"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut logits = Tensor::default();
    net.fc.forward(&Tensor::from_vec([1, 1, 1, 64], set.row(1).to_vec()), &mut logits);
    let max = logits.data().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.data().iter().map(|&l| f64::from(l - max).exp()).sum();
    for p in v[0]["predictions"].as_array().unwrap() {
        let k = p["index"].as_u64().unwrap() as usize;
        let ours = f64::from(logits.data()[k] - max).exp() / sum;
        let theirs = p["probability"].as_f64().unwrap();
        assert!((ours - theirs).abs() < 1e-5, "class {k}: {ours} from the features, predict {theirs}");
    }

    // Ten crops: the mean of the views' features.
    let r = run(
        dir.path(),
        ["embed", "--checkpoint", arg(&ckpt), "--ten-crop", "--layer", "stem", "c.png", "--out", "t.safetensors"],
    );
    r.ok();
    let set = FeatureSet::load(&dir.path().join("t.safetensors")).unwrap();
    let ten = EvalView::TenCrop { resize: 32 * 256 / 224, crop: 32 };
    assert_eq!((set.rows, set.channels), (1, 16));
    assert_close(set.row(0), &library_features(&ckpt, &images[2], &ten, FeatureLayer::Stem), "ten crops");
}

#[test]
fn torchvision_weights_and_file_names_that_are_not_utf8_are_embedded() {
    let dir = scratch();
    let c = checkpoint(10, pixel_mean());
    let net = c.network(Path::new("fixture")).unwrap();
    resnet_interop::write_safetensors(&dir.path().join("tv.safetensors"), &net.state_dict()).unwrap();
    #[cfg(unix)]
    let name: std::ffi::OsString = {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b"caf\xe9.png").to_os_string()
    };
    #[cfg(not(unix))]
    let name: std::ffi::OsString = "cafe.png".into();
    std::fs::write(dir.path().join(&name), png(32, 32, &noise(32 * 32 * 3, 4))).unwrap();
    let args: Vec<std::ffi::OsString> =
        ["embed", "--weights", "tv.safetensors", "--layer", "layer3", "--out", "w.safetensors"]
            .iter()
            .map(Into::into)
            .chain([name.clone()])
            .collect();
    run(dir.path(), &args).ok();
    let set = FeatureSet::load(&dir.path().join("w.safetensors")).unwrap();
    assert_eq!((set.rows, set.channels, set.layer.as_str()), (1, 64, "layer3"));
    assert_eq!(set.sources, [name.to_string_lossy().into_owned()]);
}

#[test]
fn bad_layers_outputs_and_inputs_are_named() {
    let dir = scratch();
    let ckpt = save(dir.path(), "c.safetensors", &checkpoint(10, pixel_mean()));
    std::fs::write(dir.path().join("a.png"), png(32, 32, &noise(32 * 32 * 3, 1))).unwrap();
    let embed = |extra: &[&str]| {
        let mut args = vec!["embed", "--checkpoint", arg(&ckpt)];
        args.extend(extra);
        run(dir.path(), &args)
    };
    embed(&["--layer", "conv9", "a.png", "--out", "f.safetensors"]).fails_with(&["conv9", "layer1", "features"]);
    embed(&["--layer", "layer4", "a.png", "--out", "f.safetensors"]).fails_with(&[
        "--layer layer4",
        "cifar-resnet8 has no layer4",
        "layer3",
        "c.safetensors",
    ]);
    embed(&["a.png", "--out", "missing/f.safetensors"]).fails_with(&["missing/f.safetensors", "does not exist"]);
    embed(&["a.png", "--out", "."]).fails_with(&["--out ."]);
    embed(&["a.png", "--out", "c.safetensors", "--force"]).fails_with(&["c.safetensors", "input of this command"]);
    embed(&["a.png", "--out", "a.png", "--force"]).fails_with(&["a.png", "input of this command"]);
    embed(&["a.png", "--batch-size", "0", "--out", "f.safetensors"]).fails_with(&["--batch-size"]);
    embed(&["a.png", "--dataset", "synthetic", "--out", "f.safetensors"]).fails_with(&["--dataset"]);
    // No dataset recorded, none named, no image files.
    embed(&["--out", "f.safetensors"]).fails_with(&["--data", "--dataset", "c.safetensors"]);
    std::fs::write(dir.path().join("notes.txt"), "not an image\n").unwrap();
    embed(&["a.png", "notes.txt", "--out", "f.safetensors"]).fails_with(&["notes.txt", "not an image"]);
    assert!(!dir.path().join("f.safetensors").exists(), "nothing is written after an error");
    embed(&["a.png", "--out", "f.safetensors"]).ok();
    embed(&["a.png", "--out", "f.safetensors"]).fails_with(&["f.safetensors", "already exists", "--force"]);
    embed(&["a.png", "a.png", "--out", "f.safetensors", "--force"]).ok();
    assert_eq!(FeatureSet::load(&dir.path().join("f.safetensors")).unwrap().rows, 2);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}
