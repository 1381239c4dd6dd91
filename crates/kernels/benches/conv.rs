//! Convolution passes on the layer shapes of ResNet-20 (CIFAR, batch 128) and ResNet-50
//! (ImageNet, batch 16, and its deep layers at batch 1, whose forward pass is also timed with
//! the weights evicted from the caches, and as inference runs it, with the batch norms and
//! residual fused in; ResNet-20's also as training runs them, with the input's batch norm and
//! the output's statistics fused in), for every algorithm this CPU runs (the bf16 ones where
//! it has them). Throughput is reported in multiply-adds.
//!
//! `cargo bench -p resnet-kernels --bench conv [-- FILTER]`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use resnet_kernels::conv::{
    backward_data, backward_weight, forward, ConvAlgorithm, ConvParams, ConvShape, ConvWeight, Epilogue,
    InputTransform, OutputTransform,
};
use resnet_kernels::rng::Rng;
use resnet_kernels::{CpuFeatures, Isa};
use resnet_kernels::{KernelConfig, Workspace};

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

fn shapes() -> Vec<(&'static str, ConvShape)> {
    let c = |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
    vec![
        ("r20-stem", c(128, 32, 3, 16, 3, 1)),
        ("r20-stage1", c(128, 32, 16, 16, 3, 1)),
        ("r20-down2", c(128, 32, 16, 32, 3, 2)),
        ("r20-stage2", c(128, 16, 32, 32, 3, 1)),
        ("r20-stage3", c(128, 8, 64, 64, 3, 1)),
        ("r50-stem", c(16, 224, 3, 64, 7, 2)),
        ("r50-1x1-56", c(16, 56, 64, 256, 1, 1)),
        ("r50-3x3-56", c(16, 56, 64, 64, 3, 1)),
        ("r50-3x3-28", c(16, 28, 128, 128, 3, 1)),
        ("r50-3x3-7", c(16, 7, 512, 512, 3, 1)),
        ("r50-b1-1x1-56-up", c(1, 56, 64, 256, 1, 1)),
        ("r50-b1-1x1-56-down", c(1, 56, 256, 64, 1, 1)),
        ("r50-b1-3x3-14", c(1, 14, 256, 256, 3, 1)),
        ("r50-b1-3x3-7", c(1, 7, 512, 512, 3, 1)),
        ("r50-b1-1x1-7-up", c(1, 7, 512, 2048, 1, 1)),
        ("r50-b1-1x1-7-down", c(1, 7, 2048, 512, 1, 1)),
        ("r50-b1-1x1-14-down", c(1, 14, 1024, 256, 1, 1)),
    ]
}

/// The version every benchmarked weight carries: none of them changes.
const WEIGHT_VERSION: u64 = 1;

fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// The algorithms this CPU runs.
fn algorithms() -> Vec<ConvAlgorithm> {
    let mut algos = vec![ConvAlgorithm::Im2colGemm];
    if CpuFeatures::current().isa >= Isa::Avx512 {
        algos.insert(0, ConvAlgorithm::Direct);
        algos.insert(1, ConvAlgorithm::Winograd);
    }
    if resnet_kernels::conv::bf16_supported() {
        algos.push(ConvAlgorithm::DirectBf16);
        algos.push(ConvAlgorithm::WinogradBf16);
    }
    if resnet_kernels::conv::amx_supported() {
        algos.push(ConvAlgorithm::AmxBf16);
    }
    algos
}

fn bench(c: &mut Criterion) {
    // The kernels' switches (RESNET_ISA, RESNET_WINOGRAD, ...) apply here as in the CLI.
    KernelConfig::from_env().and_then(|k| k.install()).expect("kernel configuration");
    let algos = algorithms();
    for (name, s) in shapes() {
        let mut rng = Rng::new(1);
        let (x, w, g) =
            (random(s.input_len(), &mut rng), random(s.weight_len(), &mut rng), random(s.output_len(), &mut rng));
        let (mut y, mut dx, mut dw) = (vec![0.0; s.output_len()], vec![0.0; s.input_len()], vec![0.0; s.weight_len()]);
        let mut ws = Workspace::new();
        let mut group = c.benchmark_group(name);
        group.sample_size(10).throughput(Throughput::Elements(s.macs()));
        for &algo in &algos {
            let id = |pass: &str| BenchmarkId::new(pass, format!("{algo:?}"));
            // The weight keeps one version (it never changes here), as a network layer's does.
            let params = ConvParams::new(s, algo, ConvWeight::versioned(&w, WEIGHT_VERSION));
            // The forward pass as a network layer runs it: what it derives from the weight may be
            // kept between calls.
            group.bench_function(id("forward"), |b| b.iter(|| forward(&params, &x, Epilogue::None, &mut y, &mut ws)));
            // As an inference network runs it: the batch norm and ReLU of the layer before
            // applied to the input as it is read, its own batch norm, a residual and ReLU to
            // the output as it is written.
            if name.starts_with("r50-b1") {
                let (scale, shift) = (vec![0.9; s.cout.max(s.cin)], vec![0.1; s.cout.max(s.cin)]);
                let t = InputTransform { scale: &scale[..s.cin], shift: &shift[..s.cin] };
                let out = OutputTransform {
                    scale: &scale[..s.cout],
                    shift: &shift[..s.cout],
                    residual: Some(&g),
                    relu: true,
                };
                let p = params.with_input_transform(Some(t));
                group.bench_function(id("forward-infer"), |b| {
                    b.iter(|| forward(&p, &x, Epilogue::Transform(out), &mut y, &mut ws))
                });
            }
            // As a training network runs it: the batch norm and ReLU of the layer before
            // applied to the input as it is read, the batch-norm sums of the output gathered as
            // it is written; the weight gradient reads the input through the same transform.
            if name.starts_with("r20") {
                let (scale, shift) = (vec![0.9; s.cin], vec![0.1; s.cin]);
                let t = InputTransform { scale: &scale, shift: &shift };
                let mut stats = vec![0.0f64; 2 * s.cout];
                let p = params.with_input_transform(Some(t));
                group.bench_function(id("forward-train"), |b| {
                    b.iter(|| forward(&p, &x, Epilogue::Stats(&mut stats), &mut y, &mut ws))
                });
                group.bench_function(id("backward-weight-train"), |b| {
                    b.iter(|| backward_weight(&p, &x, &g, &mut dw, true, &mut ws))
                });
            }
            group.bench_function(id("backward-data"), |b| {
                b.iter(|| backward_data(&params, &g, &mut dx, false, &mut ws))
            });
            group.bench_function(id("backward-weight"), |b| {
                b.iter(|| backward_weight(&params, &x, &g, &mut dw, false, &mut ws))
            });
            // At batch 1 a network reads each layer's weights from memory, not from cache:
            // the forward pass again after writing 96 MB elsewhere (not timed) to evict them.
            if name.starts_with("r50-b1")
                && matches!(algo, ConvAlgorithm::Direct | ConvAlgorithm::Im2colGemm | ConvAlgorithm::Winograd)
            {
                let mut flush = vec![0u8; 96 << 20];
                group.bench_function(id("forward-cold"), |b| {
                    b.iter_batched(
                        || flush.iter_mut().step_by(64).for_each(|v| *v = v.wrapping_add(1)),
                        |()| forward(&params, &x, Epilogue::None, &mut y, &mut ws),
                        BatchSize::PerIteration,
                    )
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
