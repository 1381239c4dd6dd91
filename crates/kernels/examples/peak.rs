//! Measures the multiply-add peak of one core and of two threads (no memory traffic): f32 FMA,
//! and bf16 `vdpbf16ps` (two multiply-adds per f32 lane) where the CPU has AVX512_BF16.
use std::arch::x86_64::*;
use std::time::Instant;

const CHAINS: usize = 24;

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

/// GFLOP/s of `spin` (`flops_per_iter` per iteration) on one thread and on two.
fn measure(name: &str, flops_per_iter: f64, spin: fn(usize) -> f32) {
    let iters = 20_000_000;
    let flops = iters as f64 * flops_per_iter;
    let t = Instant::now();
    let r = spin(iters);
    let dt = t.elapsed().as_secs_f64();
    println!("{name}, 1 thread: {:.1} GFLOP/s ({r})", flops / dt / 1e9);
    let t = Instant::now();
    let hs: Vec<_> = (0..2).map(|_| std::thread::spawn(move || spin(iters))).collect();
    for h in hs {
        h.join().unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("{name}, 2 threads: {:.1} GFLOP/s", 2.0 * flops / dt / 1e9);
}

fn main() {
    assert!(std::arch::is_x86_feature_detected!("avx512f"), "this measurement needs AVX-512");
    // SAFETY: AVX-512F was checked above.
    measure("f32 FMA", (CHAINS * 16 * 2) as f64, |n| unsafe { spin_f32(n) });
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: AVX512_BF16 was checked just above.
        measure("bf16 vdpbf16ps", (CHAINS * 16 * 4) as f64, |n| unsafe { spin_bf16(n) });
    } else {
        println!("bf16: this CPU lacks AVX512_BF16");
    }
}
