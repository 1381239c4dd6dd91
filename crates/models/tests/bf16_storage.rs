//! Training may keep each convolution output in bf16 for the backward pass
//! (`KernelConfig::stored`, `RESNET_BF16_STORAGE=1`). With f32 arithmetic, a training step then
//! computes the f32 step's loss and gradients within what rounding those outputs moves them; in
//! bf16 training every convolution output is stored so, evaluation stays f32. (The network holds
//! what the memory estimate says: `memory.rs`.)

use resnet_kernels::conv::{bf16_supported, Precision};
use resnet_kernels::KernelConfig;
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, BlockKind, Family, InitConfig, ResNet, ResNetSpec, Shortcut, StridePlacement};
use resnet_nn::gradcheck::randomize;
use resnet_nn::ops::softmax_cross_entropy;
use resnet_nn::Tensor;

/// One training step: the loss and every parameter's gradient, in order.
fn step(net: &mut ResNet, x: &Tensor, labels: &[u32]) -> (f64, Vec<Vec<f32>>) {
    net.zero_grad();
    let logits = net.forward(x, BatchNormMode::Train).clone();
    let mut dlogits = vec![0.0; logits.len()];
    let loss = softmax_cross_entropy(&logits, labels, 0.0, Some(&mut dlogits)).loss;
    net.backward(x, &dlogits);
    let mut grads = Vec::new();
    net.for_each_param(|p| grads.push(p.grad.clone()));
    (loss, grads)
}

/// A CIFAR net (option A) and small ImageNet-family ones (the stem's max pool, bottleneck and
/// basic blocks with projections), a batch of each.
fn cases() -> Vec<(ResNetSpec, Tensor, Vec<u32>)> {
    let imagenet = |block, depths: Vec<usize>| ResNetSpec {
        name: format!("small-{block:?}"),
        family: Family::ImageNet,
        block,
        depths,
        widths: vec![16, 32],
        stem_width: 16,
        residual: true,
        shortcut: Shortcut::B,
        stride_placement: StridePlacement::V1_5,
        num_classes: 10,
        in_channels: 3,
    };
    let cifar = spec("cifar-resnet8", &ModelOptions { num_classes: Some(10), ..ModelOptions::default() }).unwrap();
    let nets =
        [(cifar, 16), (imagenet(BlockKind::Bottleneck, vec![1, 1]), 48), (imagenet(BlockKind::Basic, vec![1, 1]), 48)];
    nets.into_iter()
        .map(|(s, side)| {
            let n = 8;
            let mut x = Tensor::zeros([n, side, side, 3]);
            randomize(x.data_mut(), 11);
            (s, x, (0..n as u32).map(|i| i % 10).collect())
        })
        .collect()
}

fn network(s: &ResNetSpec, config: KernelConfig) -> ResNet {
    let mut net = ResNet::new(s.clone()).unwrap();
    net.init(&InitConfig { seed: 5, ..InitConfig::default() });
    net.set_kernel_config(config).unwrap();
    net
}

/// The gradients of a step in f32 moved by storing each convolution output in bf16, and by
/// rounding the input batch to bf16 instead: at initialisation, on random data and a batch of
/// eight, these networks are so sensitive that the second alone moves the first layers'
/// gradients by 3-17% (storage, which rounds at every layer: 1-3 times as much). Storage must
/// stay within a few times that (a wrong value read back moves them by their whole size).
#[test]
fn stored_bf16_outputs_move_a_training_step_as_much_as_rounding_its_input() {
    let f32_config = KernelConfig { winograd: false, ..KernelConfig::default() };
    let stored = KernelConfig { stored: Some(Precision::Bf16), ..f32_config };
    let distance = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(u, v)| f64::from(u - v).powi(2)).sum::<f64>().sqrt();
    for (s, x, labels) in cases() {
        let name = &s.name;
        let (loss, grads) = step(&mut network(&s, f32_config), &x, &labels);
        let mut rounded_x = x.clone();
        let rounded: Vec<f32> = x.data().iter().map(|&v| f32::from_bits(u32::from(bf16(v)) << 16)).collect();
        rounded_x.data_mut().copy_from_slice(&rounded);
        let (_, grads_in) = step(&mut network(&s, f32_config), &rounded_x, &labels);
        let mut net = network(&s, stored);
        let (loss_stored, grads_stored) = step(&mut net, &x, &labels);
        assert!(net.stem.unit.y.is_bf16() && net.blocks.iter().all(|b| b.units.iter().all(|u| u.y.is_bf16())));
        assert!((loss_stored - loss).abs() <= 1e-3 * loss, "{name}: loss {loss_stored} against {loss}");
        for (i, ((g, g_in), g_stored)) in grads.iter().zip(&grads_in).zip(&grads_stored).enumerate() {
            let norm = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            let (by_input, by_storage) = (distance(g_in, g), distance(g_stored, g));
            assert!(
                by_storage <= 4.0 * by_input + 0.005 * norm + 1e-7,
                "{name}: parameter {i}: storage moved the gradient by {by_storage}, input rounding by {by_input}, of {norm}"
            );
        }
    }
}

/// `v` rounded to bf16 (nearest, ties to even).
fn bf16(v: f32) -> u16 {
    let b = v.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

#[test]
fn bf16_storage_keeps_every_convolution_output_of_training_in_bf16_and_evaluation_in_f32() {
    if !bf16_supported() {
        resnet_kernels::skip::skip("this CPU lacks AVX512_BF16");
        return;
    }
    let bf16 = KernelConfig { precision: Precision::Bf16, amx: false, stored: None, ..KernelConfig::default() };
    for (s, x, labels) in cases() {
        let name = &s.name;
        let mut net = network(&s, bf16);
        let (loss, grads) = step(&mut net, &x, &labels);
        assert!(loss.is_finite() && grads.iter().flatten().all(|g| g.is_finite()), "{name}");
        assert!(net.stem.unit.y.is_bf16(), "{name}: the stem's convolution output");
        for block in &net.blocks {
            assert!(block.units.iter().all(|u| u.y.is_bf16() && !u.z.is_bf16()), "{name}: {}", block.name);
        }
        net.forward(&x, BatchNormMode::Eval);
        assert!(!net.blocks[0].units[0].y.is_bf16(), "{name}: an eval-mode output");
        let mut net = network(&s, KernelConfig { stored: Some(Precision::F32), ..bf16 });
        step(&mut net, &x, &labels);
        assert!(!net.blocks[0].units[0].y.is_bf16(), "{name}: f32 storage asked for");
    }
}
