//! The dataset split a network is run on, its evaluation views and the loader that renders them:
//! what `eval` and `embed` share.

use anyhow::{bail, Context};
use resnet_data::{
    open, DatasetKind, EvalView, Loader, LoaderConfig, LoaderMode, Normalize, OpenOptions, SharedDataset,
    SyntheticConfig,
};
use resnet_models::ResNetSpec;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::memory::{check_batch, BatchPlan, Pass};
use std::path::{Path, PathBuf};

/// Which split to read.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The test (or validation) split.
    Test,
    /// The training split.
    Train,
}

impl Split {
    /// `test` or `train`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Train => "train",
        }
    }
}

/// Where the images come from: a dataset, by default the one a training checkpoint records.
#[derive(clap::Args, Debug, Clone)]
pub struct SplitArgs {
    /// Dataset: cifar10, cifar100, imagefolder, mnist, fashion-mnist, kmnist, idx, synthetic
    /// (default: the one a training checkpoint was trained on).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Dataset location (default: the training run's, when --dataset is not given).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Split (default: test; for `quantize`, train).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// Skip unreadable samples (and report them).
    #[arg(long)]
    pub skip_bad: bool,
    /// Synthetic dataset: images per split and side (must match the training run's).
    #[arg(long, num_args = 3, value_names = ["TRAIN", "TEST", "SIZE"])]
    pub synthetic: Option<Vec<usize>>,
    /// Seed of the synthetic dataset (default: the training run's, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SplitArgs {
    /// The split asked for: of the dataset given, else the one the checkpoint's run trained on
    /// (with its location and synthetic settings), else the one the files of `--data` hold.
    pub fn open(&self, ckpt: &Checkpoint, path: &Path) -> anyhow::Result<(DatasetKind, SharedDataset)> {
        self.open_split(ckpt, path, Split::Test)
    }

    /// Where the images are read from (`--data`, else the checkpoint's own dataset's location),
    /// made absolute.
    pub fn data_location(&self, ckpt: &Checkpoint) -> Option<PathBuf> {
        let run = || if self.dataset.is_none() { RunData::of(ckpt).and_then(|r| r.data) } else { None };
        let data = self.data.clone().or_else(run)?;
        Some(std::path::absolute(&data).unwrap_or(data))
    }

    /// The split given, else `default`.
    pub fn split_or(&self, default: Split) -> Split {
        self.split.unwrap_or(default)
    }

    /// [`Self::open`] with `default` as the split when none is given.
    pub fn open_split(
        &self,
        ckpt: &Checkpoint,
        path: &Path,
        default: Split,
    ) -> anyhow::Result<(DatasetKind, SharedDataset)> {
        let run = RunData::of(ckpt);
        let (dataset, data) = match (&self.dataset, &run) {
            (Some(d), _) => (d.clone(), self.data.clone()),
            (None, Some(run)) => (run.dataset.clone(), self.data.clone().or_else(|| run.data.clone())),
            (None, None) => match &self.data {
                // Weights from elsewhere do not record a dataset; the files say which format they are.
                Some(data) => (super::data::resolve_dataset(None, Some(data))?.to_string(), Some(data.clone())),
                None => bail!(
                    "give --data PATH (its format is recognised) or --dataset NAME: {} does not record the \
                     dataset it was trained on (only `resnet train` checkpoints do)",
                    path.display()
                ),
            },
        };
        let kind: DatasetKind = dataset.parse().map_err(anyhow::Error::msg)?;
        let from_run = self.dataset.is_none() || run.as_ref().is_some_and(|r| r.dataset == dataset);
        let mut synthetic = SyntheticConfig::default();
        if let (true, Some(run)) = (from_run, &run) {
            synthetic = run.synthetic.clone();
        }
        if let Some(seed) = self.seed {
            synthetic.seed = seed;
        }
        if let Some(s) = &self.synthetic {
            (synthetic.train, synthetic.test, synthetic.size) = (s[0], s[1], s[2]);
        }
        let opts = OpenOptions { skip_bad: self.skip_bad, synthetic, ..OpenOptions::default() };
        let splits = open(kind, data.as_deref(), &opts).with_context(|| format!("cannot open the {kind} dataset"))?;
        for s in &splits.skipped {
            eprintln!("skipped: {s}");
        }
        let ds = match self.split_or(default) {
            Split::Test => splits.test,
            Split::Train => splits.train,
        };
        Ok((kind, ds))
    }
}

/// Evaluation views other than the checkpoint's own.
#[derive(clap::Args, Debug, Clone)]
pub struct ViewArgs {
    /// 10-crop evaluation (four corners, centre, and their flips), averaged.
    #[arg(long, conflicts_with = "multi_scale")]
    pub ten_crop: bool,
    /// Multi-scale 10-crop at these shorter sides (e.g. 224,256,384,480,640), averaged.
    #[arg(long, value_delimiter = ',')]
    pub multi_scale: Option<Vec<usize>>,
}

impl ViewArgs {
    /// The view the flags ask for, else the checkpoint's.
    pub fn view(&self, ckpt: &Checkpoint) -> anyhow::Result<EvalView> {
        let (h, _) = ckpt.preprocess.input_size;
        Ok(if self.ten_crop {
            EvalView::TenCrop { resize: h * 256 / 224, crop: h }
        } else if let Some(scales) = &self.multi_scale {
            let view = EvalView::MultiScale { scales: scales.clone(), crop: h };
            resnet_train::checkpoint::check_view(&view).map_err(|e| anyhow::anyhow!("--multi-scale: {e}"))?;
            view
        } else {
            ckpt.preprocess.eval_view.clone()
        })
    }
}

/// How [`eval_loader`] batches.
pub struct EvalLoaderOptions<'a> {
    /// Images per batch (`--batch-size`).
    pub batch_size: usize,
    /// Loader threads (`--workers`).
    pub workers: usize,
    /// The views of each image.
    pub view: &'a EvalView,
    /// Images in an order shuffled with this seed (a sample of the split), else in order.
    pub shuffle_seed: Option<u64>,
}

/// The loader of `ds` in the checkpoint's preprocessing, once a batch of it is known to fit.
pub fn eval_loader(
    ckpt: &Checkpoint,
    spec: &ResNetSpec,
    ds: SharedDataset,
    opts: &EvalLoaderOptions<'_>,
) -> anyhow::Result<Loader> {
    let (h, w) = ckpt.preprocess.input_size;
    let batch = opts.batch_size.max(1);
    // The batch's activations must fit before the loader and the network allocate them.
    check_batch(BatchPlan {
        spec,
        input: (h, w),
        batch,
        pass: Pass::Infer,
        flag: "--batch-size",
        prefetched: 4,
        views: opts.view.views(),
        stored: resnet_kernels::conv::Precision::F32,
    })?;
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: batch,
            shuffle: opts.shuffle_seed.is_some(),
            drop_last: false,
            seed: opts.shuffle_seed.unwrap_or(0),
            workers: opts.workers.max(1),
            prefetch: 4,
            mode: LoaderMode::Eval(opts.view.clone()),
            normalize: ckpt.preprocess.normalize.clone(),
            shard: resnet_data::Shard::WHOLE,
        },
    )?;
    let (oh, ow, _) = loader.output_shape();
    if matches!(ckpt.preprocess.normalize, Normalize::PixelMean { .. }) && (oh, ow) != (h, w) {
        bail!("the views are {oh}x{ow} but the checkpoint's mean image is {h}x{w}; choose a view of that size");
    }
    Ok(loader)
}

/// What a training checkpoint records about its data, for commands run without `--dataset`.
struct RunData {
    dataset: String,
    data: Option<PathBuf>,
    synthetic: SyntheticConfig,
}

impl RunData {
    /// The training run's dataset, location and synthetic settings (none for imported weights).
    fn of(ckpt: &Checkpoint) -> Option<RunData> {
        // A quantized checkpoint carries the configuration of the run it came from.
        let config = match (&ckpt.training, &ckpt.quantization) {
            (Some(training), _) => &training.config,
            (None, Some(q)) => q.run_config.as_ref()?,
            (None, None) => return None,
        };
        let dataset = config.get("dataset")?.as_str()?.to_string();
        let data = config.get("data").and_then(|d| d.as_str()).map(PathBuf::from);
        let n = |k: &str, default: u64| config.get(k).and_then(|v| v.as_u64()).unwrap_or(default);
        let d = SyntheticConfig::default();
        let synthetic = SyntheticConfig {
            train: n("synthetic_train", d.train as u64) as usize,
            test: n("synthetic_test", d.test as u64) as usize,
            size: n("synthetic_size", d.size as u64) as usize,
            seed: n("seed", d.seed),
        };
        Some(RunData { dataset, data, synthetic })
    }
}
