//! `resnet train`: a training run with a paper recipe and any override; the main job.

use super::progress::{top5_means_something, EpochBars};
use super::{interrupt, plural};
use resnet_data::{EvalView, TrainAugment};
use resnet_models::{zoo, LayerGroup, Shortcut};
use resnet_train::config::{ranges, LrScaling, Normalization, Precision, RunLength, TrainConfig};
use resnet_train::fine_tune::InitWeights;
use resnet_train::schedule::{Decay, Milestone, Warmup};
use resnet_train::trainer::{self, Outcome, ResumeChanges, RunSummary};
use std::path::{Path, PathBuf};

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

/// How the base rate follows the batch size.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrScalingArg {
    /// --lr as given, whatever the batch (the paper's recipes).
    None,
    /// --lr is the rate of a batch of 256: times batch/256, with a 5-epoch warm-up from --lr
    /// unless --warmup says otherwise (Goyal et al. 2017).
    Linear,
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
    /// torchvision's ImageNet channel mean and std (for weights meant for torchvision).
    Imagenet,
}

/// Arguments of `resnet train`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Recipe the defaults come from [default: quickstart].
    #[arg(long, value_enum)]
    recipe: Option<Recipe>,
    /// Model (see `resnet models`); default resnet20 (resnet50 for imagenet-paper).
    #[arg(long)]
    pub model: Option<String>,
    /// Shortcut option A, B or C.
    #[arg(long)]
    shortcut: Option<Shortcut>,
    /// Start each residual branch's last batch norm at gamma = 0.
    #[arg(long)]
    zero_init_residual: bool,
    /// Classifier outputs (default: the dataset's classes; at least that many).
    #[arg(long)]
    classes: Option<usize>,
    /// Input channels: 1 (grey) or 3 (RGB); the images are converted (default: the dataset's).
    #[arg(long)]
    in_channels: Option<usize>,
    /// Start from these weights: a checkpoint, or torchvision .safetensors/.pth. Tensors whose
    /// name and shape match are loaded, the classifier is new for another class count; the model
    /// is the file's unless --model names one, the normalisation the file's unless --normalize.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Parts to hold fixed: stem, layer1, layer2, ..., fc, or backbone (all but fc), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = part)]
    freeze: Option<Vec<String>>,
    /// Every batch norm normalises with its running statistics (gamma and beta still train).
    #[arg(long)]
    freeze_bn: bool,
    /// Learning-rate multiplier of every part but the classifier (0.1: a tenth of --lr), at least 0.
    #[arg(long, value_parser = lr_multiplier)]
    lr_backbone: Option<f32>,
    /// Side of the training crops and evaluation views of the scale and random-resized-crop
    /// augmentations (224 by default; 64 trains an ImageNet network on small images).
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=4096))]
    image_size: Option<u64>,
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
    #[arg(long, value_parser = positive_lr)]
    lr: Option<f32>,
    /// Learning-rate decay.
    #[arg(long, value_enum)]
    schedule: Option<ScheduleKind>,
    /// Step milestones: iterations (32000,48000), fractions of the run (0.5,0.75) or epochs (30ep,60ep).
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<Milestone>>,
    /// Decay factor of step and plateau schedules, in (0, 1].
    #[arg(long, value_parser = decay_factor)]
    gamma: Option<f32>,
    /// Warm-up: none, paper (0.01 until training error < 80%), or a number of iterations (linear).
    #[arg(long)]
    warmup: Option<String>,
    /// Momentum, in [0, 1).
    #[arg(long, value_parser = momentum)]
    momentum: Option<f32>,
    /// Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Weight decay, at least 0.
    #[arg(long, value_parser = weight_decay, allow_hyphen_values = true)]
    weight_decay: Option<f32>,
    /// Do not decay batch-norm parameters and biases.
    #[arg(long)]
    no_decay_bn_bias: bool,
    /// Label smoothing, in [0, 1).
    #[arg(long, value_parser = label_smoothing)]
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
    /// Loader worker threads (at most 4 per core).
    #[arg(long, value_parser = super::thread_count)]
    workers: Option<usize>,
    /// Also keep a checkpoint every K epochs.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Convolution arithmetic: fp32, or bf16 dot products with f32 accumulation (AVX512_BF16,
    /// and AMX tiles where the CPU has them).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Under mpirun: batch-norm statistics over the batch of all ranks, not each rank's share.
    #[arg(long)]
    sync_bn: bool,
    /// How the base rate follows the batch size (for large data-parallel batches).
    #[arg(long, value_enum)]
    lr_scaling: Option<LrScalingArg>,
    /// Under mpirun: seconds a rank waits for the others before it ends the job (a rank that
    /// hangs); longer than any step or evaluation.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    rank_timeout: u64,
    /// Print one line per epoch instead of progress bars.
    #[arg(long)]
    pub quiet: bool,
}

fn number(s: &str) -> Result<f32, String> {
    s.parse::<f32>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("'{s}' is not a number"))
}

fn positive_lr(s: &str) -> Result<f32, String> {
    number(s).and_then(ranges::lr)
}

fn decay_factor(s: &str) -> Result<f32, String> {
    number(s).and_then(ranges::gamma)
}

fn momentum(s: &str) -> Result<f32, String> {
    number(s).and_then(ranges::momentum)
}

fn weight_decay(s: &str) -> Result<f32, String> {
    number(s).and_then(ranges::weight_decay)
}

fn label_smoothing(s: &str) -> Result<f32, String> {
    number(s).and_then(ranges::label_smoothing)
}

fn lr_multiplier(s: &str) -> Result<f32, String> {
    number(s).and_then(ranges::lr_multiplier)
}

/// A part of a network `--freeze` names.
pub(crate) fn part(s: &str) -> Result<String, String> {
    if s != "backbone" {
        s.parse::<LayerGroup>()?;
    }
    Ok(s.to_string())
}

/// Flags that contradict each other or the run: `resnet train` reports it as clap reports a
/// bad flag (exit status 2).
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: String) -> anyhow::Error {
    UsageError(message).into()
}

/// Milestones of one kind that do not increase (`--milestones 2,1`); milestones of different
/// kinds are compared once the run's length is known.
fn check_milestones(milestones: &[Milestone]) -> anyhow::Result<()> {
    for pair in milestones.windows(2) {
        let ordered = match (pair[0], pair[1]) {
            (Milestone::Iteration(a), Milestone::Iteration(b)) | (Milestone::Epoch(a), Milestone::Epoch(b)) => a < b,
            (Milestone::Fraction(a), Milestone::Fraction(b)) => a < b,
            _ => true,
        };
        if !ordered {
            return Err(usage(format!(
                "invalid value for '--milestones': {} does not come after {}; milestones must increase",
                pair[1], pair[0]
            )));
        }
    }
    Ok(())
}

/// The flags a resumed run refuses: its configuration is the one in `config.json`, and only the
/// length and the loader workers may change. Every flag of [`Args`] that changes the
/// configuration belongs in this list.
fn fixed_flags(a: &Args) -> Vec<&'static str> {
    let given = [
        ("--recipe", a.recipe.is_some()),
        ("--model", a.model.is_some()),
        ("--shortcut", a.shortcut.is_some()),
        ("--zero-init-residual", a.zero_init_residual),
        ("--classes", a.classes.is_some()),
        ("--in-channels", a.in_channels.is_some()),
        ("--init", a.init.is_some()),
        ("--freeze", a.freeze.is_some()),
        ("--freeze-bn", a.freeze_bn),
        ("--lr-backbone", a.lr_backbone.is_some()),
        ("--image-size", a.image_size.is_some()),
        ("--dataset", a.dataset.is_some()),
        ("--data", a.data.is_some()),
        ("--synthetic-train", a.synthetic_train.is_some()),
        ("--synthetic-test", a.synthetic_test.is_some()),
        ("--synthetic-size", a.synthetic_size.is_some()),
        ("--val-split", a.val_split.is_some()),
        ("--skip-bad", a.skip_bad),
        ("--batch-size", a.batch_size.is_some()),
        ("--eval-batch-size", a.eval_batch_size.is_some()),
        ("--lr", a.lr.is_some()),
        ("--schedule", a.schedule.is_some()),
        ("--milestones", a.milestones.is_some()),
        ("--gamma", a.gamma.is_some()),
        ("--warmup", a.warmup.is_some()),
        ("--momentum", a.momentum.is_some()),
        ("--nesterov", a.nesterov),
        ("--weight-decay", a.weight_decay.is_some()),
        ("--no-decay-bn-bias", a.no_decay_bn_bias),
        ("--label-smoothing", a.label_smoothing.is_some()),
        ("--augment", a.augment.is_some()),
        ("--pca", a.pca),
        ("--eval-view", a.eval_view.is_some()),
        ("--normalize", a.normalize.is_some()),
        ("--seed", a.seed.is_some()),
        ("--checkpoint-every", a.checkpoint_every.is_some()),
        ("--precision", a.precision.is_some()),
        ("--sync-bn", a.sync_bn),
        ("--lr-scaling", a.lr_scaling.is_some()),
    ];
    given.into_iter().filter(|(_, g)| *g).map(|(name, _)| name).collect()
}

fn depth_of(model: &str) -> usize {
    zoo::spec(model, &zoo::ModelOptions::default()).map(|s| s.depth()).unwrap_or(0)
}

/// The configuration the arguments describe: the recipe's, with every flag given applied on top.
pub fn config_from(a: &Args) -> anyhow::Result<TrainConfig> {
    let mut c = recipe(a)?;
    model_and_data(a, &mut c)?;
    scale_recipe_milestones(a, &mut c);
    if let Some(m) = &a.milestones {
        check_milestones(m)?;
    }
    length_and_schedule(a, &mut c)?;
    c.momentum = a.momentum.unwrap_or(c.momentum);
    c.nesterov |= a.nesterov;
    c.weight_decay = a.weight_decay.unwrap_or(c.weight_decay);
    c.decay_bn_and_bias &= !a.no_decay_bn_bias;
    c.label_smoothing = a.label_smoothing.unwrap_or(c.label_smoothing);
    views(a, &mut c)?;
    c.seed = a.seed.unwrap_or(c.seed);
    c.workers = a.workers.unwrap_or(c.workers);
    c.checkpoint_every = a.checkpoint_every.unwrap_or(c.checkpoint_every);
    if let Some(p) = a.precision {
        c.precision = p.into();
    }
    c.sync_bn |= a.sync_bn;
    if let Some(s) = a.lr_scaling {
        c.lr_scaling = match s {
            LrScalingArg::None => LrScaling::None,
            LrScalingArg::Linear => LrScaling::Linear,
        };
    }
    fine_tune(a, &mut c);
    Ok(c)
}

/// The starting weights, frozen parts and learning-rate multipliers; the normalisation stored
/// with the starting weights unless --normalize chooses one.
fn fine_tune(a: &Args, c: &mut TrainConfig) {
    c.classes = a.classes.or(c.classes);
    c.in_channels = a.in_channels.or(c.in_channels);
    let f = &mut c.fine_tune;
    f.init = a.init.clone().or(f.init.take());
    f.freeze = a.freeze.clone().unwrap_or_else(|| std::mem::take(&mut f.freeze));
    f.freeze_bn |= a.freeze_bn;
    f.lr_backbone = a.lr_backbone.unwrap_or(f.lr_backbone);
    if f.init.is_some() && a.normalize.is_none() {
        c.normalization = Normalization::Init;
    }
}

/// The configuration of the recipe, for the model given (or that of the --init weights, or the
/// recipe's own).
fn recipe(a: &Args) -> anyhow::Result<TrainConfig> {
    let from_init = match (&a.model, &a.init) {
        (None, Some(path)) => Some((path, InitWeights::read(path).map_err(anyhow::Error::msg)?.spec)),
        _ => None,
    };
    let model = a.model.clone().or(from_init.as_ref().map(|(_, s)| s.name.clone()));
    let mut c = match a.recipe.unwrap_or(Recipe::Quickstart) {
        Recipe::Quickstart => {
            let mut c = TrainConfig::quickstart();
            if let Some(m) = model {
                c.model = m;
            }
            c
        }
        Recipe::CifarPaper => {
            let model = model.unwrap_or_else(|| "resnet20".into());
            TrainConfig::cifar_paper(&model, depth_of(&model))
        }
        Recipe::ImagenetPaper => TrainConfig::imagenet_paper(model.as_deref().unwrap_or("resnet50")),
    };
    if let Some((path, spec)) = from_init {
        c.shortcut = Some(spec.shortcut);
        eprintln!("--init {}: a {} (shortcut {:?}), which this run trains", path.display(), spec.name, spec.shortcut);
    }
    zoo::spec(&c.model, &zoo::ModelOptions::default())?;
    Ok(c)
}

/// The network's options, the dataset and how it is read, and the batch sizes.
fn model_and_data(a: &Args, c: &mut TrainConfig) -> anyhow::Result<()> {
    c.shortcut = a.shortcut.or(c.shortcut);
    c.zero_init_residual |= a.zero_init_residual;
    if let Some(d) = &a.dataset {
        c.dataset = d.clone();
    } else if let Some(path) = &a.data {
        // Files without a format name: recognise the format or refuse, never fall back silently.
        c.dataset = super::data::resolve_dataset(None, Some(path))?.to_string();
    }
    c.data = a.data.clone().or(c.data.take());
    c.synthetic_train = a.synthetic_train.unwrap_or(c.synthetic_train);
    c.synthetic_test = a.synthetic_test.unwrap_or(c.synthetic_test);
    c.synthetic_size = a.synthetic_size.unwrap_or(c.synthetic_size);
    c.val_split = a.val_split.unwrap_or(c.val_split);
    c.skip_bad |= a.skip_bad;
    c.batch_size = a.batch_size.unwrap_or(c.batch_size);
    c.eval_batch_size = a.eval_batch_size.unwrap_or(c.eval_batch_size);
    Ok(())
}

/// A recipe's milestones in iterations belong to the recipe's length: a shorter or longer run
/// keeps their place as fractions of the run (and says so).
fn scale_recipe_milestones(a: &Args, c: &mut TrainConfig) {
    let (RunLength::Iterations(recipe_total), Decay::Step { milestones, .. }) = (c.length, &mut c.decay) else {
        return;
    };
    let resized = a.epochs.is_some() || a.iterations.is_some_and(|i| i != recipe_total);
    if resized && a.milestones.is_none() && milestones.iter().any(|m| matches!(m, Milestone::Iteration(_))) {
        let before = milestones.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        for m in milestones.iter_mut() {
            if let Milestone::Iteration(i) = *m {
                *m = Milestone::Fraction(i as f64 / recipe_total as f64);
            }
        }
        let after = milestones.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        eprintln!(
            "the {} recipe's milestones {before} (of its {recipe_total} iterations) are scaled to {after} of this \
             run; --milestones sets others",
            c.recipe
        );
    }
}

/// The run's length, learning rate, decay and warm-up.
fn length_and_schedule(a: &Args, c: &mut TrainConfig) -> anyhow::Result<()> {
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
                    .map_err(|_| usage(format!("--warmup takes none, paper or a number of iterations, not '{n}'")))?,
                start_factor: 0.1,
            },
        };
    }
    Ok(())
}

/// The training augmentation, the evaluation view and the input normalisation.
fn views(a: &Args, c: &mut TrainConfig) -> anyhow::Result<()> {
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
            _ => return Err(usage("--pca needs --augment scale or random-resized-crop".into())),
        }
    }
    if let Some(v) = a.eval_view {
        c.eval_view = match v {
            ViewKind::Full => EvalView::Full,
            ViewKind::Center => EvalView::ResizeCenterCrop { resize: 256, crop: 224 },
            ViewKind::TenCrop => EvalView::TenCrop { resize: 256, crop: 224 },
        };
    }
    if let Some(side) = a.image_size {
        resize_views(side as usize, c)?;
    }
    if let Some(n) = a.normalize {
        c.normalization = match n {
            NormalizeKind::PixelMean => Normalization::PixelMean { scale: 1.0 / 64.0 },
            NormalizeKind::MeanStd => Normalization::DatasetMeanStd,
            NormalizeKind::None => Normalization::None,
            NormalizeKind::Imagenet => {
                let (mean, std, _, _) = resnet_interop::torchvision_preset();
                Normalization::MeanStd { mean, std }
            }
        };
    }
    Ok(())
}

/// Training crops and evaluation views of `side` pixels, the resize before a crop in
/// torchvision's proportion (256 for 224).
fn resize_views(side: usize, c: &mut TrainConfig) -> anyhow::Result<()> {
    let resize = (side * 256).div_ceil(224);
    match &mut c.augment {
        TrainAugment::ScaleAugment { min, max, crop, .. } => {
            (*min, *max, *crop) = (resize, (side * 480).div_ceil(224), side);
        }
        TrainAugment::RandomResizedCrop { size, .. } => *size = side,
        TrainAugment::None | TrainAugment::PadCropFlip { .. } => {
            return Err(usage("--image-size needs --augment scale or random-resized-crop".into()))
        }
    }
    c.eval_view = match &c.eval_view {
        EvalView::TenCrop { .. } => EvalView::TenCrop { resize, crop: side },
        EvalView::MultiScale { .. } => {
            return Err(usage("--image-size does not apply to multi-scale evaluation".into()));
        }
        EvalView::Full | EvalView::ResizeCenterCrop { .. } => EvalView::ResizeCenterCrop { resize, crop: side },
    };
    Ok(())
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
    match start(args) {
        Err(e) => match e.downcast::<UsageError>() {
            Ok(UsageError(message)) => clap::Error::raw(clap::error::ErrorKind::ValueValidation, message + "\n").exit(),
            Err(e) => Err(e),
        },
        ok => ok,
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let (config, dir, resume) = match &args.resume {
        Some(dir) => {
            let fixed = fixed_flags(&args);
            if !fixed.is_empty() {
                return Err(usage(format!(
                    "--resume continues {} as its config.json says; it takes --epochs or --iterations (to extend the \
                     run) and --workers, not {}",
                    dir.display(),
                    fixed.join(", ")
                )));
            }
            (TrainConfig::quickstart(), dir.clone(), true)
        }
        None => {
            let c = config_from(&args)?;
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}-{}", c.model, c.dataset, timestamp())));
            (c, dir, false)
        }
    };
    let stop = interrupt::stop_flag()?;
    let group = super::ranks::join(std::time::Duration::from_secs(args.rank_timeout))?;
    let lead = group.rank() == 0;
    if !resume && lead {
        let ranks = if group.size() > 1 { format!(" on {} ranks", group.size()) } else { String::new() };
        eprintln!(
            "training {} on {} ({} recipe){ranks} into {}",
            config.model,
            config.dataset,
            config.recipe,
            dir.display()
        );
    }
    // Rank 0 shows the progress; the others train quietly.
    let mut bars = EpochBars::new(args.quiet);
    let mut silent = trainer::Silent;
    let observer: &mut dyn trainer::Observer = if lead { &mut bars } else { &mut silent };
    let result = if resume {
        let changes = ResumeChanges {
            length: args.epochs.map(RunLength::Epochs).or(args.iterations.map(RunLength::Iterations)),
            workers: args.workers,
        };
        trainer::resume_with(&dir, &changes, &stop, observer, group.as_ref())
    } else {
        trainer::run_with(config, &dir, false, &stop, observer, group.as_ref())
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(e) if group.size() > 1 => {
            // The other ranks may be waiting for this one: end them all, naming the rank.
            eprintln!("error: rank {} of {}: {e}", group.rank(), group.size());
            group.abort(1);
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    if !lead {
        return Ok(());
    }
    bars.finish();
    print_summary(&summary, &dir);
    if summary.outcome == Outcome::Interrupted {
        interrupt::exit_stopped();
    }
    Ok(())
}

/// How the run ended, where its files are, and (when it finished) what to try next.
fn print_summary(summary: &RunSummary, dir: &Path) {
    let last = summary.history.last();
    match summary.outcome {
        Outcome::Interrupted => {
            println!("stopped; continue with: resnet train --resume {}", dir.display());
        }
        Outcome::Finished => {
            if let Some(m) = last {
                let top5 = if top5_means_something(Some(summary.classes)) {
                    format!(" (top-5 {:.2}%)", m.test_top5_error)
                } else {
                    String::new()
                };
                println!(
                    "done: {}, {}, final test error {:.2}%{top5}, training error {:.2}%",
                    plural(m.epoch, "epoch"),
                    plural(m.iteration, "iteration"),
                    m.test_error,
                    m.train_error
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
        // eval reads the dataset, its location and the synthetic settings from the checkpoint.
        println!("  resnet eval --checkpoint {}", summary.last_checkpoint.display());
        println!("  resnet download cifar10 --data data && resnet train --recipe cifar-paper --data data");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches};

    /// Every flag of `resnet train` with a value it accepts (none for switches).
    const FLAGS: &[(&str, Option<&str>)] = &[
        ("--recipe", Some("cifar-paper")),
        ("--model", Some("resnet32")),
        ("--shortcut", Some("B")),
        ("--zero-init-residual", None),
        ("--classes", Some("12")),
        ("--in-channels", Some("1")),
        ("--init", Some("w.pth")),
        ("--freeze", Some("backbone")),
        ("--freeze-bn", None),
        ("--lr-backbone", Some("0.1")),
        ("--image-size", Some("64")),
        ("--dataset", Some("synthetic")),
        ("--data", Some("d")),
        ("--synthetic-train", Some("10")),
        ("--synthetic-test", Some("10")),
        ("--synthetic-size", Some("8")),
        ("--val-split", Some("5")),
        ("--skip-bad", None),
        ("--batch-size", Some("4")),
        ("--eval-batch-size", Some("4")),
        ("--lr", Some("0.5")),
        ("--schedule", Some("cosine")),
        ("--milestones", Some("0.5")),
        ("--gamma", Some("0.5")),
        ("--warmup", Some("paper")),
        ("--momentum", Some("0.5")),
        ("--nesterov", None),
        ("--weight-decay", Some("0.5")),
        ("--no-decay-bn-bias", None),
        ("--label-smoothing", Some("0.1")),
        ("--augment", Some("none")),
        ("--pca", None),
        ("--eval-view", Some("center")),
        ("--normalize", Some("none")),
        ("--seed", Some("1")),
        ("--workers", Some("1")),
        ("--checkpoint-every", Some("1")),
        ("--precision", Some("fp32")),
        ("--sync-bn", None),
        ("--lr-scaling", Some("linear")),
        ("--rank-timeout", Some("60")),
        ("--quiet", None),
        ("--epochs", Some("1")),
        ("--iterations", Some("1")),
        ("--out", Some("o")),
        ("--resume", Some("r")),
    ];

    /// The flags a resumed run accepts.
    const RESUMABLE: &[&str] =
        &["--epochs", "--iterations", "--workers", "--quiet", "--resume", "--out", "--rank-timeout"];

    fn parse(words: &[&str]) -> Args {
        let command = Args::augment_args(clap::Command::new("train"));
        let matches = command.try_get_matches_from(words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
        Args::from_arg_matches(&matches).unwrap()
    }

    /// A flag added to `Args` but not to `fixed_flags` would be silently ignored on resume.
    #[test]
    fn every_flag_but_length_and_workers_is_refused_on_resume() {
        let command = Args::augment_args(clap::Command::new("train"));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let flag = format!("--{long}");
            assert!(FLAGS.iter().any(|(f, _)| *f == flag), "{flag} is missing from this test's table");
        }
        for (flag, value) in FLAGS {
            if *flag == "--resume" || *flag == "--out" {
                continue;
            }
            let mut words = vec!["train", "--resume", "r", flag];
            words.extend(value);
            let fixed = fixed_flags(&parse(&words));
            if RESUMABLE.contains(flag) {
                assert!(fixed.is_empty(), "{flag} is refused on resume: {fixed:?}");
            } else {
                assert_eq!(fixed, [*flag], "{flag} is not refused on resume");
            }
        }
    }
}
