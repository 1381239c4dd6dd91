//! Loader throughput alone (decode, augment, normalise; no network), in images per second.
//!
//! ```sh
//! cargo run --release -p resnet-data --example loader_throughput -- \
//!     --cifar ../data/cifar10-jpg --imagenet-images 2560 --workers 2
//! ```
//!
//! 1. CIFAR-10 (the JPEG copy, decoded once into memory): the paper's training input, PadCropFlip
//!    with per-pixel mean subtraction, batch 128, one epoch.
//! 2. ImageNet-style JPEGs generated here (`--imagenet-size`, 224 by default; `--imagenet-size 500`
//!    is closer to real ImageNet files), read from disk and decoded on every load, as ImageNet
//!    is: the paper's scale augmentation with PCA colour (training), and resize 256 / centre 224
//!    (evaluation), batch 128.

use resnet_data::{
    open, pixel_mean, DatasetKind, EvalView, Loader, LoaderConfig, LoaderMode, Normalize, OpenOptions, SharedDataset,
    TrainAugment,
};
use resnet_kernels::rng::Rng;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    cifar: Option<PathBuf>,
    imagenet_images: usize,
    imagenet_size: u32,
    imagenet_dir: Option<PathBuf>,
    workers: usize,
    batches: usize,
}

fn parse() -> Args {
    let mut a = Args {
        cifar: Some(PathBuf::from("../data/cifar10-jpg")),
        imagenet_images: 2560,
        imagenet_size: 224,
        imagenet_dir: None,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        batches: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--cifar" => a.cifar = Some(PathBuf::from(value())).filter(|p| p.as_os_str() != "none"),
            "--imagenet-images" => a.imagenet_images = value().parse().expect("a count"),
            "--imagenet-size" => a.imagenet_size = value().parse().expect("a side in pixels"),
            "--imagenet-dir" => a.imagenet_dir = Some(PathBuf::from(value())),
            "--workers" => a.workers = value().parse().expect("a count"),
            "--batches" => a.batches = value().parse().expect("a count"),
            other => panic!("unknown flag {other}; see the example's documentation"),
        }
    }
    a
}

/// Times up to `batches` batches (0: the whole epoch) of a loader and prints images per second.
fn measure(name: &str, ds: SharedDataset, mode: LoaderMode, normalize: Normalize, workers: usize, batches: usize) {
    let cfg = LoaderConfig {
        batch_size: 128,
        shuffle: true,
        drop_last: true,
        seed: 1,
        workers,
        prefetch: 4,
        mode,
        normalize,
        shard: resnet_data::Shard::WHOLE,
    };
    let loader = Loader::new(ds, cfg).expect("loader");
    let n = if batches == 0 { loader.batches_per_epoch() } else { batches.min(loader.batches_per_epoch()) };
    let t = Instant::now();
    let mut images = 0;
    let mut checksum = 0.0f64;
    for b in loader.epoch(0, 0).take(n) {
        let b = b.expect("batch");
        images += b.labels.len();
        checksum += b.images[0] as f64;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{name:<44} {:>6} images in {:>6.2} s = {:>8.0} images/s  (output {:?}, {workers} workers, checksum {checksum:.3})",
        images,
        s,
        images as f64 / s,
        loader.output_shape()
    );
}

/// Writes `count` JPEGs of `size x size` (smooth random colour fields with texture, so that they
/// compress like photographs) into `root/{train,val}/<class>/`.
fn generate(root: &Path, count: usize, size: u32) {
    let per_class = count.div_ceil(10);
    for split in ["train", "val"] {
        for c in 0..10 {
            let dir = root.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            let n = if split == "train" { per_class } else { 1 };
            for k in 0..n {
                let mut rng = Rng::derive(7, &[c as u64, k as u64, (split == "val") as u64]);
                let f: Vec<f32> = (0..12).map(|_| rng.uniform(0.005, 0.05)).collect();
                let p: Vec<f32> = (0..12).map(|_| rng.uniform(0.0, std::f32::consts::TAU)).collect();
                let img = image::RgbImage::from_fn(size, size, |x, y| {
                    let (x, y) = (x as f32, y as f32);
                    let mut ch = |i: usize| {
                        let v = (f[i] * x + p[i]).sin() * (f[i + 3] * y + p[i + 3]).cos() * 90.0 + 128.0;
                        (v + (rng.next_u64() % 24) as f32 - 12.0).clamp(0.0, 255.0) as u8
                    };
                    image::Rgb([ch(0), ch(1), ch(2)])
                });
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).unwrap();
                std::fs::write(dir.join(format!("{k:05}.jpg")), bytes).unwrap();
            }
        }
    }
}

fn main() {
    let a = parse();
    println!(
        "loader throughput, batch 128, {} worker thread(s), {} core(s)",
        a.workers,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    if let Some(cifar) = a.cifar.as_deref().filter(|p| p.join("train").is_dir()) {
        let t = Instant::now();
        let s = open(DatasetKind::ImageFolder, Some(cifar), &OpenOptions::default()).expect("CIFAR-10 JPEG copy");
        println!(
            "cifar10-jpg: decoded {} training images into memory in {:.2} s",
            s.train.len(),
            t.elapsed().as_secs_f64()
        );
        let mean = pixel_mean(s.train.as_ref(), 32, 32).unwrap();
        measure(
            "cifar10-jpg train, PadCropFlip + PixelMean",
            s.train.clone(),
            LoaderMode::Train(TrainAugment::PadCropFlip { pad: 4 }),
            Normalize::PixelMean { mean, scale: 1.0 / 255.0 },
            a.workers,
            a.batches,
        );
    } else {
        println!("cifar10-jpg: skipped (no {:?}/train; pass --cifar PATH)", a.cifar);
    }

    // Generated into a temporary folder (removed at the end) unless --imagenet-dir names one.
    let generated = a.imagenet_dir.is_none().then(|| tempfile::tempdir().expect("temporary folder"));
    let root = a
        .imagenet_dir
        .clone()
        .unwrap_or_else(|| generated.as_ref().map(|g| g.path().to_path_buf()).unwrap_or_default());
    if !root.join("train").is_dir() {
        let t = Instant::now();
        generate(&root, a.imagenet_images, a.imagenet_size);
        println!(
            "generated {} {}x{} JPEGs in {} in {:.1} s",
            a.imagenet_images,
            a.imagenet_size,
            a.imagenet_size,
            root.display(),
            t.elapsed().as_secs_f64()
        );
    }
    // Streamed from disk, as ImageNet must be.
    let opts = OpenOptions { in_memory: Some(false), ..Default::default() };
    let s = open(DatasetKind::ImageFolder, Some(&root), &opts).expect("generated ImageNet-style folder");
    let norm = Normalize::imagenet();
    measure(
        "imagenet-style train, ScaleAugment 256-480/224+PCA",
        s.train.clone(),
        LoaderMode::Train(TrainAugment::ScaleAugment { min: 256, max: 480, crop: 224, pca: true }),
        norm.clone(),
        a.workers,
        a.batches,
    );
    measure(
        "imagenet-style eval, ResizeCenterCrop 256/224",
        s.train.clone(),
        LoaderMode::Eval(EvalView::ResizeCenterCrop { resize: 256, crop: 224 }),
        norm.clone(),
        a.workers,
        a.batches,
    );
    measure(
        "imagenet-style train, RandomResizedCrop 224",
        s.train.clone(),
        LoaderMode::Train(TrainAugment::RandomResizedCrop { size: 224, pca: false }),
        norm,
        a.workers,
        a.batches,
    );
}
