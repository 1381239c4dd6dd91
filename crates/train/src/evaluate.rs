//! Evaluation: top-1 and top-5 error, loss, per-class accuracy and the confusion matrix, over
//! single views or several views per image (10-crop, multi-scale; He et al. 2015, Section 3.4:
//! "we adopt the standard 10-crop testing"), whose softmax outputs are averaged.

use crate::inference::Classifier;
use resnet_data::{DataError, Loader};
use resnet_nn::ops::{label_rank, softmax_rows};
use resnet_nn::Tensor;
use serde::Serialize;

/// Results of an evaluation. Errors are percentages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    /// Top-1 error.
    pub top1_error: f64,
    /// Top-5 error.
    pub top5_error: f64,
    /// Mean cross-entropy of the (view-averaged) prediction.
    pub loss: f64,
    /// Images evaluated.
    pub count: u64,
    /// Views averaged per image.
    pub views: usize,
    /// Accuracy per class, percent (`None` for a class with no image).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Images whose network output had an infinite or NaN logit (counted as errors, left out of
    /// the loss and the confusion matrix): a network that overflows, whose results mean nothing.
    pub non_finite: u64,
}

/// Each class's accuracy in percent from `confusion[true][predicted]` (`None` for a class
/// never seen).
pub(crate) fn per_class_accuracy(confusion: &[Vec<u64>]) -> Vec<Option<f64>> {
    confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let seen: u64 = row.iter().sum();
            (seen > 0).then(|| 100.0 * row[c] as f64 / seen as f64)
        })
        .collect()
}

/// Running sums of an evaluation.
#[derive(Clone, Debug)]
struct EvalAccumulator {
    classes: usize,
    loss: f64,
    top1: u64,
    top5: u64,
    count: u64,
    views: usize,
    confusion: Vec<Vec<u64>>,
    non_finite: u64,
    probs: Vec<f32>,
}

impl EvalAccumulator {
    /// Empty sums for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            loss: 0.0,
            top1: 0,
            top5: 0,
            count: 0,
            views: 1,
            confusion: vec![vec![0; classes]; classes],
            non_finite: 0,
            probs: Vec::new(),
        }
    }

    /// Adds a batch of logits `[n * views, classes]` for `labels` (`n`).
    pub fn add(&mut self, logits: &[f32], views: usize, labels: &[u32]) {
        let k = self.classes;
        assert_eq!(logits.len(), labels.len() * views * k, "logits do not match labels and views");
        self.views = views;
        self.probs.resize(logits.len(), 0.0);
        softmax_rows(logits, k, &mut self.probs);
        let mut mean = vec![0.0f32; k];
        for (i, &label) in labels.iter().enumerate() {
            if logits[i * views * k..(i + 1) * views * k].iter().any(|v| !v.is_finite()) {
                self.non_finite += 1;
                self.top1 += 1;
                self.top5 += 1;
                self.count += 1;
                continue;
            }
            mean.fill(0.0);
            for v in 0..views {
                let row = &self.probs[(i * views + v) * k..(i * views + v + 1) * k];
                mean.iter_mut().zip(row).for_each(|(m, p)| *m += p / views as f32);
            }
            let label = label as usize;
            let rank = label_rank(&mean, label);
            self.top1 += u64::from(rank >= 1);
            self.top5 += u64::from(rank >= 5);
            self.loss -= f64::from(mean[label].max(1e-30)).ln();
            let predicted = (0..k).fold(0, |best, j| if mean[j] > mean[best] { j } else { best });
            self.confusion[label][predicted] += 1;
            self.count += 1;
        }
    }

    /// The results so far.
    pub fn result(&self) -> EvalResult {
        let n = self.count.max(1) as f64;
        let per_class_accuracy = per_class_accuracy(&self.confusion);
        EvalResult {
            top1_error: 100.0 * self.top1 as f64 / n,
            top5_error: 100.0 * self.top5 as f64 / n,
            loss: self.loss / n,
            count: self.count,
            views: self.views,
            per_class_accuracy,
            confusion: self.confusion.clone(),
            non_finite: self.non_finite,
        }
    }
}

/// Evaluates `net` (a float network in eval mode: running batch-norm statistics; or an int8 one) on every batch of `loader`,
/// calling `progress` after each batch.
///
/// # Errors
/// The first data error (a sample that cannot be loaded).
pub fn evaluate(
    net: &mut impl Classifier,
    loader: &Loader,
    progress: impl FnMut(usize),
) -> Result<EvalResult, DataError> {
    let classes = net.spec().num_classes;
    evaluate_with(loader, classes, |x| net.infer(x).data().to_vec(), progress)
}

/// [`evaluate`] with any function from an NHWC batch to its logits `[rows, classes]` in place of
/// a network.
///
/// # Errors
/// The first data error.
fn evaluate_with(
    loader: &Loader,
    classes: usize,
    mut infer: impl FnMut(&Tensor) -> Vec<f32>,
    mut progress: impl FnMut(usize),
) -> Result<EvalResult, DataError> {
    let mut acc = EvalAccumulator::new(classes);
    let mut logits = Vec::new();
    for (i, batch) in loader.epoch(0, 0).enumerate() {
        let batch = batch?;
        let [rows, h, w, c] = batch.shape;
        // Views go through the network one batch of images at a time, so 10-crop activations
        // take the memory of single-view ones rather than ten times it.
        let chunk = batch.labels.len().max(1);
        let per_row = h * w * c;
        logits.clear();
        for start in (0..rows).step_by(chunk) {
            let end = (start + chunk).min(rows);
            let x = Tensor::from_vec([end - start, h, w, c], batch.images[start * per_row..end * per_row].to_vec());
            logits.extend(infer(&x));
        }
        acc.add(&logits, batch.views, &batch.labels);
        progress(i + 1);
    }
    Ok(acc.result())
}

#[cfg(test)]
mod tests {
    use super::*;
    use resnet_data::{open, DatasetKind, EvalView, LoaderConfig, LoaderMode, Normalize, OpenOptions, SyntheticConfig};

    #[test]
    fn ten_crop_runs_the_network_on_at_most_a_batch_of_images_at_a_time() {
        let synthetic = SyntheticConfig { train: 4, test: 21, size: 40, seed: 1 };
        let splits = open(DatasetKind::Synthetic, None, &OpenOptions { synthetic, ..OpenOptions::default() }).unwrap();
        let loader = Loader::new(
            splits.test.clone(),
            LoaderConfig {
                batch_size: 8,
                shuffle: false,
                drop_last: false,
                seed: 0,
                workers: 1,
                prefetch: 1,
                mode: LoaderMode::Eval(EvalView::TenCrop { resize: 40, crop: 32 }),
                normalize: Normalize::None,
                shard: resnet_data::Shard::WHOLE,
            },
        )
        .unwrap();
        let mut rows = Vec::new();
        let r = evaluate_with(
            &loader,
            10,
            |x| {
                rows.push(x.shape()[0]);
                vec![0.0; x.shape()[0] * 10]
            },
            |_| {},
        )
        .unwrap();
        assert_eq!((r.count, r.views), (21, 10));
        assert_eq!(rows.iter().sum::<usize>(), 210, "every view is evaluated");
        // Memory follows the network's batch: 8 images' worth, whatever the number of views.
        assert!(rows.iter().all(|&n| n <= 8), "the network was given batches of {rows:?} views");
    }

    #[test]
    fn non_finite_outputs_are_counted() {
        let mut acc = EvalAccumulator::new(2);
        acc.add(&[f32::INFINITY, 0.0, 1.0, 0.0, f32::NAN, 0.0], 1, &[0, 0, 1]);
        let r = acc.result();
        assert_eq!((r.count, r.non_finite, r.top1_error), (3, 2, 100.0 * 2.0 / 3.0));
        assert!(r.loss.is_finite());
    }

    #[test]
    fn view_averaging_and_counts() {
        let mut acc = EvalAccumulator::new(3);
        // Two images, two views each: image 0 right on average, image 1 wrong.
        let logits = [5.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 9.0];
        acc.add(&logits, 2, &[0, 1]);
        let r = acc.result();
        assert_eq!(r.count, 2);
        assert_eq!(r.top1_error, 50.0);
        assert_eq!(r.top5_error, 0.0);
        assert_eq!(r.confusion[0][0], 1);
        assert_eq!(r.confusion[1][2], 1);
        assert_eq!(r.per_class_accuracy, vec![Some(100.0), Some(0.0), None]);
        assert!(r.loss > 0.0);
    }
}
