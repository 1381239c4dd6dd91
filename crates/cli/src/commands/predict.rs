//! `resnet predict`: the top-k classes of image files, with probabilities.

use super::weights::WeightsArgs;
use resnet_data::{prepare_views, read_image};
use resnet_nn::ops::softmax_rows;
use resnet_nn::Tensor;
use resnet_train::inference::Classifier;
use std::path::PathBuf;

/// Arguments of `resnet predict`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network.
    #[command(flatten)]
    source: WeightsArgs,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes to list per image, at most the network's classes (default: 5, or all when fewer).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    top: Option<u64>,
    /// Print JSON: a list of {"image", "predictions": [{"index", "label", "probability"}]}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (ckpt, path) = args.source.load()?;
    let mut net = ckpt.inference_network(&path)?;
    let pre = &ckpt.preprocess;
    let k = ckpt.classes.len();
    let top_k = match args.top {
        None => k.min(5),
        Some(t) if t > k as u64 => anyhow::bail!("--top {t} is more than the {k} classes of {}", path.display()),
        Some(t) => t as usize,
    };
    let mut results = Vec::new();
    let mut failed = 0;
    for image in &args.images {
        let prepared = read_image(image, pre.channels)
            .and_then(|img| prepare_views(&img, &pre.eval_view, &pre.normalize, pre.input_size));
        let (x, shape) = match prepared {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let views = shape[0];
        let logits = net.infer(&Tensor::from_vec(shape, x));
        if let Some(bad) = logits.data().iter().find(|v| !v.is_finite()) {
            eprintln!(
                "error: {}: the network's output is not finite ({bad}); the weights of {} overflow on this image",
                image.display(),
                path.display()
            );
            failed += 1;
            continue;
        }
        let mut probs = vec![0.0; logits.len()];
        softmax_rows(logits.data(), k, &mut probs);
        // Multi-view presets average the views' softmax outputs, as evaluation does.
        let mut mean = vec![0.0f64; k];
        for row in probs.chunks_exact(k) {
            mean.iter_mut().zip(row).for_each(|(m, p)| *m += f64::from(*p) / views as f64);
        }
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| mean[b].total_cmp(&mean[a]).then(a.cmp(&b)));
        let top: Vec<serde_json::Value> = order
            .iter()
            .take(top_k)
            .map(|&i| serde_json::json!({"index": i, "label": ckpt.classes[i], "probability": mean[i]}))
            .collect();
        if !args.json {
            println!("{}", image.display());
            for p in &top {
                println!(
                    "  {:>6.2}%  {} ({})",
                    100.0 * p["probability"].as_f64().unwrap_or(0.0),
                    p["label"].as_str().unwrap_or_default(),
                    p["index"]
                );
            }
        }
        // Lossy: a file name need not be UTF-8, and JSON strings must be.
        results.push(serde_json::json!({"image": image.to_string_lossy(), "predictions": top}));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} image(s) could not be read or classified", args.images.len());
    }
    Ok(())
}
