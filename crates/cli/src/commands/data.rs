//! `resnet data`: what a dataset holds (counts per split and class, image size, channel
//! statistics), and whether it reads cleanly.

use anyhow::Context;
use resnet_data::{
    detect_format, inspect_with_validation, open, validation_split, DatasetKind, OpenOptions, SyntheticConfig,
};
use std::io::Write as _;
use std::path::PathBuf;

/// Arguments of `resnet data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset format: cifar10, cifar100, imagefolder, mnist, fashion-mnist, kmnist, idx, synthetic
    /// (default: recognised from the files at --data, or an error saying what was found).
    #[arg(long, required_unless_present = "data")]
    dataset: Option<DatasetKind>,
    /// Where the dataset is (not needed for synthetic).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print JSON (`train.count`, `test.count`, `classes`, `per_class`, `mean`, `std`, ...).
    #[arg(long)]
    json: bool,
    /// Skip bad samples and list them instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Hold out this many training samples as a validation set (as `train --val-split` would).
    #[arg(long)]
    val_split: Option<usize>,
    /// Seed of the validation split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CIFAR-100: use the 20 coarse labels.
    #[arg(long)]
    coarse: bool,
}

/// The format `--dataset` names, or the one recognised at `--data`, said on standard error (by
/// the first rank only, under mpirun).
pub fn resolve_dataset(dataset: Option<DatasetKind>, data: Option<&std::path::Path>) -> anyhow::Result<DatasetKind> {
    match (dataset, data) {
        (Some(kind), _) => Ok(kind),
        (None, Some(path)) => {
            let found = detect_format(path)?;
            if !super::ranks::follower() {
                eprintln!("--data {}: recognised as {found}", path.display());
            }
            Ok(found.kind)
        }
        (None, None) => anyhow::bail!("name a dataset with --dataset, or its files with --data"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kind = resolve_dataset(args.dataset, args.data.as_deref())?;
    let opts = OpenOptions {
        cifar100_coarse: args.coarse,
        skip_bad: args.skip_bad,
        synthetic: SyntheticConfig::default(),
        in_memory: None,
    };
    let mut splits = open(kind, args.data.as_deref(), &opts).with_context(|| format!("opening {kind} dataset"))?;
    let val = match args.val_split {
        Some(n) => {
            let (rest, val) = validation_split(&splits.train, n, args.seed)?;
            splits.train = rest;
            Some(val)
        }
        None => None,
    };
    let info = inspect_with_validation(&splits, val.as_ref()).context("computing statistics")?;
    let text = if args.json { serde_json::to_string_pretty(&info)? + "\n" } else { table(&args, kind, &info) };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `resnet data ... | head` closing the pipe early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The human-readable report.
fn table(args: &Args, kind: DatasetKind, info: &resnet_data::Inspection) -> String {
    // Lines of the report; joined at the end.
    let mut o: Vec<String> = Vec::new();
    let where_ = args.data.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default();
    o.push(format!("dataset   {kind}{where_}"));
    let size = info.image_size.map_or_else(|| "varies".to_string(), |[h, w]| format!("{h}x{w}"));
    o.push(format!("images    {size}, {} channel(s)", info.channels));
    let mut splits_line = format!("train {}", info.train.count);
    if let Some(v) = &info.val {
        splits_line += &format!(", val {}", v.count);
    }
    splits_line += &format!(", test {}", info.test.count);
    o.push(format!("samples   {splits_line}"));
    let fmt = |v: &[f32]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
    o.push(format!("mean      {}   (per channel, 0..255, training split)", fmt(&info.mean)));
    o.push(format!("std       {}", fmt(&info.std)));
    o.push(format!("classes   {}", info.classes.len()));
    let width = info.classes.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
    let val_head = if info.per_class.val.is_some() { format!(" {:>8}", "val") } else { String::new() };
    o.push(format!("  {:>5}  {:<width$} {:>8}{val_head} {:>8}", "label", "class", "train", "test"));
    for (i, name) in info.classes.iter().enumerate() {
        let val = info.per_class.val.as_ref().map(|v| format!(" {:>8}", v[i])).unwrap_or_default();
        o.push(format!("  {i:>5}  {name:<width$} {:>8}{val} {:>8}", info.per_class.train[i], info.per_class.test[i]));
    }
    if args.skip_bad && info.skipped.is_empty() {
        o.push("skipped   none".into());
    }
    if !info.skipped.is_empty() {
        o.push(format!("skipped   {} bad sample(s):", info.skipped.len()));
        for s in &info.skipped {
            o.push(format!("  {s}"));
        }
    }
    o.join("\n") + "\n"
}
