//! What the commands print reads as English: counts of one are singular.

use crate::common::{run, scratch};

#[test]
fn bench_says_one_thread_and_one_step() {
    let dir = scratch();
    let r = run(
        dir.path(),
        [
            "--threads",
            "1",
            "bench",
            "--model",
            "resnet20",
            "--batch",
            "2",
            "--mode",
            "infer",
            "--steps",
            "1",
            "--warmup",
            "0",
        ],
    )
    .ok();
    assert!(r.stdout.contains("1 thread, 1 step after 0 warm-up"), "{}", r.stdout);
}
