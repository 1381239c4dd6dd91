//! Fine-tuning runs on a small synthetic dataset: starting from a checkpoint with a report of
//! what was kept and what is new, frozen parts left bit-identical (batch-norm statistics
//! included), per-part learning rates, and another architecture's weights refused.

#[allow(dead_code)]
mod common;

use common::fresh_dir;
use resnet_models::{NamedTensor, TensorData};
use resnet_train::checkpoint::Checkpoint;
use resnet_train::config::{FineTune, Normalization, RunLength, TrainConfig};
use resnet_train::trainer::{self, Observer, TrainError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

fn tiny(length: RunLength) -> TrainConfig {
    TrainConfig {
        model: "cifar-resnet8".into(),
        synthetic_train: 192,
        synthetic_test: 64,
        synthetic_size: 16,
        batch_size: 32,
        eval_batch_size: 64,
        length,
        seed: 3,
        workers: 2,
        ..TrainConfig::quickstart()
    }
}

/// The messages a run prints.
#[derive(Default)]
struct Messages(Vec<String>);

impl Observer for Messages {
    fn message(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

/// A checkpoint trained for one epoch, shared by the tests: the weights they start from.
fn source() -> &'static Path {
    static SOURCE: OnceLock<PathBuf> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let d = fresh_dir("fine-tune-source");
        let s =
            trainer::run(tiny(RunLength::Epochs(1)), &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
        s.last_checkpoint
    })
}

fn fine_tune(name: &str, config: TrainConfig) -> Result<(Checkpoint, Vec<String>), TrainError> {
    let d = fresh_dir(name);
    let mut messages = Messages::default();
    let s = trainer::run(config, &d, false, &AtomicBool::new(false), &mut messages)?;
    let ckpt = Checkpoint::load(&s.last_checkpoint).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    Ok((ckpt, messages.0))
}

fn from_source(fine_tune: FineTune) -> TrainConfig {
    TrainConfig {
        fine_tune: FineTune { init: Some(source().to_path_buf()), ..fine_tune },
        normalization: Normalization::Init,
        ..tiny(RunLength::Iterations(4))
    }
}

fn tensor<'a>(state: &'a [NamedTensor], name: &str) -> &'a [f32] {
    match &state.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name}")).data {
        TensorData::F32(v) => v,
        TensorData::I64(_) => panic!("{name} is not F32"),
    }
}

fn starts_with_any(name: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p))
}

#[test]
fn starting_weights_are_reported_kept_and_new_and_their_normalisation_is_used() {
    let config = TrainConfig { classes: Some(12), ..from_source(FineTune::default()) };
    let (ckpt, messages) = fine_tune("init-report", config).unwrap();
    let report = messages.iter().find(|m| m.starts_with("initialised from")).expect("a report");
    assert!(report.contains("(checkpoint, cifar-resnet8)"), "{report}");
    assert!(report.contains("new fc.weight: [12, 64] here, [10, 64] in the weights"), "{report}");
    assert!(report.contains("new fc.bias"), "{report}");
    let source = Checkpoint::load(source()).unwrap();
    let kept = source.state.len() - 2;
    assert!(report.contains(&format!("kept {kept} tensor(s)")), "{report}");
    assert_eq!(ckpt.classes.len(), 12);
    assert_eq!(ckpt.classes[11], "unused11");
    assert_eq!(ckpt.preprocess.normalize, source.preprocess.normalize, "the stored mean image is used");
}

#[test]
fn frozen_parts_and_their_batch_norm_statistics_stay_bit_identical() {
    let source = Checkpoint::load(source()).unwrap();
    for (freeze, frozen) in [
        (vec!["backbone".to_string()], &["conv1.", "bn1.", "layer"][..]),
        (vec!["stem".to_string(), "layer1".to_string()], &["conv1.", "bn1.", "layer1."][..]),
    ] {
        let config = from_source(FineTune { freeze: freeze.clone(), ..FineTune::default() });
        let (ckpt, messages) = fine_tune(&format!("freeze-{}", freeze.join("-")), config).unwrap();
        assert!(messages.iter().any(|m| m.starts_with("frozen: ")), "{messages:?}");
        let velocity = &ckpt.training.as_ref().unwrap().velocity;
        for t in &ckpt.state {
            let TensorData::F32(after) = &t.data else { continue };
            let before = tensor(&source.state, &t.name);
            if starts_with_any(&t.name, frozen) {
                assert_eq!(after.as_slice(), before, "{freeze:?}: frozen {} changed", t.name);
                assert!(velocity.iter().all(|(n, _)| n != &t.name), "{}: optimizer state kept", t.name);
            } else if !t.name.ends_with("num_batches_tracked") {
                assert_ne!(after.as_slice(), before, "{freeze:?}: {} did not train", t.name);
            }
        }
    }
}

#[test]
fn frozen_batch_norm_statistics_do_not_move_while_gamma_and_beta_train() {
    let source = Checkpoint::load(source()).unwrap();
    let (ckpt, _) = fine_tune("freeze-bn", from_source(FineTune { freeze_bn: true, ..FineTune::default() })).unwrap();
    for t in &ckpt.state {
        let TensorData::F32(after) = &t.data else { continue };
        let running = t.name.ends_with("running_mean") || t.name.ends_with("running_var");
        assert_eq!(running, after.as_slice() == tensor(&source.state, &t.name), "{}", t.name);
    }
}

#[test]
fn the_backbone_steps_with_its_own_learning_rate() {
    let one_step = |lr_backbone: f32| {
        let config = TrainConfig {
            momentum: 0.0,
            weight_decay: 0.0,
            length: RunLength::Iterations(1),
            ..from_source(FineTune { lr_backbone, ..FineTune::default() })
        };
        fine_tune(&format!("lr-backbone-{lr_backbone}"), config).unwrap().0
    };
    let (full, tenth) = (one_step(1.0), one_step(0.1));
    let source = Checkpoint::load(source()).unwrap();
    for name in ["conv1.weight", "layer2.0.conv2.weight", "layer3.0.bn1.bias", "fc.weight", "fc.bias"] {
        let w0 = tensor(&source.state, name);
        let (a, b) = (tensor(&full.state, name), tensor(&tenth.state, name));
        let scale = if name.starts_with("fc.") { 1.0 } else { 0.1 };
        let mut compared = 0;
        for ((w0, a), b) in w0.iter().zip(a).zip(b) {
            let (da, db) = (a - w0, b - w0);
            if da.abs() > 1e-4 {
                assert!((db - scale * da).abs() <= 1e-3 * da.abs() + 1e-6, "{name}: {db} is not {scale} x {da}");
                compared += 1;
            }
        }
        assert!(compared > 0, "{name}: no step to compare");
    }
}

#[test]
fn another_architectures_weights_are_refused_naming_the_tensor() {
    let config = TrainConfig { model: "cifar-resnet14".into(), ..from_source(FineTune::default()) };
    let err = fine_tune("init-wrong-arch", config).unwrap_err().to_string();
    assert!(err.contains("cifar-resnet8") && err.contains("cannot start a cifar-resnet14"), "{err}");
    assert!(err.contains("layer1.1.conv1.weight"), "{err}");
}

#[test]
fn a_frozen_run_resumes() {
    let d = fresh_dir("freeze-resume");
    let config = TrainConfig {
        length: RunLength::Epochs(1),
        ..from_source(FineTune { freeze: vec!["backbone".into()], ..FineTune::default() })
    };
    trainer::run(config, &d, false, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    let changes = trainer::ResumeChanges { length: Some(RunLength::Epochs(2)), workers: None };
    let s = trainer::resume(&d, &changes, &AtomicBool::new(false), &mut trainer::Silent).unwrap();
    assert_eq!(s.history.len(), 2);
    std::fs::remove_dir_all(&d).unwrap();
}
