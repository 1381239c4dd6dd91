//! `resnet plot RUN...`: training curves of one or more runs in one figure (training error
//! dashed, test error solid, against iterations, as the paper's Fig. 6).

use anyhow::{bail, Context};
use resnet_train::metrics;
use resnet_train::plot::{self, Figure, Panel};
use std::path::PathBuf;

/// Arguments of `resnet plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directories (each with a metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output file stem: writes STEM.png and STEM.svg (default: curves in the single run, or
    /// ./curves for several).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Legend labels, one per run (default: the directory names).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// Figure title.
    #[arg(long, default_value = "training curves")]
    title: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(l) = &args.labels {
        if l.len() != args.runs.len() {
            bail!("{} labels for {} runs", l.len(), args.runs.len());
        }
    }
    let mut series = Vec::new();
    for (i, dir) in args.runs.iter().enumerate() {
        let history = metrics::read(dir).with_context(|| format!("cannot read the metrics of {}", dir.display()))?;
        if history.is_empty() {
            bail!("{} has no metrics.jsonl rows", dir.display());
        }
        let name = match &args.labels {
            Some(l) => l[i].clone(),
            None => dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        };
        series.extend(metrics::error_series(&name, &history, i));
    }
    let fig = Figure {
        panels: vec![Panel {
            title: args.title.clone(),
            x_label: "iterations".into(),
            y_label: "error (%)".into(),
            series,
            y_range: None,
        }],
    };
    let stem = args.out.clone().unwrap_or_else(|| match args.runs.as_slice() {
        [one] => one.join("curves"),
        _ => PathBuf::from("curves"),
    });
    plot::save(&fig, &stem)?;
    println!("{}  {}", stem.with_extension("png").display(), stem.with_extension("svg").display());
    Ok(())
}
