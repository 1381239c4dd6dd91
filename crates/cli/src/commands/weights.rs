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

/// The network's source: exactly one of `--checkpoint` and `--weights`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").args(["checkpoint", "weights"]).required(true)))]
pub struct WeightsArgs {
    /// Checkpoint written by `resnet train` or `resnet import`.
    #[arg(long)]
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

/// A checkpoint made from torchvision weights: ImageNet class names for 1000 outputs. Warns
/// when `model` names a network torchvision's class of that name does not compute (the paper's
/// v1 bottleneck nets: torchvision files hold v1.5 weights).
pub fn checkpoint_from_torchvision(file: &Path, model: Option<&str>) -> anyhow::Result<Checkpoint> {
    let net = resnet_interop::load_weights(file, model)?;
    let spec = net.spec();
    if let (Some(name), Some(reason)) = (model, resnet_interop::torchvision_difference(spec)) {
        eprintln!(
            "warning: --model {name}: {reason}; torchvision's weights are for {}-v1.5 (what the architecture \
             is inferred as without --model), so {name} will not reproduce torchvision's outputs",
            name.trim_end_matches("-v1")
        );
    }
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

/// Refuses to write `out` over one of `inputs` (whatever `force` says), or over an existing file
/// without `force`: nothing already written is lost by accident.
pub fn check_output(out: &Path, inputs: &[&Path], force: bool, flag: &str) -> anyhow::Result<()> {
    for input in inputs {
        if same_file(out, input) {
            anyhow::bail!("{flag} {} is an input of this command; refusing to write over it", out.display());
        }
    }
    if !force && std::fs::symlink_metadata(out).is_ok() {
        anyhow::bail!("{flag} {} already exists; pass --force to overwrite it", out.display());
    }
    Ok(())
}

/// Whether two paths name the same existing file (through links and relative spellings too).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}
