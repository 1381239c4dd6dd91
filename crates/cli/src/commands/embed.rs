//! `resnet embed`: the globally averaged output of a layer (the classifier's input by default)
//! for every image of a dataset split or every image file, written as a safetensors features
//! file for retrieval and linear probes.

use super::split::{eval_loader, EvalLoaderOptions, SplitArgs, ViewArgs};
use super::weights::{check_output, WeightsArgs};
use anyhow::{anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use resnet_data::{prepare_views, read_image};
use resnet_interop::FeatureSet;
use resnet_models::{FeatureLayer, ResNet};
use resnet_nn::Tensor;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::memory::{check_batch, BatchPlan, Pass};
use std::path::{Path, PathBuf};

/// Arguments of `resnet embed`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network.
    #[command(flatten)]
    source: WeightsArgs,
    /// The images, when no image files are given.
    #[command(flatten)]
    dataset: SplitArgs,
    /// Image files (JPEG or PNG) to embed instead of a dataset.
    #[arg(conflicts_with_all = ["dataset", "data", "synthetic", "skip_bad"])]
    images: Vec<PathBuf>,
    /// Views other than the checkpoint's; the features of an image's views are averaged.
    #[command(flatten)]
    views: ViewArgs,
    /// The layer whose output is averaged over height and width: stem, layer1, layer2, ... (the
    /// last block of that stage) or features (the classifier's input).
    #[arg(long, default_value = "features")]
    layer: FeatureLayer,
    /// The features file to write: safetensors with `features` F32 [N, C], `labels` I64 [N]
    /// (datasets), and metadata `layer`, `model`, `classes` and `sources` (JSON lists).
    #[arg(long)]
    out: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Loader worker threads.
    #[arg(long, default_value_t = 2, value_parser = super::thread_count)]
    workers: usize,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ckpt, path) = args.source.load()?;
    let net = ckpt.network(&path)?;
    let channels = args
        .layer
        .channels_in(net.spec())
        .map_err(|e| anyhow!("--layer {}: {e} (the network of {})", args.layer, path.display()))?;
    let mut inputs: Vec<&Path> = vec![&path];
    inputs.extend(args.images.iter().map(PathBuf::as_path));
    inputs.extend(args.dataset.data.as_deref());
    check_output(&args.out, &inputs, args.force, "--out")?;
    check_out_directory(&args.out)?;
    let embedder = Embedder { net, layer: args.layer, channels, batch: args.batch_size as usize, features: Vec::new() };
    let set = if args.images.is_empty() {
        embed_split(&args, &ckpt, &path, embedder)?
    } else {
        embed_images(&args, &ckpt, &path, embedder)?
    };
    set.save(&args.out)?;
    let labelled = if set.labels.is_some() { ", with labels" } else { "" };
    println!(
        "{} x {} features of {} ({}){labelled} written to {}",
        set.rows,
        set.channels,
        set.layer,
        set.model,
        args.out.display()
    );
    Ok(())
}

/// Refuses an `--out` whose directory does not exist, or that is a directory, before any work.
fn check_out_directory(out: &Path) -> anyhow::Result<()> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("--out {}: the directory {} does not exist", out.display(), dir.display());
    }
    if out.is_dir() {
        bail!("--out {} is a directory; name the features file to write", out.display());
    }
    Ok(())
}

/// The network and the features of the images it has seen, one row per image.
struct Embedder {
    net: ResNet,
    layer: FeatureLayer,
    channels: usize,
    /// Rows (views) per network pass: activations stay those of one batch.
    batch: usize,
    features: Vec<f32>,
}

impl Embedder {
    /// Adds one row per image of `pixels` (NHWC `shape`, `views` consecutive rows per image), the
    /// mean of its views' features; returns the index, among these images, of the first whose
    /// features are not finite.
    fn add(&mut self, pixels: &[f32], shape: [usize; 4], views: usize) -> anyhow::Result<Option<usize>> {
        let [rows, h, w, c] = shape;
        let (per_row, k) = (h * w * c, self.channels);
        let start = self.features.len();
        self.features.resize(start + rows / views * k, 0.0);
        for first in (0..rows).step_by(self.batch) {
            let end = (first + self.batch).min(rows);
            let x = Tensor::from_vec([end - first, h, w, c], pixels[first * per_row..end * per_row].to_vec());
            let out = self.net.embed(&x, self.layer)?;
            for (r, row) in out.data().chunks_exact(k).enumerate() {
                let image = (first + r) / views;
                let sum = &mut self.features[start + image * k..start + (image + 1) * k];
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v / views as f32);
            }
        }
        Ok(self.features[start..].chunks_exact(k).position(|row| row.iter().any(|v| !v.is_finite())))
    }

    /// The rows so far, with where they came from.
    fn finish(self, sources: Vec<String>, labels: Option<(Vec<i64>, Vec<String>)>) -> FeatureSet {
        let (labels, classes) = labels.unzip();
        FeatureSet {
            rows: sources.len(),
            channels: self.channels,
            features: self.features,
            labels,
            layer: self.layer.to_string(),
            model: self.net.spec().name.clone(),
            classes,
            sources,
        }
    }
}

/// A bar of `len` images on stderr, with the rate and the time left.
fn progress_bar(len: usize) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("embedding [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}")?
            .progress_chars("=> "),
    );
    Ok(bar)
}

fn not_finite(source: &str, weights: &Path) -> anyhow::Error {
    anyhow!(
        "{source}: the features are not finite; the weights of {} overflow on this image (nothing written)",
        weights.display()
    )
}

/// Every image of the split, with its label, in dataset order.
fn embed_split(args: &Args, ckpt: &Checkpoint, path: &Path, mut embedder: Embedder) -> anyhow::Result<FeatureSet> {
    let (_, ds) = args.dataset.open(ckpt, path)?;
    let view = args.views.view(ckpt)?;
    let opts = EvalLoaderOptions {
        batch_size: args.batch_size as usize,
        workers: args.workers,
        view: &view,
        shuffle_seed: None,
    };
    let loader = eval_loader(ckpt, embedder.net.spec(), ds.clone(), &opts)?;
    let bar = progress_bar(ds.len())?;
    let (mut labels, mut sources) = (Vec::with_capacity(ds.len()), Vec::with_capacity(ds.len()));
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let first = sources.len();
        sources.extend(batch.indices.iter().map(|&i| ds.describe(i)));
        labels.extend(batch.labels.iter().map(|&l| i64::from(l)));
        if let Some(bad) = embedder.add(&batch.images, batch.shape, batch.views)? {
            return Err(not_finite(&sources[first + bad], path));
        }
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    Ok(embedder.finish(sources, Some((labels, ds.classes().to_vec()))))
}

/// Every image file, in the order given, in batches of images of one shape.
fn embed_images(args: &Args, ckpt: &Checkpoint, path: &Path, mut embedder: Embedder) -> anyhow::Result<FeatureSet> {
    let pre = &ckpt.preprocess;
    let view = args.views.view(ckpt)?;
    let batch = args.batch_size as usize;
    check_batch(BatchPlan {
        spec: embedder.net.spec(),
        input: pre.input_size,
        batch,
        pass: Pass::Infer,
        flag: "--batch-size",
        prefetched: 1,
        views: view.views(),
        stored: resnet_kernels::conv::Precision::F32,
    })?;
    let bar = progress_bar(args.images.len())?;
    let mut sources = Vec::with_capacity(args.images.len());
    let mut pending: Vec<f32> = Vec::new();
    let mut shape = [0usize; 4];
    let mut flush = |pending: &mut Vec<f32>, shape: &mut [usize; 4], sources: &[String]| -> anyhow::Result<()> {
        if shape[0] == 0 {
            return Ok(());
        }
        let images = shape[0] / view.views();
        let first = sources.len() - images;
        if let Some(bad) = embedder.add(pending, *shape, view.views())? {
            return Err(not_finite(&sources[first + bad], path));
        }
        bar.inc(images as u64);
        pending.clear();
        shape[0] = 0;
        Ok(())
    };
    for image in &args.images {
        let (x, s) = read_image(image, pre.channels)
            .and_then(|img| prepare_views(&img, &view, &pre.normalize, pre.input_size))?;
        let same = shape[1..] == s[1..] && shape[0] / s[0] < batch;
        if !same {
            flush(&mut pending, &mut shape, &sources)?;
            shape = [0, s[1], s[2], s[3]];
        }
        pending.extend_from_slice(&x);
        shape[0] += s[0];
        // Lossy: a file name need not be UTF-8, and the metadata is JSON.
        sources.push(image.to_string_lossy().into_owned());
    }
    flush(&mut pending, &mut shape, &sources)?;
    bar.finish_and_clear();
    Ok(embedder.finish(sources, None))
}
