//! Measures the multiply-add peak of one core and of two threads (no memory traffic): f32 FMA,
//! bf16 `vdpbf16ps` (two multiply-adds per f32 lane) where the CPU has AVX512_BF16, and int8
//! `vpdpbusd` (four u8 x i8 multiply-adds per i32 lane) where it has AVX512_VNNI; integer
//! figures are GOP/s. On CPUs without AVX-512, the AVX2 figures: f32 FMA on 256-bit vectors and
//! int8 as the AVX2 kernel computes it, `vpmaddwd` plus `vpaddd` (two 16-bit multiply-adds per
//! i32 lane).
use std::arch::x86_64::*;
use std::time::Instant;

/// Independent accumulators: enough to hide the multiply-add latency on two pipes, few enough
/// to stay in registers with the operands (24 made the compiler spill some to the stack).
const CHAINS: usize = 16;

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn spin_f32(iters: usize) -> f32 {
    let mut acc = [_mm512_set1_ps(0.0); CHAINS];
    let a = _mm512_set1_ps(1.000001);
    let b = _mm512_set1_ps(0.999999);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().fold(0.0, |s, &v| s + _mm512_reduce_add_ps(v))
}

/// # Safety
/// The CPU must support AVX-512F and AVX512_BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn spin_bf16(iters: usize) -> f32 {
    let mut acc = [_mm512_set1_ps(0.0); CHAINS];
    let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
    let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, a, b);
        }
    }
    acc.iter().fold(0.0, |s, &v| s + _mm512_reduce_add_ps(v))
}

/// # Safety
/// The CPU must support AVX-512F and AVX512_VNNI.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn spin_int8(iters: usize) -> f32 {
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    let a = _mm512_set1_epi8(3);
    let b = _mm512_set1_epi8(-2);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    acc.iter().fold(0.0, |s, &v| s + _mm512_reduce_add_epi32(v) as f32)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn spin_f32_avx2(iters: usize) -> f32 {
    let mut acc = [_mm256_set1_ps(0.0); CHAINS / 2];
    let a = _mm256_set1_ps(1.000001);
    let b = _mm256_set1_ps(0.999999);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum()
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn spin_int8_avx2(iters: usize) -> f32 {
    let mut acc = [_mm256_setzero_si256(); CHAINS / 2 + 4];
    let src = [_mm256_set1_epi32(0x0001_0003); CHAINS / 2 + 4];
    let b = _mm256_set1_epi16(-2);
    for _ in 0..iters {
        // Operands read afresh each round (from L1), so no product is loop-invariant.
        let a = std::hint::black_box(&src);
        for (v, x) in acc.iter_mut().zip(a) {
            *v = _mm256_add_epi32(*v, _mm256_madd_epi16(*x, b));
        }
    }
    let mut lanes = [0i32; 8];
    let sum = acc.iter().fold(_mm256_setzero_si256(), |s, &v| _mm256_add_epi32(s, v));
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sum);
    lanes.iter().map(|&v| v as f32).sum()
}

/// Rounds per measurement: the VM's throughput wanders from one moment to the next (other
/// tenants), so each figure is the best and the median of several rounds of about 0.3 s.
const ROUNDS: usize = 7;

/// GFLOP/s of `spin` (`flops_per_iter` per iteration) on `threads` threads started together,
/// per round.
fn rounds(threads: usize, flops_per_iter: f64, spin: fn(usize) -> f32) -> Vec<f64> {
    let iters = 40_000_000;
    let flops = threads as f64 * iters as f64 * flops_per_iter;
    (0..ROUNDS)
        .map(|_| {
            let start = std::sync::Barrier::new(threads + 1);
            let dt = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        sc.spawn(|| {
                            start.wait();
                            std::hint::black_box(spin(iters))
                        })
                    })
                    .collect();
                start.wait();
                let t = Instant::now();
                hs.into_iter().for_each(|h| {
                    h.join().unwrap();
                });
                t.elapsed().as_secs_f64()
            });
            flops / dt / 1e9
        })
        .collect()
}

/// Prints the best and median GFLOP/s of `spin` on one thread and on two.
fn measure(name: &str, flops_per_iter: f64, spin: fn(usize) -> f32) {
    for threads in [1, 2] {
        let mut r = rounds(threads, flops_per_iter, spin);
        r.sort_by(f64::total_cmp);
        let plural = if threads == 1 { "" } else { "s" };
        println!(
            "{name}, {threads} thread{plural}: best {:.1} GFLOP/s, median {:.1} ({ROUNDS} rounds)",
            r[ROUNDS - 1],
            r[ROUNDS / 2]
        );
    }
}

fn main() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        assert!(
            std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            "this measurement needs AVX-512 or AVX2 with FMA"
        );
        println!("no AVX-512: the AVX2 kernels' peaks");
        // SAFETY: AVX2 and FMA were checked above.
        measure("f32 FMA (256-bit)", (CHAINS / 2 * 8 * 2) as f64, |n| unsafe { spin_f32_avx2(n) });
        // SAFETY: as above.
        measure("int8 vpmaddwd + vpaddd (GOP/s)", ((CHAINS / 2 + 4) * 16 * 2) as f64, |n| unsafe { spin_int8_avx2(n) });
        return;
    }
    // SAFETY: AVX-512F was checked above.
    measure("f32 FMA", (CHAINS * 16 * 2) as f64, |n| unsafe { spin_f32(n) });
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: AVX512_BF16 was checked just above.
        measure("bf16 vdpbf16ps", (CHAINS * 16 * 4) as f64, |n| unsafe { spin_bf16(n) });
    } else {
        println!("bf16: this CPU lacks AVX512_BF16");
    }
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        // SAFETY: AVX512_VNNI was checked just above.
        measure("int8 vpdpbusd (GOP/s)", (CHAINS * 64 * 2) as f64, |n| unsafe { spin_int8(n) });
    } else {
        println!("int8: this CPU lacks AVX512_VNNI");
    }
}
