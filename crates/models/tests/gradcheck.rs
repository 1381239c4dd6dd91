//! Whole networks against central finite differences: every parameter tensor of small CIFAR and
//! ImageNet-style networks, in training mode (batch statistics), through the loss.
//!
//! Single coordinates of a whole ReLU network are too noisy to difference in f32 (a step crosses
//! ReLU kinks), so each tensor is checked along its own gradient (see
//! `resnet_nn::gradcheck::check_directional`), where the signal is largest. Along random
//! directions the derivative is tiny and drowns in that noise. The per-element precision check is
//! the PyTorch golden test (`golden.rs`).

use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, ResNet, ResNetSpec, Shortcut, StridePlacement};
use resnet_nn::gradcheck::{check_directional, randomize, Direction, Tolerance};
use resnet_nn::ops::softmax_cross_entropy;
use resnet_nn::Tensor;

fn loss(net: &mut ResNet, x: &Tensor, labels: &[u32]) -> f64 {
    let logits = net.forward(x, BatchNormMode::Train).clone();
    softmax_cross_entropy(&logits, labels, 0.0, None).loss
}

fn check_network(s: ResNetSpec, hw: usize, batch: usize, eps: f32, rel: f64) {
    let mut net = ResNet::new(s.clone()).unwrap();
    net.init(&InitConfig { seed: 3, ..InitConfig::default() });
    // Non-trivial batch-norm affine parameters, so their gradients are exercised too.
    net.for_each_param(|p| {
        if p.kind == resnet_nn::ParamKind::BnWeight || p.kind == resnet_nn::ParamKind::BnBias {
            let base = if p.kind == resnet_nn::ParamKind::BnWeight { 1.0 } else { 0.0 };
            let seed = p.name.len() as u64;
            randomize(p.value_mut(), seed);
            p.value_mut().iter_mut().for_each(|v| *v = base + 0.3 * *v);
        }
    });
    let mut x = Tensor::zeros([batch, hw, hw, s.in_channels]);
    randomize(x.data_mut(), 9);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % s.num_classes as u32).collect();

    let logits = net.forward(&x, BatchNormMode::Train).clone();
    let mut dlogits = vec![0.0; logits.len()];
    softmax_cross_entropy(&logits, &labels, 0.0, Some(&mut dlogits));
    net.zero_grad();
    net.backward(&x, &dlogits);
    let params: Vec<(String, Vec<f32>, Vec<f32>)> =
        net.params().iter().map(|p| (p.name.clone(), p.value().to_vec(), p.grad.clone())).collect();
    let along_gradient = Tolerance { eps, rel, abs: 1e-5, samples: 1 };
    for (i, (name, value, grad)) in params.iter().enumerate() {
        let mut probe = net.clone();
        let mut f = |v: &[f32]| {
            let mut k = 0;
            probe.for_each_param(|p| {
                if k == i {
                    p.value_mut().copy_from_slice(v);
                }
                k += 1;
            });
            loss(&mut probe, &x, &labels)
        };
        let what = format!("{} {name}", s.name);
        check_directional(&what, value, grad, along_gradient, Direction::Gradient, &mut f);
    }
}

#[test]
fn cifar_resnet_n1_all_shortcut_options() {
    for sc in [Shortcut::A, Shortcut::B, Shortcut::C] {
        let s = spec("cifar-resnet8", &ModelOptions { shortcut: Some(sc), num_classes: Some(5), in_channels: None })
            .unwrap();
        check_network(s, 8, 4, 1e-3, 2e-2);
    }
}

#[test]
fn cifar_plain_n1() {
    check_network(
        spec("cifar-plain8", &ModelOptions { num_classes: Some(5), ..ModelOptions::default() }).unwrap(),
        8,
        4,
        1e-3,
        2e-2,
    );
}

/// A narrow ImageNet-style network: 7x7/2 stem, max pooling, bottlenecks with both stride
/// placements, grey input.
#[test]
fn small_bottleneck_networks_both_stride_placements() {
    for placement in [StridePlacement::V1, StridePlacement::V1_5] {
        let mut s =
            spec("resnet50", &ModelOptions { num_classes: Some(3), in_channels: Some(1), shortcut: None }).unwrap();
        s.depths = vec![1, 2];
        s.widths = vec![4, 8];
        s.stem_width = 8;
        s.stride_placement = placement;
        // Max pooling over ReLU outputs meets exact ties (windows of zeros), where the function is
        // not differentiable at all: PyTorch and we route to the first maximum, a finite
        // difference averages both sides. Hence the looser bound; golden.rs checks these
        // gradients exactly against PyTorch.
        check_network(s, 32, 4, 2e-4, 5e-2);
    }
}
