//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod download;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod import;
pub mod info;
pub mod interrupt;
pub mod models;
pub mod plot;
pub mod predict;
pub mod progress;
pub mod quantize;
pub mod ranks;
pub mod split;
pub mod train;
pub mod weights;

use clap::Args as ClapArgs;
use resnet_models::zoo::{self, ModelOptions};
use resnet_models::{ResNetSpec, Shortcut};

/// A count of threads (`--threads`, `--workers`): at least 1, at most four per core. More only
/// queue for the same cores, and an absurd count would take minutes (and the memory of every
/// stack) to create.
pub fn thread_count(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("'{s}' is not a count"))?;
    let most = resnet_train::system::max_threads();
    match n {
        0 => Err("at least 1".into()),
        n if n > most => Err(format!("at most {most} (4 per core of this machine)")),
        n => Ok(n),
    }
}

/// `n word` or `n words`.
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// How a network is named on the command line.
#[derive(ClapArgs, Debug, Clone)]
pub struct ModelArgs {
    /// Shortcut option A, B or C (default: A for CIFAR nets, B for ImageNet nets).
    #[arg(long)]
    pub shortcut: Option<Shortcut>,
    /// Number of classes (default: 10 for CIFAR nets, 1000 for ImageNet nets).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Input channels (default 3).
    #[arg(long)]
    pub in_channels: Option<usize>,
}

impl ModelArgs {
    /// The spec of `name` with these options.
    pub fn spec(&self, name: &str) -> anyhow::Result<ResNetSpec> {
        Ok(zoo::spec(
            name,
            &ModelOptions { shortcut: self.shortcut, num_classes: self.classes, in_channels: self.in_channels },
        )?)
    }
}
