//! One readable description of any network of the paper.

use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The residual function of a block (He et al. 2015, Fig. 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34 and all CIFAR nets).
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    /// Output channels over the stage's base width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
    /// Convolutions on the residual branch.
    pub fn convs(self) -> usize {
        match self {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        }
    }
}

/// Shortcut options of Section 3.3 / Table 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shortcut {
    /// Identity; where the shape changes, subsample and zero-pad channels (parameter-free).
    A,
    /// Identity; where the shape changes, a 1x1 projection with batch norm.
    B,
    /// A projection on every shortcut.
    C,
}

impl FromStr for Shortcut {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "A" | "a" => Ok(Shortcut::A),
            "B" | "b" => Ok(Shortcut::B),
            "C" | "c" => Ok(Shortcut::C),
            other => Err(format!("shortcut option must be A, B or C, not '{other}'")),
        }
    }
}

impl fmt::Display for Shortcut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shortcut::A => "A",
            Shortcut::B => "B",
            Shortcut::C => "C",
        })
    }
}

/// Where a downsampling bottleneck puts its stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StridePlacement {
    /// The paper's: on the first 1x1 convolution (and on the projection).
    V1,
    /// torchvision's ("ResNet v1.5"): on the 3x3 convolution.
    V1_5,
}

/// Which of the paper's two network families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// 7x7/2 stem with 3x3/2 max pooling, four stages from 64 filters (Table 1).
    ImageNet,
    /// 3x3 stem with 16 filters, three stages of 16/32/64 filters (Section 4.2).
    Cifar,
}

/// The largest network [`ResNetSpec::validate`] accepts: far beyond every network of the paper
/// (ResNet-1202 has 600 blocks, ResNet-152 60 million parameters), small enough that building
/// one cannot exhaust memory on a sizing mistake or a damaged file.
pub mod limits {
    /// Stages.
    pub const MAX_STAGES: usize = 8;
    /// Blocks over all stages (`cifar-resnet6002` has 3,000).
    pub const MAX_BLOCKS: usize = 3_000;
    /// Filters of the stem or of a stage's 3x3 layers.
    pub const MAX_WIDTH: usize = 8_192;
    /// Classes of the classifier.
    pub const MAX_CLASSES: usize = 1_000_000;
    /// Input channels.
    pub const MAX_IN_CHANNELS: usize = 64;
    /// Trainable parameters (4 GB of `f32`).
    pub const MAX_PARAMS: u64 = 1_000_000_000;
    /// Input height or width in pixels.
    pub const MAX_INPUT_SIDE: usize = 8_192;
}

/// Everything that defines a network's structure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetSpec {
    /// Name (a zoo name or a generic one).
    pub name: String,
    /// Network family (decides the stem and the default input size).
    pub family: Family,
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Base width (filters of the 3x3 layers) per stage.
    pub widths: Vec<usize>,
    /// Filters of the stem convolution.
    pub stem_width: usize,
    /// `false` for the plain twins (no shortcuts at all).
    pub residual: bool,
    /// Shortcut option.
    pub shortcut: Shortcut,
    /// Stride placement of downsampling bottlenecks.
    pub stride_placement: StridePlacement,
    /// Classes of the classifier.
    pub num_classes: usize,
    /// Input channels (3 for RGB, 1 for grey).
    pub in_channels: usize,
}

/// How a block's shortcut is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortcutPlan {
    /// Plain network: no shortcut.
    None,
    /// `x` itself.
    Identity,
    /// Option A: subsample and zero-pad.
    Pad,
    /// 1x1 convolution (with the block's stride) and batch norm.
    Projection,
}

/// The geometry of one block, derived from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlan {
    /// torchvision name prefix, `layer{stage}.{index}`.
    pub name: String,
    /// Stage, from 1.
    pub stage: usize,
    /// Index within the stage.
    pub index: usize,
    /// Input channels.
    pub cin: usize,
    /// Base width (3x3 filters).
    pub width: usize,
    /// Output channels.
    pub cout: usize,
    /// Spatial stride of the block.
    pub stride: usize,
    /// Shortcut.
    pub shortcut: ShortcutPlan,
}

impl ResNetSpec {
    /// Weighted layers: convolutions on the main path plus the classifier (the paper's count).
    pub fn depth(&self) -> usize {
        2 + self.depths.iter().sum::<usize>() * self.block.convs()
    }

    /// The input side the network was designed for (224 or 32).
    pub fn default_input_size(&self) -> usize {
        match self.family {
            Family::ImageNet => 224,
            Family::Cifar => 32,
        }
    }

    /// Channels entering the classifier.
    pub fn feature_channels(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.stem_width) * self.block.expansion()
    }

    /// Checks that an input of shape `[n, h, w, c]` fits the network.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] saying why.
    pub fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError> {
        let [_, h, w, c] = shape;
        let bad = |reason: String| Err(ModelError::BadInput { model: self.name.clone(), h, w, c, reason });
        if c != self.in_channels {
            return bad(format!("the network takes {} input channel(s)", self.in_channels));
        }
        let min = match self.family {
            Family::ImageNet => 32,
            Family::Cifar => 4,
        };
        if h < min || w < min {
            return bad(format!("inputs must be at least {min}x{min}"));
        }
        let max = crate::limits::MAX_INPUT_SIDE;
        if h > max || w > max {
            return bad(format!("inputs may be at most {max}x{max}"));
        }
        Ok(())
    }

    /// Checks the spec can be built.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::InvalidConfig { model: self.name.clone(), reason });
        if self.depths.is_empty() || self.depths.len() != self.widths.len() {
            return bad(format!("{} stage depths for {} stage widths", self.depths.len(), self.widths.len()));
        }
        // Sizes are bounded before anything is allocated from them.
        if self.depths.len() > limits::MAX_STAGES {
            return bad(format!("{} stages; at most {} are supported", self.depths.len(), limits::MAX_STAGES));
        }
        let blocks = self.depths.iter().fold(0usize, |a, &d| a.saturating_add(d));
        if blocks > limits::MAX_BLOCKS {
            return bad(format!("{blocks} blocks; at most {} are supported", limits::MAX_BLOCKS));
        }
        if let Some(&w) = self.widths.iter().chain([&self.stem_width]).find(|&&w| w > limits::MAX_WIDTH) {
            return bad(format!("a layer of {w} filters; at most {} are supported", limits::MAX_WIDTH));
        }
        if self.num_classes > limits::MAX_CLASSES {
            return bad(format!("{} classes; at most {} are supported", self.num_classes, limits::MAX_CLASSES));
        }
        if self.in_channels > limits::MAX_IN_CHANNELS {
            return bad(format!(
                "{} input channels; at most {} are supported",
                self.in_channels,
                limits::MAX_IN_CHANNELS
            ));
        }
        if self.depths.contains(&0) || self.widths.contains(&0) || self.stem_width == 0 {
            return bad("every stage needs at least one block and one filter".into());
        }
        if self.num_classes == 0 {
            return bad("the classifier needs at least one class".into());
        }
        if self.in_channels == 0 {
            return bad("the input needs at least one channel".into());
        }
        for b in self.blocks() {
            if b.shortcut == ShortcutPlan::Pad && b.cout < b.cin {
                return bad(format!("option A cannot shrink {} channels to {} in {}", b.cin, b.cout, b.name));
            }
        }
        let params = self.summary(self.default_input_size(), self.default_input_size()).params;
        if params > limits::MAX_PARAMS {
            return bad(format!("{params} parameters; at most {} are supported", limits::MAX_PARAMS));
        }
        Ok(())
    }

    /// The blocks in order, with their channels, strides and shortcuts.
    pub fn blocks(&self) -> Vec<BlockPlan> {
        let mut out = Vec::new();
        let mut cin = self.stem_width;
        for (s, (&depth, &width)) in self.depths.iter().zip(&self.widths).enumerate() {
            let cout = width * self.block.expansion();
            for i in 0..depth {
                let stride = if i == 0 && s > 0 { 2 } else { 1 };
                let changes = stride != 1 || cin != cout;
                let shortcut = match (self.residual, self.shortcut, changes) {
                    (false, _, _) => ShortcutPlan::None,
                    (true, Shortcut::C, _) | (true, Shortcut::B, true) => ShortcutPlan::Projection,
                    (true, Shortcut::A, true) => ShortcutPlan::Pad,
                    (true, _, false) => ShortcutPlan::Identity,
                };
                out.push(BlockPlan {
                    name: format!("layer{}.{}", s + 1, i),
                    stage: s + 1,
                    index: i,
                    cin,
                    width,
                    cout,
                    stride,
                    shortcut,
                });
                cin = cout;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcut_parses_both_cases() {
        assert_eq!("a".parse::<Shortcut>().unwrap(), Shortcut::A);
        assert_eq!("C".parse::<Shortcut>().unwrap(), Shortcut::C);
        assert!("D".parse::<Shortcut>().is_err());
    }
}
