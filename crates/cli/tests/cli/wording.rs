//! What the commands print reads as English: counts of one are singular.

use crate::common::{idx, run, scratch};

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

#[test]
fn top5_error_is_not_shown_for_two_classes() {
    let dir = scratch();
    let data = dir.path().join("two");
    std::fs::create_dir_all(&data).unwrap();
    for (prefix, n) in [("train", 16u32), ("t10k", 8)] {
        let pixels: Vec<u8> = (0..n * 64).map(|i| (i * 7) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        std::fs::write(data.join(format!("{prefix}-images-idx3-ubyte")), idx(&[n, 8, 8], &pixels)).unwrap();
        std::fs::write(data.join(format!("{prefix}-labels-idx1-ubyte")), idx(&[n], &labels)).unwrap();
    }
    let args = ["train", "--dataset", "idx", "--data", "two", "--model", "cifar-resnet8", "--batch-size", "4"];
    let r = run(dir.path(), args.iter().chain(&["--iterations", "2", "--out", "run", "--quiet"])).ok();
    assert!(r.stderr.contains("epoch   1") && !r.stderr.contains("top-5"), "{}", r.stderr);
    assert!(r.stdout.contains("final test error") && !r.stdout.contains("top-5"), "{}", r.stdout);
}
