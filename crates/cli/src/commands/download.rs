//! `resnet download`: fetch a public dataset, verified against its published md5.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;

/// The datasets `resnet download` knows.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Name {
    /// CIFAR-10, binary version (162 MB).
    Cifar10,
    /// CIFAR-100, binary version (161 MB).
    Cifar100,
    /// MNIST (4 files, 11 MB).
    Mnist,
    /// Fashion-MNIST (4 files, 30 MB).
    FashionMnist,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Cifar10 => "cifar10",
            Name::Cifar100 => "cifar100",
            Name::Mnist => "mnist",
            Name::FashionMnist => "fashion-mnist",
        }
    }
}

/// Arguments of `resnet download`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which dataset.
    #[arg(value_enum)]
    name: Name,
    /// Folder to download into (created if needed).
    #[arg(long, default_value = "data")]
    data: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    let mut last = 0;
    let mut progress = |done: u64, total: Option<u64>| {
        // A count going back means the next file has started.
        if done < last || bar.length() != total {
            bar.set_length(total.unwrap_or(0));
        }
        last = done;
        bar.set_position(done);
    };
    for base in resnet_data::download_addresses(name).iter().filter(|b| b.starts_with("http://")) {
        eprintln!(
            "note: {base} is plain HTTP; every file is checked against its published md5 and size before \
             it is kept"
        );
    }
    let result = resnet_data::download(name, &args.data, &mut progress);
    bar.finish_and_clear();
    let path = result.with_context(|| format!("downloading {name} into {}", args.data.display()))?;
    println!("{name}: verified, at {}", path.display());
    println!("next: resnet data --dataset {name} --data {}", args.data.display());
    Ok(())
}
