//! The edges of a run: schedules that do not fit its length, divergence that reaches the
//! batch-norm statistics, one run per directory, leftovers of killed runs, extending a finished
//! run, the epoch lengths the observer is told, and the rates each epoch logs.

// Shared with the learning tests; these use only its run directories.
#[allow(dead_code)]
mod common;

use common::fresh_dir;
use resnet_models::TensorData;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::lock::RunLock;
use resnet_train::schedule::{Decay, Milestone};
use resnet_train::trainer::{self, Observer, Outcome, ResumeChanges, TrainError};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// 10 steps per epoch on 16-pixel images.
fn tiny() -> TrainConfig {
    TrainConfig {
        model: "cifar-resnet8".into(),
        synthetic_train: 320,
        synthetic_test: 64,
        synthetic_size: 16,
        batch_size: 32,
        eval_batch_size: 64,
        length: RunLength::Epochs(1),
        seed: 3,
        workers: 1,
        ..TrainConfig::quickstart()
    }
}

fn go(config: TrainConfig, d: &std::path::Path) -> Result<trainer::RunSummary, TrainError> {
    trainer::run(config, d, false, &AtomicBool::new(false), &mut trainer::Silent)
}

/// Runs `config` in a fresh directory `name` and returns the message of the configuration error
/// it must stop with.
fn config_error(name: &str, config: TrainConfig) -> String {
    let d = fresh_dir(name);
    let err = go(config, &d).unwrap_err();
    let _ = std::fs::remove_dir_all(&d);
    match err {
        TrainError::Config(m) => m,
        other => panic!("expected a configuration error, got: {other}"),
    }
}

#[test]
fn milestones_beyond_the_run_are_an_error() {
    let decay = Decay::Step { milestones: vec![Milestone::Iteration(32_000)], gamma: 0.1 };
    let m = config_error("milestones", TrainConfig { decay, ..tiny() });
    assert!(m.contains("32000") && m.contains("10 iterations"), "{m}");
}

#[test]
fn a_diverging_run_keeps_no_non_finite_checkpoint() {
    let d = fresh_dir("nonfinite");
    // Two steps per epoch: epochs end while the loss is still finite and the weights are not.
    let config = TrainConfig { lr: 1e10, synthetic_train: 64, length: RunLength::Epochs(8), ..tiny() };
    let err = go(config, &d).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { .. } | TrainError::NonFinite { .. }), "{err}");
    for name in ["last", "best"] {
        let path = d.join(format!("checkpoints/{name}.safetensors"));
        if !path.exists() {
            continue;
        }
        let ckpt = Checkpoint::load(&path).unwrap();
        for t in &ckpt.state {
            if let TensorData::F32(v) = &t.data {
                assert!(v.iter().all(|x| x.is_finite()), "{name}: {} is not finite", t.name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_locked_run_directory_is_refused_and_names_the_holder() {
    let d = fresh_dir("lock");
    let held = RunLock::acquire(&d).unwrap();
    let err = go(tiny(), &d).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Locked { .. }), "{msg}");
    assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains(&d.display().to_string()), "{msg}");
    drop(held);
    go(TrainConfig { length: RunLength::Iterations(1), ..tiny() }, &d).unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_finished_run_can_be_extended_and_only_forward() {
    let d = fresh_dir("extend");
    let first = go(tiny(), &d).unwrap();
    assert_eq!(first.history.len(), 1);
    let stop = AtomicBool::new(false);
    let longer = ResumeChanges { length: Some(RunLength::Epochs(2)), ..ResumeChanges::default() };
    let s = trainer::resume(&d, &longer, &stop, &mut trainer::Silent).unwrap();
    assert_eq!(s.outcome, Outcome::Finished);
    assert_eq!(s.history.iter().map(|m| m.iteration).collect::<Vec<_>>(), [10, 20]);
    let shorter = ResumeChanges { length: Some(RunLength::Iterations(5)), ..ResumeChanges::default() };
    let err = trainer::resume(&d, &shorter, &stop, &mut trainer::Silent).unwrap_err();
    assert!(err.to_string().contains("20 iterations"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_data_path_is_stored_absolute() {
    let d = fresh_dir("absolute");
    let config = TrainConfig { data: Some(PathBuf::from("relative/data")), ..tiny() };
    go(config, &d).unwrap();
    let stored: TrainConfig = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    assert!(stored.data.as_ref().unwrap().is_absolute(), "{:?}", stored.data);
    let _ = std::fs::remove_dir_all(&d);
}

/// Records the batch counts of each epoch as announced, and the steps seen.
#[derive(Default)]
struct Epochs {
    announced: Vec<u64>,
    steps: Vec<u64>,
}

impl Observer for Epochs {
    fn epoch_start(&mut self, _epoch: u64, batches: u64, _start: u64) {
        self.announced.push(batches);
        self.steps.push(0);
    }
    fn step(&mut self, _r: &trainer::StepReport) {
        *self.steps.last_mut().unwrap() += 1;
    }
}

#[test]
fn an_epoch_cut_short_by_the_run_length_is_announced_with_its_real_length() {
    let d = fresh_dir("short-epoch");
    let mut seen = Epochs::default();
    let config = TrainConfig { length: RunLength::Iterations(13), ..tiny() };
    trainer::run(config, &d, false, &AtomicBool::new(false), &mut seen).unwrap();
    assert_eq!(seen.announced, [10, 3]);
    assert_eq!(seen.steps, seen.announced);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn each_epoch_logs_the_rate_it_started_and_ended_with() {
    let d = fresh_dir("lr-range");
    let config = TrainConfig {
        length: RunLength::Epochs(2),
        decay: Decay::Step { milestones: vec![Milestone::Iteration(5)], gamma: 0.1 },
        ..tiny()
    };
    let s = go(config, &d).unwrap();
    let ranges: Vec<_> = s.history.iter().map(|m| (m.lr_start, m.lr_end, m.lr)).collect();
    let (a, b) = (0.1f32 as f64, (0.1f32 * 0.1) as f64);
    assert_eq!(ranges, [(Some(a), Some(b), b), (Some(b), Some(b), b)]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn resuming_a_directory_that_holds_no_run_leaves_nothing_there() {
    let d = fresh_dir("not-a-run");
    std::fs::create_dir_all(&d).unwrap();
    let err =
        trainer::resume(&d, &ResumeChanges::default(), &AtomicBool::new(false), &mut trainer::Silent).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "files were left in {}", d.display());
    let _ = std::fs::remove_dir_all(&d);
}

/// Keeps the messages a run prints.
#[derive(Default)]
struct Messages(Vec<String>);

impl Observer for Messages {
    fn message(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

#[test]
fn extending_a_run_keeps_its_fraction_milestones_where_they_fell() {
    let d = fresh_dir("extend-fractions");
    // 20 iterations: the rate drops at 10 and 15 and the run ends at 0.001.
    let milestones = vec![Milestone::Fraction(0.5), Milestone::Fraction(0.75)];
    let config = TrainConfig { length: RunLength::Epochs(2), decay: Decay::Step { milestones, gamma: 0.1 }, ..tiny() };
    let first = go(config, &d).unwrap();
    let ended_at = first.history[1].lr_end;
    assert_eq!(ended_at, Some((0.1f32 * 0.1 * 0.1) as f64));
    let mut said = Messages::default();
    let longer = ResumeChanges { length: Some(RunLength::Epochs(4)), ..ResumeChanges::default() };
    let s = trainer::resume(&d, &longer, &AtomicBool::new(false), &mut said).unwrap();
    assert_eq!(s.outcome, Outcome::Finished);
    let starts: Vec<_> = s.history.iter().map(|m| m.lr_start).collect();
    assert_eq!(starts[2..], [ended_at, ended_at], "the rate jumped after the old end: {:?}", s.history);
    let stored: TrainConfig = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    let frozen = vec![Milestone::Iteration(10), Milestone::Iteration(15)];
    assert_eq!(stored.decay, Decay::Step { milestones: frozen, gamma: 0.1 });
    let said = said.0.join("\n");
    assert!(said.contains("milestones 0.5,0.75 of the old run are kept at iterations 10,15"), "{said}");
    assert!(said.contains(&format!("continues at learning rate {}", ended_at.unwrap() as f32)), "{said}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_cosine_run_cannot_change_its_length() {
    let d = fresh_dir("extend-cosine");
    let config = TrainConfig { decay: Decay::Cosine { final_lr: 0.0 }, ..tiny() };
    go(config, &d).unwrap();
    let before = std::fs::read(d.join("config.json")).unwrap();
    let longer = ResumeChanges { length: Some(RunLength::Epochs(2)), ..ResumeChanges::default() };
    let err = trainer::resume(&d, &longer, &AtomicBool::new(false), &mut trainer::Silent).unwrap_err();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
    assert!(err.to_string().contains("cosine"), "{err}");
    assert_eq!(std::fs::read(d.join("config.json")).unwrap(), before, "config.json changed");
    let _ = std::fs::remove_dir_all(&d);
}

/// The library refuses what the command line refuses: one set of range checks serves both.
#[test]
fn a_decay_factor_above_one_is_refused_as_on_the_command_line() {
    let decay = Decay::Step { milestones: vec![Milestone::Fraction(0.5)], gamma: 2.0 };
    let m = config_error("gamma", TrainConfig { decay, ..tiny() });
    assert!(m.contains("(0, 1]"), "{m}");
}
