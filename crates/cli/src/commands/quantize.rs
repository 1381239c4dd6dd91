//! `resnet quantize`: post-training static int8 quantization of a checkpoint, calibrated on a
//! sample of a dataset split.

use super::split::{eval_loader, EvalLoaderOptions, Split, SplitArgs};
use super::weights::{check_output, WeightsArgs};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use resnet_nn::Tensor;
use resnet_quant::{Calibrator, Method};
use resnet_train::memory::{check_batch, BatchPlan, Pass};
use std::path::PathBuf;
use std::time::Instant;

/// How activation ranges are chosen.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    /// The largest value seen.
    Minmax,
    /// The --percentile of the values seen (robust to rare outliers).
    Percentile,
}

/// Arguments of `resnet quantize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The float network.
    #[command(flatten)]
    source: WeightsArgs,
    /// The calibration images (default split: train).
    #[command(flatten)]
    images: SplitArgs,
    /// Calibration images: a sample of the split, shuffled with --sample-seed.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    calibration: u32,
    /// How activation ranges are chosen from the calibration images.
    #[arg(long, value_enum, default_value_t = MethodArg::Percentile)]
    method: MethodArg,
    /// The percentile of --method percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Seed of the calibration sample.
    #[arg(long, default_value_t = 0)]
    sample_seed: u64,
    /// Images per calibration batch (the float pass keeps every activation of a batch).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch_size: u32,
    /// Loader worker threads.
    #[arg(long, default_value_t = 2, value_parser = super::thread_count)]
    workers: usize,
    /// The quantized checkpoint to write.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
    /// Print the quantization record as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut ckpt, path) = args.source.load()?;
    check_output(&args.out, &[&path], args.force, "--out")?;
    let method = match args.method {
        MethodArg::Minmax => Method::MinMax,
        MethodArg::Percentile => Method::Percentile(args.percentile),
    };
    let mut calibrator = Calibrator::new(method).context("--percentile")?;
    let mut net = ckpt.network(&path)?;
    let (kind, ds) = args.images.open_split(&ckpt, &path, Split::Train)?;
    let data_path = args.images.data_location(&ckpt);
    let available = ds.len();
    let wanted = (args.calibration as usize).min(available);
    if wanted < args.calibration as usize {
        eprintln!("note: the {kind} split has {available} images; calibrating on all of them");
    }
    let view = ckpt.preprocess.eval_view.clone();
    let batch_size = (args.batch_size as usize).min(wanted);
    // Calibration runs the float network keeping every activation, as a training step's forward
    // pass does: a batch that cannot fit is refused with the largest that does.
    check_batch(BatchPlan {
        spec: net.spec(),
        input: ckpt.preprocess.input_size,
        batch: batch_size,
        pass: Pass::Train,
        flag: "--batch-size",
        prefetched: 4,
        views: 1,
        stored: resnet_kernels::conv::Precision::F32,
    })?;
    let opts =
        EvalLoaderOptions { batch_size, workers: args.workers, view: &view, shuffle_seed: Some(args.sample_seed) };
    let loader = eval_loader(&ckpt, net.spec(), ds, &opts)?;
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(wanted as u64) };
    bar.set_style(
        ProgressStyle::with_template("calibrating [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}")?
            .progress_chars("=> "),
    );
    let start = Instant::now();
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let [rows, h, w, c] = batch.shape;
        let take = rows.min(wanted - calibrator.images());
        net.check_input([take, h, w, c]).with_context(|| {
            format!(
                "the {kind} images do not fit the network of {} (calibration data of another shape)",
                path.display()
            )
        })?;
        let x = Tensor::from_vec([take, h, w, c], batch.images[..take * h * w * c].to_vec());
        calibrator.observe(&mut net, &x).with_context(|| format!("cannot calibrate {}", path.display()))?;
        bar.set_position(calibrator.images() as u64);
        if calibrator.images() >= wanted {
            break;
        }
    }
    bar.finish_and_clear();
    let mut record = calibrator.finish(&net)?;
    record.run_config = Some(match &ckpt.training {
        Some(t) => t.config.clone(),
        // Lossy: a path need not be UTF-8, and the metadata is JSON.
        None => {
            serde_json::json!({"dataset": kind.to_string(), "data": data_path.map(|p| p.to_string_lossy().into_owned())})
        }
    });
    ckpt.training = None;
    ckpt.quantization = Some(record.clone());
    ckpt.save(&args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    let method = match method {
        Method::MinMax => "min/max".to_string(),
        Method::Percentile(p) => format!("{p} percentile"),
    };
    println!(
        "{} -> {}: int8 {} ({} activation ranges, {method} of {} {kind} images, {:.1} s)",
        path.display(),
        args.out.display(),
        ckpt.spec.name,
        record.activations.len(),
        record.calibration_images,
        start.elapsed().as_secs_f64()
    );
    println!("kept in higher precision: {}", record.float_layers.join(", "));
    Ok(())
}
