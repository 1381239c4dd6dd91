//! Saving a network's weights costs the weights' size, not the activations a training pass keeps:
//! a checkpoint written during training must not copy them (it did, doubling a ResNet-50 run's
//! peak memory at every checkpoint).

use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, ResNet};
use resnet_nn::Tensor;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn state_dict_after_a_training_pass_allocates_about_the_weights() {
    let mut net = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
    net.init(&InitConfig::default());
    let x = Tensor::from_vec([32, 32, 32, 3], (0..32 * 32 * 32 * 3).map(|i| (i % 7) as f32 - 3.0).collect());
    net.forward(&x, BatchNormMode::Train);
    let weight_bytes: usize = net.params().iter().map(|p| p.value().len() * 4).sum();
    let region = Region::new(GLOBAL);
    let state = net.state_dict();
    let allocated = region.change().bytes_allocated;
    assert!(!state.is_empty());
    // The weights once, their batch-norm statistics and names: well under three times the weights,
    // where the activations of this pass alone are over forty times them.
    assert!(allocated < 3 * weight_bytes, "state_dict allocated {allocated} bytes for {weight_bytes} bytes of weights");
}
