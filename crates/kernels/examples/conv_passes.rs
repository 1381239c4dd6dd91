//! Times the three passes of ResNet-50's training layers (batch 32, 224 px) for every
//! algorithm this CPU runs, in milliseconds and GFLOP/s (two per multiply-add, Winograd counted
//! as the direct convolution it replaces): the per-layer view behind `resnet bench --profile`,
//! for choosing algorithms and reading the achieved rate against `peak`.
//!
//! The forward pass is timed twice: plain (`F`), and as bf16 training runs it (`F tr`, bf16
//! algorithms only): a bf16 input read through the previous batch norm and ReLU, the output
//! stored in bf16 with its batch-norm sums.
//!
//! `cargo run --release -p resnet-kernels --example conv_passes [-- FILTER [REPS [ALGORITHM]]]`
//!
//! FILTER keeps the layers whose name contains it; REPS (default 3) timed calls per pass after
//! one warm-up, of which the fastest is printed; ALGORITHM keeps the algorithms whose name
//! (`DirectBf16`, `Winograd`, ...) contains it.

use resnet_kernels::activations::Activations;
use resnet_kernels::conv::{backward_data, backward_weight, forward, ConvAlgorithm, ConvParams, ConvShape, ConvWeight};
use resnet_kernels::conv::{ConvPass, Epilogue, InputTransform};
use resnet_kernels::rng::Rng;
use resnet_kernels::{CpuFeatures, Isa, KernelConfig, Workspace};
use std::time::Instant;

#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

/// One layer class of ResNet-50 v1.5 at batch 32 (name, shape).
fn layers() -> Vec<(&'static str, ConvShape)> {
    let c = |hw, cin, cout, k, stride| ConvShape { n: 32, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
    vec![
        ("stem", c(224, 3, 64, 7, 2)),
        ("1x1-56-up", c(56, 64, 256, 1, 1)),
        ("1x1-56-down", c(56, 256, 64, 1, 1)),
        ("3x3-56", c(56, 64, 64, 3, 1)),
        ("1x1-28-down", c(28, 512, 128, 1, 1)),
        ("3x3-28", c(28, 128, 128, 3, 1)),
        ("1x1-14-down", c(14, 1024, 256, 1, 1)),
        ("1x1-14-up", c(14, 256, 1024, 1, 1)),
        ("3x3-14", c(14, 256, 256, 3, 1)),
        ("1x1-7-up", c(7, 512, 2048, 1, 1)),
        ("1x1-7-down", c(7, 2048, 512, 1, 1)),
        ("3x3-7", c(7, 512, 512, 3, 1)),
        ("3x3s2-56", c(56, 128, 128, 3, 2)),
        ("3x3s2-28", c(28, 256, 256, 3, 2)),
        ("3x3s2-14", c(14, 512, 512, 3, 2)),
        ("proj-56", c(56, 256, 512, 1, 2)),
        ("proj-28", c(28, 512, 1024, 1, 2)),
        ("proj-14", c(14, 1024, 2048, 1, 2)),
    ]
}

/// The algorithms this CPU runs.
fn algorithms() -> Vec<ConvAlgorithm> {
    let mut algos = vec![ConvAlgorithm::Im2colGemm];
    if CpuFeatures::current().isa >= Isa::Avx512 {
        algos.extend([ConvAlgorithm::Direct, ConvAlgorithm::Winograd]);
    }
    if resnet_kernels::conv::bf16_supported() {
        algos.extend([ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16]);
    }
    algos
}

/// The fastest of `reps` timed calls of `f` after one warm-up, in milliseconds.
fn fastest_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let config = KernelConfig::from_env().expect("kernel configuration");
    config.install().expect("install the kernel configuration");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.first().cloned().unwrap_or_default();
    let reps = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let algorithm = args.get(2).cloned().unwrap_or_default();
    let cpu = CpuFeatures::current();
    println!(
        "{:<12} {:<13} {:>9} {:>9} {:>9} {:>9}   GFLOP/s F / F tr / BD / BW   chosen F/BD/BW (f32, bf16)",
        "layer", "algorithm", "F ms", "F tr ms", "BD ms", "BW ms"
    );
    for (name, s) in layers().into_iter().filter(|(n, _)| n.contains(&filter)) {
        let mut rng = Rng::new(1);
        let mut random = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>();
        let (x, w, g) = (random(s.input_len()), random(s.weight_len()), random(s.output_len()));
        let (mut y, mut dx, mut dw) = (vec![0.0; s.output_len()], vec![0.0; s.input_len()], vec![0.0; s.weight_len()]);
        let x_bf16: Vec<u16> = x.iter().map(|v| bf16_bits(*v)).collect();
        let (scale, shift) = (random(s.cin), random(s.cin));
        let (mut stored, mut sums) = (vec![0u16; s.output_len()], vec![0.0f64; 2 * s.cout]);
        let mut ws = Workspace::new();
        let chosen = |precision| {
            let k = KernelConfig { precision, ..config };
            let f = ConvAlgorithm::choose(&s, ConvPass::Forward, &k, &cpu);
            let b = ConvAlgorithm::choose(&s, ConvPass::Backward, &k, &cpu);
            let w = ConvAlgorithm::choose(&s, ConvPass::WeightGradient, &k, &cpu);
            format!("{f:?}/{b:?}/{w:?}")
        };
        let chosen = format!(
            "{}, {}",
            chosen(resnet_kernels::conv::Precision::F32),
            chosen(resnet_kernels::conv::Precision::Bf16)
        );
        let gflops = |ms: f64| 2.0 * s.macs() as f64 / ms / 1e6;
        for algo in algorithms().into_iter().filter(|a| format!("{a:?}").contains(&algorithm)) {
            let p = ConvParams::new(s, algo, ConvWeight::new(&w));
            let f = fastest_ms(reps, || forward(&p, &x, Epilogue::None, &mut y, &mut ws));
            let f_train = if matches!(algo, ConvAlgorithm::DirectBf16 | ConvAlgorithm::WinogradBf16) {
                let t = InputTransform { scale: &scale, shift: &shift };
                let p = p.with_input_transform(Some(t));
                fastest_ms(reps, || {
                    let epilogue = Epilogue::StatsStoringBf16 { sums: &mut sums, stored: &mut stored };
                    forward(&p, Activations::Bf16(&x_bf16), epilogue, &mut [], &mut ws)
                })
            } else {
                f64::NAN
            };
            let bd = if s.cin >= 16 {
                fastest_ms(reps, || backward_data(&p, &g, &mut dx, false, &mut ws))
            } else {
                f64::NAN
            };
            let bw = fastest_ms(reps, || backward_weight(&p, &x, &g, &mut dw, false, &mut ws));
            println!(
                "{name:<12} {:<13} {f:>9.2} {f_train:>9.2} {bd:>9.2} {bw:>9.2}   {:>5.0} / {:>5.0} / {:>5.0} / {:>5.0}   {chosen}",
                format!("{algo:?}"),
                gflops(f),
                gflops(f_train),
                gflops(bd),
                gflops(bw)
            );
        }
    }
}

/// `v` rounded to bf16 (to nearest, ties to even), as the bits a bf16 activation holds.
fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}
