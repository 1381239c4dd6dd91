//! The memory a batch costs: the bytes per image that a training step and an inference pass
//! keep, computed from the spec and the input size alone, so that a batch too large for the
//! machine can be refused before anything is allocated for it.
//!
//! Everything here grows linearly with the batch; the parameters, their gradients and the
//! optimiser state do not, and are not counted.

use crate::spec::{BlockKind, BlockPlan, Family, ResNetSpec, ShortcutPlan, StridePlacement};
use crate::summary::conv_out;
use resnet_kernels::conv::Precision;
use serde::Serialize;

/// Bytes of one `f32`.
const F32: u64 = 4;

/// Bytes per image of a batch, for one input size.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct BatchMemory {
    /// The input batch itself (the caller's tensor; the training step reads it again in the
    /// backward pass).
    pub input: u64,
    /// Training: every activation [`ResNet::forward`](crate::ResNet::forward) keeps in
    /// [`BatchNormMode::Train`](crate::BatchNormMode) for the backward pass (each convolution's
    /// output, each materialised unit output, the shortcuts' outputs, the pooled features and
    /// the logits).
    pub train_activations: u64,
    /// Training: the backward pass's buffers (five gradient buffers, each as long as the
    /// longest activation of its role, the feature gradient and the logit gradient the caller
    /// hands it).
    pub train_backward: u64,
    /// Inference: at most what [`ResNet::infer`](crate::ResNet::infer) holds. It passes
    /// buffers on as activations die, and its pool hands the largest spare buffer first, so
    /// every buffer may grow to the longest activation: as many of those as activations are
    /// ever alive at once, plus the pooled features and the logits. A bound: networks whose
    /// longest activation is the stem's alone (basic-block ImageNet nets) hold about half.
    pub infer: u64,
}

impl BatchMemory {
    /// Bytes per image of a training step: the input, the kept activations and the backward
    /// pass's buffers.
    pub fn train_per_image(&self) -> u64 {
        self.input + self.train_activations + self.train_backward
    }

    /// Bytes per image of an inference pass, input included.
    pub fn infer_per_image(&self) -> u64 {
        self.input + self.infer
    }

    /// Bytes of a training step on a batch of `batch` (saturating).
    pub fn train_bytes(&self, batch: usize) -> u64 {
        self.train_per_image().saturating_mul(batch as u64)
    }

    /// Bytes of an inference pass on a batch of `batch` (saturating).
    pub fn infer_bytes(&self, batch: usize) -> u64 {
        self.infer_per_image().saturating_mul(batch as u64)
    }
}

/// The activations of one block for one image, in elements.
struct BlockActivations {
    /// Each unit's convolution output, in order.
    convs: Vec<u64>,
    /// Block output (the last unit's `z`).
    output: u64,
    /// Tensors the shortcut keeps: the option-A padded input, or a projection's `y` (training;
    /// its batch norm is applied as the last unit adds it) or `z` (inference).
    shortcut: Vec<u64>,
    /// The shortcut is a projection (its tensor a convolution output in training).
    projection: bool,
}

impl ResNetSpec {
    /// The residual branch's convolutions of block `b`: `(cin, cout, kernel, stride)` each.
    pub(crate) fn branch_convs(&self, b: &BlockPlan) -> Vec<(usize, usize, usize, usize)> {
        match self.block {
            BlockKind::Basic => vec![(b.cin, b.width, 3, b.stride), (b.width, b.cout, 3, 1)],
            BlockKind::Bottleneck => {
                let (s1, s2) = match self.stride_placement {
                    StridePlacement::V1 => (b.stride, 1),
                    StridePlacement::V1_5 => (1, b.stride),
                };
                vec![(b.cin, b.width, 1, s1), (b.width, b.width, 3, s2), (b.width, b.cout, 1, 1)]
            }
        }
    }

    /// Bytes per image that a batch of `h x w` inputs costs in training and in inference.
    pub fn batch_memory(&self, h: usize, w: usize) -> BatchMemory {
        self.batch_memory_stored(h, w, Precision::F32)
    }

    /// [`Self::batch_memory`] where training keeps each convolution output in `stored`
    /// precision (`KernelConfig::stored`: bf16 training keeps them in bf16, two bytes each).
    pub fn batch_memory_stored(&self, h: usize, w: usize, stored: Precision) -> BatchMemory {
        let input = (h * w * self.in_channels) as u64;
        let (k, stride) = match self.family {
            Family::ImageNet => (7, 2),
            Family::Cifar => (3, 1),
        };
        let (mut h, mut w) = (conv_out(h, k, stride, k / 2), conv_out(w, k, stride, k / 2));
        let stem = (h * w * self.stem_width) as u64;
        // The stem keeps its convolution output and its ReLU output, or, where a max pool
        // applies the batch norm and ReLU as it reads, the pooled output instead.
        let mut stem_tensors = vec![stem];
        if self.family == Family::ImageNet {
            h = conv_out(h, 3, 2, 1);
            w = conv_out(w, 3, 2, 1);
            stem_tensors.push((h * w * self.stem_width) as u64);
        } else {
            stem_tensors.push(stem);
        }
        let mut blocks = Vec::new();
        for b in self.blocks() {
            let mut convs = Vec::new();
            for (_, cout, k, s) in self.branch_convs(&b) {
                h = conv_out(h, k, s, k / 2);
                w = conv_out(w, k, s, k / 2);
                convs.push((h * w * cout) as u64);
            }
            let output = (h * w * b.cout) as u64;
            let shortcut = match b.shortcut {
                ShortcutPlan::None | ShortcutPlan::Identity => vec![],
                ShortcutPlan::Pad | ShortcutPlan::Projection => vec![output],
            };
            let projection = b.shortcut == ShortcutPlan::Projection;
            blocks.push(BlockActivations { convs, output, shortcut, projection });
        }
        let max_of = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
        let block_longest = blocks
            .iter()
            .flat_map(|b| b.convs.iter().chain(&b.shortcut).chain([&b.output]))
            .copied()
            .max()
            .unwrap_or(0);
        let longest = block_longest.max(max_of(&stem_tensors));
        // The backward pass's gradient buffers (see `BackwardLens`): two for a block's output and
        // input gradients (the stem's max pool writes its input's into one), one for a unit's
        // convolution output's, two for inner units' outputs'.
        let (mut output, mut unit, mut inner) = (max_of(&stem_tensors), stem_tensors[0], 0);
        for b in &blocks {
            output = output.max(b.output);
            unit = unit.max(max_of(&b.convs));
            inner = inner.max(max_of(&b.convs[..b.convs.len() - 1]));
        }
        let (features, logits) = (self.feature_channels() as u64, self.num_classes as u64);
        let kept: u64 = stem_tensors.iter().sum::<u64>()
            + blocks.iter().map(|b| b.convs.iter().chain(&b.shortcut).sum::<u64>() + b.output).sum::<u64>()
            + features
            + logits;
        // The convolution outputs among them: the stem's, the units' and the projections'.
        let projections = blocks.iter().filter(|b| b.projection).map(|b| b.output).sum::<u64>();
        let conv_outputs =
            stem_tensors[0] + blocks.iter().map(|b| b.convs.iter().sum::<u64>()).sum::<u64>() + projections;
        let stored_bytes = match stored {
            Precision::F32 => F32,
            Precision::Bf16 => 2,
        };
        // Inference lends the stem's tensors and, within a block, its input, each unit's
        // convolution output, the shortcut's tensors and the output a buffer each, all alive at
        // once: the pool holds as many buffers as the most of these. Buffers pass from role to
        // role (largest first, and from a block's input to its output where a block writes over
        // its shortcut), so each may come to serve the longest activation.
        let stem_alive = stem_tensors.len() as u64;
        let block_alive = blocks.iter().map(|b| 1 + b.convs.len() + b.shortcut.len() + 1).max().unwrap_or(0) as u64;
        let pool = stem_alive.max(block_alive) * longest;
        BatchMemory {
            input: input * F32,
            train_activations: (kept - conv_outputs) * F32 + conv_outputs * stored_bytes,
            train_backward: (2 * output + unit + 2 * inner + features + logits) * F32,
            infer: (pool + features + logits) * F32,
        }
    }
}
