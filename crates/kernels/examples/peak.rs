//! Measures the FMA peak of one core and of all threads (no memory traffic).
use std::arch::x86_64::*;
use std::time::Instant;

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn spin(iters: usize) -> f32 {
    let mut acc = [_mm512_set1_ps(0.0); 24];
    let a = _mm512_set1_ps(1.000001);
    let b = _mm512_set1_ps(0.999999);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

fn main() {
    assert!(std::arch::is_x86_feature_detected!("avx512f"), "this measurement needs AVX-512");
    let iters = 20_000_000;
    let flops = iters as f64 * 24.0 * 16.0 * 2.0;
    let t = Instant::now();
    // SAFETY: AVX-512F was checked above.
    let r = unsafe { spin(iters) };
    let dt = t.elapsed().as_secs_f64();
    println!("1 thread: {:.1} GFLOP/s ({r})", flops / dt / 1e9);
    let t = Instant::now();
    // SAFETY: as above.
    let hs: Vec<_> = (0..2).map(|_| std::thread::spawn(move || unsafe { spin(iters) })).collect();
    for h in hs {
        h.join().unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("2 threads: {:.1} GFLOP/s", 2.0 * flops / dt / 1e9);
}
