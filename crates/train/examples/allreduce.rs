//! Times the sum of a buffer over the ranks of an MPI job as the trainer makes it
//! (`Communicator::all_reduce_sum_owned`, a bucket handed to the MPI thread and back), for buffers from 4 KB to 128 MB:
//!
//! ```sh
//! cargo build --release -p resnet-train --features mpi --example allreduce
//! mpirun -np 2 target/release/examples/allreduce
//! ```
//!
//! Prints, per size, the median of several sums, the algorithm bandwidth (bytes / time) and the
//! bus bandwidth (`2 (N - 1) / N` times that: what each rank's link carries in a ring), the
//! figures of `docs/scaling.md`'s cost model.

use resnet_train::distributed::{Communicator, MpiCommunicator};
use std::time::Instant;

fn main() -> Result<(), String> {
    let comm = MpiCommunicator::init(std::time::Duration::from_secs(600))?;
    let n = comm.size();
    if comm.rank() == 0 {
        println!("{n} ranks; median of the sums of each size");
        println!("{:>10} {:>10} {:>12} {:>12}", "bytes", "ms", "algbw GB/s", "busbw GB/s");
    }
    let mut bytes = 4 << 10;
    while bytes <= 128 << 20 {
        let mut buf = vec![1.0f32; bytes / 4];
        buf = comm.all_reduce_sum_owned(buf);
        let rounds = (64 << 20) / bytes + 3;
        let mut times = Vec::with_capacity(rounds.min(50));
        for _ in 0..rounds.min(50) {
            comm.all_reduce_sum_f64(&mut [0.0]);
            let t = Instant::now();
            buf = comm.all_reduce_sum_owned(buf);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        if comm.rank() == 0 {
            let algbw = bytes as f64 / t / 1e9;
            let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
            println!("{bytes:>10} {:>10.3} {algbw:>12.2} {busbw:>12.2}", t * 1e3);
        }
        bytes *= 4;
    }
    Ok(())
}
