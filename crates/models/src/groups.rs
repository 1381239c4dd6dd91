//! The parts of a network that fine-tuning treats as one: the stem, each stage (`layer1`,
//! `layer2`, ...) and the classifier. A group can be frozen (no gradient, no update, its batch
//! norms on their running statistics) or given its own learning rate by the optimiser.

use crate::ResNet;
use resnet_nn::Param;
use std::fmt;
use std::str::FromStr;

/// A part of a network, named as its torchvision keys begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerGroup {
    /// `conv1` and `bn1`.
    Stem,
    /// `layerK` (1-based, as torchvision names them).
    Stage(usize),
    /// `fc`.
    Classifier,
}

impl LayerGroup {
    /// The group a parameter or buffer of this key belongs to (`layer2.0.conv1.weight` is in
    /// `layer2`); `None` for a key of no ResNet.
    pub fn of(key: &str) -> Option<Self> {
        let head = key.split('.').next()?;
        match head {
            "conv1" | "bn1" => Some(Self::Stem),
            "fc" => Some(Self::Classifier),
            _ => stage_number(head).map(Self::Stage),
        }
    }

    /// Every group but the classifier (the "backbone") of a network with `stages` stages.
    pub fn backbone(stages: usize) -> Vec<Self> {
        std::iter::once(Self::Stem).chain((1..=stages).map(Self::Stage)).collect()
    }
}

impl fmt::Display for LayerGroup {
    /// `stem`, `layer3`, `fc`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stem => f.write_str("stem"),
            Self::Stage(k) => write!(f, "layer{k}"),
            Self::Classifier => f.write_str("fc"),
        }
    }
}

impl FromStr for LayerGroup {
    type Err = String;

    /// `stem`, `layerK`, `fc` (or `classifier`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stem" => Ok(Self::Stem),
            "fc" | "classifier" => Ok(Self::Classifier),
            _ => stage_number(s)
                .map(Self::Stage)
                .ok_or_else(|| format!("'{s}' is not a part of a ResNet: stem, layer1, layer2, ..., fc or backbone")),
        }
    }
}

/// `k` of a stage's torchvision name `layerK` (from 1).
pub(crate) fn stage_number(name: &str) -> Option<usize> {
    name.strip_prefix("layer")?.parse().ok().filter(|&k| k > 0)
}

/// Where the backward pass must start from the bottom: the lowest layer with a trainable
/// parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrainableFrom {
    /// The stem trains: the whole pass runs.
    Stem,
    /// Block `i` (0-based over all blocks) is the lowest that trains.
    Block(usize),
    /// Only the classifier trains.
    Classifier,
    /// Everything is frozen.
    Nothing,
}

impl ResNet {
    /// Freezes (or, with `frozen = false`, unfreezes) every parameter of `group` and puts its
    /// batch norms on their running statistics (or back on the batch's).
    ///
    /// # Errors
    /// A group the network does not have (`layer4` of a CIFAR net).
    pub fn set_frozen(&mut self, group: LayerGroup, frozen: bool) -> Result<(), String> {
        let stages = self.spec().depths.len();
        if let LayerGroup::Stage(k) = group {
            if k > stages {
                return Err(format!("{} has no {group}: its stages are layer1 to layer{stages}", self.spec().name));
            }
        }
        self.for_each_param(|p| {
            if LayerGroup::of(&p.name) == Some(group) {
                p.frozen = frozen;
            }
        });
        self.for_each_batch_norm(|bn| {
            if LayerGroup::of(&bn.weight.name) == Some(group) {
                bn.frozen_statistics = frozen;
            }
        });
        Ok(())
    }

    /// Puts every batch norm on its running statistics (`frozen = true`: `--freeze-bn`), its gamma
    /// and beta still training unless their group is frozen; `false` returns the batch norms of
    /// unfrozen groups to batch statistics.
    pub fn set_batch_norm_statistics_frozen(&mut self, frozen: bool) {
        self.for_each_batch_norm(|bn| bn.frozen_statistics = frozen || bn.weight.frozen);
    }

    /// The lowest layer with a parameter that trains.
    pub(crate) fn lowest_trainable(&self) -> TrainableFrom {
        let trains = |p: &Param| !p.frozen;
        let stem = &self.stem.unit;
        if [&stem.conv.weight, &stem.bn.weight, &stem.bn.bias].into_iter().any(trains) {
            return TrainableFrom::Stem;
        }
        if let Some(i) = self.blocks.iter().position(|b| b.params().any(trains)) {
            return TrainableFrom::Block(i);
        }
        if [&self.fc.weight, &self.fc.bias].into_iter().any(trains) {
            TrainableFrom::Classifier
        } else {
            TrainableFrom::Nothing
        }
    }
}
