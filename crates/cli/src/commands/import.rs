//! `resnet import`: torchvision weights (a `safetensors.torch.save_file` file or a `torch.save`
//! state-dict archive) into a checkpoint, with torchvision's preprocessing and class names.

use anyhow::Context;
use std::path::PathBuf;

/// Where weights come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// torchvision's state-dict keys and layouts (`model.state_dict()`).
    Torchvision,
}

/// Arguments of `resnet import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The weights' layout.
    #[arg(long, value_enum)]
    from: Source,
    /// Weights: .safetensors or .pth (told apart by content). .pth files are read without
    /// executing anything; pickles that would run code are refused.
    file: PathBuf,
    /// The network, e.g. resnet50-v1.5 (default: inferred from the tensor shapes).
    #[arg(long)]
    model: Option<String>,
    /// Checkpoint to write (never the input; an existing file only with --force).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Source::Torchvision = args.from;
    super::weights::check_output(&args.out, &[&args.file], args.force, "--out")?;
    let ckpt = super::weights::checkpoint_from_torchvision(&args.file, args.model.as_deref())?;
    let spec = &ckpt.spec;
    let params = spec.summary(ckpt.preprocess.input_size.0, ckpt.preprocess.input_size.1).params;
    ckpt.save(&args.out).with_context(|| format!("cannot write the checkpoint {}", args.out.display()))?;
    let how = if args.model.is_some() { "as requested" } else { "inferred from the tensor shapes" };
    println!(
        "{} -> {}: {} ({how}), {} parameters, {} classes",
        args.file.display(),
        args.out.display(),
        spec.name,
        params,
        spec.num_classes
    );
    Ok(())
}
