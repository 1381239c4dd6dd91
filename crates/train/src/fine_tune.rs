//! Fine-tuning: the weights a run starts from (`--init`), the parts it freezes (`--freeze`,
//! `--freeze-bn`) and their learning rates (`--lr-backbone`).

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::FineTune;
use resnet_data::Normalize;
use resnet_models::{LayerGroup, NamedTensor, ResNet, ResNetSpec};
use std::path::{Path, PathBuf};

/// What a weights file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsKind {
    /// A checkpoint written by `resnet train` or `resnet import`.
    Checkpoint,
    /// A torchvision state dict (`.safetensors` or `.pth`).
    Torchvision,
}

/// The weights a fine-tuning run starts from, read from a file.
#[derive(Clone, Debug)]
pub struct InitWeights {
    /// The file.
    pub path: PathBuf,
    /// What it is.
    pub kind: WeightsKind,
    /// The network it holds (for a torchvision file, as its shapes say).
    pub spec: ResNetSpec,
    /// Its tensors, torchvision keys and layouts.
    pub state: Vec<NamedTensor>,
    /// The normalisation its network was trained with: a checkpoint's own, torchvision's
    /// ImageNet mean and std for a state dict.
    pub normalize: Normalize,
}

impl InitWeights {
    /// Reads one of our checkpoints or a torchvision state dict, told apart by content.
    ///
    /// # Errors
    /// A message naming the file: unreadable, or neither kind of weights (with both reasons).
    pub fn read(path: &Path) -> Result<Self, String> {
        let not_ours = match Checkpoint::load(path) {
            Ok(c) => {
                return Ok(Self {
                    path: path.to_path_buf(),
                    kind: WeightsKind::Checkpoint,
                    spec: c.spec,
                    state: c.state,
                    normalize: c.preprocess.normalize,
                })
            }
            Err(e @ (CheckpointError::NotACheckpoint { .. } | CheckpointError::Corrupt { .. })) => e,
            Err(e) => return Err(e.to_string()),
        };
        match resnet_interop::load_weights(path, None) {
            Ok(net) => {
                let (spec, state) = (net.spec().clone(), net.state_dict());
                let (mean, std, _, _) = resnet_interop::torchvision_preset();
                Ok(Self {
                    path: path.to_path_buf(),
                    kind: WeightsKind::Torchvision,
                    spec,
                    state,
                    normalize: Normalize::ChannelMeanStd { mean, std },
                })
            }
            Err(e) => Err(format!(
                "{}: neither a resnet checkpoint nor torchvision weights ({not_ours}; as torchvision weights: {e})",
                path.display()
            )),
        }
    }

    /// Loads the weights into `net` (see [`ResNet::init_from`]) and says what was kept and what
    /// is new.
    ///
    /// # Errors
    /// A message naming the file and every tensor that does not fit `net`.
    pub fn load_into(&self, net: &mut ResNet) -> Result<String, String> {
        let report = net.init_from(&self.state).map_err(|e| {
            format!("{} holds a {} and cannot start a {}: {e}", self.path.display(), self.spec.name, net.spec().name)
        })?;
        let kind = match self.kind {
            WeightsKind::Checkpoint => "checkpoint",
            WeightsKind::Torchvision => "torchvision weights",
        };
        let mut text =
            format!("initialised from {} ({kind}, {}):\n{}", self.path.display(), self.spec.name, report.describe());
        if let (WeightsKind::Torchvision, Some(reason)) =
            (self.kind, resnet_interop::torchvision_difference(net.spec()))
        {
            text += &format!("\nwarning: {} {reason}; torchvision's weights are for v1.5", net.spec().name);
        }
        Ok(text)
    }

    /// Its normalisation for images of `(h, w)` pixels and `channels` channels: channel
    /// statistics are averaged onto one channel (or the grey statistic repeated); a mean image
    /// must have the images' size.
    ///
    /// # Errors
    /// A mean image of another size.
    pub fn normalize_for(&self, (h, w): (usize, usize), channels: usize) -> Result<Normalize, String> {
        let fit = |v: &[f32]| -> Vec<f32> {
            match (v.len(), channels) {
                (n, c) if n == c => v.to_vec(),
                (_, 1) => vec![v.iter().sum::<f32>() / v.len().max(1) as f32],
                _ => vec![v.first().copied().unwrap_or(0.0); channels],
            }
        };
        Ok(match &self.normalize {
            Normalize::ChannelMeanStd { mean, std } => Normalize::ChannelMeanStd { mean: fit(mean), std: fit(std) },
            Normalize::PixelMean { mean, scale } => {
                let from = mean.len() / (h * w).max(1);
                if from * h * w != mean.len() || !matches!(from, 1 | 3) {
                    return Err(format!(
                        "the mean image stored in {} ({} values) is not of this run's {h}x{w} images; give \
                         --normalize to choose another normalisation",
                        self.path.display(),
                        mean.len()
                    ));
                }
                let pixels = mean.chunks_exact(from).flat_map(fit).collect();
                Normalize::PixelMean { mean: pixels, scale: *scale }
            }
            Normalize::None => Normalize::None,
        })
    }
}

/// The groups `names` stand for in a network of `stages` stages (`backbone`: every group but
/// the classifier), in order, once each.
///
/// # Errors
/// A name that is no part of a ResNet.
pub fn groups(names: &[String], stages: usize) -> Result<Vec<LayerGroup>, String> {
    let mut out = Vec::new();
    for name in names {
        match name.as_str() {
            "backbone" => out.extend(LayerGroup::backbone(stages)),
            n => out.push(n.parse::<LayerGroup>()?),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Freezes what `fine_tune` says in `net`; returns a line saying what trains, if anything is
/// frozen.
///
/// # Errors
/// An unknown part, or everything frozen.
pub fn freeze(net: &mut ResNet, fine_tune: &FineTune) -> Result<Option<String>, String> {
    let frozen = groups(&fine_tune.freeze, net.spec().depths.len())?;
    for &g in &frozen {
        net.set_frozen(g, true)?;
    }
    if fine_tune.freeze_bn {
        net.set_batch_norm_statistics_frozen(true);
    }
    let params = net.params();
    let total: usize = params.iter().map(|p| p.len()).sum();
    let training: usize = params.iter().filter(|p| !p.frozen).map(|p| p.len()).sum();
    if training == 0 {
        return Err("every part of the network is frozen: nothing would train".into());
    }
    if frozen.is_empty() && !fine_tune.freeze_bn {
        return Ok(None);
    }
    let names: Vec<String> = frozen.iter().map(ToString::to_string).collect();
    let bn = if fine_tune.freeze_bn { "; every batch norm on its running statistics" } else { "" };
    Ok(Some(format!(
        "frozen: {}{bn}; {training} of {total} parameters train",
        if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
    )))
}

/// The learning-rate multiplier of each parameter of `net`, in visiting order.
pub fn lr_scales(net: &ResNet, fine_tune: &FineTune) -> Vec<f32> {
    net.params()
        .iter()
        .map(|p| match LayerGroup::of(&p.name) {
            Some(LayerGroup::Classifier) => 1.0,
            _ => fine_tune.lr_backbone,
        })
        .collect()
}
