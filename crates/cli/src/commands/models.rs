//! `resnet models`: the zoo.

use resnet_models::zoo::{self, ModelOptions, ZOO};

/// Arguments of `resnet models`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for e in ZOO {
        let spec = zoo::spec(e.name, &ModelOptions::default())?;
        let size = spec.default_input_size();
        let s = spec.summary(size, size);
        rows.push(serde_json::json!({
            "name": e.name,
            "family": format!("{:?}", e.family),
            "depth": spec.depth(),
            "residual": spec.residual,
            "shortcut": spec.shortcut.to_string(),
            "input": size,
            "params": s.params,
            "macs": s.macs,
            "source": e.source,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<9} {:>5} {:>9} {:>12} {:>10}  source",
        "model", "family", "depth", "shortcut", "params", "GMACs"
    );
    for r in &rows {
        println!(
            "{:<16} {:<9} {:>5} {:>9} {:>12} {:>10.3}  {}",
            r["name"].as_str().unwrap_or_default(),
            r["family"].as_str().unwrap_or_default(),
            // As numbers: a JSON value ignores the width and alignment of its format.
            r["depth"].as_u64().unwrap_or(0),
            if r["residual"] == true { r["shortcut"].as_str().unwrap_or_default() } else { "none" },
            r["params"].as_u64().unwrap_or(0),
            r["macs"].as_u64().unwrap_or(0) as f64 / 1e9,
            r["source"].as_str().unwrap_or_default()
        );
    }
    println!("\nAny CIFAR depth 6n+2: cifar-resnet<depth>, cifar-plain<depth> (e.g. cifar-resnet26).");
    println!("Options wherever a model is named: --shortcut A|B|C, --classes N, --in-channels 1|3.");
    Ok(())
}
