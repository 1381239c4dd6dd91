//! `resnet eval`: top-1/top-5 error, loss, per-class accuracy and confusion matrix of a
//! checkpoint on a dataset split, with single, 10-crop or multi-scale views.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_data::{
    open, DatasetKind, EvalView, Loader, LoaderConfig, LoaderMode, Normalize, OpenOptions, SyntheticConfig,
};
use resnet_train::evaluate::evaluate;
use std::path::PathBuf;

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
    /// Dataset: cifar10, cifar100, imagefolder, mnist, fashion-mnist, kmnist, idx, synthetic.
    #[arg(long)]
    dataset: String,
    /// Dataset location.
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
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Skip unreadable samples (and report them).
    #[arg(long)]
    skip_bad: bool,
    /// Synthetic dataset: images per split and side (must match the training run's).
    #[arg(long, num_args = 3, value_names = ["TRAIN", "TEST", "SIZE"])]
    synthetic: Option<Vec<usize>>,
    /// Seed of the synthetic dataset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON (`top1_error`, `top5_error` in percent, `loss`, `count`, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ckpt, path) = args.source.load()?;
    let mut net = ckpt.network(&path)?;
    let kind: DatasetKind = args.dataset.parse().map_err(anyhow::Error::msg)?;
    let mut synthetic = SyntheticConfig { seed: args.seed, ..SyntheticConfig::default() };
    if let Some(s) = &args.synthetic {
        (synthetic.train, synthetic.test, synthetic.size) = (s[0], s[1], s[2]);
    }
    let opts = OpenOptions { skip_bad: args.skip_bad, synthetic, ..OpenOptions::default() };
    let splits = open(kind, args.data.as_deref(), &opts).with_context(|| format!("cannot open the {kind} dataset"))?;
    for s in &splits.skipped {
        eprintln!("skipped: {s}");
    }
    let ds = match args.split {
        Split::Test => splits.test.clone(),
        Split::Train => splits.train.clone(),
    };
    let classes = ds.classes().to_vec();
    if classes.len() != ckpt.classes.len() {
        bail!("{}: the network has {} classes, the dataset {}", path.display(), ckpt.classes.len(), classes.len());
    }
    if classes != ckpt.classes {
        eprintln!("warning: the dataset's class names differ from the checkpoint's; labels are matched by index");
    }
    let (h, w) = ckpt.preprocess.input_size;
    let view = if args.ten_crop {
        EvalView::TenCrop { resize: h * 256 / 224, crop: h }
    } else if let Some(scales) = &args.multi_scale {
        EvalView::MultiScale { scales: scales.clone(), crop: h }
    } else {
        ckpt.preprocess.eval_view.clone()
    };
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
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(loader.batches_per_epoch() as u64) };
    bar.set_style(
        ProgressStyle::with_template("evaluating [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")?.progress_chars("=> "),
    );
    let result = evaluate(&mut net, &loader, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if args.json {
        let mut v = serde_json::to_value(&result)?;
        v["classes"] = serde_json::json!(classes);
        v["checkpoint"] = serde_json::json!(path);
        v["view"] = serde_json::to_value(&view)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} on {} {:?} split, {} images, {} view(s) each",
        ckpt.spec.name, kind, args.split, result.count, result.views
    );
    println!("top-1 error {:.2}%  top-5 error {:.2}%  loss {:.4}", result.top1_error, result.top5_error, result.loss);
    println!("\n{:<24} {:>9}", "class", "accuracy");
    for (name, acc) in classes.iter().zip(&result.per_class_accuracy) {
        println!("{:<24} {:>8}", name, acc.map(|a| format!("{a:.2}%")).unwrap_or_else(|| "-".into()));
    }
    if classes.len() <= 20 {
        println!("\nconfusion matrix (rows: true class, columns: predicted)");
        for (name, row) in classes.iter().zip(&result.confusion) {
            let cells: Vec<String> = row.iter().map(|c| format!("{c:>6}")).collect();
            println!("{:<12} {}", name.chars().take(12).collect::<String>(), cells.join(""));
        }
    }
    Ok(())
}
