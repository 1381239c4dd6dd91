//! Where the network a command runs comes from: a checkpoint, or torchvision weights used
//! directly (`--weights FILE [--model NAME]`) with torchvision's preprocessing.

use anyhow::Context;
use resnet_data::{EvalView, Normalize};
use resnet_models::Family;
use resnet_train::checkpoint::{Checkpoint, Preprocess};
use std::path::{Path, PathBuf};

/// Preprocessing presets.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Shorter side 256 (bilinear, antialiased), centre crop 224, ImageNet mean and std.
    Torchvision,
}

/// The network's source.
#[derive(clap::Args, Debug, Clone)]
pub struct WeightsArgs {
    /// Checkpoint written by `resnet train` or `resnet import`.
    #[arg(long, conflicts_with = "weights", required_unless_present = "weights")]
    pub checkpoint: Option<PathBuf>,
    /// torchvision weights (.safetensors or .pth state dict) to use directly.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The network of --weights, e.g. resnet50-v1.5 (default: inferred from the tensor shapes).
    #[arg(long, requires = "weights")]
    pub model: Option<String>,
    /// Preprocessing preset (torchvision's is the default for --weights).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
}

/// torchvision's evaluation transform (ImageNet nets); CIFAR-family nets keep their native
/// size and are evaluated on the full image, with the same normalisation. Inputs that are not
/// RGB get the mean of the three channel statistics on every channel.
pub fn torchvision_preprocess(family: Family, channels: usize) -> Preprocess {
    let (mean, std, resize, crop) = resnet_interop::torchvision_preset();
    let (mean, std) = if channels == mean.len() {
        (mean, std)
    } else {
        let avg = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        (vec![avg(&mean); channels], vec![avg(&std); channels])
    };
    let (input_size, eval_view) = match family {
        Family::ImageNet => ((crop, crop), EvalView::ResizeCenterCrop { resize, crop }),
        Family::Cifar => ((32, 32), EvalView::Full),
    };
    Preprocess { normalize: Normalize::ChannelMeanStd { mean, std }, input_size, channels, eval_view }
}

/// A checkpoint made from torchvision weights: ImageNet class names for 1000 outputs.
pub fn checkpoint_from_torchvision(file: &Path, model: Option<&str>) -> anyhow::Result<Checkpoint> {
    let net = resnet_interop::load_weights(file, model)?;
    let spec = net.spec();
    let classes: Vec<String> = if spec.num_classes == 1000 {
        resnet_interop::imagenet_classes()
    } else {
        (0..spec.num_classes).map(|i| format!("class{i}")).collect()
    };
    let pre = torchvision_preprocess(spec.family, spec.in_channels);
    Ok(Checkpoint::from_network(&net, classes, pre))
}

impl WeightsArgs {
    /// The checkpoint and the path to name in messages.
    pub fn load(&self) -> anyhow::Result<(Checkpoint, PathBuf)> {
        let (mut ckpt, path) = match (&self.checkpoint, &self.weights) {
            (Some(c), _) => (Checkpoint::load(c)?, c.clone()),
            (None, Some(w)) => (
                checkpoint_from_torchvision(w, self.model.as_deref())
                    .with_context(|| format!("cannot use the weights {}", w.display()))?,
                w.clone(),
            ),
            (None, None) => anyhow::bail!("give --checkpoint FILE or --weights FILE"),
        };
        if self.preset == Some(Preset::Torchvision) {
            ckpt.preprocess = torchvision_preprocess(ckpt.spec.family, ckpt.spec.in_channels);
        }
        Ok((ckpt, path))
    }
}
