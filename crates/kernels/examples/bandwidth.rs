//! Memory bandwidth: copy and read of 8 MiB and 64 MiB buffers, 1 and 2 threads.
use std::time::Instant;
fn main() {
    for mb in [1usize, 8, 64] {
        let n = mb * 1024 * 1024 / 4;
        let src = vec![1.0f32; n];
        let mut dst = vec![0.0f32; n];
        let reps = (256 / mb).max(4);
        dst.copy_from_slice(&src);
        let t = Instant::now();
        for _ in 0..reps {
            dst.copy_from_slice(&src);
            std::hint::black_box(&mut dst);
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        let t2 = Instant::now();
        let mut s = 0.0f32;
        for _ in 0..reps {
            s += src.iter().sum::<f32>();
        }
        let dr = t2.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{mb} MiB: copy {:.1} GB/s (read+write), read-sum {:.1} GB/s {}",
            2.0 * (n * 4) as f64 / dt / 1e9,
            (n * 4) as f64 / dr / 1e9,
            s > 0.0
        );
    }
}
