//! The training loop: epochs of SGD steps, evaluation after each epoch, metrics, plots and
//! checkpoints in the run directory, resumption, interruption and divergence handling.
//!
//! Run directory:
//! - `config.json`: the resolved [`TrainConfig`];
//! - `metrics.csv`, `metrics.jsonl`: one row per epoch ([`EpochMetrics`]);
//! - `curves.png`, `curves.svg`: error against iterations (training dashed, test solid);
//! - `checkpoints/last.safetensors`, `checkpoints/best.safetensors`, `checkpoints/epoch-K.safetensors`;
//! - `run.lock`: locked by the process that trains in the directory (see [`crate::lock`]).
//!
//! Every draw of randomness derives from `(seed, epoch, sample)`, and the loader's batches from
//! `(seed, epoch, batch)`, so a run resumed from a checkpoint continues exactly as the
//! uninterrupted run would have (with the same thread count).

use crate::checkpoint::{Checkpoint, CheckpointError, EpochSums, Preprocess, Progress, TrainingState};
use crate::config::{Normalization, RunLength, TrainConfig};
use crate::evaluate::{evaluate, EvalResult};
use crate::fsutil::{self, FileError};
use crate::lock::{LockError, RunLock};
use crate::memory::{check_batch, BatchPlan, MemoryShortfall, Pass};
use crate::metrics::{self, EpochMetrics};
use crate::plot::PlotError;
use crate::schedule::{Decay, FrozenMilestones, Milestone, Schedule};
use crate::step::{train_step, StepBuffers};
use resnet_data::{
    channel_mean_std, open, pixel_mean, validation_split, DataError, DatasetKind, Loader, LoaderConfig, LoaderMode,
    Normalize, OpenOptions, SharedDataset, SyntheticConfig,
};
use resnet_models::zoo::{self, ModelOptions};
use resnet_models::{InitConfig, ModelError, ResNet, ResNetSpec, TensorData};
use resnet_nn::optim::{Sgd, SgdConfig};
use resnet_nn::Tensor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building the network.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading or writing a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Writing a run file.
    #[error(transparent)]
    File(#[from] FileError),
    /// Drawing a plot.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// An inconsistent configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The loss stopped being finite.
    #[error("the training loss became {loss} at iteration {iteration} (epoch {epoch}): the run stopped; {kept}")]
    Diverged {
        /// The loss.
        loss: f64,
        /// Step at which it happened.
        iteration: u64,
        /// Epoch (from 1).
        epoch: u64,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// A parameter, buffer or momentum of the network stopped being finite (a diverging run whose
    /// loss was still finite); no checkpoint is written from it.
    #[error(
        "{tensor} became non-finite ({count} tensor(s) in all) at iteration {iteration} (epoch {epoch}): the run stopped; {kept}"
    )]
    NonFinite {
        /// The first tensor affected.
        tensor: String,
        /// Tensors affected.
        count: usize,
        /// Steps done.
        iteration: u64,
        /// Epoch (from 1).
        epoch: u64,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// Another process trains in the directory.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// `--out` names a directory that already holds a run.
    #[error(
        "{0} already holds a run (checkpoints/last.safetensors): resume it with --resume, or choose another --out"
    )]
    RunExists(PathBuf),
    /// A batch whose activations do not fit in the memory available.
    #[error(transparent)]
    Memory(#[from] MemoryShortfall),
    /// A run that cannot be resumed.
    #[error("cannot resume {dir}: {reason}")]
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One optimisation step, as reported to an [`Observer`].
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Epoch, from 1.
    pub epoch: u64,
    /// Batches of this epoch done.
    pub batch: u64,
    /// Batches of this epoch: an epoch's, or fewer when the run ends inside this epoch.
    pub batches: u64,
    /// Steps done in the run.
    pub iteration: u64,
    /// Steps of the run.
    pub total_iterations: u64,
    /// Learning rate used.
    pub lr: f32,
    /// Mean loss of the epoch so far.
    pub loss: f64,
    /// Training error of the epoch so far, percent.
    pub error: f64,
    /// Throughput of the epoch so far.
    pub images_per_sec: f64,
}

/// Receives progress; the CLI draws progress bars from it, tests ignore it.
pub trait Observer {
    /// A line worth telling the user.
    fn message(&mut self, _text: &str) {}
    /// An epoch (from 1) of `batches` batches starts at batch `start` (`batches` is fewer than an
    /// epoch's when the run ends inside this epoch).
    fn epoch_start(&mut self, _epoch: u64, _batches: u64, _start: u64) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// An evaluation of `batches` batches starts (`what`: "test", "validation").
    fn eval_start(&mut self, _what: &str, _batches: usize) {}
    /// `done` evaluation batches finished.
    fn eval_step(&mut self, _done: usize) {}
    /// An epoch finished with these metrics.
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
    /// The run's number of classes, once its data is open.
    fn classes(&mut self, _count: usize) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The run reached its length.
    Finished,
    /// Stopped on request (Ctrl-C) after a checkpoint was written.
    Interrupted,
}

/// The result of [`run`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// How it ended.
    pub outcome: Outcome,
    /// The run directory.
    pub dir: PathBuf,
    /// Every epoch's metrics.
    pub history: Vec<EpochMetrics>,
    /// The latest checkpoint.
    pub last_checkpoint: PathBuf,
    /// The checkpoint with the lowest monitored error.
    pub best_checkpoint: Option<PathBuf>,
    /// How many classes the network tells apart (top-5 error means nothing for five or fewer).
    pub classes: usize,
}

/// Paths inside a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The directory.
    pub root: PathBuf,
}

impl RunDir {
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `checkpoints/last.safetensors`.
    pub fn last(&self) -> PathBuf {
        self.root.join("checkpoints").join("last.safetensors")
    }
    /// `checkpoints/best.safetensors`.
    pub fn best(&self) -> PathBuf {
        self.root.join("checkpoints").join("best.safetensors")
    }
    /// `checkpoints/epoch-K.safetensors`.
    pub fn epoch(&self, k: u64) -> PathBuf {
        self.root.join("checkpoints").join(format!("epoch-{k}.safetensors"))
    }
}

/// The data of a run, opened.
pub struct RunData {
    /// Training split (without the held-out validation images).
    pub train: SharedDataset,
    /// Held-out validation split.
    pub val: Option<SharedDataset>,
    /// Test split.
    pub test: SharedDataset,
    /// Class names.
    pub classes: Vec<String>,
}

/// Opens the dataset a configuration names.
///
/// # Errors
/// Data errors, or an unknown dataset name.
pub fn open_data(config: &TrainConfig, observer: &mut dyn Observer) -> Result<RunData, TrainError> {
    let kind: DatasetKind = config.dataset.parse().map_err(TrainError::Config)?;
    let opts = OpenOptions {
        skip_bad: config.skip_bad,
        synthetic: SyntheticConfig {
            train: config.synthetic_train,
            test: config.synthetic_test,
            size: config.synthetic_size,
            seed: config.seed,
        },
        ..OpenOptions::default()
    };
    if kind != DatasetKind::Synthetic && config.data.is_none() {
        return Err(TrainError::Config(format!("the {kind} dataset needs --data PATH")));
    }
    let splits = open(kind, config.data.as_deref(), &opts)?;
    if !splits.skipped.is_empty() {
        observer.message(&format!("skipped {} unreadable sample(s):", splits.skipped.len()));
        for s in splits.skipped.iter().take(20) {
            observer.message(&format!("  {s}"));
        }
    }
    let classes = splits.train.classes().to_vec();
    let (train, val) = if config.val_split > 0 {
        let (rest, val) = validation_split(&splits.train, config.val_split, config.seed)?;
        (rest, Some(val))
    } else {
        (splits.train.clone(), None)
    };
    Ok(RunData { train, val, test: splits.test, classes })
}

/// The network spec a configuration trains.
///
/// # Errors
/// An unknown model or invalid options.
pub fn resolve_spec(config: &TrainConfig, classes: usize, channels: usize) -> Result<ResNetSpec, ModelError> {
    zoo::spec(
        &config.model,
        &ModelOptions { shortcut: config.shortcut, num_classes: Some(classes), in_channels: Some(channels) },
    )
}

fn describe_difference(a: &ResNetSpec, b: &ResNetSpec) -> String {
    let mut diffs = Vec::new();
    if a.name != b.name || a.depths != b.depths || a.block != b.block || a.widths != b.widths {
        diffs.push(format!("architecture {} vs {}", a.name, b.name));
    }
    if a.residual != b.residual {
        diffs.push("plain vs residual".to_string());
    }
    if a.shortcut != b.shortcut {
        diffs.push(format!("shortcut option {} vs {}", a.shortcut, b.shortcut));
    }
    if a.stride_placement != b.stride_placement {
        diffs.push(format!("stride placement {:?} vs {:?}", a.stride_placement, b.stride_placement));
    }
    if a.num_classes != b.num_classes {
        diffs.push(format!("{} vs {} classes", a.num_classes, b.num_classes));
    }
    if a.in_channels != b.in_channels {
        diffs.push(format!("{} vs {} input channels", a.in_channels, b.in_channels));
    }
    diffs.join(", ")
}

/// Checks that a checkpoint was made for `spec` and `classes`.
///
/// # Errors
/// [`CheckpointError::Mismatch`] saying what differs.
pub fn check_compatible(
    ckpt: &Checkpoint,
    path: &Path,
    spec: &ResNetSpec,
    classes: &[String],
) -> Result<(), CheckpointError> {
    if &ckpt.spec != spec {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            reason: format!(
                "the checkpoint holds another network than this run needs: {}",
                describe_difference(&ckpt.spec, spec)
            ),
        });
    }
    if ckpt.classes != classes {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            reason: format!(
                "the checkpoint's {} classes ({}...) differ from the dataset's {} ({}...)",
                ckpt.classes.len(),
                ckpt.classes.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                classes.len(),
                classes.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(())
}

fn loader_config(config: &TrainConfig, mode: LoaderMode, normalize: Normalize, train: bool) -> LoaderConfig {
    LoaderConfig {
        batch_size: if train { config.batch_size } else { config.eval_batch_size },
        shuffle: train,
        drop_last: train,
        seed: config.seed,
        workers: config.workers.max(1),
        prefetch: 4,
        mode,
        normalize,
    }
}

/// The normalisation a configuration asks for, measured on the training split at `size`.
///
/// # Errors
/// Data errors while measuring.
pub fn measure_normalization(
    n: &Normalization,
    train: &SharedDataset,
    size: (usize, usize),
) -> Result<Normalize, DataError> {
    Ok(match n {
        Normalization::PixelMean { scale } => {
            Normalize::PixelMean { mean: pixel_mean(train.as_ref(), size.0, size.1)?, scale: *scale }
        }
        Normalization::DatasetMeanStd => {
            let (mean, std) = channel_mean_std(train.as_ref())?;
            Normalize::ChannelMeanStd {
                mean: mean.iter().map(|m| m / 255.0).collect(),
                std: std.iter().map(|s| (s / 255.0).max(1e-6)).collect(),
            }
        }
        Normalization::MeanStd { mean, std } => Normalize::ChannelMeanStd { mean: mean.clone(), std: std.clone() },
        Normalization::None => Normalize::None,
    })
}

fn validate(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: &str| Err(TrainError::Config(m.to_string()));
    if config.batch_size < 2 {
        return bad("the batch size must be at least 2 (batch norm needs batch statistics)");
    }
    if config.eval_batch_size == 0 {
        return bad("the evaluation batch size must be at least 1");
    }
    if matches!(config.length, RunLength::Epochs(0) | RunLength::Iterations(0)) {
        return bad("the run must be at least one epoch or one iteration long");
    }
    use crate::config::ranges;
    ranges::lr(config.lr)
        .and(ranges::label_smoothing(config.label_smoothing))
        .and(ranges::momentum(config.momentum))
        .and(ranges::weight_decay(config.weight_decay))
        .map_err(TrainError::Config)?;
    if let Decay::Step { gamma, .. } | Decay::Plateau { gamma, .. } = &config.decay {
        ranges::gamma(*gamma).map_err(TrainError::Config)?;
    }
    let most = crate::system::max_threads();
    if config.workers > most {
        return Err(TrainError::Config(format!(
            "at most {most} loader workers (4 per core of this machine), not {}",
            config.workers
        )));
    }
    if let Some(d) = &config.data {
        if d.to_str().is_none() {
            return Err(TrainError::Config(format!(
                "the data path {} is not valid UTF-8, which config.json cannot store (the run could not be \
                 resumed): rename it, or link to it from a UTF-8 path",
                d.display()
            )));
        }
    }
    Ok(())
}

/// Checks that the schedule fits a run of `total` iterations: every step milestone given in
/// iterations or epochs inside the run (one beyond it would never lower the rate; a fraction of
/// the run is inside it by definition, however short the run) and the milestones in order.
fn check_schedule(config: &TrainConfig, total: u64, per_epoch: u64) -> Result<(), TrainError> {
    let Decay::Step { milestones, .. } = &config.decay else { return Ok(()) };
    let mut previous: Option<u64> = None;
    for m in milestones {
        let at = m.iteration(total, per_epoch);
        if at >= total && !matches!(m, Milestone::Fraction(_)) {
            return Err(TrainError::Config(format!(
                "the milestone {m} (iteration {at}) is at or beyond the end of the run ({total} iterations, \
                 {per_epoch} per epoch), so the learning rate would never drop there; give milestones inside \
                 the run, as iterations, fractions of the run (0.5,0.75) or epochs (30ep,45ep)"
            )));
        }
        if previous.is_some_and(|p| at < p) {
            return Err(TrainError::Config(format!(
                "the milestones must increase: {m} (iteration {at}) does not come after the one before it"
            )));
        }
        previous = Some(at);
    }
    Ok(())
}

/// The first non-finite tensor of a checkpoint (weights, buffers, momentum) and how many are.
fn non_finite(ckpt: &Checkpoint) -> Option<(String, usize)> {
    let weights = ckpt.state.iter().filter_map(|t| match &t.data {
        TensorData::F32(v) => Some((t.name.as_str(), v.as_slice())),
        TensorData::I64(_) => None,
    });
    let velocity = ckpt.training.iter().flat_map(|t| t.velocity.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    let bad: Vec<&str> =
        weights.chain(velocity).filter(|(_, v)| v.iter().any(|x| !x.is_finite())).map(|(n, _)| n).collect();
    bad.first().map(|first| (first.to_string(), bad.len()))
}

/// What a resumed run may change: its length (to extend a finished run, or shorten one not yet
/// past the new end) and its loader workers. Everything else stays as `config.json` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumeChanges {
    /// A new length of the run.
    pub length: Option<RunLength>,
    /// A new number of loader workers (the batches do not depend on it).
    pub workers: Option<usize>,
}

/// How a run starts.
enum Start<'a> {
    /// A new run with this configuration.
    Fresh(Box<TrainConfig>),
    /// The run in the directory, from its last checkpoint.
    Resume(&'a ResumeChanges),
}

/// Continues the run in `dir` from its last checkpoint with `changes`; a finished run given a
/// longer length trains on. Stops cleanly, with a checkpoint, when `stop` becomes true.
///
/// # Errors
/// As [`run`]; a length that ends before the iterations already done is a
/// [`TrainError::Resume`].
pub fn resume(
    dir: &Path,
    changes: &ResumeChanges,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<RunSummary, TrainError> {
    train(Start::Resume(changes), dir, stop, observer)
}

/// Trains (or, with `resume`, continues as [`resume`] with no changes; `config` is then
/// ignored) the run in `dir`. Stops cleanly, with a checkpoint, when `stop` becomes true. The
/// directory is locked while the run trains.
///
/// # Errors
/// [`TrainError`]; on divergence the last good checkpoint is kept, and no checkpoint with a
/// non-finite value is ever written.
pub fn run(
    config: TrainConfig,
    dir: &Path,
    resume: bool,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<RunSummary, TrainError> {
    let start = if resume {
        Start::Resume(&ResumeChanges { length: None, workers: None })
    } else {
        Start::Fresh(Box::new(config))
    };
    train(start, dir, stop, observer)
}

/// Says where the fraction milestones of a run whose length changed were fixed.
fn frozen_milestones(frozen: FrozenMilestones) -> Vec<String> {
    let list =
        |pairs: &[(f64, u64)], pick: fn(&(f64, u64)) -> String| pairs.iter().map(pick).collect::<Vec<_>>().join(",");
    let mut said = Vec::new();
    if !frozen.kept.is_empty() {
        said.push(format!(
            "milestones {} of the old run are kept at iterations {}",
            list(&frozen.kept, |(f, _)| f.to_string()),
            list(&frozen.kept, |(_, at)| at.to_string())
        ));
    }
    if !frozen.dropped.is_empty() {
        said.push(format!(
            "milestones {} of the old run (iterations {}) fall after the new end and are dropped",
            list(&frozen.dropped, |(f, _)| f.to_string()),
            list(&frozen.dropped, |(_, at)| at.to_string())
        ));
    }
    said
}

/// The checkpoint a stopped run leaves, in words.
fn kept(run_dir: &RunDir) -> String {
    if run_dir.last().exists() {
        format!("the last good checkpoint {} is kept", run_dir.last().display())
    } else {
        "no checkpoint had been written yet".to_string()
    }
}

fn train(
    start: Start<'_>,
    dir: &Path,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<RunSummary, TrainError> {
    let run_dir = RunDir { root: dir.to_path_buf() };
    let resume_err = |reason: String| TrainError::Resume { dir: dir.to_path_buf(), reason };
    let resume = matches!(start, Start::Resume(_));
    if resume && !dir.is_dir() {
        return Err(resume_err("no such directory".into()));
    }
    // Checked before locking, so that a mistyped path gets no lock file.
    if resume && !run_dir.config().is_file() {
        return Err(resume_err("it has no config.json: it is not a run directory".into()));
    }
    if let Start::Fresh(config) = &start {
        validate(config)?;
    }
    let lock = RunLock::acquire(dir)?;
    if !lock.held() {
        observer.message(&format!(
            "warning: the file system of {} has no file locks, so nothing stops a second run into it",
            dir.display()
        ));
    }
    let mut removed = fsutil::remove_stale_temporaries(dir)?;
    removed.extend(fsutil::remove_stale_temporaries(&dir.join("checkpoints"))?);
    if !removed.is_empty() {
        observer.message(&format!("removed {} temporary file(s) left by an interrupted run", removed.len()));
    }
    let mut changed = Vec::new();
    let mut old_length = None;
    let (mut config, checkpoint) = if let Start::Resume(changes) = start {
        let bytes =
            fsutil::read(&run_dir.config()).map_err(|e| resume_err(format!("no readable config.json ({e})")))?;
        let mut config: TrainConfig =
            serde_json::from_slice(&bytes).map_err(|e| resume_err(format!("config.json does not parse: {e}")))?;
        if let Some(length) = changes.length.filter(|l| *l != config.length) {
            changed.push(format!("length {length} (was {})", config.length));
            old_length = Some(config.length);
            config.length = length;
        }
        if let Some(workers) = changes.workers.filter(|w| *w != config.workers) {
            changed.push(format!("loader workers {workers} (was {})", config.workers));
            config.workers = workers;
        }
        let last = run_dir.last();
        if !last.exists() {
            return Err(resume_err("it has no checkpoints/last.safetensors".into()));
        }
        let ckpt = Checkpoint::load(&last)?;
        if ckpt.training.is_none() {
            return Err(resume_err(format!("{} holds weights only, no training state", last.display())));
        }
        (config, Some(ckpt))
    } else {
        let Start::Fresh(config) = start else { unreachable!("a resume is handled above") };
        let mut config = *config;
        if run_dir.last().exists() {
            return Err(TrainError::RunExists(dir.to_path_buf()));
        }
        // Absolute, so that the run resumes from any working directory.
        config.data = config.data.map(|d| std::path::absolute(&d).unwrap_or(d));
        (config, None)
    };
    validate(&config)?;
    let kernels = config.precision.kernel_config().map_err(TrainError::Config)?;

    let data = open_data(&config, observer)?;
    observer.classes(data.classes.len());
    let channels = data.train.channels();
    let spec = resolve_spec(&config, data.classes.len(), channels)?;
    let mut net = ResNet::new(spec.clone())?;
    net.set_kernel_config(kernels).map_err(TrainError::Config)?;
    match &checkpoint {
        Some(ckpt) => {
            check_compatible(ckpt, &run_dir.last(), &spec, &data.classes)?;
            net.load_state_dict(&ckpt.state).map_err(|e| resume_err(e.to_string()))?;
        }
        None => net.init(&InitConfig {
            seed: config.seed,
            zero_init_residual: config.zero_init_residual,
            ..InitConfig::default()
        }),
    }

    // The output size of the training views decides the input size (and the mean image's size).
    let probe = Loader::new(
        data.train.clone(),
        loader_config(&config, LoaderMode::Train(config.augment.clone()), Normalize::None, true),
    )?;
    let (h, w, _) = probe.output_shape();
    drop(probe);
    // Before the loaders and the normalisation pass: a batch that cannot fit is refused now,
    // not killed by the kernel once the first step allocates it. (The evaluation views have
    // the training views' size, checked below.)
    net.check_input([1, h, w, channels])?;
    let prefetched = loader_config(&config, LoaderMode::Train(config.augment.clone()), Normalize::None, true).prefetch;
    let train_batch = BatchPlan {
        spec: &spec,
        input: (h, w),
        batch: config.batch_size,
        pass: Pass::Train,
        flag: "--batch-size",
        prefetched,
        views: 1,
    };
    check_batch(train_batch)?;
    // An evaluation batch is at most a split's size, and each sample may be several crops.
    let eval_split = data.val.iter().chain([&data.test]).map(|d| d.len()).max().unwrap_or(0);
    check_batch(BatchPlan {
        batch: config.eval_batch_size.min(eval_split.max(1)),
        pass: Pass::Infer,
        flag: "--eval-batch-size",
        views: config.eval_view.views(),
        ..train_batch
    })?;
    let normalize = match &checkpoint {
        Some(ckpt) => ckpt.preprocess.normalize.clone(),
        None => {
            observer.message("measuring the input normalisation on the training set");
            measure_normalization(&config.normalization, &data.train, (h, w))?
        }
    };
    let preprocess =
        Preprocess { normalize: normalize.clone(), input_size: (h, w), channels, eval_view: config.eval_view.clone() };
    let train_loader = Loader::new(
        data.train.clone(),
        loader_config(&config, LoaderMode::Train(config.augment.clone()), normalize.clone(), true),
    )?;
    let eval_mode = LoaderMode::Eval(config.eval_view.clone());
    let test_loader =
        Loader::new(data.test.clone(), loader_config(&config, eval_mode.clone(), normalize.clone(), false))?;
    let val_loader = match &data.val {
        Some(v) => Some(Loader::new(v.clone(), loader_config(&config, eval_mode, normalize.clone(), false))?),
        None => None,
    };
    let (th, tw, _) = test_loader.output_shape();
    if (th, tw) != (h, w) {
        return Err(TrainError::Config(format!(
            "the evaluation views are {th}x{tw} but the training views are {h}x{w}; choose matching crop sizes"
        )));
    }

    let per_epoch = train_loader.batches_per_epoch() as u64;
    if per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "the training set ({} images) is smaller than one batch of {}",
            train_loader.len(),
            config.batch_size
        )));
    }
    let iterations = |length: RunLength| match length {
        RunLength::Epochs(e) => e.saturating_mul(per_epoch),
        RunLength::Iterations(i) => i,
    };
    let total = iterations(config.length);
    if let Some(old_total) = old_length.map(iterations).filter(|t| *t != total) {
        if let Some(name) = config.decay.spread_over_the_run() {
            return Err(resume_err(format!(
                "its {name} learning-rate schedule is spread over its {old_total} iterations, so a length of \
                 {total} would change the rate of every step left (a finished run's rate would jump back up); \
                 start a new run for another length"
            )));
        }
        changed.extend(frozen_milestones(config.decay.freeze_fractions(old_total, total)));
    }
    let mut schedule = Schedule::new(config.lr, config.decay.clone(), config.warmup.clone(), total, per_epoch);
    let mut sgd = Sgd::new(SgdConfig {
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        decay_bn_and_bias: config.decay_bn_and_bias,
        nesterov: config.nesterov,
    });
    let mut progress = Progress { seed: config.seed, schedule: schedule.state.clone(), ..Progress::default() };
    let mut history = Vec::new();
    if let Some(ckpt) = &checkpoint {
        let t = ckpt.training.as_ref().expect("checked above");
        progress = t.progress.clone();
        schedule.state = progress.schedule.clone();
        let velocity: std::collections::HashMap<&str, &Vec<f32>> =
            t.velocity.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for p in net.params() {
            match velocity.get(p.name.as_str()) {
                Some(v) if v.len() == p.len() => sgd.velocity.push((*v).clone()),
                _ => return Err(resume_err(format!("the checkpoint lacks the optimizer state of {}", p.name))),
            }
        }
        history = metrics::read(dir)?;
        history.truncate(progress.epoch as usize);
        if progress.iteration > total {
            return Err(resume_err(format!(
                "the run has done {} iterations ({} epochs); a length of {total} iterations would end before that",
                progress.iteration, progress.epoch
            )));
        }
        if !changed.is_empty() {
            observer.message(&format!(
                "changed: {}; the run is now {total} iterations and continues at learning rate {}",
                changed.join(", "),
                schedule.lr(progress.iteration)
            ));
        }
        observer.message(&format!(
            "resuming {} at epoch {}, iteration {} of {total}",
            dir.display(),
            progress.epoch + 1,
            progress.iteration
        ));
    }

    check_schedule(&config, total, per_epoch)?;
    let config_json = serde_json::to_value(&config)
        .map_err(|e| TrainError::Config(format!("the configuration cannot be written as JSON: {e}")))?;
    if checkpoint.is_none() || !changed.is_empty() {
        let text = serde_json::to_string_pretty(&config_json).expect("a JSON value prints");
        fsutil::write_atomic(&run_dir.config(), text.as_bytes())?;
    }
    let save = |net: &ResNet, sgd: &Sgd, progress: &Progress, path: &Path| -> Result<(), TrainError> {
        let mut ckpt = Checkpoint::from_network(net, data.classes.clone(), preprocess.clone());
        let names = net.params().iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        ckpt.training = Some(TrainingState {
            velocity: names.into_iter().zip(sgd.velocity.iter().cloned()).collect(),
            progress: progress.clone(),
            config: config_json.clone(),
        });
        // A diverging run can overflow a batch norm's running variance while the loss is still
        // finite: such a network is not a good checkpoint.
        if let Some((tensor, count)) = non_finite(&ckpt) {
            return Err(TrainError::NonFinite {
                tensor,
                count,
                iteration: progress.iteration,
                epoch: progress.epoch + u64::from(progress.batch > 0),
                kept: kept(&run_dir),
            });
        }
        ckpt.save(path)?;
        Ok(())
    };
    let summary = |outcome, history, best_checkpoint| RunSummary {
        outcome,
        dir: dir.to_path_buf(),
        history,
        last_checkpoint: run_dir.last(),
        best_checkpoint,
        classes: data.classes.len(),
    };
    let title = format!("{} on {}", spec.name, config.dataset);
    let mut buffers = StepBuffers::default();
    let mut best = run_dir.best().exists().then(|| run_dir.best());

    while progress.iteration < total {
        let epoch = progress.epoch;
        let first_step = progress.iteration - progress.batch;
        let batches = per_epoch.min(total - first_step);
        observer.epoch_start(epoch + 1, batches, progress.batch);
        let epoch_start = Instant::now();
        let mut sums = progress.partial.clone();
        let lr_start = schedule.lr(first_step);
        let mut lr = schedule.lr(progress.iteration);
        for batch in train_loader.epoch(epoch, progress.batch as usize) {
            let batch = batch?;
            let n = batch.labels.len();
            let x = Tensor::from_vec(batch.shape, batch.images);
            lr = schedule.lr(progress.iteration);
            let ce = train_step(&mut net, &mut sgd, &x, &batch.labels, lr, config.label_smoothing, &mut buffers);
            if !ce.loss.is_finite() {
                return Err(TrainError::Diverged {
                    loss: ce.loss,
                    iteration: progress.iteration + 1,
                    epoch: epoch + 1,
                    kept: kept(&run_dir),
                });
            }
            sums.loss += ce.loss * n as f64;
            sums.errors += ce.top1_errors as u64;
            sums.samples += n as u64;
            schedule.observe_batch(progress.iteration, 100.0 * ce.top1_errors as f64 / n as f64);
            progress.iteration += 1;
            progress.batch += 1;
            let elapsed = sums.seconds + epoch_start.elapsed().as_secs_f64();
            observer.step(&StepReport {
                epoch: epoch + 1,
                batch: progress.batch,
                batches,
                iteration: progress.iteration,
                total_iterations: total,
                lr,
                loss: sums.loss / sums.samples as f64,
                error: 100.0 * sums.errors as f64 / sums.samples as f64,
                images_per_sec: sums.samples as f64 / elapsed.max(1e-9),
            });
            if progress.iteration >= total {
                break;
            }
            if stop.load(Ordering::SeqCst) && progress.batch < per_epoch {
                sums.seconds += epoch_start.elapsed().as_secs_f64();
                progress.partial = sums;
                progress.schedule = schedule.state.clone();
                save(&net, &sgd, &progress, &run_dir.last())?;
                observer.message(&format!("interrupted: checkpoint written to {}", run_dir.last().display()));
                return Ok(summary(Outcome::Interrupted, history, best));
            }
        }
        let train_seconds = sums.seconds + epoch_start.elapsed().as_secs_f64();
        let eval_start = Instant::now();
        let mut run_eval = |what: &str, loader: &Loader| -> Result<EvalResult, TrainError> {
            observer.eval_start(what, loader.batches_per_epoch());
            Ok(evaluate(&mut net, loader, |done| observer.eval_step(done))?)
        };
        let test = run_eval("test", &test_loader)?;
        let val = match &val_loader {
            Some(l) => Some(run_eval("validation", l)?),
            None => None,
        };
        let row = EpochMetrics {
            epoch: epoch + 1,
            iteration: progress.iteration,
            lr: f64::from(lr),
            lr_start: Some(f64::from(lr_start)),
            lr_end: Some(f64::from(lr)),
            train_loss: sums.loss / sums.samples.max(1) as f64,
            train_error: 100.0 * sums.errors as f64 / sums.samples.max(1) as f64,
            test_loss: test.loss,
            test_error: test.top1_error,
            test_top5_error: test.top5_error,
            val_error: val.as_ref().map(|v| v.top1_error),
            images_per_sec: sums.samples as f64 / train_seconds.max(1e-9),
            seconds: train_seconds + eval_start.elapsed().as_secs_f64(),
        };
        history.push(row.clone());
        metrics::write(dir, &history)?;
        metrics::plot(dir, &title, &history)?;
        let monitored = row.val_error.unwrap_or(row.test_error);
        if schedule.observe_epoch(monitored) {
            observer.message(&format!("error plateaued: learning rate now {}", schedule.lr(progress.iteration)));
        }
        progress.epoch += 1;
        progress.batch = 0;
        progress.partial = EpochSums::default();
        progress.schedule = schedule.state.clone();
        if progress.best_error.is_none_or(|b| monitored < b) {
            progress.best_error = Some(monitored);
            save(&net, &sgd, &progress, &run_dir.best())?;
            best = Some(run_dir.best());
        }
        save(&net, &sgd, &progress, &run_dir.last())?;
        if config.checkpoint_every > 0 && progress.epoch.is_multiple_of(config.checkpoint_every) {
            save(&net, &sgd, &progress, &run_dir.epoch(progress.epoch))?;
        }
        observer.epoch_end(&row);
        if stop.load(Ordering::SeqCst) && progress.iteration < total {
            observer.message(&format!("interrupted: checkpoint written to {}", run_dir.last().display()));
            return Ok(summary(Outcome::Interrupted, history, best));
        }
    }
    Ok(summary(Outcome::Finished, history, best))
}
