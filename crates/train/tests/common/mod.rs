//! What the training test binaries share: a fresh run directory, and the run the learning tests
//! make (CIFAR ResNet-8 on 640 generated 16-pixel images, four epochs of 20 steps, long enough
//! for the loss to fall well below where it starts).

use resnet_train::config::{RunLength, TrainConfig};
use std::path::PathBuf;

/// An empty run directory `name` in the temporary folder, unique to this test process.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The learning tests' run, in fp32.
pub fn learning_run() -> TrainConfig {
    TrainConfig {
        model: "cifar-resnet8".into(),
        synthetic_train: 640,
        synthetic_test: 192,
        synthetic_size: 16,
        batch_size: 32,
        eval_batch_size: 64,
        length: RunLength::Epochs(4),
        seed: 5,
        workers: 2,
        ..TrainConfig::quickstart()
    }
}
