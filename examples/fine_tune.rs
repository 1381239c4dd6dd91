//! Fine-tuning from the library: start a network from trained weights with a new classifier,
//! freeze its backbone, give the rest its own learning rate, and take SGD steps.
//!
//! `cargo run --release -p resnet-examples --example fine_tune -- WEIGHTS [CLASSES]`: WEIGHTS is
//! a checkpoint of `resnet train` or a torchvision `.safetensors`/`.pth` state dict. The steps
//! run on random images (this shows the calls, not a dataset); `resnet train --init` is the same
//! on real data.

use resnet_models::zoo::{self, ModelOptions};
use resnet_models::{InitConfig, ResNet};
use resnet_nn::optim::{Sgd, SgdConfig};
use resnet_nn::Tensor;
use resnet_train::config::FineTune;
use resnet_train::fine_tune::{self, InitWeights};
use resnet_train::step::{train_step, StepBuffers};

#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: fine_tune WEIGHTS [CLASSES]"))?;
    let classes: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(3);

    // The file's network, with a classifier of `classes` outputs.
    let init = InitWeights::read(path.as_ref()).map_err(anyhow::Error::msg)?;
    let options = ModelOptions {
        shortcut: Some(init.spec.shortcut),
        num_classes: Some(classes),
        in_channels: Some(init.spec.in_channels),
    };
    let mut net = ResNet::new(zoo::spec(&init.spec.name, &options)?)?;
    net.init(&InitConfig::default());
    println!("{}", init.load_into(&mut net).map_err(anyhow::Error::msg)?);

    // A linear probe: everything but the classifier frozen (`ResNet::set_frozen` on each
    // `LayerGroup`, its batch norms on their running statistics); a backbone that trained would
    // step at a tenth of the classifier's rate (`Sgd::lr_scale`).
    let fine_tune = FineTune { freeze: vec!["backbone".into()], lr_backbone: 0.1, ..FineTune::default() };
    if let Some(line) = fine_tune::freeze(&mut net, &fine_tune).map_err(anyhow::Error::msg)? {
        println!("{line}");
    }
    let mut sgd = Sgd::new(SgdConfig::default());
    sgd.lr_scale = fine_tune::lr_scales(&net, &fine_tune);

    let side = net.spec().default_input_size();
    let mut rng = resnet_kernels::rng::Rng::new(0);
    let x = Tensor::from_vec([8, side, side, 3], (0..8 * side * side * 3).map(|_| rng.normal() as f32).collect());
    let labels: Vec<u32> = (0..8).map(|i| i % classes as u32).collect();
    let conv1 = net.stem.unit.conv.weight.value().to_vec();
    let mut buffers = StepBuffers::default();
    for step in 1..=5 {
        let ce = train_step(&mut net, &mut sgd, &x, &labels, 0.1, 0.0, &mut buffers);
        println!("step {step}: loss {:.4}", ce.loss);
    }
    assert_eq!(net.stem.unit.conv.weight.value(), conv1.as_slice(), "a frozen weight moved");
    println!("the backbone is unchanged; the classifier trained");
    Ok(())
}
