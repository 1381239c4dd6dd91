//! `resnet export`: a checkpoint to ONNX (eval mode, NCHW `input`, dynamic batch, `logits`) or
//! to torchvision's safetensors layout.

use anyhow::{bail, Context};
use resnet_data::Normalize;
use resnet_interop::{InputFormat, OnnxOptions, Preprocessing};
use resnet_train::checkpoint::{Checkpoint, Preprocess};
use std::path::{Path, PathBuf};

/// The ONNX input when preprocessing is in the graph.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormatArg {
    /// uint8 [batch, height, width, channels]: decoded image bytes.
    Uint8Nhwc,
    /// float [batch, channels, height, width] holding 0..255 pixel values.
    FloatNchw,
}

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
    /// Put the checkpoint's normalisation inside the ONNX graph: its input is then raw pixels
    /// (see --input-format) at the checkpoint's input size, resized and cropped by the caller.
    #[arg(long, requires = "onnx")]
    include_preprocessing: bool,
    /// Input of a graph with --include-preprocessing.
    #[arg(long, value_enum, default_value_t = InputFormatArg::Uint8Nhwc, requires = "include_preprocessing")]
    input_format: InputFormatArg,
    /// Overwrite output files that exist (the checkpoint itself is never overwritten).
    #[arg(long)]
    force: bool,
}

/// The checkpoint's normalisation as `(pixel - offset) * scale` on 0..255 pixels.
fn graph_preprocessing(pre: &Preprocess, format: InputFormatArg) -> Preprocessing {
    let format = match format {
        InputFormatArg::Uint8Nhwc => InputFormat::Uint8Nhwc,
        InputFormatArg::FloatNchw => InputFormat::FloatNchw,
    };
    let (offset, offset_size, scale) = match &pre.normalize {
        Normalize::None => (vec![0.0], None, vec![1.0 / 255.0]),
        Normalize::PixelMean { mean, scale } => (mean.clone(), Some(pre.input_size), vec![*scale]),
        Normalize::ChannelMeanStd { mean, std } => {
            (mean.iter().map(|m| 255.0 * m).collect(), None, std.iter().map(|s| 1.0 / (255.0 * s)).collect())
        }
    };
    Preprocessing { format, offset, offset_size, scale }
}

/// The normalisation a graph without preprocessing expects of its input, for its metadata.
fn normalisation_doc(pre: &Preprocess) -> String {
    match &pre.normalize {
        Normalize::None => "input = pixel / 255".into(),
        Normalize::PixelMean { scale, .. } => format!(
            "input = (pixel - mean[y, x, c]) * {scale}, with the {}x{} mean image of the checkpoint's \
             preprocess.pixel_mean tensor (HWC, 0..255)",
            pre.input_size.0, pre.input_size.1
        ),
        Normalize::ChannelMeanStd { mean, std } => {
            format!("input = (pixel / 255 - mean[c]) / std[c], mean {mean:?}, std {std:?}")
        }
    }
}

/// `path` as the file system will resolve it: absolute, its folder's links followed (the file
/// itself may not exist yet).
fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent().and_then(|d| d.canonicalize().ok()), abs.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => abs,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let (Some(a), Some(b)) = (&args.onnx, &args.safetensors) {
        if resolved(a) == resolved(b) {
            bail!("--onnx {} and --safetensors {} name the same file", a.display(), b.display());
        }
    }
    for (flag, out) in [("--onnx", &args.onnx), ("--safetensors", &args.safetensors)] {
        if let Some(out) = out {
            super::weights::check_output(out, &[&args.checkpoint], args.force, flag)?;
        }
    }
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let net = ckpt.network(&args.checkpoint)?;

    let name = &net.spec().name;
    // Refused before anything is written, so a refusal leaves no half of the export behind.
    if let (Some(_), Some(reason)) = (&args.safetensors, resnet_interop::torchvision_difference(net.spec())) {
        bail!("--safetensors: {name} cannot be written as a torchvision file: {reason}");
    }
    if let Some(path) = &args.onnx {
        let pre = &ckpt.preprocess;
        let preprocessing = args.include_preprocessing.then(|| graph_preprocessing(pre, args.input_format));
        let mut metadata = vec![("resnet.classes".to_string(), serde_json::to_string(&ckpt.classes)?)];
        if !args.include_preprocessing {
            metadata.push(("resnet.normalisation".to_string(), normalisation_doc(pre)));
        }
        let opts = OnnxOptions {
            input_size: (args.fixed_size || args.include_preprocessing).then_some(pre.input_size),
            preprocessing,
            metadata,
        };
        match &ckpt.quantization {
            None => resnet_interop::export_onnx(&net, path, &opts),
            Some(record) => resnet_interop::export_onnx_int8(&net, record, path, &opts),
        }
        .with_context(|| format!("cannot export {name} from {} to ONNX", args.checkpoint.display()))?;
        let c = net.spec().in_channels;
        let size = opts.input_size.map_or("H, W".into(), |(h, w)| format!("{h}, {w}"));
        let input = match (args.include_preprocessing, args.input_format) {
            (false, _) => format!("[batch, {c}, {size}] float, normalised ({})", normalisation_doc(pre)),
            (true, InputFormatArg::Uint8Nhwc) => format!("[batch, {size}, {c}] uint8 raw pixels"),
            (true, InputFormatArg::FloatNchw) => format!("[batch, {c}, {size}] float raw pixels (0..255)"),
        };
        let int8 = if ckpt.quantization.is_some() { " (int8: QDQ, per-channel weights)" } else { "" };
        println!(
            "{} -> {}: ONNX opset {}{int8}, input {input}, output logits [batch, {}]",
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
        if !is_torchvision_model(net.spec()) {
            eprintln!(
                "note: {name} is not one of torchvision's models (resnet18/34/50/101/152 with 3 input channels); \
                 the file holds its state dict under torchvision's key names, for a PyTorch module of the \
                 same structure (torchvision's own classes refuse it or differ)"
            );
        }
    }
    Ok(())
}

/// Whether torchvision's `resnet18/34/50/101/152` (with `num_classes` set) is this network.
fn is_torchvision_model(spec: &resnet_models::ResNetSpec) -> bool {
    let opts = resnet_models::zoo::ModelOptions { num_classes: Some(spec.num_classes), ..Default::default() };
    ["resnet18", "resnet34", "resnet50-v1.5", "resnet101-v1.5", "resnet152-v1.5"].iter().any(|n| {
        resnet_models::zoo::spec(n, &opts)
            .is_ok_and(|tv| resnet_models::ResNetSpec { name: spec.name.clone(), ..tv } == *spec)
    })
}
