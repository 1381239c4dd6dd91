//! A whole training run in bf16 mode (its own test binary: the precision is process-wide, and
//! the fp32 runs of the other tests must not see it). It learns as the fp32 run does.

mod common;

use resnet_train::config::{Precision, RunLength, TrainConfig};
use resnet_train::trainer;
use std::sync::atomic::AtomicBool;

#[test]
fn bf16_training_learns_like_fp32() {
    if !resnet_kernels::conv::bf16_supported() {
        resnet_kernels::skip::skip("this CPU lacks AVX512_BF16 (bf16 mode refuses to start there)");
        return;
    }
    // Eight epochs rather than the shared run's four: at four the loss falls by about a fifth,
    // so the 0.8 bound below sat within the run-to-run spread (seeds 2 and 3 missed it in fp32 too,
    // and a change of summation order in the classifier alone moved bf16 past it, to 0.808).
    // At eight it falls by 25-45% for every seed tried (1, 2, 3, 5), in either precision.
    let config = |precision| TrainConfig { precision, length: RunLength::Epochs(8), ..common::learning_run() };
    let mut finals = Vec::new();
    for precision in [Precision::Fp32, Precision::Bf16] {
        let d = common::fresh_dir(&format!("bf16-{precision:?}"));
        let s = trainer::run(config(precision), &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
        let (first, last) = (&s.history[0], s.history.last().unwrap());
        assert!(
            last.train_loss.is_finite() && last.train_loss < 0.8 * first.train_loss,
            "{precision:?}: {first:?} -> {last:?}"
        );
        finals.push(last.clone());
        std::fs::remove_dir_all(&d).unwrap();
    }
    // The same run in both precisions: bf16 rounding moves the trajectory, not the outcome
    // (both well below the 90% error of chance after 160 steps, and close to each other: on 192
    // test images the difference of two error rates near 60% has a standard deviation of about
    // 5 points, so 15 is three of them; seeds 1, 2, 3, 5 gave 2.6, 4.2, 3.6 and 10.9).
    let (f, b) = (&finals[0], &finals[1]);
    assert!((f.train_loss - b.train_loss).abs() < 0.25 * f.train_loss, "fp32 {f:?}, bf16 {b:?}");
    assert!(f.test_error < 80.0 && b.test_error < 80.0, "fp32 {f:?}, bf16 {b:?}");
    assert!((f.test_error - b.test_error).abs() <= 15.0, "fp32 {f:?}, bf16 {b:?}");
}
