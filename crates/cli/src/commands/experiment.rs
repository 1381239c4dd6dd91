//! `resnet experiment degradation|responses|shortcuts`: the paper's experiments, resumable and
//! splittable into parts.

use super::interrupt;
use super::progress::EpochBars;
use super::train;
use resnet_data::{DatasetKind, OpenOptions, SyntheticConfig};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// The experiments.
#[derive(clap::Subcommand, Debug)]
pub enum Experiment {
    /// Plain vs residual nets of several depths (Fig. 6).
    Degradation(DegradationArgs),
    /// Std of each 3x3 layer's response, plain vs residual (Fig. 7).
    Responses(ResponsesArgs),
    /// Shortcut options A, B, C on one network (Table 3).
    Shortcuts(ShortcutsArgs),
    /// Test error against depth, beside the paper's (Table 6).
    Depth(DepthArgs),
}

/// Arguments of `resnet experiment depth`.
#[derive(clap::Args, Debug)]
pub struct DepthArgs {
    /// CIFAR ResNet depths (6n+2).
    #[arg(long, value_delimiter = ',', default_value = "20,32,44,56,110")]
    depths: Vec<usize>,
    /// Train only these networks now (e.g. resnet110); the table covers every run so far.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The training recipe and its overrides (as `resnet train`; each network gets the recipe's
    /// settings for its depth, the 110-layer warm-up included); --out is the experiment's
    /// directory (default runs/depth), one subdirectory per network, and runs already there are
    /// resumed or reused. A finished `bench/pytorch_cifar_train.py` run in pytorch-<network>
    /// there adds PyTorch's test error to the table.
    #[command(flatten)]
    train: train::Args,
}

/// Arguments of `resnet experiment degradation`.
#[derive(clap::Args, Debug)]
pub struct DegradationArgs {
    /// CIFAR depths (6n+2).
    #[arg(long, value_delimiter = ',', default_value = "20,32,44,56")]
    depths: Vec<usize>,
    /// Train only these networks now (e.g. plain56,resnet56); the rest can follow later.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The training recipe and its overrides (as `resnet train`); --out is the experiment's
    /// directory (default runs/degradation), one subdirectory per network.
    #[command(flatten)]
    train: train::Args,
}

/// Arguments of `resnet experiment shortcuts`.
#[derive(clap::Args, Debug)]
pub struct ShortcutsArgs {
    /// Train only these options now (A, B, C).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The training recipe and its overrides (as `resnet train`); --model picks the network,
    /// --out is the experiment's directory (default runs/shortcuts).
    #[command(flatten)]
    train: train::Args,
}

/// Arguments of `resnet experiment responses`.
#[derive(clap::Args, Debug)]
pub struct ResponsesArgs {
    /// Checkpoints of the networks to compare.
    #[arg(long, value_delimiter = ',', required = true)]
    checkpoints: Vec<PathBuf>,
    /// Dataset whose test split is fed through the networks.
    #[arg(long)]
    dataset: String,
    /// Dataset location.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Synthetic dataset: images per split and side (must match training).
    #[arg(long, num_args = 3, value_names = ["TRAIN", "TEST", "SIZE"])]
    synthetic: Option<Vec<usize>>,
    /// Images per batch.
    #[arg(long, default_value_t = 200)]
    batch_size: usize,
    /// Output directory.
    #[arg(long, default_value = "runs/responses")]
    out: PathBuf,
}

/// The experiment directory: `--out`, else `default`. Parts resume by themselves, so `--resume`
/// has no meaning here.
fn experiment_dir(t: &train::Args, default: &str) -> anyhow::Result<PathBuf> {
    if t.resume.is_some() {
        anyhow::bail!(
            "experiments resume their unfinished parts by themselves: run the same command again instead of --resume"
        );
    }
    Ok(t.out.clone().unwrap_or_else(|| PathBuf::from(default)))
}

/// Says how to continue an experiment some of whose networks have not finished, and exits with
/// the interrupted status when a signal stopped it.
fn end_of_training_experiment(complete: bool, stop: &std::sync::atomic::AtomicBool) {
    if !complete {
        println!("not every network has finished; run the same command again to continue");
    }
    if stop.load(Ordering::SeqCst) {
        interrupt::exit_stopped();
    }
}

pub fn run(e: Experiment) -> anyhow::Result<()> {
    match e {
        Experiment::Degradation(a) => {
            let base = train::config_from(&a.train)?;
            let out = experiment_dir(&a.train, "runs/degradation")?;
            let stop = interrupt::stop_flag()?;
            let mut bars = EpochBars::new(a.train.quiet);
            let report = resnet_experiments::degradation(&a.depths, &base, &out, a.only.as_deref(), &stop, &mut bars)?;
            bars.finish();
            println!("{}", report.table);
            println!("figure: {}  {}", out.join("degradation.png").display(), out.join("degradation.svg").display());
            println!("curves: {}", out.join("degradation.csv").display());
            end_of_training_experiment(report.complete, &stop);
        }
        Experiment::Depth(a) => {
            if a.train.model.is_some() {
                anyhow::bail!("resnet experiment depth trains the ResNet of each --depths; it takes no --model");
            }
            let config_for = |model: &str| {
                let mut args = a.train.clone();
                args.model = Some(model.to_string());
                train::config_from(&args).map_err(|e| resnet_experiments::ExperimentError::Config(e.to_string()))
            };
            let out = experiment_dir(&a.train, "runs/depth")?;
            let stop = interrupt::stop_flag()?;
            let mut bars = EpochBars::new(a.train.quiet);
            let report = resnet_experiments::depth(&a.depths, &config_for, &out, a.only.as_deref(), &stop, &mut bars)?;
            bars.finish();
            println!("{}", report.table);
            match report.falls_with_depth {
                Some(true) => println!("the test error falls with every step of depth among the finished runs"),
                Some(false) => println!("the test error does not fall at every step of depth among the finished runs"),
                None => {}
            }
            println!("figure: {}  {}", out.join("depth.png").display(), out.join("depth.svg").display());
            end_of_training_experiment(report.complete, &stop);
        }
        Experiment::Shortcuts(a) => {
            let base = train::config_from(&a.train)?;
            let out = experiment_dir(&a.train, "runs/shortcuts")?;
            let stop = interrupt::stop_flag()?;
            let mut bars = EpochBars::new(a.train.quiet);
            let report = resnet_experiments::shortcuts(&base, &out, a.only.as_deref(), &stop, &mut bars)?;
            bars.finish();
            println!("{}", report.table);
            if stop.load(Ordering::SeqCst) {
                println!("stopped; run the same command again to continue");
                interrupt::exit_stopped();
            }
        }
        Experiment::Responses(a) => {
            let kind: DatasetKind = a.dataset.parse().map_err(anyhow::Error::msg)?;
            let mut synthetic = SyntheticConfig::default();
            if let Some(s) = &a.synthetic {
                (synthetic.train, synthetic.test, synthetic.size) = (s[0], s[1], s[2]);
            }
            let opts = OpenOptions { synthetic, ..OpenOptions::default() };
            let report =
                resnet_experiments::responses(&a.checkpoints, kind, a.data.as_deref(), &opts, a.batch_size, &a.out)?;
            println!("{}", report.table);
            println!("figure: {}  {}", a.out.join("responses.png").display(), a.out.join("responses.svg").display());
        }
    }
    Ok(())
}
