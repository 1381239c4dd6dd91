//! The resolved configuration of a training run (written to `config.json`), and the paper's
//! recipes.

use crate::schedule::{Decay, Milestone, Warmup};
use resnet_data::{EvalView, TrainAugment};
use resnet_kernels::{CpuFeatures, KernelConfig};
use resnet_models::Shortcut;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How long a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunLength {
    /// Whole epochs.
    Epochs(u64),
    /// Optimisation steps (the last epoch may be partial).
    Iterations(u64),
}

impl std::fmt::Display for RunLength {
    /// `1 epoch`, `30 epochs`, `64000 iterations`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, unit) = match *self {
            RunLength::Epochs(n) => (n, "epoch"),
            RunLength::Iterations(n) => (n, "iteration"),
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// Input normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Normalization {
    /// The paper's per-pixel mean subtraction (mean image of the training set), then a constant
    /// scale for numerics.
    PixelMean {
        /// Multiplier after the subtraction.
        scale: f32,
    },
    /// Per-channel mean and standard deviation of the training set.
    DatasetMeanStd,
    /// Given per-channel mean and std on the 0..1 scale (torchvision's ImageNet constants).
    MeanStd {
        /// Means.
        mean: Vec<f32>,
        /// Standard deviations.
        std: Vec<f32>,
    },
    /// Pixels scaled to 0..1.
    None,
    /// The normalisation stored with the weights of [`FineTune::init`]: a checkpoint's own
    /// (its mean image, or its channel mean and std), torchvision's ImageNet mean and std for a
    /// torchvision state dict.
    Init,
}

/// Fine-tuning: the weights a run starts from and which parts of the network train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FineTune {
    /// Start from these weights (one of our checkpoints, or a torchvision `.safetensors` or
    /// `.pth` state dict) instead of a random initialisation: every tensor whose key and shape
    /// match is loaded, the classifier is made anew for another class count and the first
    /// convolution adapted to another input channel count.
    pub init: Option<PathBuf>,
    /// Parts held fixed (no gradient, no update, batch norms on their running statistics):
    /// `stem`, `layer1`, ..., `fc`, or `backbone` for every part but `fc`.
    pub freeze: Vec<String>,
    /// Every batch norm normalises with its running statistics (gamma and beta still train).
    pub freeze_bn: bool,
    /// Learning-rate multiplier of every part but the classifier.
    pub lr_backbone: f32,
}

impl Default for FineTune {
    fn default() -> Self {
        Self { init: None, freeze: Vec::new(), freeze_bn: false, lr_backbone: 1.0 }
    }
}

/// Arithmetic of the convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32 throughout.
    #[default]
    Fp32,
    /// bf16 inputs and weights in the convolutions' dot products (AVX512_BF16, AMX tiles where
    /// the CPU has them), f32
    /// accumulation, f32 master weights, batch-norm statistics and loss.
    Bf16,
}

impl Precision {
    /// The program's kernel configuration ([`KernelConfig::installed`]) with this arithmetic,
    /// checked against this CPU.
    ///
    /// # Errors
    /// A message naming the missing CPU feature.
    pub fn kernel_config(self) -> Result<KernelConfig, String> {
        let precision = match self {
            Precision::Fp32 => resnet_kernels::conv::Precision::F32,
            Precision::Bf16 => resnet_kernels::conv::Precision::Bf16,
        };
        let config = KernelConfig { precision, ..KernelConfig::installed() };
        config.check(&CpuFeatures::current())?;
        Ok(config)
    }
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The recipe the defaults came from.
    pub recipe: String,
    /// Model name (see `resnet models`).
    pub model: String,
    /// Shortcut option (model default when absent).
    pub shortcut: Option<Shortcut>,
    /// Zero-initialise the last batch norm of each residual branch.
    pub zero_init_residual: bool,
    /// Classifier outputs (the dataset's class count when absent; at least that many).
    #[serde(default)]
    pub classes: Option<usize>,
    /// Input channels, 1 or 3 (the dataset's when absent; images are converted to it).
    #[serde(default)]
    pub in_channels: Option<usize>,
    /// Starting weights, frozen parts and per-part learning rates.
    #[serde(default)]
    pub fine_tune: FineTune,
    /// Dataset kind (`cifar10`, `imagefolder`, `synthetic`, ...).
    pub dataset: String,
    /// Dataset location.
    pub data: Option<PathBuf>,
    /// Synthetic dataset size: training images.
    pub synthetic_train: usize,
    /// Synthetic dataset size: test images.
    pub synthetic_test: usize,
    /// Synthetic image side.
    pub synthetic_size: usize,
    /// Training images held out for validation (0: none).
    pub val_split: usize,
    /// Skip unreadable samples instead of failing.
    pub skip_bad: bool,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Evaluation batch size (images, before multiplying by views).
    pub eval_batch_size: usize,
    /// Length of the run.
    pub length: RunLength,
    /// Base learning rate.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Decay batch-norm parameters and biases too.
    pub decay_bn_and_bias: bool,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Learning-rate decay.
    pub decay: Decay,
    /// Warm-up.
    pub warmup: Warmup,
    /// Training augmentation.
    pub augment: TrainAugment,
    /// Evaluation view.
    pub eval_view: EvalView,
    /// Input normalisation.
    pub normalization: Normalization,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Loader worker threads.
    pub workers: usize,
    /// Also keep a checkpoint every this many epochs (0: only last and best).
    pub checkpoint_every: u64,
    /// Arithmetic of the convolutions.
    #[serde(default)]
    pub precision: Precision,
    /// Data-parallel processes (ranks) the run trains on; `batch_size` is the batch of all of
    /// them together, each taking `batch_size / world_size` of it.
    #[serde(default = "one_rank")]
    pub world_size: usize,
    /// Batch-norm statistics over the whole batch of all ranks (`--sync-bn`) instead of each
    /// rank's share.
    #[serde(default)]
    pub sync_bn: bool,
    /// How the base rate follows the batch size (`--lr-scaling`).
    #[serde(default)]
    pub lr_scaling: LrScaling,
}

/// How the base learning rate follows the batch size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrScaling {
    /// `lr` as given, whatever the batch (the paper's recipes).
    #[default]
    None,
    /// `lr` is the rate of a batch of 256 and scales with the batch, with a gradual warm-up
    /// (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
    Linear,
}

/// Epochs of the gradual warm-up of [`LrScaling::Linear`] (Goyal et al.'s five).
pub const SCALING_WARMUP_EPOCHS: u64 = 5;

fn one_rank() -> usize {
    1
}

impl TrainConfig {
    /// The base rate and warm-up the schedule runs, for `per_epoch` batches an epoch: as
    /// configured, or with [`LrScaling::Linear`] the rate times `batch_size / 256` and, where no
    /// warm-up is configured, a linear ramp from the rate as given over the first
    /// [`SCALING_WARMUP_EPOCHS`] epochs.
    pub fn schedule_start(&self, per_epoch: u64) -> (f32, Warmup) {
        match self.lr_scaling {
            LrScaling::None => (self.lr, self.warmup.clone()),
            LrScaling::Linear => {
                let k = self.batch_size as f32 / 256.0;
                let warmup = match &self.warmup {
                    Warmup::None if k > 1.0 => {
                        Warmup::Linear { iterations: SCALING_WARMUP_EPOCHS * per_epoch, start_factor: 1.0 / k }
                    }
                    other => other.clone(),
                };
                (self.lr * k, warmup)
            }
        }
    }

    /// `resnet train` with no arguments: ResNet-20 on the embedded synthetic dataset, a few
    /// minutes on two cores.
    pub fn quickstart() -> Self {
        Self {
            recipe: "quickstart".into(),
            model: "resnet20".into(),
            shortcut: None,
            zero_init_residual: false,
            classes: None,
            in_channels: None,
            fine_tune: FineTune::default(),
            dataset: "synthetic".into(),
            data: None,
            synthetic_train: 10_000,
            synthetic_test: 2_000,
            synthetic_size: 32,
            val_split: 0,
            skip_bad: false,
            batch_size: 128,
            eval_batch_size: 500,
            length: RunLength::Epochs(5),
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            decay_bn_and_bias: true,
            nesterov: false,
            label_smoothing: 0.0,
            decay: Decay::Step { milestones: vec![Milestone::Fraction(0.5), Milestone::Fraction(0.75)], gamma: 0.1 },
            warmup: Warmup::None,
            augment: TrainAugment::PadCropFlip { pad: 4 },
            eval_view: EvalView::Full,
            normalization: Normalization::PixelMean { scale: 1.0 / 64.0 },
            seed: 0,
            workers: 2,
            checkpoint_every: 0,
            precision: Precision::Fp32,
            world_size: 1,
            sync_bn: false,
            lr_scaling: LrScaling::None,
        }
    }

    /// The paper's CIFAR-10 recipe (Section 4.2): batch 128, learning rate 0.1 divided by 10 at
    /// 32k and 48k iterations, 64k iterations, weight decay 1e-4, momentum 0.9, 4-pixel
    /// pad-crop-flip, per-pixel mean subtraction; the 0.01 warm-up for 110 layers and more.
    pub fn cifar_paper(model: &str, depth: usize) -> Self {
        Self {
            recipe: "cifar-paper".into(),
            model: model.into(),
            dataset: "cifar10".into(),
            length: RunLength::Iterations(64_000),
            decay: Decay::Step {
                milestones: vec![Milestone::Iteration(32_000), Milestone::Iteration(48_000)],
                gamma: 0.1,
            },
            warmup: if depth >= 110 { Warmup::paper() } else { Warmup::None },
            ..Self::quickstart()
        }
    }

    /// The paper's ImageNet recipe (Section 3.4): batch 256, learning rate 0.1 divided by 10
    /// when the error plateaus, up to 600k iterations, weight decay 1e-4, momentum 0.9, scale
    /// augmentation (shorter side in [256, 480], 224 crop, flip, colour augmentation),
    /// per-pixel mean subtraction, 10-crop evaluation.
    pub fn imagenet_paper(model: &str) -> Self {
        Self {
            recipe: "imagenet-paper".into(),
            model: model.into(),
            dataset: "imagefolder".into(),
            batch_size: 256,
            eval_batch_size: 25,
            length: RunLength::Iterations(600_000),
            decay: Decay::Plateau { patience: 3, gamma: 0.1, threshold: 0.01 },
            augment: TrainAugment::ScaleAugment { min: 256, max: 480, crop: 224, pca: true },
            eval_view: EvalView::TenCrop { resize: 256, crop: 224 },
            workers: 4,
            ..Self::quickstart()
        }
    }
}

/// The ranges of the optimiser's settings, one check each, shared by [`crate::trainer`]'s
/// validation and the command line's flag parsers. Each returns the value or why it is refused.
pub mod ranges {
    /// `x`, or why it is refused.
    fn accept(x: f32, ok: bool, why: &str) -> Result<f32, String> {
        if ok {
            Ok(x)
        } else {
            Err(why.into())
        }
    }

    /// A learning rate: finite and above 0.
    pub fn lr(x: f32) -> Result<f32, String> {
        accept(x, x.is_finite() && x > 0.0, "the learning rate must be a number above 0")
    }

    /// A decay factor (step, plateau): the rate is multiplied by it, so (0, 1].
    pub fn gamma(x: f32) -> Result<f32, String> {
        accept(x, x > 0.0 && x <= 1.0, "the decay factor gamma must lie in (0, 1]: the rate is multiplied by it")
    }

    /// Momentum: [0, 1).
    pub fn momentum(x: f32) -> Result<f32, String> {
        accept(x, (0.0..1.0).contains(&x), "the momentum must lie in [0, 1)")
    }

    /// Weight decay: finite and at least 0.
    pub fn weight_decay(x: f32) -> Result<f32, String> {
        accept(x, x.is_finite() && x >= 0.0, "the weight decay must be a number of at least 0")
    }

    /// Label smoothing: [0, 1).
    pub fn label_smoothing(x: f32) -> Result<f32, String> {
        accept(x, (0.0..1.0).contains(&x), "label smoothing must lie in [0, 1)")
    }

    /// A learning-rate multiplier (`--lr-backbone`): finite and at least 0.
    pub fn lr_multiplier(x: f32) -> Result<f32, String> {
        accept(x, x.is_finite() && x >= 0.0, "the learning-rate multiplier must be a number of at least 0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    #[test]
    fn linear_scaling_multiplies_the_rate_and_ramps_up_from_the_rate_given() {
        let c = TrainConfig { lr: 0.1, batch_size: 1024, lr_scaling: LrScaling::Linear, ..TrainConfig::quickstart() };
        let (lr, warmup) = c.schedule_start(100);
        assert!((lr - 0.4).abs() < 1e-7);
        assert_eq!(warmup, Warmup::Linear { iterations: 500, start_factor: 0.25 });
        let schedule = Schedule::new(lr, Decay::Constant, warmup, 10_000, 100);
        assert!((schedule.lr(0) - 0.1).abs() < 1e-6, "starts at the rate given");
        assert!((schedule.lr(500) - 0.4).abs() < 1e-6, "reaches the scaled rate after five epochs");
        // A warm-up of one's own stays; a batch under 256 scales down and needs none.
        let own = TrainConfig { warmup: Warmup::paper(), ..c.clone() };
        assert_eq!(own.schedule_start(100).1, Warmup::paper());
        let small = TrainConfig { batch_size: 128, ..c.clone() };
        assert_eq!(small.schedule_start(100), (0.05, Warmup::None));
        let off = TrainConfig { lr_scaling: LrScaling::None, ..c };
        assert_eq!(off.schedule_start(100), (0.1, Warmup::None));
    }
}
