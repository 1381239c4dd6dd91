//! Times the int8 convolution (`conv::int8::forward_int8`) on every distinct layer shape of
//! ResNet-50 v1.5 at 224 px, and prints each layer's GOP/s (2 x multiply-adds per second) and
//! its share of the network's int8 convolution time; compare with the `peak` example's
//! `vpdpbusd` figure.
//!
//! `cargo run --release -p resnet-kernels --example int8_layers [BATCH [REPS]]`
use resnet_kernels::conv::int8::{forward_int8, pack_weights, Int8Input, Int8Output, Int8Residual, Requant};
use resnet_kernels::conv::ConvShape;
use std::time::Instant;

/// `(name, count in the network, input side, cin, cout, kernel, stride)`.
const LAYERS: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("stem 7x7/2", 1, 224, 3, 64, 7, 2),
    ("1x1 64->64 @56", 1, 56, 64, 64, 1, 1),
    ("1x1 256->64 @56", 2, 56, 256, 64, 1, 1),
    ("3x3 64 @56", 3, 56, 64, 64, 3, 1),
    ("1x1 64->256 @56", 4, 56, 64, 256, 1, 1),
    ("1x1 256->128 @56", 1, 56, 256, 128, 1, 1),
    ("3x3/2 128 @56", 1, 56, 128, 128, 3, 2),
    ("proj 256->512 /2 @56", 1, 56, 256, 512, 1, 2),
    ("1x1 512->128 @28", 3, 28, 512, 128, 1, 1),
    ("3x3 128 @28", 3, 28, 128, 128, 3, 1),
    ("1x1 128->512 @28", 4, 28, 128, 512, 1, 1),
    ("1x1 512->256 @28", 1, 28, 512, 256, 1, 1),
    ("3x3/2 256 @28", 1, 28, 256, 256, 3, 2),
    ("proj 512->1024 /2 @28", 1, 28, 512, 1024, 1, 2),
    ("1x1 1024->256 @14", 5, 14, 1024, 256, 1, 1),
    ("3x3 256 @14", 5, 14, 256, 256, 3, 1),
    ("1x1 256->1024 @14", 6, 14, 256, 1024, 1, 1),
    ("1x1 1024->512 @14", 1, 14, 1024, 512, 1, 1),
    ("3x3/2 512 @14", 1, 14, 512, 512, 3, 2),
    ("proj 1024->2048 /2 @14", 1, 14, 1024, 2048, 1, 2),
    ("1x1 2048->512 @7", 2, 7, 2048, 512, 1, 1),
    ("3x3 512 @7", 2, 7, 512, 512, 3, 1),
    ("1x1 512->2048 @7", 3, 7, 512, 2048, 1, 1),
];

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let batch = args.first().copied().unwrap_or(1);
    let reps = args.get(1).copied().unwrap_or(if batch == 1 { 200 } else { 20 });
    println!(
        "int8 convolutions of ResNet-50 v1.5, batch {batch}, {} threads, best of {reps}",
        resnet_kernels::threads::num_threads()
    );
    println!("{:<24} {:>5} {:>9} {:>8} {:>9}", "layer", "count", "ms", "GOP/s", "share");
    let mut rows = Vec::new();
    for &(name, count, side, cin, cout, k, stride) in LAYERS {
        let s = ConvShape { n: batch, h: side, w: side, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
        let x: Vec<u8> = (0..s.input_len()).map(|i| (i * 7 % 251) as u8).collect();
        let q: Vec<i8> = (0..s.weight_len()).map(|i| (i * 13 % 255) as i8).collect();
        let w = pack_weights(&q, k, k, cin, cout);
        let (mult, offset) = (vec![1e-4f32; cout], vec![0.5f32; cout]);
        let rq = Requant { mult: &mult, offset: &offset, residual: Int8Residual::None };
        let mut y = vec![0u8; s.output_len()];
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            forward_int8(&s, Int8Input { x: &x, zero_point: 0 }, &w, &rq, Int8Output::U8 { y: &mut y, scale: 0.1 });
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ops = 2.0 * (s.rows() * s.patch() * cout) as f64;
        rows.push((name, count, best, ops));
    }
    let total: f64 = rows.iter().map(|r| r.1 as f64 * r.2).sum();
    let total_ops: f64 = rows.iter().map(|r| r.1 as f64 * r.3).sum();
    for (name, count, secs, ops) in &rows {
        let share = 100.0 * *count as f64 * secs / total;
        println!("{name:<24} {count:>5} {:>9.3} {:>8.0} {:>8.1}%", 1e3 * secs, ops / secs / 1e9, share);
    }
    println!("{:<24} {:>5} {:>9.3} {:>8.0}", "network (sum)", "", 1e3 * total, total_ops / total / 1e9);
}
