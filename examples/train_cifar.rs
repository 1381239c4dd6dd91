//! Trains a CIFAR ResNet-20 with the paper's recipe shape, shortened.
//!
//! `cargo run --release -p resnet-examples --example train_cifar [IMAGEFOLDER] [EPOCHS]`: on the
//! CIFAR-10 image folder when given (train/ and test/ of class folders), else on the built-in
//! synthetic dataset. Writes runs/example-train and prints the final errors.

use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::trainer::{self, Observer};
use std::sync::atomic::AtomicBool;

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

/// Prints one line per epoch.
struct Log;
impl Observer for Log {
    fn epoch_end(&mut self, m: &resnet_train::metrics::EpochMetrics) {
        println!(
            "epoch {:>3}: train error {:5.2}%  test error {:5.2}%  {:.0} img/s",
            m.epoch, m.train_error, m.test_error, m.images_per_sec
        );
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().filter(|d| !d.is_empty());
    let epochs: u64 = args.next().map(|e| e.parse()).transpose()?.unwrap_or(3);
    let mut config = TrainConfig::cifar_paper("resnet20", 20);
    config.length = RunLength::Epochs(epochs);
    config.decay = resnet_train::schedule::Decay::Step {
        milestones: vec![
            resnet_train::schedule::Milestone::Fraction(0.5),
            resnet_train::schedule::Milestone::Fraction(0.75),
        ],
        gamma: 0.1,
    };
    match data {
        Some(path) => {
            config.dataset = "imagefolder".into();
            config.data = Some(path.into());
        }
        None => config.dataset = "synthetic".into(),
    }
    let dir = std::path::Path::new("runs/example-train");
    let resume = dir.join("checkpoints/last.safetensors").exists();
    let summary = trainer::run(config, dir, resume, &AtomicBool::new(false), &mut Log)?;
    let last = summary.history.last().expect("at least one epoch");
    println!("final test error {:.2}%, checkpoint {}", last.test_error, summary.last_checkpoint.display());
    Ok(())
}
