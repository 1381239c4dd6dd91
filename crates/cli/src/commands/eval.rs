//! `resnet eval`: top-1/top-5 error, loss, per-class accuracy and confusion matrix of a
//! checkpoint on a dataset split, with single, 10-crop or multi-scale views.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_data::{
    open, DatasetKind, EvalView, Loader, LoaderConfig, LoaderMode, Normalize, OpenOptions, SharedDataset,
    SyntheticConfig,
};
use resnet_models::ResNetSpec;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::evaluate::{evaluate, EvalResult};
use resnet_train::memory::{check_batch, BatchPlan, Pass};
use std::path::{Path, PathBuf};

/// Which split to evaluate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The test (or validation) split.
    Test,
    /// The training split.
    Train,
}

/// Arguments of `resnet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network.
    #[command(flatten)]
    source: super::weights::WeightsArgs,
    /// Dataset: cifar10, cifar100, imagefolder, mnist, fashion-mnist, kmnist, idx, synthetic
    /// (default: the one a training checkpoint was trained on).
    #[arg(long)]
    dataset: Option<String>,
    /// Dataset location (default: the training run's, when --dataset is not given).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// 10-crop evaluation (four corners, centre, and their flips), softmax averaged.
    #[arg(long, conflicts_with = "multi_scale")]
    ten_crop: bool,
    /// Multi-scale 10-crop at these shorter sides (e.g. 224,256,384,480,640), softmax averaged.
    #[arg(long, value_delimiter = ',')]
    multi_scale: Option<Vec<usize>>,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Loader worker threads.
    #[arg(long, default_value_t = 2, value_parser = super::thread_count)]
    workers: usize,
    /// Skip unreadable samples (and report them).
    #[arg(long)]
    skip_bad: bool,
    /// Synthetic dataset: images per split and side (must match the training run's).
    #[arg(long, num_args = 3, value_names = ["TRAIN", "TEST", "SIZE"])]
    synthetic: Option<Vec<usize>>,
    /// Seed of the synthetic dataset (default: the training run's, else 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Print JSON (`top1_error`, `top5_error` in percent, `loss`, `count`, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ckpt, path) = args.source.load()?;
    let mut net = ckpt.network(&path)?;
    let (kind, ds) = open_split(&args, &ckpt, &path)?;
    let classes = ds.classes().to_vec();
    if classes.len() != ckpt.classes.len() {
        bail!("{}: the network has {} classes, the dataset {}", path.display(), ckpt.classes.len(), classes.len());
    }
    if classes != ckpt.classes {
        eprintln!("warning: the dataset's class names differ from the checkpoint's; labels are matched by index");
    }
    let view = view(&args, &ckpt)?;
    let loader = loader(&args, &ckpt, net.spec(), ds, &view)?;
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(loader.batches_per_epoch() as u64) };
    bar.set_style(
        ProgressStyle::with_template("evaluating [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")?.progress_chars("=> "),
    );
    let result = evaluate(&mut net, &loader, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if result.non_finite > 0 {
        bail!(
            "{}: the network's output is not finite on {} of {} images (its weights overflow); no result",
            path.display(),
            result.non_finite,
            result.count
        );
    }
    if args.json {
        let mut v = serde_json::to_value(&result)?;
        v["classes"] = serde_json::json!(classes);
        // Lossy: a file name need not be UTF-8, and JSON strings must be.
        v["checkpoint"] = serde_json::json!(path.to_string_lossy());
        v["view"] = serde_json::to_value(&view)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let split = match args.split {
        Split::Test => "test",
        Split::Train => "train",
    };
    println!("{} on {} {} split, {} images, {} view(s) each", ckpt.spec.name, kind, split, result.count, result.views);
    print_result(&classes, &result);
    Ok(())
}

/// The split to evaluate: of the dataset given, else the one the checkpoint's run trained on
/// (with its location and synthetic settings), else the one the files of `--data` hold.
fn open_split(args: &Args, ckpt: &Checkpoint, path: &Path) -> anyhow::Result<(DatasetKind, SharedDataset)> {
    let run = RunData::of(ckpt);
    let (dataset, data) = match (&args.dataset, &run) {
        (Some(d), _) => (d.clone(), args.data.clone()),
        (None, Some(run)) => (run.dataset.clone(), args.data.clone().or_else(|| run.data.clone())),
        (None, None) => match &args.data {
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
    let from_run = args.dataset.is_none() || run.as_ref().is_some_and(|r| r.dataset == dataset);
    let mut synthetic = SyntheticConfig::default();
    if let (true, Some(run)) = (from_run, &run) {
        synthetic = run.synthetic.clone();
    }
    if let Some(seed) = args.seed {
        synthetic.seed = seed;
    }
    if let Some(s) = &args.synthetic {
        (synthetic.train, synthetic.test, synthetic.size) = (s[0], s[1], s[2]);
    }
    let opts = OpenOptions { skip_bad: args.skip_bad, synthetic, ..OpenOptions::default() };
    let splits = open(kind, data.as_deref(), &opts).with_context(|| format!("cannot open the {kind} dataset"))?;
    for s in &splits.skipped {
        eprintln!("skipped: {s}");
    }
    let ds = match args.split {
        Split::Test => splits.test,
        Split::Train => splits.train,
    };
    Ok((kind, ds))
}

/// The view the flags ask for, else the checkpoint's.
fn view(args: &Args, ckpt: &Checkpoint) -> anyhow::Result<EvalView> {
    let (h, _) = ckpt.preprocess.input_size;
    Ok(if args.ten_crop {
        EvalView::TenCrop { resize: h * 256 / 224, crop: h }
    } else if let Some(scales) = &args.multi_scale {
        let view = EvalView::MultiScale { scales: scales.clone(), crop: h };
        resnet_train::checkpoint::check_view(&view).map_err(|e| anyhow::anyhow!("--multi-scale: {e}"))?;
        view
    } else {
        ckpt.preprocess.eval_view.clone()
    })
}

/// The loader of `ds` in `view`, once a batch of it is known to fit.
fn loader(
    args: &Args,
    ckpt: &Checkpoint,
    spec: &ResNetSpec,
    ds: SharedDataset,
    view: &EvalView,
) -> anyhow::Result<Loader> {
    let (h, w) = ckpt.preprocess.input_size;
    // The batch's activations must fit before the loader and the network allocate them.
    check_batch(BatchPlan {
        spec,
        input: (h, w),
        batch: args.batch_size.max(1),
        pass: Pass::Infer,
        flag: "--batch-size",
        prefetched: 4,
        views: view.views(),
    })?;
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: args.batch_size.max(1),
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: args.workers.max(1),
            prefetch: 4,
            mode: LoaderMode::Eval(view.clone()),
            normalize: ckpt.preprocess.normalize.clone(),
        },
    )?;
    let (oh, ow, _) = loader.output_shape();
    if matches!(ckpt.preprocess.normalize, Normalize::PixelMean { .. }) && (oh, ow) != (h, w) {
        bail!("the views are {oh}x{ow} but the checkpoint's mean image is {h}x{w}; choose a view of that size");
    }
    Ok(loader)
}

/// The errors and loss, the accuracy of each class, and for up to 20 classes the confusion
/// matrix.
fn print_result(classes: &[String], result: &EvalResult) {
    // Top-5 says nothing with five classes or fewer (it is always 0).
    if classes.len() > 5 {
        println!(
            "top-1 error {:.2}%  top-5 error {:.2}%  loss {:.4}",
            result.top1_error, result.top5_error, result.loss
        );
    } else {
        println!("top-1 error {:.2}%  loss {:.4}", result.top1_error, result.loss);
    }
    println!("\n{:<24} {:>9}", "class", "accuracy");
    for (name, acc) in classes.iter().zip(&result.per_class_accuracy) {
        println!("{:<24} {:>9}", name, acc.map(|a| format!("{a:.2}%")).unwrap_or_else(|| "-".into()));
    }
    if classes.len() <= 20 {
        println!("\n{}", confusion_table(classes, &result.confusion));
    }
}

/// The confusion matrix with a header row: columns are predicted classes by index, rows true
/// classes by index and name.
fn confusion_table(classes: &[String], confusion: &[Vec<u64>]) -> String {
    let width =
        confusion.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(classes.len().to_string().len());
    let name: Vec<String> =
        classes.iter().enumerate().map(|(i, n)| format!("{i:>2} {}", n.chars().take(12).collect::<String>())).collect();
    let label = name.iter().map(|n| n.chars().count()).max().unwrap_or(0).max("true \\ predicted".len());
    let mut out = String::from("confusion matrix (rows: true class, columns: predicted class by index)\n");
    out += &format!("{:<label$}", "true \\ predicted");
    for i in 0..classes.len() {
        out += &format!(" {i:>width$}");
    }
    for (n, row) in name.iter().zip(confusion) {
        out += &format!("\n{n:<label$}");
        for c in row {
            out += &format!(" {c:>width$}");
        }
    }
    out
}

/// What a training checkpoint records about its data, for `eval` without `--dataset`.
struct RunData {
    dataset: String,
    data: Option<PathBuf>,
    synthetic: SyntheticConfig,
}

impl RunData {
    /// The training run's dataset, location and synthetic settings (none for imported weights).
    fn of(ckpt: &Checkpoint) -> Option<RunData> {
        let config = &ckpt.training.as_ref()?.config;
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
