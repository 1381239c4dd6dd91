//! `resnet export`: a checkpoint to ONNX (eval mode, NCHW `input`, dynamic batch, `logits`) or
//! to torchvision's safetensors layout.

use anyhow::Context;
use resnet_interop::OnnxOptions;
use resnet_train::checkpoint::Checkpoint;
use std::path::PathBuf;

/// Arguments of `resnet export`: at least one of `--onnx` and `--safetensors`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").args(["onnx", "safetensors"]).required(true).multiple(true)))]
pub struct Args {
    /// Checkpoint to export.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Write an ONNX model (opset 17): input `input` [batch, C, H, W] float, output `logits`.
    #[arg(long)]
    onnx: Option<PathBuf>,
    /// Fix the ONNX input's height and width to the checkpoint's input size (default: symbolic,
    /// any size works).
    #[arg(long, requires = "onnx")]
    fixed_size: bool,
    /// Write torchvision-layout safetensors, for
    /// `model.load_state_dict(safetensors.torch.load_file(FILE))`.
    #[arg(long)]
    safetensors: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let net = ckpt.network(&args.checkpoint)?;
    let name = &net.spec().name;
    if let Some(path) = &args.onnx {
        let opts = OnnxOptions { input_size: args.fixed_size.then_some(ckpt.preprocess.input_size) };
        resnet_interop::export_onnx(&net, path, &opts)
            .with_context(|| format!("cannot export {name} from {} to ONNX", args.checkpoint.display()))?;
        let (c, size) = (net.spec().in_channels, opts.input_size.map_or("H, W".into(), |(h, w)| format!("{h}, {w}")));
        println!(
            "{} -> {}: ONNX opset {}, input [batch, {c}, {size}] float, output logits [batch, {}]",
            args.checkpoint.display(),
            path.display(),
            resnet_interop::onnx::OPSET,
            net.spec().num_classes
        );
    }
    if let Some(path) = &args.safetensors {
        resnet_interop::export_torchvision(&net, path)
            .with_context(|| format!("cannot export {name} from {}", args.checkpoint.display()))?;
        println!("{} -> {}: torchvision safetensors ({name})", args.checkpoint.display(), path.display());
    }
    Ok(())
}
