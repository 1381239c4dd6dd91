//! `resnet eval`: top-1/top-5 error, loss, per-class accuracy and confusion matrix of a
//! checkpoint on a dataset split, with single, 10-crop or multi-scale views.

use super::split::{eval_loader, EvalLoaderOptions, SplitArgs, ViewArgs};
use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use resnet_train::evaluate::{evaluate, EvalResult};
use resnet_train::inference::Classifier;

/// Arguments of `resnet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network.
    #[command(flatten)]
    source: super::weights::WeightsArgs,
    /// The images.
    #[command(flatten)]
    images: SplitArgs,
    /// Views other than the checkpoint's.
    #[command(flatten)]
    views: ViewArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Loader worker threads.
    #[arg(long, default_value_t = 2, value_parser = super::thread_count)]
    workers: usize,
    /// Print JSON (`top1_error`, `top5_error` in percent, `loss`, `count`, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ckpt, path) = args.source.load()?;
    let mut net = ckpt.inference_network(&path)?;
    let (kind, ds) = args.images.open(&ckpt, &path)?;
    let classes = ds.classes().to_vec();
    if classes.len() != ckpt.classes.len() {
        bail!("{}: the network has {} classes, the dataset {}", path.display(), ckpt.classes.len(), classes.len());
    }
    if classes != ckpt.classes {
        eprintln!("warning: the dataset's class names differ from the checkpoint's; labels are matched by index");
    }
    let view = args.views.view(&ckpt)?;
    let opts =
        EvalLoaderOptions { batch_size: args.batch_size, workers: args.workers, view: &view, shuffle_seed: None };
    let loader = eval_loader(&ckpt, net.spec(), ds, &opts)?;
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
        v["precision"] = serde_json::json!(if net.is_int8() { "int8" } else { "fp32" });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let split = args.images.split_or(super::split::Split::Test).name();
    let precision = if net.is_int8() { " (int8)" } else { "" };
    println!(
        "{}{precision} on {} {} split, {} images, {} view(s) each",
        ckpt.spec.name, kind, split, result.count, result.views
    );
    print_result(&classes, &result);
    Ok(())
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
