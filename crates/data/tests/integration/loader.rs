//! Augmentation geometry, determinism, validation split and the loader's threading.

use crate::common::*;
use resnet_data::{
    channel_mean_std, open, pixel_mean, validation_split, Batch, DataError, Dataset, DatasetKind, EvalView, Image,
    Loader, LoaderConfig, LoaderMode, Normalize, OpenOptions, SharedDataset, SyntheticConfig, TrainAugment,
};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn cfg(mode: LoaderMode, batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        shuffle: true,
        drop_last: false,
        seed: 42,
        workers,
        prefetch: 2,
        mode,
        normalize: Normalize::None,
        shard: resnet_data::Shard::WHOLE,
    }
}

fn all(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch, 0).map(|b| b.unwrap()).collect()
}

/// Pixel `(y, x)` channel `k` of view `v` of a batch, back on the 0..255 scale.
fn px(b: &Batch, v: usize, y: usize, x: usize, k: usize) -> f32 {
    let [_, h, w, c] = b.shape;
    (b.images[((v * h + y) * w + x) * c + k] * 255.0).round()
}

#[test]
fn pad_crop_flip_stays_in_bounds_and_covers_every_shift_and_both_flips() {
    let ds = Coords::shared(300, 12, 12);
    let loader = Loader::new(ds, cfg(LoaderMode::Train(TrainAugment::PadCropFlip { pad: 4 }), 64, 2)).unwrap();
    assert_eq!(loader.output_shape(), (12, 12, 3));
    let mut shifts = BTreeSet::new();
    let mut flips = [0; 2];
    for b in all(&loader, 0) {
        for (v, &idx) in b.indices.iter().enumerate() {
            // The image is a shifted (and maybe mirrored) window of the source, zeros outside.
            let (mut dy, mut dx, mut flip) = (None, None, None);
            for y in 0..12 {
                for x in 0..12 {
                    let (sy, sx, id) = (px(&b, v, y, x, 0), px(&b, v, y, x, 1), px(&b, v, y, x, 2));
                    if sy == 0.0 {
                        assert_eq!((sx, id), (0.0, 0.0), "padding is zero in every channel");
                        continue;
                    }
                    assert_eq!(id, (idx % 256) as f32);
                    let d = sy as i64 - 1 - y as i64;
                    assert_eq!(*dy.get_or_insert(d), d, "one vertical shift per image");
                    let f = if x + 1 < 12 && px(&b, v, y, x + 1, 1) != 0.0 {
                        Some(px(&b, v, y, x + 1, 1) < sx)
                    } else {
                        None
                    };
                    if let Some(f) = f {
                        assert_eq!(*flip.get_or_insert(f), f, "one flip per image");
                    }
                    let xs = if flip == Some(true) { 11 - x as i64 } else { x as i64 };
                    let d = sx as i64 - 1 - xs;
                    if flip.is_some() {
                        assert_eq!(*dx.get_or_insert(d), d);
                    }
                }
            }
            let (dy, dx, flip) = (dy.unwrap(), dx.unwrap(), flip.unwrap());
            assert!((-4..=4).contains(&dy) && (-4..=4).contains(&dx), "shift ({dy}, {dx}) beyond the padding");
            shifts.insert((dy, dx));
            flips[flip as usize] += 1;
        }
    }
    assert_eq!(shifts.len(), 81, "all 9x9 crops occur in 300 samples");
    assert!(flips[0] > 100 && flips[1] > 100, "{flips:?}");
}

#[test]
fn batches_depend_only_on_seed_epoch_and_batch_not_on_workers() {
    let ds = open(
        DatasetKind::Synthetic,
        None,
        &OpenOptions { synthetic: SyntheticConfig { train: 100, test: 10, size: 16, seed: 1 }, ..Default::default() },
    )
    .unwrap()
    .train;
    let modes = [
        LoaderMode::Train(TrainAugment::PadCropFlip { pad: 4 }),
        LoaderMode::Train(TrainAugment::ScaleAugment { min: 16, max: 24, crop: 12, pca: true }),
        LoaderMode::Train(TrainAugment::RandomResizedCrop { size: 10, pca: false }),
        LoaderMode::Eval(EvalView::TenCrop { resize: 16, crop: 12 }),
    ];
    for mode in modes {
        let reference = all(&Loader::new(ds.clone(), cfg(mode.clone(), 16, 0)).unwrap(), 3);
        assert_eq!(reference.len(), 7);
        assert_eq!(reference.last().unwrap().labels.len(), 4, "the last batch is partial");
        for (workers, prefetch) in [(1, 1), (3, 2), (5, 8)] {
            let c = LoaderConfig { prefetch, ..cfg(mode.clone(), 16, workers) };
            assert_eq!(all(&Loader::new(ds.clone(), c).unwrap(), 3), reference, "{mode:?} with {workers} workers");
        }
        let l = Loader::new(ds.clone(), cfg(mode.clone(), 16, 2)).unwrap();
        let resumed: Vec<Batch> = l.epoch(3, 4).map(|b| b.unwrap()).collect();
        assert_eq!(resumed, reference[4..], "resuming at batch 4 gives batches 4..");
        if matches!(mode, LoaderMode::Train(_)) {
            assert_ne!(all(&l, 4), reference, "another epoch, another order and augmentation");
            let other = Loader::new(ds.clone(), LoaderConfig { seed: 43, ..cfg(mode.clone(), 16, 2) }).unwrap();
            assert_ne!(all(&other, 3), reference, "another seed");
        }
        let seen: HashSet<usize> = reference.iter().flat_map(|b| b.indices.clone()).collect();
        assert_eq!(seen.len(), 100, "an epoch visits every sample once");
        for b in &reference {
            assert!(b.images.iter().all(|v| v.is_finite()));
            assert_eq!(b.labels, b.indices.iter().map(|&i| ds.label(i)).collect::<Vec<_>>());
        }
    }
}

#[test]
fn ten_crop_geometry_and_multi_scale() {
    // Resizing 40x50 to shorter side 40 is the identity, so the crops are exact windows.
    let ds = Coords::shared(3, 40, 50);
    let view = EvalView::TenCrop { resize: 40, crop: 20 };
    let c = LoaderConfig { shuffle: false, ..cfg(LoaderMode::Eval(view), 2, 1) };
    let loader = Loader::new(ds.clone(), c).unwrap();
    assert_eq!((loader.views(), loader.output_shape()), (10, (20, 20, 3)));
    let b = loader.epoch(0, 0).next().unwrap().unwrap();
    assert_eq!(b.shape, [20, 20, 20, 3]);
    // (top, left) of each crop in the source, and whether it is mirrored.
    let expect = [(0, 0), (0, 30), (20, 0), (20, 30), (10, 15)];
    for v in 0..10 {
        let (y0, x0) = expect[v % 5];
        let flip = v >= 5;
        // The crops of the mirrored image are the mirrors of the opposite crops.
        let x0 = if flip { 50 - 20 - x0 } else { x0 };
        for (y, x) in [(0, 0), (19, 19), (7, 3)] {
            let sx = if flip { x0 + 19 - x } else { x0 + x };
            assert_eq!(px(&b, v, y, x, 0), (y0 + y + 1) as f32, "view {v} row");
            assert_eq!(px(&b, v, y, x, 1), (sx + 1) as f32, "view {v} column");
        }
        // Sample 1's views follow sample 0's.
        assert_eq!(px(&b, 10 + v, 0, 0, 2), 1.0);
    }

    let multi = EvalView::MultiScale { scales: vec![40, 80], crop: 20 };
    let c = LoaderConfig { shuffle: false, ..cfg(LoaderMode::Eval(multi), 3, 2) };
    let b = Loader::new(ds.clone(), c).unwrap().epoch(0, 0).next().unwrap().unwrap();
    assert_eq!((b.views, b.shape), (20, [60, 20, 20, 3]));
    assert_eq!(px(&b, 0, 0, 0, 0), 1.0);
    let at_80 = px(&b, 14, 10, 10, 0); // centre crop at scale 80: source row (30 + 10.5) / 2
    assert!((at_80 - 21.0).abs() <= 1.0, "{at_80}");

    let centre = EvalView::ResizeCenterCrop { resize: 40, crop: 20 };
    let c = LoaderConfig { shuffle: false, ..cfg(LoaderMode::Eval(centre), 3, 2) };
    let b = Loader::new(ds, c).unwrap().epoch(0, 0).next().unwrap().unwrap();
    assert_eq!((px(&b, 0, 0, 0, 0), px(&b, 0, 0, 0, 1)), (11.0, 16.0));
}

#[test]
fn scale_augment_and_random_resized_crop_stay_inside_the_image() {
    let ds = Coords::shared(200, 48, 64);
    let scale = TrainAugment::ScaleAugment { min: 48, max: 96, crop: 32, pca: false };
    for mode in [scale, TrainAugment::RandomResizedCrop { size: 24, pca: false }] {
        let loader = Loader::new(ds.clone(), cfg(LoaderMode::Train(mode.clone()), 50, 2)).unwrap();
        let mut flips = [0; 2];
        for b in all(&loader, 0) {
            for v in 0..b.indices.len() {
                let (h, w) = (b.shape[1], b.shape[2]);
                let (a, z) = (px(&b, v, 0, 0, 1), px(&b, v, 0, w - 1, 1));
                flips[(a > z) as usize] += 1;
                for y in 0..h {
                    for x in 0..w {
                        let (sy, sx) = (px(&b, v, y, x, 0), px(&b, v, y, x, 1));
                        assert!((1.0..=48.0).contains(&sy) && (1.0..=64.0).contains(&sx), "{mode:?}: ({sy}, {sx})");
                    }
                }
                if let TrainAugment::ScaleAugment { .. } = mode {
                    // The scale is at least 1 (shorter side >= 48): a 32 crop spans <= 32 source rows.
                    assert!(px(&b, v, h - 1, 0, 0) - px(&b, v, 0, 0, 0) <= 32.0);
                }
            }
        }
        assert!(flips[0] > 50 && flips[1] > 50, "{mode:?}: {flips:?}");
    }
}

#[test]
fn pca_colour_changes_colours_not_geometry() {
    let ds = Coords::shared(8, 32, 32);
    let run = |pca| {
        let mode = LoaderMode::Train(TrainAugment::ScaleAugment { min: 32, max: 32, crop: 32, pca });
        all(&Loader::new(ds.clone(), cfg(mode, 8, 1)).unwrap(), 0).remove(0)
    };
    let (plain, pca) = (run(false), run(true));
    assert_eq!(plain.indices, pca.indices);
    let diff: Vec<f32> = plain.images.iter().zip(&pca.images).map(|(a, b)| b - a).collect();
    // The same RGB shift on every pixel of a sample, different between samples.
    let shift = |s: usize| [diff[s * 3072], diff[s * 3072 + 1], diff[s * 3072 + 2]];
    for s in 0..8 {
        for p in 0..1024 {
            for k in 0..3 {
                assert!((diff[s * 3072 + p * 3 + k] - shift(s)[k]).abs() < 1e-4);
            }
        }
    }
    assert_ne!(shift(0), shift(1));
}

#[test]
fn normalisation_modes() {
    let ds = Coords::shared(20, 6, 5);
    let mean = pixel_mean(ds.as_ref(), 6, 5).unwrap();
    assert_eq!(mean.len(), 90);
    assert_eq!((mean[0], mean[1], mean[2]), (1.0, 1.0, 9.5));
    assert_eq!(mean, pixel_mean(ds.as_ref(), 6, 5).unwrap(), "deterministic");
    let full = |normalize| {
        let c = LoaderConfig { shuffle: false, normalize, ..cfg(LoaderMode::Eval(EvalView::Full), 20, 2) };
        all(&Loader::new(ds.clone(), c).unwrap(), 0).remove(0)
    };
    let b = full(Normalize::PixelMean { mean: mean.clone(), scale: 0.5 });
    for i in 0..90 {
        let avg: f32 = (0..20).map(|s| b.images[s * 90 + i]).sum::<f32>() / 20.0;
        assert!(avg.abs() < 1e-5, "the per-pixel mean is subtracted");
    }
    let b = full(Normalize::ChannelMeanStd { mean: vec![0.5, 0.0, 0.1], std: vec![0.5, 2.0, 1.0] });
    // Sample 3, pixel (1, 2): [2, 3, 3].
    let p = &b.images[3 * 90 + 7 * 3..3 * 90 + 8 * 3];
    let want = [(2.0 / 255.0 - 0.5) / 0.5, (3.0 / 255.0) / 2.0, 3.0 / 255.0 - 0.1];
    for k in 0..3 {
        assert!((p[k] - want[k]).abs() < 1e-6, "{p:?} vs {want:?}");
    }
    let (m, s) = channel_mean_std(ds.as_ref()).unwrap();
    assert!((m[0] - 3.5).abs() < 1e-5 && (m[1] - 3.0).abs() < 1e-5 && (m[2] - 9.5).abs() < 1e-5, "{m:?}");
    assert!((s[1] - 2f32.sqrt()).abs() < 1e-5, "{s:?}");

    // Differently sized images are resized and centre-cropped for the mean image.
    let big = Coords::shared(2, 12, 10);
    let m = pixel_mean(big.as_ref(), 6, 5).unwrap();
    assert_eq!(m.len(), 90);
    assert!(m.iter().all(|v| v.is_finite()));
}

#[test]
fn config_errors_are_clear() {
    let ds = Coords::shared(10, 32, 32);
    let e = |mode: LoaderMode, normalize: Normalize| -> String {
        let c = LoaderConfig { normalize, ..cfg(mode, 4, 1) };
        Loader::new(ds.clone(), c).err().expect("should be rejected").to_string()
    };
    let none = Normalize::None;
    let m = e(LoaderMode::Eval(EvalView::ResizeCenterCrop { resize: 32, crop: 40 }), none.clone());
    assert!(m.contains("crop 40 is larger than the resized shorter side 32"), "{m}");
    let m =
        e(LoaderMode::Train(TrainAugment::ScaleAugment { min: 300, max: 256, crop: 224, pca: false }), none.clone());
    assert!(m.contains("min 300 is above max 256"), "{m}");
    let m = e(LoaderMode::Eval(EvalView::MultiScale { scales: vec![], crop: 8 }), none.clone());
    assert!(m.contains("at least one scale"), "{m}");
    let m = e(LoaderMode::Eval(EvalView::Full), Normalize::PixelMean { mean: vec![0.0; 10], scale: 1.0 });
    assert!(m.contains("10 values") && m.contains("32x32x3"), "{m}");
    let m =
        e(LoaderMode::Eval(EvalView::Full), Normalize::ChannelMeanStd { mean: vec![0.0; 3], std: vec![1.0, 0.0, 1.0] });
    assert!(m.contains("positive"), "{m}");
    let c = LoaderConfig { drop_last: true, ..cfg(LoaderMode::Eval(EvalView::Full), 11, 1) };
    assert!(Loader::new(ds.clone(), c).err().unwrap().to_string().contains("no full batch"));
    let c = LoaderConfig { batch_size: 0, ..cfg(LoaderMode::Eval(EvalView::Full), 1, 1) };
    assert!(Loader::new(ds.clone(), c).is_err());
    // 10 samples in batches of 4 end with a batch of 2: three ranks cannot each take a part.
    let shard = |index, count| LoaderConfig {
        shard: resnet_data::Shard { index, count },
        ..cfg(LoaderMode::Eval(EvalView::Full), 4, 1)
    };
    let m = Loader::new(ds.clone(), shard(0, 3)).err().expect("an empty part").to_string();
    assert!(m.contains("batch of 2") && m.contains("3 parts"), "{m}");
    assert!(Loader::new(ds.clone(), shard(2, 2)).is_err(), "part 2 of 2");
    assert!(Loader::new(ds.clone(), shard(1, 2)).is_ok());

    // Images of different sizes need a resizing mode.
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path(), "train", &["a"], 1, 8);
    write_folder(tmp.path(), "train", &["b"], 1, 9);
    write_folder(tmp.path(), "val", &["a"], 1, 8);
    let s = open(DatasetKind::ImageFolder, Some(tmp.path()), &OpenOptions::default()).unwrap();
    let m = Loader::new(s.train.clone(), cfg(LoaderMode::Train(TrainAugment::PadCropFlip { pad: 4 }), 2, 1))
        .err()
        .unwrap()
        .to_string();
    assert!(
        m.contains("augmentation pad-crop-flip") && m.contains("differ in size") && m.contains("random-resized-crop"),
        "{m}"
    );
    let ok = Loader::new(s.train, cfg(LoaderMode::Eval(EvalView::ResizeCenterCrop { resize: 8, crop: 8 }), 2, 1));
    assert_eq!(ok.unwrap().epoch(0, 0).next().unwrap().unwrap().shape, [2, 8, 8, 3]);

    let mnist = tempfile::tempdir().unwrap();
    write_mnist(mnist.path(), 4, 2, false);
    let m = open(DatasetKind::Mnist, Some(mnist.path()), &OpenOptions::default()).unwrap().train;
    let err = Loader::new(m, cfg(LoaderMode::Train(TrainAugment::RandomResizedCrop { size: 4, pca: true }), 2, 1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("RGB"), "{err}");
}

#[test]
fn validation_split_is_seeded_disjoint_and_stable() {
    let ds = Coords::shared(1000, 2, 2);
    let (rest, val) = validation_split(&ds, 100, 7).unwrap();
    assert_eq!((rest.len(), val.len()), (900, 100));
    let key = |d: &SharedDataset| -> Vec<String> { (0..d.len()).map(|i| d.describe(i)).collect() };
    let (r, v) = (key(&rest), key(&val));
    let all: HashSet<&String> = r.iter().chain(&v).collect();
    assert_eq!(all.len(), 1000, "disjoint and complete");
    let (rest2, val2) = validation_split(&ds, 100, 7).unwrap();
    assert_eq!((key(&rest2), key(&val2)), (r.clone(), v.clone()), "same seed, same split");
    assert_ne!(key(&validation_split(&ds, 100, 8).unwrap().1), v, "another seed, another split");
    let num = |s: &String| s.trim_start_matches("coords ").parse::<usize>().unwrap();
    assert!(v.windows(2).all(|w| num(&w[0]) < num(&w[1])), "original order kept");
    assert_eq!(val.label(0), (num(&v[0]) % 10) as u32);
    // Class balance is roughly kept by a uniform draw.
    let per: Vec<usize> = (0..10).map(|c| (0..100).filter(|&i| val.label(i) == c).count()).collect();
    assert!(per.iter().all(|&n| n > 0), "{per:?}");
    assert!(validation_split(&ds, 1000, 0).is_err());
    assert!(validation_split(&ds, 0, 0).is_err());
}

/// A dataset that is slow to load, or panics on one index, and counts the loads that start
/// after `dropping` is set.
struct Slow {
    inner: SharedDataset,
    delay: Duration,
    panic_at: Option<usize>,
    dropping: AtomicBool,
    late_loads: AtomicUsize,
}

impl Slow {
    fn new(inner: SharedDataset, delay: Duration, panic_at: Option<usize>) -> Self {
        Self { inner, delay, panic_at, dropping: AtomicBool::new(false), late_loads: AtomicUsize::new(0) }
    }
}

impl Dataset for Slow {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn channels(&self) -> usize {
        3
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        self.inner.image_size()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(index)
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        assert!(Some(index) != self.panic_at, "deliberate panic at {index}");
        if self.dropping.load(Ordering::SeqCst) {
            self.late_loads.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(self.delay);
        self.inner.load(index)
    }
    fn describe(&self, index: usize) -> String {
        self.inner.describe(index)
    }
}

#[test]
fn dropping_an_epoch_stops_the_workers_promptly() {
    // Work, not time: once the epoch is being dropped, each worker may start at most the one
    // sample it was about to load (it checked the stop flag just before), never the rest of its
    // chunk (a whole batch of 64 here) or the batches of the prefetch window. With two workers and
    // four batches of prefetch, the worker that built batch 0 has just started batch 2 when the
    // drop comes.
    let workers = 2;
    let slow = Arc::new(Slow::new(Coords::shared(2000, 8, 8), Duration::from_millis(2), None));
    let ds: SharedDataset = slow.clone();
    let c = LoaderConfig { prefetch: 4, ..cfg(LoaderMode::Eval(EvalView::Full), 64, workers) };
    let loader = Loader::new(ds, c).unwrap();
    let mut it = loader.epoch(0, 0);
    assert_eq!(it.next().unwrap().unwrap().labels.len(), 64);
    slow.dropping.store(true, Ordering::SeqCst);
    drop(it);
    let late = slow.late_loads.load(Ordering::SeqCst);
    assert!(late <= workers, "{late} samples were started after the drop began ({workers} workers)");
}

#[test]
fn a_panicking_dataset_fails_its_batch_instead_of_hanging() {
    let ds: SharedDataset = Arc::new(Slow::new(Coords::shared(40, 4, 4), Duration::ZERO, Some(13)));
    let c = LoaderConfig { shuffle: false, ..cfg(LoaderMode::Eval(EvalView::Full), 10, 2) };
    let results: Vec<_> = Loader::new(ds, c).unwrap().epoch(0, 0).collect();
    assert_eq!(results.len(), 4);
    let e = results[1].as_ref().expect_err("batch 1 holds sample 13").to_string();
    assert!(e.contains("batch 1") && e.contains("deliberate panic at 13"), "{e}");
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
}
