//! `resnet train` starting from trained weights: torchvision's ResNet-50 with a new classifier
//! (its logits checked against PyTorch's features for the same weights), and the fine-tuning
//! flags' contract.

use crate::common::*;
use crate::generator::{generated_input, generated_state};
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::TensorData;
use resnet_train::checkpoint::Checkpoint;
use safetensors::SafeTensors;
use std::path::Path;

/// An image folder of 64x64 noise images: `train/` and `test/`, `per_class` and 2 per class.
fn image_folder(root: &Path, classes: &[&str], per_class: usize) {
    for (split, count) in [("train", per_class), ("test", 2)] {
        for (c, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let pixels = noise(64 * 64 * 3, (c * 100 + i) as u64 + u64::from(split == "test") * 7);
                std::fs::write(dir.join(format!("{i}.png")), png(64, 64, &pixels)).unwrap();
            }
        }
    }
}

/// PyTorch's float32 tensor `name` of the interop crate's generated fixture.
fn pytorch_fixture(name: &str) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/tests/fixtures/generated.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn init_from_torchvision_resnet50_reports_the_new_classifier_and_computes_pytorchs_logits() {
    let dir = scratch();
    let r50 = spec("resnet50-v1.5", &ModelOptions::default()).unwrap();
    let state = generated_state(&r50);
    let weights = dir.path().join("resnet50.safetensors");
    resnet_interop::write_safetensors(&weights, &state).unwrap();
    image_folder(&dir.path().join("data"), &["ant", "bee", "wasp"], 4);
    let out = run(
        dir.path(),
        [
            "train",
            "--init",
            "resnet50.safetensors",
            "--data",
            "data",
            "--freeze",
            "backbone",
            "--augment",
            "none",
            "--eval-view",
            "full",
            "--batch-size",
            "4",
            "--eval-batch-size",
            "6",
            "--iterations",
            "2",
            "--quiet",
            "--out",
            "run",
        ],
    )
    .ok();
    let said = format!("{}{}", out.stdout, out.stderr);
    for needle in [
        "a resnet50-v1.5",
        "(torchvision weights, resnet50-v1.5)",
        &format!("kept {} tensor(s)", state.len() - 2),
        "new fc.weight: [3, 2048] here, [1000, 2048] in the weights",
        "new fc.bias: [3] here, [1000] in the weights",
        "frozen: stem, layer1, layer2, layer3, layer4",
    ] {
        assert!(said.contains(needle), "'{needle}' not in:\n{said}");
    }
    let ckpt = Checkpoint::load(&dir.path().join("run/checkpoints/last.safetensors")).unwrap();
    assert_eq!(ckpt.classes, ["ant", "bee", "wasp"]);
    for (t, g) in ckpt.state.iter().zip(&state) {
        assert_eq!(t.name, g.name);
        if !t.name.starts_with("fc.") {
            assert_eq!(t.data, g.data, "the frozen {} changed", t.name);
        }
    }
    // The checkpoint's logits: PyTorch's features of these weights through the new classifier.
    let mut net = ckpt.network(Path::new("last.safetensors")).unwrap();
    let (_, x) = generated_input(2, 3, 224);
    let logits = net.infer(&x).data().to_vec();
    let features = pytorch_fixture("resnet50.features");
    let (TensorData::F32(w), TensorData::F32(b)) =
        (&ckpt.state[ckpt.state.len() - 2].data, &ckpt.state[ckpt.state.len() - 1].data)
    else {
        panic!("fc tensors")
    };
    let scale = features.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    for n in 0..2 {
        for k in 0..3 {
            let f = &features[n * 2048..][..2048];
            let want: f64 = f64::from(b[k])
                + f.iter().zip(&w[k * 2048..][..2048]).map(|(x, w)| f64::from(*x) * f64::from(*w)).sum::<f64>();
            let got = f64::from(logits[n * 3 + k]);
            assert!(
                (got - want).abs() <= 1e-4 * scale * 2048f64.sqrt(),
                "sample {n} class {k}: ours {got}, PyTorch's {want}"
            );
        }
    }
}

#[test]
fn classes_and_input_channels_are_taken_and_checked() {
    let dir = scratch();
    let synthetic =
        ["--dataset", "synthetic", "--synthetic-train", "16", "--synthetic-test", "8", "--synthetic-size", "16"];
    let tiny = |extra: &[&str]| {
        let mut words = vec!["train", "--batch-size", "8", "--iterations", "1", "--quiet"];
        words.extend(synthetic);
        words.extend(extra);
        if !words.contains(&"--model") {
            words.extend(["--model", "cifar-resnet8"]);
        }
        run(dir.path(), words)
    };
    tiny(&["--classes", "12", "--in-channels", "1", "--out", "grey"]).ok();
    let ckpt = Checkpoint::load(&dir.path().join("grey/checkpoints/last.safetensors")).unwrap();
    assert_eq!((ckpt.spec.num_classes, ckpt.spec.in_channels, ckpt.preprocess.channels), (12, 1, 1));
    assert_eq!(ckpt.classes[11], "unused11");
    tiny(&["--classes", "4", "--out", "few"]).fails_with(&["the dataset has 10 classes", "4 outputs"]);
    tiny(&["--in-channels", "2", "--out", "two"]).fails_with(&["--in-channels takes 1 (grey) or 3 (RGB), not 2"]);
    tiny(&["--freeze", "layer4", "--out", "f4"]).fails_with(&["cifar-resnet8 has no layer4", "layer1 to layer3"]);
    tiny(&["--freeze", "backbone,fc", "--out", "all"]).fails_with(&["every part of the network is frozen"]);
    let bad = tiny(&["--freeze", "trunk", "--out", "x"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("'trunk' is not a part of a ResNet"), "{}", bad.stderr);
    let bad = tiny(&["--image-size", "64", "--out", "x"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--image-size needs --augment scale or random-resized-crop"), "{}", bad.stderr);
    // Another model's checkpoint, named: refused with the tensor that does not fit.
    tiny(&["--init", "grey/checkpoints/last.safetensors", "--model", "cifar-resnet14", "--out", "deeper"])
        .fails_with(&["cannot start a cifar-resnet14", "layer1.1.conv1.weight"]);
}
