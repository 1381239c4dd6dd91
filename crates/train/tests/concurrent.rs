//! Two networks trained at the same time from two threads share the compute pool (each pass runs
//! on a pool worker, which may run parts of the other network's kernels while it waits): each
//! ends exactly where it ends when trained alone.

use resnet_kernels::rng::Rng;
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, ResNet};
use resnet_nn::optim::{Sgd, SgdConfig};
use resnet_nn::Tensor;
use resnet_train::step::{train_step, StepBuffers};

/// Losses of `steps` training steps of a small CIFAR ResNet and its eval-mode logits after them.
fn train(steps: usize) -> (Vec<f64>, Vec<f32>) {
    let mut net = ResNet::new(spec("cifar-resnet8", &ModelOptions::default()).unwrap()).unwrap();
    net.init(&InitConfig::default());
    let mut rng = Rng::new(3);
    let x = Tensor::from_vec([16, 16, 16, 3], (0..16 * 16 * 16 * 3).map(|_| rng.normal() as f32).collect());
    let labels: Vec<u32> = (0..16).map(|i| i % 10).collect();
    let (mut sgd, mut buffers) = (Sgd::new(SgdConfig::default()), StepBuffers::default());
    let losses =
        (0..steps).map(|_| train_step(&mut net, &mut sgd, &x, &labels, 0.05, 0.0, &mut buffers).loss).collect();
    let logits = net.forward(&x, BatchNormMode::Eval).data().to_vec();
    (losses, logits)
}

#[test]
fn networks_trained_at_once_match_networks_trained_alone() {
    let alone = train(6);
    for _ in 0..3 {
        let together: Vec<_> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..3).map(|_| s.spawn(|| train(6))).collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for run in &together {
            assert_eq!(run.0, alone.0, "losses");
            assert!(run.1.iter().zip(&alone.1).all(|(a, b)| a.to_bits() == b.to_bits()), "logits");
        }
    }
}
