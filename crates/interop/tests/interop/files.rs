//! Files written by PyTorch itself (`safetensors.torch.save_file`, `torch.save`) for two tiny
//! networks, read through every path and checked against PyTorch's eval-mode logits.

use crate::common::*;
use resnet_interop::{load_weights, read_pth, read_safetensors, read_state_dict};
use resnet_models::{BatchNormMode, BlockKind, Family, NamedTensor, Shortcut, StridePlacement, TensorData};
use resnet_nn::Tensor;
use safetensors::SafeTensors;
use std::collections::BTreeMap;

fn by_name(v: Vec<NamedTensor>) -> BTreeMap<String, NamedTensor> {
    v.into_iter().map(|t| (t.name.clone(), t)).collect()
}

fn expected(name: &str) -> (Tensor, Vec<f32>) {
    let bytes = std::fs::read(fixture("tiny_expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let input = st.tensor(&format!("{name}.input")).unwrap();
    let s = input.shape().to_vec();
    let x = Tensor::from_vec([s[0], s[1], s[2], s[3]], f32s(input.data()));
    (x, fixture_f32(&st, &format!("{name}.logits")))
}

/// Every genuine file of a network loads, infers the same architecture and gives PyTorch's
/// logits.
fn check_logits(name: &str, files: &[&str]) -> resnet_models::ResNetSpec {
    let (x, want) = expected(name);
    let mut spec = None;
    for file in files {
        let mut net = load_weights(&fixture(file), None).unwrap_or_else(|e| panic!("{e}"));
        let logits = net.forward(&x, BatchNormMode::Eval).data().to_vec();
        let (rel, top1) = compare(&logits, &want, net.spec().num_classes);
        // Half-precision files hold rounded weights: PyTorch's own logits on them differ from
        // the float32 ones by 3.2e-4 (f16) and 2.6e-3 (bf16) of the largest logit.
        let tolerance = if file.contains(".bf16") {
            1e-2
        } else if file.contains(".f16") {
            1e-3
        } else {
            1e-4
        };
        assert!(rel <= tolerance && top1, "{file}: error {rel:.3e} of the largest logit, top-1 same: {top1}");
        if let Some(s) = &spec {
            assert_eq!(net.spec(), s, "{file}");
        }
        spec = Some(net.spec().clone());
    }
    spec.unwrap()
}

#[test]
fn tiny_basic_net_from_every_pytorch_writer() {
    let spec = check_logits(
        "tiny_basic",
        &[
            "tiny_basic.safetensors",
            "tiny_basic.pth",
            "tiny_basic.proto4.pth",
            "tiny_basic.f16.safetensors",
            "tiny_basic.bf16.safetensors",
        ],
    );
    assert_eq!(spec.name, "inferred-cifar-basic-1-1-1");
    assert_eq!((spec.family, spec.block, spec.shortcut), (Family::Cifar, BlockKind::Basic, Shortcut::B));
    assert_eq!((spec.depths.as_slice(), spec.widths.as_slice(), spec.stem_width), (&[1, 1, 1][..], &[2, 4, 8][..], 2));
    assert_eq!((spec.num_classes, spec.in_channels), (10, 3));
}

#[test]
fn tiny_bottleneck_net_from_both_writers() {
    let spec = check_logits("tiny_bottleneck", &["tiny_bottleneck.safetensors", "tiny_bottleneck.pth"]);
    assert_eq!(spec.name, "inferred-imagenet-bottleneck-1-2");
    assert_eq!(
        (spec.family, spec.block, spec.stride_placement),
        (Family::ImageNet, BlockKind::Bottleneck, StridePlacement::V1_5)
    );
    assert_eq!((spec.shortcut, spec.num_classes), (Shortcut::B, 5));
}

#[test]
fn pth_and_safetensors_hold_the_same_tensors() {
    for name in ["tiny_basic", "tiny_bottleneck"] {
        let st = read_safetensors(&fixture(&format!("{name}.safetensors"))).unwrap();
        let pth = read_pth(&fixture(&format!("{name}.pth"))).unwrap();
        // torch.save keeps the state dict's order; it is also ours.
        let net = load_weights(&fixture(&format!("{name}.pth")), None).unwrap();
        let ours: Vec<String> = net.state_dict().into_iter().map(|t| t.name).collect();
        assert_eq!(pth.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), ours, "{name}: order");
        assert!(pth.iter().any(|t| t.name.ends_with("num_batches_tracked") && t.data == TensorData::I64(vec![7])));
        assert_eq!(by_name(st), by_name(pth), "{name}");
    }
    let proto4 = read_state_dict(&fixture("tiny_basic.proto4.pth")).unwrap();
    assert_eq!(by_name(proto4), by_name(read_state_dict(&fixture("tiny_basic.pth")).unwrap()));
}

#[test]
fn half_precision_files_widen_to_the_rounded_values() {
    let full = by_name(read_safetensors(&fixture("tiny_basic.safetensors")).unwrap());
    for (file, bits) in [("tiny_basic.f16.safetensors", 11), ("tiny_basic.bf16.safetensors", 8)] {
        let half = by_name(read_safetensors(&fixture(file)).unwrap());
        assert_eq!(half.keys().collect::<Vec<_>>(), full.keys().collect::<Vec<_>>());
        for (k, t) in &half {
            match (&t.data, &full[k].data) {
                (TensorData::F32(a), TensorData::F32(b)) => {
                    for (x, y) in a.iter().zip(b) {
                        assert!((x - y).abs() <= y.abs() * 2f32.powi(-bits) + 1e-7, "{file} {k}: {x} vs {y}");
                    }
                }
                (a, b) => assert_eq!(a, b, "{file} {k}"),
            }
        }
    }
}

#[test]
fn round_trip_of_a_pytorch_file_is_bit_exact() {
    let dir = TempDir::new("roundtrip");
    for name in ["tiny_basic", "tiny_bottleneck"] {
        let input = fixture(&format!("{name}.safetensors"));
        let net = load_weights(&input, None).unwrap();
        let out = dir.path(&format!("{name}.safetensors"));
        resnet_interop::export_torchvision(&net, &out).unwrap();
        assert!(raw_tensors(&out) == raw_tensors(&input), "{name}: tensors differ after import and export");
        // The same writer underneath: the files are identical too.
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap(), "{name}: file bytes");
    }
}
