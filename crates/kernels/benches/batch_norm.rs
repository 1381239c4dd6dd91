//! Batch-norm passes on the largest ResNet-20 activation (batch 128, 32x32x16): bytes moved per
//! second is what matters for these memory-bound passes.
//!
//! `cargo bench -p resnet-kernels --bench batch_norm`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use resnet_kernels::batch_norm::{
    backward_input, backward_sums, channel_mean_var, scale_shift_act, InputGradient, ReluMask,
};
use resnet_kernels::rng::Rng;
use resnet_kernels::Workspace;

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

fn bench(c: &mut Criterion) {
    let (rows, ch) = (128 * 32 * 32, 16);
    let mut rng = Rng::new(2);
    let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect() };
    let (x, dy, r) = (v(rows * ch), v(rows * ch), v(rows * ch));
    let (scale, shift) = (v(ch), v(ch));
    let mut out = vec![0.0; rows * ch];
    let (mut mean, mut var) = (vec![0.0; ch], vec![0.0; ch]);
    let (mut sg, mut sgx) = (vec![0.0; ch], vec![0.0; ch]);
    let rstd = vec![1.0; ch];
    let mut ws = Workspace::new();
    let bytes = (rows * ch * 4) as u64;
    let mut group = c.benchmark_group("batch-norm");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("statistics", |b| b.iter(|| channel_mean_var(&x, ch, &mut mean, &mut var, &mut ws)));
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function("apply+residual+relu", |b| {
        b.iter(|| scale_shift_act(&x, ch, &scale, &shift, Some(&r), true, &mut out))
    });
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function("backward-sums (fused mask)", |b| {
        b.iter(|| {
            let mask = ReluMask::Affine { scale: &scale, shift: &shift };
            backward_sums(&x, ch, &mean, &rstd, &dy, mask, &mut sg, &mut sgx, &mut ws)
        })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function("backward-input (fused mask)", |b| {
        b.iter(|| {
            let mask = ReluMask::Affine { scale: &scale, shift: &shift };
            backward_input(
                &x,
                ch,
                &mean,
                &rstd,
                &scale,
                &dy,
                mask,
                &sg,
                &sgx,
                InputGradient::F32 { dx: &mut out, accumulate: false },
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
