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
//!
//! The loop reads top-down: [`run`] and [`resume`] call `train` (this file), which opens or
//! resumes the run (`resume.rs`), checks its configuration (`validate.rs`), opens its data and
//! loaders (`data.rs`), then trains it epoch by epoch (`epoch.rs`).

mod data;
mod epoch;
mod error;
mod observer;
mod resume;
mod run_dir;
mod validate;

pub use error::TrainError;
pub use observer::{Observer, Silent, StepReport};
pub use resume::ResumeChanges;
pub use run_dir::RunDir;

use crate::checkpoint::Progress;
use crate::config::{RunLength, TrainConfig};
use crate::distributed::{self, Communicator, GradientBuckets, Solo, BUCKET_BYTES};
use crate::fine_tune::{self, InitWeights};
use crate::fsutil;
use crate::lock::RunLock;
use crate::metrics::EpochMetrics;
use crate::schedule::Schedule;
use crate::step::StepBuffers;
use data::{open_data, resolve_spec, Loaders};
use epoch::{Record, Run};
use resnet_data::Shard;
use resnet_models::{InitConfig, ResNet, ResNetSpec};
use resnet_nn::optim::{Sgd, SgdConfig};
use resume::{cannot_resume, check_compatible, Restore, Start};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

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
    resume_with(dir, changes, stop, observer, &Solo)
}

/// [`resume`] as one rank of the data-parallel group `comm` (see [`run_with`]).
///
/// # Errors
/// As [`resume`] and [`run_with`].
pub fn resume_with(
    dir: &Path,
    changes: &ResumeChanges,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
    comm: &dyn Communicator,
) -> Result<RunSummary, TrainError> {
    train(Start::Resume(changes), dir, stop, observer, comm)
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
    run_with(config, dir, resume, stop, observer, &Solo)
}

/// [`run`] as one rank of the data-parallel group `comm`: every rank calls it with the same
/// configuration and directory; each trains on its share of every batch, the gradients are
/// averaged before each step, and rank 0 alone locks the directory and writes its files. A
/// stop asked of any rank stops all of them after the same step.
///
/// # Errors
/// As [`run`]; a batch size the ranks do not divide, or ranks started with different
/// configurations, is a [`TrainError::Config`].
pub fn run_with(
    config: TrainConfig,
    dir: &Path,
    resume: bool,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
    comm: &dyn Communicator,
) -> Result<RunSummary, TrainError> {
    let start = if resume {
        Start::Resume(&ResumeChanges { length: None, workers: None })
    } else {
        Start::Fresh(Box::new(config))
    };
    train(start, dir, stop, observer, comm)
}

/// A fresh or resumed run in `dir`, locked while it trains.
fn train(
    start: Start<'_>,
    dir: &Path,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
    comm: &dyn Communicator,
) -> Result<RunSummary, TrainError> {
    let run_dir = RunDir { root: dir.to_path_buf() };
    let lead = comm.rank() == 0;
    start.check_before_lock(&run_dir)?;
    let _lock = if lead { Some(lock(dir, observer)?) } else { None };
    let mut opened = start.open(&run_dir)?;
    if opened.config.world_size != comm.size() {
        if opened.checkpoint.is_some() {
            opened.changed.push(format!("world_size {} -> {}", opened.config.world_size, comm.size()));
        }
        opened.config.world_size = comm.size();
    }
    validate::validate(&opened.config)?;
    distributed::check_same_config(&opened.config, comm).map_err(TrainError::Config)?;
    let kernels = opened.config.precision.kernel_config().map_err(TrainError::Config)?;

    let data = open_data(&opened.config, observer)?;
    observer.classes(data.classes.len());
    let spec = resolve_spec(&opened.config, data.classes.len(), data.train.channels())?;
    // A fresh run's starting weights; a resumed run has its own in its checkpoint.
    let init = match (&opened.checkpoint, &opened.config.fine_tune.init) {
        (None, Some(path)) => Some(InitWeights::read(path).map_err(TrainError::Config)?),
        _ => None,
    };
    let mut net = network(&opened, &run_dir, spec, &data.classes, init.as_ref(), observer)?;
    if let Some(line) = fine_tune::freeze(&mut net, &opened.config.fine_tune).map_err(TrainError::Config)? {
        observer.message(&line);
    }
    net.set_kernel_config(kernels).map_err(TrainError::Config)?;
    // Every rank starts from rank 0's network (the same seed gives the same one; a checkpoint
    // read on another machine might not be the same file).
    distributed::broadcast_network(&mut net, comm);
    if opened.config.sync_bn && comm.size() > 1 {
        let sync = comm
            .statistics_sync()
            .ok_or_else(|| TrainError::Config("--sync-bn: this group of ranks cannot sum batch statistics".into()))?;
        net.for_each_batch_norm(|bn| bn.sync = Some(sync.clone()));
    }
    let shard = Shard { index: comm.rank(), count: comm.size() };
    let loaders =
        Loaders::open(&opened.config, &data, &net, opened.checkpoint.as_ref(), init.as_ref(), shard, observer)?;
    drop(init);

    let per_epoch = batches_per_epoch(&loaders, &opened.config)?;
    let iterations = |length| iterations(length, per_epoch);
    let total = iterations(opened.config.length);
    opened.check_length_change(&run_dir, iterations)?;
    let config = &opened.config;
    let (lr, warmup) = config.schedule_start(per_epoch);
    let mut schedule = Schedule::new(lr, config.decay.clone(), warmup, total, per_epoch);
    let mut sgd = Sgd::new(SgdConfig {
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        decay_bn_and_bias: config.decay_bn_and_bias,
        nesterov: config.nesterov,
    });
    sgd.lr_scale = fine_tune::lr_scales(&net, &config.fine_tune);
    // A resumed run takes its momentum, schedule state and position from its checkpoint.
    let (progress, history) = match &opened.checkpoint {
        Some(checkpoint) => Restore { checkpoint, run_dir: &run_dir, total, changed: &opened.changed }.apply(
            &net,
            &mut sgd,
            &mut schedule,
            observer,
        )?,
        None => (Progress { seed: config.seed, schedule: schedule.state.clone(), ..Progress::default() }, Vec::new()),
    };

    validate::check_schedule(config, total, per_epoch)?;
    let config_json = write_config(&opened, &run_dir, lead)?;
    let buckets = GradientBuckets::new(&mut net, BUCKET_BYTES);
    let mut run = Run {
        run_dir: &run_dir,
        title: format!("{} on {}", net.spec().name, config.dataset),
        net,
        sgd,
        schedule,
        progress,
        history,
        total,
        per_epoch,
        label_smoothing: config.label_smoothing,
        checkpoint_every: config.checkpoint_every,
        record: Record { classes: data.classes, preprocess: loaders.preprocess.clone(), config: config_json },
        buffers: StepBuffers::default(),
        best: run_dir.best().exists().then(|| run_dir.best()),
        comm,
        buckets,
        stop_asked: false,
    };
    let outcome = run.train(&loaders, stop, observer)?;
    Ok(run.summary(outcome))
}

/// Batches of an epoch: at least one.
fn batches_per_epoch(loaders: &Loaders, config: &TrainConfig) -> Result<u64, TrainError> {
    let per_epoch = loaders.train.batches_per_epoch() as u64;
    if per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "the training set ({} images) is smaller than one batch of {}",
            loaders.train.len(),
            config.batch_size
        )));
    }
    Ok(per_epoch)
}

/// The run's configuration as JSON, written to `config.json` (by the rank that writes files,
/// `lead`) when the run is new or a resume changed it.
fn write_config(opened: &resume::Opened, run_dir: &RunDir, lead: bool) -> Result<serde_json::Value, TrainError> {
    let config_json = serde_json::to_value(&opened.config)
        .map_err(|e| TrainError::Config(format!("the configuration cannot be written as JSON: {e}")))?;
    if lead && (opened.checkpoint.is_none() || !opened.changed.is_empty()) {
        let text = serde_json::to_string_pretty(&config_json).expect("a JSON value prints");
        fsutil::write_atomic(&run_dir.config(), text.as_bytes())?;
    }
    Ok(config_json)
}

/// Locks the run directory and removes the temporary files an interrupted run left in it.
fn lock(dir: &Path, observer: &mut dyn Observer) -> Result<RunLock, TrainError> {
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
    Ok(lock)
}

/// The network a run trains: initialised (then given the starting weights `init`), or with a
/// resumed run's weights.
fn network(
    opened: &resume::Opened,
    run_dir: &RunDir,
    spec: ResNetSpec,
    classes: &[String],
    init: Option<&InitWeights>,
    observer: &mut dyn Observer,
) -> Result<ResNet, TrainError> {
    let mut net = ResNet::new(spec.clone())?;
    match &opened.checkpoint {
        Some(ckpt) => {
            check_compatible(ckpt, &run_dir.last(), &spec, classes)?;
            net.load_state_dict(&ckpt.state).map_err(|e| cannot_resume(run_dir, e.to_string()))?;
        }
        None => {
            net.init(&InitConfig {
                seed: opened.config.seed,
                zero_init_residual: opened.config.zero_init_residual,
                ..InitConfig::default()
            });
            if let Some(init) = init {
                observer.message(&init.load_into(&mut net).map_err(TrainError::Config)?);
            }
        }
    }
    Ok(net)
}

/// Iterations of a run of `length` with `per_epoch` batches an epoch.
fn iterations(length: RunLength, per_epoch: u64) -> u64 {
    match length {
        RunLength::Epochs(e) => e.saturating_mul(per_epoch),
        RunLength::Iterations(i) => i,
    }
}
