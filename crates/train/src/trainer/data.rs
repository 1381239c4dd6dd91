//! A run's inputs: its dataset opened and split, the network spec it trains, the input
//! normalisation, and the training and evaluation loaders (with the batch sizes checked
//! against the memory available before anything large is allocated).

use super::{Observer, TrainError};
use crate::checkpoint::{Checkpoint, Preprocess};
use crate::config::{Normalization, TrainConfig};
use crate::fine_tune::InitWeights;
use crate::memory::{check_batch, BatchPlan, Pass};
use resnet_data::{
    channel_mean_std, open, pixel_mean, validation_split, with_channels, DatasetKind, Loader, LoaderConfig, LoaderMode,
    Normalize, OpenOptions, Shard, SharedDataset, SyntheticConfig,
};
use resnet_models::zoo::{self, ModelOptions};
use resnet_models::{ModelError, ResNet, ResNetSpec};

/// The data of a run, opened.
pub(super) struct RunData {
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
pub(super) fn open_data(config: &TrainConfig, observer: &mut dyn Observer) -> Result<RunData, TrainError> {
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
    let classes = classifier_outputs(config, splits.train.classes())?;
    let (mut train, mut test) = (splits.train, splits.test);
    if let Some(c) = config.in_channels {
        train = with_channels(train, c)?;
        test = with_channels(test, c)?;
    }
    let (train, val) = if config.val_split > 0 {
        let (rest, val) = validation_split(&train, config.val_split, config.seed)?;
        (rest, Some(val))
    } else {
        (train, None)
    };
    Ok(RunData { train, val, test, classes })
}

/// The names of the classifier's outputs: the dataset's classes, then (with
/// [`TrainConfig::classes`] above their count) `unusedK` for the outputs no label reaches.
fn classifier_outputs(config: &TrainConfig, dataset: &[String]) -> Result<Vec<String>, TrainError> {
    let mut names = dataset.to_vec();
    match config.classes {
        Some(n) if n < names.len() => Err(TrainError::Config(format!(
            "the dataset has {} classes, more than the {n} outputs --classes asks for",
            names.len()
        ))),
        Some(n) => {
            names.extend((names.len()..n).map(|k| format!("unused{k}")));
            Ok(names)
        }
        None => Ok(names),
    }
}

/// The network spec a configuration trains.
///
/// # Errors
/// An unknown model or invalid options.
pub(super) fn resolve_spec(config: &TrainConfig, classes: usize, channels: usize) -> Result<ResNetSpec, ModelError> {
    zoo::spec(
        &config.model,
        &ModelOptions { shortcut: config.shortcut, num_classes: Some(classes), in_channels: Some(channels) },
    )
}
fn loader_config(
    config: &TrainConfig,
    mode: LoaderMode,
    normalize: Normalize,
    train: bool,
    shard: Shard,
) -> LoaderConfig {
    LoaderConfig {
        batch_size: if train { config.batch_size } else { config.eval_batch_size },
        shuffle: train,
        drop_last: train,
        seed: config.seed,
        workers: config.workers.max(1),
        prefetch: 4,
        mode,
        normalize,
        shard,
    }
}

/// The normalisation a configuration asks for, measured on the training split at `size` (or
/// taken from the starting weights `init`).
///
/// # Errors
/// Data errors while measuring; a normalisation of `init` that does not fit the images.
pub(super) fn measure_normalization(
    n: &Normalization,
    train: &SharedDataset,
    size: (usize, usize),
    init: Option<&InitWeights>,
) -> Result<Normalize, TrainError> {
    Ok(match n {
        Normalization::Init => match init {
            Some(init) => init.normalize_for(size, train.channels()).map_err(TrainError::Config)?,
            None => return Err(TrainError::Config("the normalisation of --init weights needs --init".into())),
        },
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

/// The loaders of a run, and the preprocessing its checkpoints record.
pub(super) struct Loaders {
    /// Training views, shuffled and augmented.
    pub train: Loader,
    /// Test split, evaluation views.
    pub test: Loader,
    /// Held-out validation split, evaluation views.
    pub val: Option<Loader>,
    /// What a checkpoint needs to prepare an image as these loaders do.
    pub preprocess: Preprocess,
}

impl Loaders {
    /// Opens the loaders of `data` for `net`: a resumed run (`checkpoint`) keeps the
    /// normalisation it measured, a fresh one measures it (or takes that of its starting
    /// weights, `init`).
    ///
    /// # Errors
    /// A batch that cannot fit in memory, data errors, or evaluation views of another size than
    /// the training views. `shard` is this rank's part of every batch, training and evaluation.
    pub fn open(
        config: &TrainConfig,
        data: &RunData,
        net: &ResNet,
        checkpoint: Option<&Checkpoint>,
        init: Option<&InitWeights>,
        shard: Shard,
        observer: &mut dyn Observer,
    ) -> Result<Loaders, TrainError> {
        let channels = data.train.channels();
        let train_mode = || LoaderMode::Train(config.augment.clone());
        // The output size of the training views decides the input size (and the mean image's size).
        let probe = Loader::new(data.train.clone(), loader_config(config, train_mode(), Normalize::None, true, shard))?;
        let (h, w, _) = probe.output_shape();
        drop(probe);
        // Before the loaders and the normalisation pass: a batch that cannot fit is refused now,
        // not killed by the kernel once the first step allocates it. (The evaluation views have
        // the training views' size, checked below.)
        net.check_input([1, h, w, channels])?;
        check_batches(config, data, net.spec(), (h, w))?;
        let normalize = match checkpoint {
            Some(ckpt) => ckpt.preprocess.normalize.clone(),
            None => {
                if config.normalization != Normalization::Init {
                    observer.message("measuring the input normalisation on the training set");
                }
                measure_normalization(&config.normalization, &data.train, (h, w), init)?
            }
        };
        let preprocess = Preprocess {
            normalize: normalize.clone(),
            input_size: (h, w),
            channels,
            eval_view: config.eval_view.clone(),
        };
        let train =
            Loader::new(data.train.clone(), loader_config(config, train_mode(), normalize.clone(), true, shard))?;
        let eval_mode = LoaderMode::Eval(config.eval_view.clone());
        let test =
            Loader::new(data.test.clone(), loader_config(config, eval_mode.clone(), normalize.clone(), false, shard))?;
        let val = match &data.val {
            Some(v) => Some(Loader::new(v.clone(), loader_config(config, eval_mode, normalize.clone(), false, shard))?),
            None => None,
        };
        let (th, tw, _) = test.output_shape();
        if (th, tw) != (h, w) {
            return Err(TrainError::Config(format!(
                "the evaluation views are {th}x{tw} but the training views are {h}x{w}; choose matching crop sizes"
            )));
        }
        Ok(Loaders { train, test, val, preprocess })
    }
}

/// Refuses a training or evaluation batch of `input`-sized images that cannot fit in memory.
fn check_batches(
    config: &TrainConfig,
    data: &RunData,
    spec: &ResNetSpec,
    input: (usize, usize),
) -> Result<(), TrainError> {
    let prefetched =
        loader_config(config, LoaderMode::Train(config.augment.clone()), Normalize::None, true, Shard::WHOLE).prefetch;
    let train_batch = BatchPlan {
        spec,
        input,
        batch: config.batch_size,
        pass: Pass::Train,
        flag: "--batch-size",
        prefetched,
        views: 1,
        stored: config.precision.kernel_config().map_err(TrainError::Config)?.stored(),
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
    Ok(())
}
