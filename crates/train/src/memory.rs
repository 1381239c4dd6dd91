//! Whether a batch's activations fit in the memory the system has available, decided from the
//! network's spec before anything is allocated: an impossible batch size is then an error that
//! says what fits, not a process the kernel kills.

use resnet_kernels::conv::Precision;
use resnet_models::ResNetSpec;

/// What a batch is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// A training step (forward, backward).
    Train,
    /// An inference pass (evaluation).
    Infer,
}

/// A batch whose activations need more memory than is available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct MemoryShortfall {
    /// Training or inference.
    pub pass: Pass,
    /// Model name.
    pub model: String,
    /// Batch size asked for.
    pub batch: usize,
    /// Input `(h, w)`.
    pub input: (usize, usize),
    /// Bytes the batch needs.
    pub needed: u64,
    /// Bytes available.
    pub available: u64,
    /// The largest batch that fits.
    pub fits: u64,
    /// Images per sample (an evaluation's crops).
    pub views: usize,
    /// The flag that sets the batch size (`--batch-size`, `--eval-batch-size`, `--batch`).
    pub flag: String,
}

/// The share of the available memory a batch may plan on, in percent: the rest is kept for what
/// the estimate does not count (kernels' per-layer scratch, allocator slack, the program), which
/// measured up to 5.5% of a training step's peak (docs/perf-log.md, "Memory estimate").
const USABLE_PERCENT: u64 = 90;

/// Bytes per parameter that stay whatever the batch: the value and the gradient; in training
/// the momentum, the transposed weight the backward pass reads and one partial weight
/// gradient per compute thread; in inference the weight packed in the direct kernels' panels
/// (the kernels keep those per layer).
fn bytes_per_param(pass: Pass) -> u64 {
    let copies = match pass {
        Pass::Train => 4 + resnet_kernels::threads::num_threads() as u64,
        Pass::Infer => 3,
    };
    4 * copies
}

impl MemoryShortfall {
    fn describe(&self) -> String {
        let gb = |b: u64| b as f64 / 1e9;
        let verb = match self.pass {
            Pass::Train => "training",
            Pass::Infer => "evaluating",
        };
        let (h, w) = self.input;
        let views = if self.views > 1 { format!(" of {} views each", self.views) } else { String::new() };
        let advice = if self.fits >= smallest_batch(self.pass) {
            format!("use a smaller {} (at most {} fits)", self.flag, self.fits)
        } else {
            format!(
                "{} {} does not fit either: use smaller images or a smaller model",
                self.flag,
                smallest_batch(self.pass)
            )
        };
        format!(
            "{verb} {} at batch {}{views} on {h}x{w} images needs about {:.1} GB (activations, input batches and \
             parameters), and {:.1} GB are available, of which {USABLE_PERCENT}% may be planned on: {advice}",
            self.model,
            self.batch,
            gb(self.needed),
            gb(self.available)
        )
    }
}

/// The smallest batch a pass runs on (training needs batch statistics).
fn smallest_batch(pass: Pass) -> u64 {
    match pass {
        Pass::Train => 2,
        Pass::Infer => 1,
    }
}

/// A batch to check: the network, its input size, the batch size and the flag that set it.
#[derive(Clone, Copy, Debug)]
pub struct BatchPlan<'a> {
    /// The network.
    pub spec: &'a ResNetSpec,
    /// Input `(h, w)`.
    pub input: (usize, usize),
    /// Batch size.
    pub batch: usize,
    /// Training or inference.
    pub pass: Pass,
    /// The flag that sets the batch size, for the advice.
    pub flag: &'a str,
    /// Input batches held besides the one the pass reads (a loader's batches built ahead).
    pub prefetched: usize,
    /// Images per sample of the batch (an evaluation's crops; 1 otherwise).
    pub views: usize,
    /// How training keeps its convolution outputs (`KernelConfig::stored`).
    pub stored: Precision,
}

/// Refuses a batch whose activations (see [`ResNetSpec::batch_memory`]), input batches and
/// parameters need more than the usable share (90%) of the memory available now; where that
/// cannot be read, nothing is refused. What does not grow with the batch (the program, a dataset
/// held in memory) is not counted.
///
/// # Errors
/// [`MemoryShortfall`] saying what fits.
pub fn check_batch(plan: BatchPlan<'_>) -> Result<(), MemoryShortfall> {
    match crate::system::available_memory() {
        Some(available) => check_batch_within(plan, available),
        None => Ok(()),
    }
}

/// [`check_batch`] against `available` bytes.
///
/// # Errors
/// [`MemoryShortfall`] saying what fits.
fn check_batch_within(plan: BatchPlan<'_>, available: u64) -> Result<(), MemoryShortfall> {
    let (h, w) = plan.input;
    let memory = plan.spec.batch_memory_stored(h, w, plan.stored);
    let pass_per_image = match plan.pass {
        Pass::Train => memory.train_per_image(),
        Pass::Infer => memory.infer_per_image(),
    };
    let per_image = pass_per_image.saturating_add(memory.input.saturating_mul(plan.prefetched as u64));
    let per_sample = per_image.saturating_mul(plan.views.max(1) as u64);
    let params = plan.spec.summary(h, w).params;
    let fixed = params.saturating_mul(bytes_per_param(plan.pass));
    let needed = per_sample.saturating_mul(plan.batch as u64).saturating_add(fixed);
    let usable = available / 100 * USABLE_PERCENT;
    if needed <= usable {
        return Ok(());
    }
    Err(MemoryShortfall {
        pass: plan.pass,
        model: plan.spec.name.clone(),
        batch: plan.batch,
        input: plan.input,
        needed,
        available,
        fits: usable.saturating_sub(fixed) / per_sample.max(1),
        views: plan.views.max(1),
        flag: plan.flag.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use resnet_models::zoo::{spec, ModelOptions};

    fn plan<'a>(s: &'a ResNetSpec, batch: usize, pass: Pass) -> BatchPlan<'a> {
        BatchPlan {
            spec: s,
            input: (224, 224),
            batch,
            pass,
            flag: "--batch-size",
            prefetched: 4,
            views: 1,
            stored: Precision::F32,
        }
    }

    /// The advice names the largest batch that fits, and that batch passes the same check.
    #[test]
    fn a_refused_batch_is_told_what_fits() {
        let s = spec("resnet50", &ModelOptions::default()).unwrap();
        let available = 4_000_000_000;
        let e = check_batch_within(plan(&s, 256, Pass::Train), available).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("training resnet50 at batch 256 on 224x224 images needs about"), "{text}");
        assert!(text.contains("and 4.0 GB are available"), "{text}");
        assert!(text.contains(&format!("use a smaller --batch-size (at most {} fits)", e.fits)), "{text}");
        assert!(e.fits >= 2 && e.fits < 256, "{text}");
        assert!(check_batch_within(plan(&s, e.fits as usize, Pass::Train), available).is_ok());
        assert!(check_batch_within(plan(&s, e.fits as usize + 1, Pass::Train), available).is_err());
        // Inference keeps far less per image than training.
        let infer = check_batch_within(plan(&s, 100_000, Pass::Infer), available).unwrap_err();
        assert!(infer.to_string().starts_with("evaluating resnet50 at batch 100000"), "{infer}");
        assert!(infer.fits > 2 * e.fits, "{infer}");
        // Ten crops a sample cost ten images.
        let crops = BatchPlan { views: 10, ..plan(&s, 100_000, Pass::Infer) };
        let ten = check_batch_within(crops, available).unwrap_err();
        assert!(ten.to_string().starts_with("evaluating resnet50 at batch 100000 of 10 views each"), "{ten}");
        assert_eq!(ten.fits, infer.fits / 10, "{ten}");
    }

    /// A tenth of what is available stays unplanned: a batch needing 95% of it is refused.
    #[test]
    fn a_batch_is_planned_within_the_usable_share() {
        let s = spec("resnet50", &ModelOptions::default()).unwrap();
        let needed = check_batch_within(plan(&s, 16, Pass::Train), 1).unwrap_err().needed;
        let e = check_batch_within(plan(&s, 16, Pass::Train), needed * 100 / 95).unwrap_err();
        assert!(e.to_string().contains("of which 90% may be planned on"), "{e}");
        assert!(check_batch_within(plan(&s, 16, Pass::Train), needed * 100 / 89).is_ok());
    }

    #[test]
    fn a_model_too_large_for_any_batch_says_so() {
        let s = spec("resnet152", &ModelOptions::default()).unwrap();
        let text = check_batch_within(plan(&s, 2, Pass::Train), 1_000_000).unwrap_err().to_string();
        assert!(text.contains("--batch-size 2 does not fit either: use smaller images or a smaller model"), "{text}");
    }
}
