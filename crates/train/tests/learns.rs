//! An fp32 training run lowers the loss and beats chance: the check the bf16 test makes, without
//! needing AVX512_BF16, so every machine runs it.

use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::trainer;
use std::sync::atomic::AtomicBool;

#[test]
fn fp32_training_lowers_the_loss() {
    let config = TrainConfig {
        model: "cifar-resnet8".into(),
        synthetic_train: 640,
        synthetic_test: 192,
        synthetic_size: 16,
        batch_size: 32,
        eval_batch_size: 64,
        length: RunLength::Epochs(4),
        seed: 5,
        workers: 2,
        ..TrainConfig::quickstart()
    };
    let d = std::env::temp_dir().join(format!("resnet-learns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let s = trainer::run(config, &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    let (first, last) = (&s.history[0], s.history.last().unwrap());
    assert!(last.train_loss.is_finite() && last.train_loss < 0.8 * first.train_loss, "{first:?} -> {last:?}");
    // Ten classes: chance is 90% error.
    assert!(last.test_error < 80.0, "{last:?}");
    std::fs::remove_dir_all(&d).unwrap();
}
