//! `ResNetSpec::batch_memory` against the buffers a network really holds after its passes.

use resnet_kernels::conv::Precision;
use resnet_kernels::KernelConfig;
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, ResNet, Shortcut};
use resnet_nn::Tensor;

/// Networks of each kind of block and shortcut: CIFAR option A (zero-padding), ImageNet basic
/// blocks with projections, bottlenecks with the stride on the 1x1 ("v1") and on the 3x3
/// ("v1.5"), option C (projections everywhere) and a plain net; ImageNet ones at 64x64, one at
/// a side that is not a multiple of 32.
fn cases() -> Vec<(&'static str, ModelOptions, usize)> {
    let default = ModelOptions::default();
    let option_c = ModelOptions { shortcut: Some(Shortcut::C), ..default };
    vec![
        ("resnet20", default, 32),
        ("plain20", default, 32),
        ("resnet18", default, 64),
        ("resnet50", default, 64),
        ("resnet50-v1.5", default, 70),
        ("resnet34", option_c, 64),
        ("plain18", default, 64),
    ]
}

fn input(n: usize, side: usize) -> Tensor {
    Tensor::from_vec([n, side, side, 3], (0..n * side * side * 3).map(|i| (i % 7) as f32 - 3.0).collect())
}

/// A training step holds exactly what the estimate says: the activations its forward pass keeps
/// (convolution outputs in f32, or in bf16 as bf16 training keeps them) and its backward pass's
/// buffers (the network's), the input and the logit gradient (the caller's).
#[test]
fn training_step_estimate_is_what_the_network_keeps() {
    for (name, opts, side) in cases() {
        for stored in [Precision::F32, Precision::Bf16] {
            let s = spec(name, &ModelOptions { num_classes: Some(10), ..opts }).unwrap();
            let memory = s.batch_memory_stored(side, side, stored);
            for n in [2, 3] {
                // A fresh network each time: a buffer grown from a smaller batch's size may be
                // given more room than the new size needs.
                let mut net = ResNet::new(s.clone()).unwrap();
                net.init(&InitConfig::default());
                net.set_kernel_config(KernelConfig { stored: Some(stored), ..KernelConfig::default() }).unwrap();
                let x = input(n, side);
                let logits = net.forward(&x, BatchNormMode::Train).len();
                let dlogits = vec![0.01; logits];
                net.backward(&x, &dlogits);
                let held = net.activation_bytes() + x.bytes() + dlogits.capacity() * 4;
                assert_eq!(held as u64, memory.train_bytes(n), "{name} at {side}x{side}, batch {n}, {stored:?}");
            }
        }
    }
}

/// Inference settles at no more than its estimate (a bound on a pool of buffers that pass from
/// role to role, not a sum of activations).
#[test]
fn inference_estimate_bounds_what_the_network_keeps() {
    for (name, opts, side) in cases() {
        let s = spec(name, &ModelOptions { num_classes: Some(10), ..opts }).unwrap();
        let memory = s.batch_memory(side, side);
        let mut net = ResNet::new(s).unwrap();
        net.init(&InitConfig::default());
        let n = 2;
        let x = input(n, side);
        // Buffers pass from role to role and grow over a few calls (see tests/zoo.rs).
        for _ in 0..8 {
            net.infer(&x);
        }
        let held = (net.activation_bytes() + x.bytes()) as u64;
        let bound = memory.infer_bytes(n);
        assert!(held <= bound, "{name} at {side}x{side}: inference holds {held} bytes, estimate {bound}");
    }
}

/// The figures grow with the input: four times the pixels, about four times the memory.
#[test]
fn estimate_scales_with_the_input_area() {
    let s = spec("resnet50", &ModelOptions::default()).unwrap();
    let (small, large) = (s.batch_memory(112, 112), s.batch_memory(224, 224));
    assert_eq!(large.input, 4 * small.input);
    let ratio = large.train_per_image() as f64 / small.train_per_image() as f64;
    assert!((3.9..4.1).contains(&ratio), "ratio {ratio}");
    assert_eq!(large.train_bytes(256), 256 * large.train_per_image());
    assert_eq!(large.train_bytes(usize::MAX), u64::MAX, "saturates instead of wrapping");
}
