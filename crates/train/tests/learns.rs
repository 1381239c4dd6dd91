//! An fp32 training run lowers the loss and beats chance: the check the bf16 test makes, without
//! needing AVX512_BF16, so every machine runs it.

mod common;

use resnet_train::trainer;
use std::sync::atomic::AtomicBool;

#[test]
fn fp32_training_lowers_the_loss() {
    let config = common::learning_run();
    let d = common::fresh_dir("learns");
    let s = trainer::run(config, &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    let (first, last) = (&s.history[0], s.history.last().unwrap());
    assert!(last.train_loss.is_finite() && last.train_loss < 0.8 * first.train_loss, "{first:?} -> {last:?}");
    // Ten classes: chance is 90% error.
    assert!(last.test_error < 80.0, "{last:?}");
    std::fs::remove_dir_all(&d).unwrap();
}
