//! `resnet train`: a training run with a paper recipe and any override; the main job.

use super::progress::EpochBars;
use anyhow::{bail, Context};
use resnet_data::{EvalView, TrainAugment};
use resnet_models::{zoo, Shortcut};
use resnet_train::config::{Normalization, Precision, RunLength, TrainConfig};
use resnet_train::schedule::{Decay, Milestone, Warmup};
use resnet_train::trainer::{self, Outcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Named recipes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// ResNet-20 on the embedded synthetic dataset, a few minutes.
    Quickstart,
    /// Section 4.2: batch 128, lr 0.1 /10 at 32k and 48k, 64k iterations, pad-crop-flip, pixel mean.
    CifarPaper,
    /// Section 3.4: batch 256, lr 0.1 /10 on plateau, scale augmentation, 10-crop evaluation.
    ImagenetPaper,
}

/// Learning-rate decay.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Divide by --gamma at each milestone.
    Step,
    /// Half cosine to zero.
    Cosine,
    /// Divide by --gamma when the error plateaus.
    Plateau,
    /// Constant.
    Constant,
}

/// Training augmentation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AugmentKind {
    /// None.
    None,
    /// 4-pixel zero pad, random crop, flip (CIFAR, the paper).
    PadCropFlip,
    /// Shorter side in [256, 480], random 224 crop, flip (ImageNet, the paper).
    Scale,
    /// torchvision's random-resized crop and flip.
    RandomResizedCrop,
}

/// Evaluation view.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// The image as it is.
    Full,
    /// Shorter side 256, centre 224 crop.
    Center,
    /// Four corners, centre and their flips.
    TenCrop,
}

/// Convolution arithmetic.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionArg {
    /// f32 throughout.
    Fp32,
    /// bf16 dot products, f32 accumulation, f32 everything else.
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// Input normalisation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalizeKind {
    /// Per-pixel mean subtraction (the paper).
    PixelMean,
    /// Per-channel mean and std of the training set.
    MeanStd,
    /// Pixels in [0, 1].
    None,
}

/// Arguments of `resnet train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipe the defaults come from.
    #[arg(long, value_enum, default_value_t = Recipe::Quickstart)]
    recipe: Recipe,
    /// Model (see `resnet models`); default resnet20 (resnet50 for imagenet-paper).
    #[arg(long)]
    model: Option<String>,
    /// Shortcut option A, B or C.
    #[arg(long)]
    shortcut: Option<Shortcut>,
    /// Start each residual branch's last batch norm at gamma = 0.
    #[arg(long)]
    zero_init_residual: bool,
    /// Dataset: cifar10, cifar100, imagefolder, mnist, fashion-mnist, kmnist, idx, synthetic.
    #[arg(long)]
    dataset: Option<String>,
    /// Dataset location.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Synthetic dataset: training images.
    #[arg(long)]
    synthetic_train: Option<usize>,
    /// Synthetic dataset: test images.
    #[arg(long)]
    synthetic_test: Option<usize>,
    /// Synthetic dataset: image side.
    #[arg(long)]
    synthetic_size: Option<usize>,
    /// Hold out this many training images as a validation set (the paper used 5000).
    #[arg(long)]
    val_split: Option<usize>,
    /// Skip unreadable samples (and report them) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Run directory (default: runs/<model>-<dataset>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Length in epochs.
    #[arg(long, conflicts_with = "iterations")]
    epochs: Option<u64>,
    /// Length in iterations.
    #[arg(long)]
    iterations: Option<u64>,
    /// Mini-batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Evaluation batch size.
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Learning-rate decay.
    #[arg(long, value_enum)]
    schedule: Option<ScheduleKind>,
    /// Step milestones: iterations (32000,48000), fractions of the run (0.5,0.75) or epochs (30ep,60ep).
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<Milestone>>,
    /// Decay factor of step and plateau schedules.
    #[arg(long)]
    gamma: Option<f32>,
    /// Warm-up: none, paper (0.01 until training error < 80%), or a number of iterations (linear).
    #[arg(long)]
    warmup: Option<String>,
    /// Momentum.
    #[arg(long)]
    momentum: Option<f32>,
    /// Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Weight decay.
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Do not decay batch-norm parameters and biases.
    #[arg(long)]
    no_decay_bn_bias: bool,
    /// Label smoothing.
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Training augmentation.
    #[arg(long, value_enum)]
    augment: Option<AugmentKind>,
    /// Add AlexNet-style PCA colour augmentation (scale and random-resized-crop augmentations).
    #[arg(long)]
    pca: bool,
    /// Evaluation view.
    #[arg(long, value_enum)]
    eval_view: Option<ViewKind>,
    /// Input normalisation.
    #[arg(long, value_enum)]
    normalize: Option<NormalizeKind>,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Loader worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Also keep a checkpoint every K epochs.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Convolution arithmetic: fp32, or bf16 dot products with f32 accumulation (AVX512_BF16,
    /// and AMX tiles where the CPU has them).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Print one line per epoch instead of progress bars.
    #[arg(long)]
    pub quiet: bool,
}

fn depth_of(model: &str) -> usize {
    zoo::spec(model, &zoo::ModelOptions::default()).map(|s| s.depth()).unwrap_or(0)
}

/// The configuration the arguments describe.
pub fn config_from(a: &Args) -> anyhow::Result<TrainConfig> {
    let mut c = match a.recipe {
        Recipe::Quickstart => {
            let mut c = TrainConfig::quickstart();
            if let Some(m) = &a.model {
                c.model = m.clone();
            }
            c
        }
        Recipe::CifarPaper => {
            let model = a.model.clone().unwrap_or_else(|| "resnet20".into());
            TrainConfig::cifar_paper(&model, depth_of(&model))
        }
        Recipe::ImagenetPaper => TrainConfig::imagenet_paper(a.model.as_deref().unwrap_or("resnet50")),
    };
    zoo::spec(&c.model, &zoo::ModelOptions::default())?;
    c.shortcut = a.shortcut.or(c.shortcut);
    c.zero_init_residual |= a.zero_init_residual;
    if let Some(d) = &a.dataset {
        c.dataset = d.clone();
    }
    c.data = a.data.clone().or(c.data);
    c.synthetic_train = a.synthetic_train.unwrap_or(c.synthetic_train);
    c.synthetic_test = a.synthetic_test.unwrap_or(c.synthetic_test);
    c.synthetic_size = a.synthetic_size.unwrap_or(c.synthetic_size);
    c.val_split = a.val_split.unwrap_or(c.val_split);
    c.skip_bad |= a.skip_bad;
    c.batch_size = a.batch_size.unwrap_or(c.batch_size);
    c.eval_batch_size = a.eval_batch_size.unwrap_or(c.eval_batch_size);
    if let Some(e) = a.epochs {
        c.length = RunLength::Epochs(e);
    }
    if let Some(i) = a.iterations {
        c.length = RunLength::Iterations(i);
    }
    c.lr = a.lr.unwrap_or(c.lr);
    let gamma = a.gamma.unwrap_or(0.1);
    if let Some(kind) = a.schedule {
        c.decay = match kind {
            ScheduleKind::Step => Decay::Step {
                milestones: a
                    .milestones
                    .clone()
                    .unwrap_or_else(|| vec![Milestone::Fraction(0.5), Milestone::Fraction(0.75)]),
                gamma,
            },
            ScheduleKind::Cosine => Decay::Cosine { final_lr: 0.0 },
            ScheduleKind::Plateau => Decay::Plateau { patience: 3, gamma, threshold: 0.01 },
            ScheduleKind::Constant => Decay::Constant,
        };
    } else if let Some(m) = &a.milestones {
        c.decay = Decay::Step { milestones: m.clone(), gamma };
    } else if let (Some(g), Decay::Step { gamma, .. } | Decay::Plateau { gamma, .. }) = (a.gamma, &mut c.decay) {
        *gamma = g;
    }
    if let Some(w) = &a.warmup {
        c.warmup = match w.as_str() {
            "none" => Warmup::None,
            "paper" => Warmup::paper(),
            n => Warmup::Linear {
                iterations: n
                    .parse()
                    .with_context(|| format!("--warmup takes none, paper or a number of iterations, not '{n}'"))?,
                start_factor: 0.1,
            },
        };
    }
    c.momentum = a.momentum.unwrap_or(c.momentum);
    c.nesterov |= a.nesterov;
    c.weight_decay = a.weight_decay.unwrap_or(c.weight_decay);
    c.decay_bn_and_bias &= !a.no_decay_bn_bias;
    c.label_smoothing = a.label_smoothing.unwrap_or(c.label_smoothing);
    if let Some(kind) = a.augment {
        c.augment = match kind {
            AugmentKind::None => TrainAugment::None,
            AugmentKind::PadCropFlip => TrainAugment::PadCropFlip { pad: 4 },
            AugmentKind::Scale => TrainAugment::ScaleAugment { min: 256, max: 480, crop: 224, pca: a.pca },
            AugmentKind::RandomResizedCrop => TrainAugment::RandomResizedCrop { size: 224, pca: a.pca },
        };
    } else if a.pca {
        match &mut c.augment {
            TrainAugment::ScaleAugment { pca, .. } | TrainAugment::RandomResizedCrop { pca, .. } => *pca = true,
            _ => bail!("--pca needs --augment scale or random-resized-crop"),
        }
    }
    if let Some(v) = a.eval_view {
        c.eval_view = match v {
            ViewKind::Full => EvalView::Full,
            ViewKind::Center => EvalView::ResizeCenterCrop { resize: 256, crop: 224 },
            ViewKind::TenCrop => EvalView::TenCrop { resize: 256, crop: 224 },
        };
    }
    if let Some(n) = a.normalize {
        c.normalization = match n {
            NormalizeKind::PixelMean => Normalization::PixelMean { scale: 1.0 / 64.0 },
            NormalizeKind::MeanStd => Normalization::DatasetMeanStd,
            NormalizeKind::None => Normalization::None,
        };
    }
    c.seed = a.seed.unwrap_or(c.seed);
    c.workers = a.workers.unwrap_or(c.workers);
    c.checkpoint_every = a.checkpoint_every.unwrap_or(c.checkpoint_every);
    if let Some(p) = a.precision {
        c.precision = p.into();
    }
    Ok(c)
}

/// `YYYYmmdd-HHMMSS` in UTC (civil-from-days, so no date crate is needed).
fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, dir, resume) = match &args.resume {
        Some(dir) => (TrainConfig::quickstart(), dir.clone(), true),
        None => {
            let c = config_from(&args)?;
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}-{}", c.model, c.dataset, timestamp())));
            (c, dir, false)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: finishing the step and writing a checkpoint (Ctrl-C again to quit at once)");
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    if !resume {
        eprintln!("training {} on {} ({} recipe) into {}", config.model, config.dataset, config.recipe, dir.display());
    }
    let mut bars = EpochBars::new(args.quiet);
    let summary = trainer::run(config, &dir, resume, &stop, &mut bars)?;
    bars.finish();
    let last = summary.history.last();
    match summary.outcome {
        Outcome::Interrupted => {
            println!("stopped; continue with: resnet train --resume {}", dir.display());
        }
        Outcome::Finished => {
            if let Some(m) = last {
                println!(
                    "done: {} epochs, {} iterations, final test error {:.2}% (top-5 {:.2}%), training error {:.2}%",
                    m.epoch, m.iteration, m.test_error, m.test_top5_error, m.train_error
                );
            }
        }
    }
    println!("run directory   {}", dir.display());
    println!("checkpoint      {}", summary.last_checkpoint.display());
    if let Some(b) = &summary.best_checkpoint {
        println!("best checkpoint {}", b.display());
    }
    println!("metrics         {}  (and metrics.jsonl)", dir.join("metrics.csv").display());
    println!("plots           {}  {}", dir.join("curves.png").display(), dir.join("curves.svg").display());
    if summary.outcome == Outcome::Finished {
        println!("next:");
        println!("  resnet eval --checkpoint {} --dataset <name> --data <path>", summary.last_checkpoint.display());
        println!("  resnet download cifar10 --data data && resnet train --recipe cifar-paper --data data/cifar-10-batches-bin");
    }
    Ok(())
}
