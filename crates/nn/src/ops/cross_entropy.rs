//! Softmax cross-entropy, averaged over the batch (the loss of every experiment in He et al.
//! 2015), with optional label smoothing.

use crate::Tensor;

/// Loss and accuracy counts of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropy {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Samples whose label is not the top-1 prediction.
    pub top1_errors: usize,
    /// Samples whose label is not among the top-5 predictions.
    pub top5_errors: usize,
}

/// Softmax of each row of `logits` (`[n, classes]`), computed stably in `f64`, written to `probs`.
pub fn softmax_rows(logits: &[f32], classes: usize, probs: &mut [f32]) {
    assert_eq!(logits.len(), probs.len());
    for (row, out) in logits.chunks_exact(classes).zip(probs.chunks_exact_mut(classes)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (f64::from(v - max).exp() / sum) as f32;
        }
    }
}

/// The rank of `label` in `row` (0 = top prediction): how many logits beat it. Ties are broken
/// like `argmax`, towards the lower index, and NaN logits beat everything.
pub fn label_rank(row: &[f32], label: usize) -> usize {
    let v = row[label];
    row.iter().enumerate().filter(|&(j, &x)| j != label && (x > v || (x == v && j < label) || x.is_nan())).count()
}

/// `loss = mean_n( -sum_k q_k log softmax(logits)_k )` with `q = (1 - s) onehot(label) + s / K`
/// for smoothing `s`. Writes `dlogits = (softmax - q) / n` when given.
///
/// # Shapes
/// `logits: [n, 1, 1, K]`, `labels: [n]`, `dlogits: [n * K]`.
///
/// # Panics
/// If a label is out of range.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[u32],
    smoothing: f32,
    dlogits: Option<&mut [f32]>,
) -> CrossEntropy {
    let (n, k) = (logits.n(), logits.c());
    assert_eq!(labels.len(), n, "one label per sample");
    assert_eq!(logits.len(), n * k);
    let mut out = CrossEntropy::default();
    let mut total = 0.0f64;
    let s = f64::from(smoothing);
    let mut grad = dlogits;
    for (i, row) in logits.data().chunks_exact(k).enumerate() {
        let label = labels[i] as usize;
        assert!(label < k, "label {label} out of range for {k} classes");
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        let log_z = sum.ln() + f64::from(max);
        let mut loss = 0.0;
        for (j, &v) in row.iter().enumerate() {
            let q = s / k as f64 + if j == label { 1.0 - s } else { 0.0 };
            loss -= q * (f64::from(v) - log_z);
        }
        total += loss;
        let rank = label_rank(row, label);
        out.top1_errors += usize::from(rank >= 1);
        out.top5_errors += usize::from(rank >= 5);
        if let Some(g) = grad.as_deref_mut() {
            for (j, &v) in row.iter().enumerate() {
                let q = s / k as f64 + if j == label { 1.0 - s } else { 0.0 };
                g[i * k + j] = ((f64::from(v) - log_z).exp() - q) as f32 / n as f32;
            }
        }
    }
    out.loss = total / n as f64;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, random_tensor, Tolerance};

    #[test]
    fn gradient_matches_finite_differences() {
        let logits = random_tensor([3, 1, 1, 4], 1);
        let labels = [0, 3, 2];
        for smoothing in [0.0, 0.1] {
            let mut g = vec![0.0; 12];
            softmax_cross_entropy(&logits, &labels, smoothing, Some(&mut g));
            check_gradient("ce dlogits", logits.data(), &g, Tolerance::default(), |v| {
                softmax_cross_entropy(&Tensor::from_vec(logits.shape(), v.to_vec()), &labels, smoothing, None).loss
            });
        }
    }

    #[test]
    fn loss_and_errors_on_known_values() {
        let logits = Tensor::from_vec([2, 1, 1, 2], vec![0.0, 0.0, 10.0, 0.0]);
        let ce = softmax_cross_entropy(&logits, &[1, 0], 0.0, None);
        let want = (2f64.ln() + (1.0 + (-10f64).exp()).ln()) / 2.0;
        assert!((ce.loss - want).abs() < 1e-9);
        // A tie goes to the lower index (as argmax), so label 1 is an error; the confident row is not.
        assert_eq!(ce.top1_errors, 1);
        assert_eq!(ce.top5_errors, 0);
        let mut p = vec![0.0; 4];
        softmax_rows(logits.data(), 2, &mut p);
        assert!((p[0] - 0.5).abs() < 1e-7 && (p[2] + p[3] - 1.0).abs() < 1e-6);
    }
}
