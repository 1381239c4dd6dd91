//! Classifies one image with a checkpoint.
//!
//! `cargo run --release -p resnet-examples --example predict CHECKPOINT IMAGE`

use resnet_data::{prepare_views, read_image};
use resnet_nn::ops::softmax_rows;
use resnet_nn::Tensor;
use resnet_train::checkpoint::Checkpoint;
use std::path::PathBuf;

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(ckpt_path), Some(image)) = (args.next().map(PathBuf::from), args.next().map(PathBuf::from)) else {
        anyhow::bail!("usage: predict CHECKPOINT IMAGE");
    };
    let ckpt = Checkpoint::load(&ckpt_path)?;
    let mut net = ckpt.network(&ckpt_path)?;
    let p = &ckpt.preprocess;
    let img = read_image(&image, p.channels)?;
    let (x, shape) = prepare_views(&img, &p.eval_view, &p.normalize, p.input_size)?;
    let logits = net.infer(&Tensor::from_vec(shape, x));
    let k = ckpt.classes.len();
    let mut probs = vec![0.0; logits.len()];
    softmax_rows(logits.data(), k, &mut probs);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    for &i in order.iter().take(5) {
        println!("{:6.2}%  {}", 100.0 * probs[i], ckpt.classes[i]);
    }
    Ok(())
}
