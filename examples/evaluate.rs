//! Evaluates a checkpoint on the test split of a dataset.
//!
//! `cargo run --release -p resnet-examples --example evaluate CHECKPOINT [IMAGEFOLDER]` (the
//! synthetic dataset when no folder is given).

use resnet_data::{open, DatasetKind, Loader, LoaderConfig, LoaderMode, OpenOptions, Shard};
use resnet_train::checkpoint::Checkpoint;
use resnet_train::evaluate::evaluate;
use std::path::PathBuf;

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path: PathBuf = args.next().ok_or_else(|| anyhow::anyhow!("usage: evaluate CHECKPOINT [IMAGEFOLDER]"))?.into();
    let data: Option<PathBuf> = args.next().map(Into::into);
    let ckpt = Checkpoint::load(&path)?;
    let mut net = ckpt.network(&path)?;
    let kind = if data.is_some() { DatasetKind::ImageFolder } else { DatasetKind::Synthetic };
    let splits = open(kind, data.as_deref(), &OpenOptions::default())?;
    let loader = Loader::new(
        splits.test,
        LoaderConfig {
            batch_size: 250,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
            mode: LoaderMode::Eval(ckpt.preprocess.eval_view.clone()),
            normalize: ckpt.preprocess.normalize.clone(),
            shard: Shard::WHOLE,
        },
    )?;
    let r = evaluate(&mut net, &loader, |_| {})?;
    println!(
        "{}: top-1 error {:.2}%, top-5 error {:.2}%, loss {:.4} on {} images",
        ckpt.spec.name, r.top1_error, r.top5_error, r.loss, r.count
    );
    Ok(())
}
