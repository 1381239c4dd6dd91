//! Whole training runs on a small synthetic dataset: resuming gives exactly the uninterrupted
//! run, divergence keeps the last good checkpoint, and foreign checkpoints are refused.

// Shared with the learning tests; these use only its run directories.
#[allow(dead_code)]
mod common;

use common::fresh_dir;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::metrics::EpochMetrics;
use resnet_train::trainer::{self, Observer, Outcome, StepReport, TrainError};
use std::sync::atomic::{AtomicBool, Ordering};

fn tiny() -> TrainConfig {
    TrainConfig {
        model: "cifar-resnet8".into(),
        synthetic_train: 320,
        synthetic_test: 96,
        synthetic_size: 16,
        batch_size: 32,
        eval_batch_size: 48,
        length: RunLength::Epochs(3),
        seed: 11,
        workers: 2,
        ..TrainConfig::quickstart()
    }
}

/// Sets the stop flag after a given epoch, or after a given step.
struct StopAt<'a> {
    flag: &'a AtomicBool,
    after_epoch: Option<u64>,
    after_iteration: Option<u64>,
}

impl Observer for StopAt<'_> {
    fn step(&mut self, r: &StepReport) {
        if Some(r.iteration) == self.after_iteration {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        if Some(m.epoch) == self.after_epoch {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

/// The fields that must match exactly (timing fields differ between runs).
fn learning(m: &EpochMetrics) -> (u64, u64, f64, f64, f64, f64, f64, f64) {
    (m.epoch, m.iteration, m.lr, m.train_loss, m.train_error, m.test_loss, m.test_error, m.test_top5_error)
}

fn uninterrupted(name: &str) -> (Vec<EpochMetrics>, Checkpoint) {
    let d = fresh_dir(name);
    let s = trainer::run(tiny(), &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    assert_eq!(s.outcome, Outcome::Finished);
    let ckpt = Checkpoint::load(&s.last_checkpoint).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    (s.history, ckpt)
}

fn interrupted_then_resumed(
    name: &str,
    after_epoch: Option<u64>,
    after_iteration: Option<u64>,
) -> (Vec<EpochMetrics>, Checkpoint) {
    let d = fresh_dir(name);
    let flag = AtomicBool::new(false);
    let s = trainer::run(tiny(), &d, false, &flag, &mut StopAt { flag: &flag, after_epoch, after_iteration }).unwrap();
    assert_eq!(s.outcome, Outcome::Interrupted);
    // The resumed process starts from the files alone; the config it is handed is ignored.
    let s = trainer::run(TrainConfig::quickstart(), &d, true, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    assert_eq!(s.outcome, Outcome::Finished);
    let ckpt = Checkpoint::load(&s.last_checkpoint).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    (s.history, ckpt)
}

#[test]
fn resumed_runs_match_the_uninterrupted_run_exactly() {
    let (want, want_ckpt) = uninterrupted("straight");
    assert_eq!(want.len(), 3);
    // Killed at an epoch boundary (after epoch 1) and mid-epoch (after step 13 of 10 per epoch).
    for (name, epoch, step) in [("boundary", Some(1), None), ("middle", None, Some(13))] {
        let (got, got_ckpt) = interrupted_then_resumed(name, epoch, step);
        let a: Vec<_> = want.iter().map(learning).collect();
        let b: Vec<_> = got.iter().map(learning).collect();
        assert_eq!(a, b, "{name}: metrics differ after resuming");
        assert!(got_ckpt.state == want_ckpt.state, "{name}: final weights differ");
        let (v1, v2) = (&want_ckpt.training.as_ref().unwrap().velocity, &got_ckpt.training.as_ref().unwrap().velocity);
        assert!(v1 == v2, "{name}: optimizer state differs");
    }
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let d = fresh_dir("nan");
    // One good epoch; then the run's config.json asks for a second at a learning rate 1e9 times
    // larger, and the loss blows up.
    let config = TrainConfig { length: RunLength::Epochs(1), ..tiny() };
    trainer::run(config, &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    let mut stored: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    stored["lr"] = serde_json::json!(1e8);
    stored["length"] = serde_json::to_value(RunLength::Epochs(2)).unwrap();
    std::fs::write(d.join("config.json"), serde_json::to_vec(&stored).unwrap()).unwrap();
    let err = trainer::run(tiny(), &d, true, &AtomicBool::new(false), &mut trainer::Silent).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { epoch: 2, .. }), "{err}");
    assert!(err.to_string().contains("last good checkpoint"), "{err}");
    let ckpt = Checkpoint::load(&d.join("checkpoints/last.safetensors")).unwrap();
    let progress = &ckpt.training.as_ref().unwrap().progress;
    assert_eq!((progress.epoch, progress.batch), (1, 0));
    assert!(ckpt.network(&d).is_ok());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn foreign_checkpoints_and_existing_runs_are_refused() {
    let d = fresh_dir("foreign");
    let config = TrainConfig { length: RunLength::Epochs(1), ..tiny() };
    trainer::run(config.clone(), &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    let err = trainer::run(config.clone(), &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap_err();
    assert!(matches!(err, TrainError::RunExists(_)), "{err}");

    // A checkpoint of another architecture in place of the run's own.
    let other = fresh_dir("foreign-other");
    let c2 = TrainConfig { model: "cifar-resnet14".into(), ..config.clone() };
    trainer::run(c2, &other, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    std::fs::copy(other.join("checkpoints/last.safetensors"), d.join("checkpoints/last.safetensors")).unwrap();
    let err = trainer::run(config.clone(), &d, true, &AtomicBool::new(false), &mut trainer::Silent).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("another network") && msg.contains("cifar-resnet14"), "{msg}");

    // A truncated checkpoint.
    let bytes = std::fs::read(other.join("checkpoints/last.safetensors")).unwrap();
    std::fs::write(d.join("checkpoints/last.safetensors"), &bytes[..bytes.len() / 3]).unwrap();
    let err = trainer::run(config, &d, true, &AtomicBool::new(false), &mut trainer::Silent).unwrap_err();
    assert!(err.to_string().contains("not a readable safetensors file"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}
