//! `resnet download`: fetch a public dataset, verified against its published md5, or torchvision's
//! ImageNet weights for a ResNet, verified against the sha256 prefix in their file name.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use resnet_data::{Fetched, WeightsVariant};
use std::path::{Path, PathBuf};

/// What `resnet download` fetches.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    /// CIFAR-10, binary version (162 MB).
    Cifar10,
    /// CIFAR-100, binary version (161 MB).
    Cifar100,
    /// MNIST (4 files, 11 MB).
    Mnist,
    /// Fashion-MNIST (4 files, 30 MB).
    FashionMnist,
    /// torchvision's ImageNet weights for the NETWORK named next (45-230 MB, a .pth file).
    Weights,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Cifar10 => "cifar10",
            Name::Cifar100 => "cifar100",
            Name::Mnist => "mnist",
            Name::FashionMnist => "fashion-mnist",
            Name::Weights => "weights",
        }
    }
}

/// The networks torchvision publishes ImageNet weights for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// ResNet-18 (IMAGENET1K_V1).
    Resnet18,
    /// ResNet-34 (IMAGENET1K_V1).
    Resnet34,
    /// ResNet-50, torchvision's v1.5 (IMAGENET1K_V2 by default).
    Resnet50,
    /// ResNet-101, torchvision's v1.5 (IMAGENET1K_V2 by default).
    Resnet101,
    /// ResNet-152, torchvision's v1.5 (IMAGENET1K_V2 by default).
    Resnet152,
}

impl Network {
    fn as_str(self) -> &'static str {
        match self {
            Network::Resnet18 => "resnet18",
            Network::Resnet34 => "resnet34",
            Network::Resnet50 => "resnet50",
            Network::Resnet101 => "resnet101",
            Network::Resnet152 => "resnet152",
        }
    }
}

/// torchvision's weight sets.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// IMAGENET1K_V1: the original recipe (every network).
    V1,
    /// IMAGENET1K_V2: torchvision's later recipe (resnet50, resnet101, resnet152).
    V2,
}

impl From<Variant> for WeightsVariant {
    fn from(v: Variant) -> WeightsVariant {
        match v {
            Variant::V1 => WeightsVariant::V1,
            Variant::V2 => WeightsVariant::V2,
        }
    }
}

/// Arguments of `resnet download`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which dataset, or `weights` for torchvision's ImageNet weights of NETWORK.
    #[arg(value_enum)]
    name: Name,
    /// With `weights`: the network.
    #[arg(value_enum, required_if_eq("name", "weights"))]
    network: Option<Network>,
    /// With `weights`: torchvision's weight set (default: what torchvision's weights="DEFAULT"
    /// gives: v1 for resnet18/34, v2 for resnet50/101/152).
    #[arg(long, value_enum)]
    variant: Option<Variant>,
    /// Folder to download into (created if needed).
    #[arg(long, default_value = "data")]
    data: PathBuf,
}

/// Ends the process as clap does for a bad command line: the message, the usage, exit code 2.
fn usage_error(message: String) -> ! {
    let mut cmd = <Args as clap::Args>::augment_args(clap::Command::new("download")).bin_name("resnet download");
    cmd.error(clap::error::ErrorKind::ArgumentConflict, message).exit()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match (args.name, args.network) {
        (Name::Weights, Some(network)) => download_weights(network, args.variant, &args.data),
        (name, Some(network)) => usage_error(format!(
            "'{}' takes no network ('{}' was given); a network goes with 'weights': resnet download weights {} --data DIR",
            name.as_str(),
            network.as_str(),
            network.as_str()
        )),
        (name, None) if args.variant.is_some() => {
            usage_error(format!("--variant goes with 'weights', not with the dataset '{}'", name.as_str()))
        }
        (name, None) => download_dataset(name.as_str(), &args.data),
    }
}

/// A byte-count progress bar on standard error, and the callback that moves it.
fn progress_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    bar
}

/// Moves `bar` to `done` of `total` bytes; a count going back means the next file has started.
fn advance(bar: &ProgressBar, last: &mut u64, done: u64, total: Option<u64>) {
    if done < *last || bar.length() != total {
        bar.set_length(total.unwrap_or(0));
    }
    *last = done;
    bar.set_position(done);
}

fn download_dataset(name: &str, dir: &Path) -> anyhow::Result<()> {
    let bar = progress_bar(name);
    let mut last = 0;
    let mut progress = |done: u64, total: Option<u64>| advance(&bar, &mut last, done, total);
    for base in resnet_data::download_addresses(name).iter().filter(|b| b.starts_with("http://")) {
        eprintln!(
            "note: {base} is plain HTTP; every file is checked against its published md5 and size before \
             it is kept"
        );
    }
    let result = resnet_data::download(name, dir, &mut progress);
    bar.finish_and_clear();
    let path = result.with_context(|| format!("downloading {name} into {}", dir.display()))?;
    println!("{name}: verified, at {}", path.display());
    println!("next: resnet data --dataset {name} --data {}", dir.display());
    Ok(())
}

fn download_weights(network: Network, variant: Option<Variant>, dir: &Path) -> anyhow::Result<()> {
    let weights = match resnet_data::torchvision_weights(network.as_str(), variant.map(WeightsVariant::from)) {
        Ok(w) => w,
        Err(e) => usage_error(e.to_string()),
    };
    let bar = progress_bar(weights.file);
    let mut last = 0;
    let mut progress = |done: u64, total: Option<u64>| advance(&bar, &mut last, done, total);
    let result = resnet_data::download_weights(weights, dir, &mut progress);
    bar.finish_and_clear();
    let got = result.with_context(|| format!("downloading {} into {}", weights.file, dir.display()))?;
    let how = match got.fetched {
        Fetched::AlreadyPresent => "already there, verified; not downloaded again",
        Fetched::Downloaded => "downloaded and verified",
        Fetched::Replaced => "downloaded and verified, replacing a file of that name with another sha256",
    };
    let f = got.path.display();
    println!(
        "{} {} (ImageNet top-1 {:.1}% in torchvision): {how} (sha256 {}...), at {f}",
        weights.network,
        weights.variant.torchvision_name(),
        weights.top1,
        weights.sha256_prefix()
    );
    println!("next: resnet predict --weights {f} image.jpg");
    println!("      resnet train --init {f} --data YOUR_IMAGES");
    println!("      resnet import --from torchvision {f} --out {}.safetensors", weights.network);
    Ok(())
}
