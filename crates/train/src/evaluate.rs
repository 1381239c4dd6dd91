//! Evaluation: top-1 and top-5 error, loss, per-class accuracy and the confusion matrix, over
//! single views or several views per image (10-crop, multi-scale; He et al. 2015, Section 3.4:
//! "we adopt the standard 10-crop testing"), whose softmax outputs are averaged.

use resnet_data::{DataError, Loader};
use resnet_models::ResNet;
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
}

/// Running sums of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalAccumulator {
    classes: usize,
    loss: f64,
    top1: u64,
    top5: u64,
    count: u64,
    views: usize,
    confusion: Vec<Vec<u64>>,
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
        let per_class_accuracy = self
            .confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: u64 = row.iter().sum();
                (total > 0).then(|| 100.0 * row[c] as f64 / total as f64)
            })
            .collect();
        EvalResult {
            top1_error: 100.0 * self.top1 as f64 / n,
            top5_error: 100.0 * self.top5 as f64 / n,
            loss: self.loss / n,
            count: self.count,
            views: self.views,
            per_class_accuracy,
            confusion: self.confusion.clone(),
        }
    }
}

/// Evaluates `net` in eval mode (running batch-norm statistics) on every batch of `loader`,
/// calling `progress` after each batch.
///
/// # Errors
/// The first data error (a sample that cannot be loaded).
pub fn evaluate(net: &mut ResNet, loader: &Loader, mut progress: impl FnMut(usize)) -> Result<EvalResult, DataError> {
    let mut acc = EvalAccumulator::new(net.spec().num_classes);
    for (i, batch) in loader.epoch(0, 0).enumerate() {
        let batch = batch?;
        let x = Tensor::from_vec(batch.shape, batch.images);
        let logits = net.infer(&x);
        acc.add(logits.data(), batch.views, &batch.labels);
        progress(i + 1);
    }
    Ok(acc.result())
}

#[cfg(test)]
mod tests {
    use super::*;

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
