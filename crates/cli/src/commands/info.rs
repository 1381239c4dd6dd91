//! `resnet info MODEL`: the stage table (as Table 1 of the paper), parameters, multiply-adds.

use super::ModelArgs;

/// Arguments of `resnet info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model name (see `resnet models`).
    model: String,
    #[command(flatten)]
    model_args: ModelArgs,
    /// Input side in pixels (default: 224 for ImageNet nets, 32 for CIFAR nets).
    #[arg(long)]
    size: Option<usize>,
    /// Print JSON (`params` and `macs` are integers).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = args.model_args.spec(&args.model)?;
    let size = args.size.unwrap_or_else(|| spec.default_input_size());
    let net = resnet_models::ResNet::new(spec.clone())?;
    net.check_input([1, size, size, spec.in_channels])?;
    let s = spec.summary(size, size);
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["family"] = serde_json::json!(format!("{:?}", spec.family));
        v["residual"] = serde_json::json!(spec.residual);
        v["shortcut"] = serde_json::json!(spec.shortcut.to_string());
        v["stride_placement"] = serde_json::json!(format!("{:?}", spec.stride_placement));
        v["num_classes"] = serde_json::json!(spec.num_classes);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let kind = if spec.residual { format!("residual, shortcut option {}", spec.shortcut) } else { "plain".to_string() };
    let placement = match spec.stride_placement {
        resnet_models::StridePlacement::V1 => "v1 (paper)",
        resnet_models::StridePlacement::V1_5 => "v1.5 (torchvision)",
    };
    println!(
        "{} ({} layers, {kind}, {placement} stride placement), input {size}x{size}x{}",
        s.model, s.depth, spec.in_channels
    );
    println!();
    println!("{:<8} {:>9}  {:<60} {:>12} {:>12}", "layer", "output", "blocks", "params", "MMACs");
    for r in &s.stages {
        println!(
            "{:<8} {:>9}  {:<60} {:>12} {:>12.2}",
            r.layer,
            r.output,
            r.description,
            r.params,
            r.macs as f64 / 1e6
        );
    }
    println!();
    println!("parameters:     {}", s.params);
    println!("multiply-adds:  {} ({:.3} G)", s.macs, s.macs as f64 / 1e9);
    Ok(())
}
