//! Frozen parts of a network: the backward pass stops below the lowest part that trains, and
//! the gradients of the parts that train are exactly those of a full backward pass through the
//! same network (frozen batch norms on their running statistics in both).

use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, LayerGroup, ResNet};
use resnet_nn::gradcheck::randomize;
use resnet_nn::ops::softmax_cross_entropy;
use resnet_nn::Tensor;

/// Gradients of every parameter after one training step's backward pass on fixed data.
fn gradients(net: &mut ResNet, x: &Tensor) -> Vec<(String, Vec<f32>)> {
    let logits = net.forward(x, BatchNormMode::Train).clone();
    let labels: Vec<u32> = (0..x.n() as u32).map(|i| i % 10).collect();
    let mut dlogits = vec![0.0; logits.len()];
    softmax_cross_entropy(&logits, &labels, 0.0, Some(&mut dlogits));
    net.zero_grad();
    net.backward(x, &dlogits);
    net.params().iter().map(|p| (p.name.clone(), p.grad.clone())).collect()
}

fn network(model: &str) -> ResNet {
    let opts = ModelOptions { shortcut: Some(resnet_models::Shortcut::B), ..ModelOptions::default() };
    let mut net = ResNet::new(spec(model, &opts).unwrap()).unwrap();
    net.init(&InitConfig { seed: 4, ..InitConfig::default() });
    // Running statistics unlike the batch's, so that frozen ones make a difference.
    net.for_each_batch_norm(|bn| {
        let seed = bn.channels() as u64;
        randomize(&mut bn.running_mean, seed);
        bn.running_var.iter_mut().for_each(|v| *v = 1.5);
    });
    net
}

#[test]
fn a_backward_pass_that_stops_at_the_lowest_trainable_part_gives_the_full_pass_gradients() {
    for (model, side) in [("resnet20", 8), ("resnet18", 32)] {
        let stages = spec(model, &ModelOptions::default()).unwrap().depths.len();
        let mut x = Tensor::zeros([4, side, side, 3]);
        randomize(x.data_mut(), 5);
        for frozen in
            [vec![LayerGroup::Stem], vec![LayerGroup::Stem, LayerGroup::Stage(1)], LayerGroup::backbone(stages)]
        {
            let mut truncated = network(model);
            for &g in &frozen {
                truncated.set_frozen(g, true).unwrap();
            }
            // The same network with every parameter trainable, its batch norms as the frozen
            // network's: the full pass.
            let mut full = truncated.clone();
            full.for_each_param(|p| p.frozen = false);
            let (a, b) = (gradients(&mut truncated, &x), gradients(&mut full, &x));
            for ((name, ga), (_, gb)) in a.iter().zip(&b) {
                let in_frozen = frozen.contains(&LayerGroup::of(name).unwrap());
                if in_frozen {
                    assert!(ga.iter().all(|g| *g == 0.0), "{model} {frozen:?}: frozen {name} got a gradient");
                } else {
                    assert_eq!(ga, gb, "{model} {frozen:?}: {name}");
                    assert!(ga.iter().any(|g| *g != 0.0), "{model} {frozen:?}: {name} has no gradient");
                }
            }
        }
    }
}

#[test]
fn a_stage_the_network_lacks_is_refused() {
    let mut net = network("resnet20");
    let err = net.set_frozen(LayerGroup::Stage(4), true).unwrap_err();
    assert!(err.contains("no layer4") && err.contains("layer1 to layer3"), "{err}");
    assert_eq!(
        "layer0".parse::<LayerGroup>().unwrap_err(),
        "'layer0' is not a part of a ResNet: stem, layer1, layer2, ..., fc or backbone"
    );
    assert_eq!(LayerGroup::of("layer3.1.downsample.1.running_var"), Some(LayerGroup::Stage(3)));
    assert_eq!(LayerGroup::of("bn1.weight"), Some(LayerGroup::Stem));
}
