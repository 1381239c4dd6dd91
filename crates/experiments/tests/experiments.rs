//! The experiments end to end on a tiny synthetic dataset: outputs are written, finished parts
//! are skipped on a second call, `only` splits the work, and the response analysis reads the
//! checkpoints the degradation experiment left.

use resnet_data::{DatasetKind, OpenOptions, SyntheticConfig};
use resnet_experiments::{degradation, responses, shortcuts, PartStatus};
use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::trainer::Silent;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn tiny() -> TrainConfig {
    TrainConfig {
        synthetic_train: 256,
        synthetic_test: 64,
        synthetic_size: 16,
        batch_size: 32,
        eval_batch_size: 64,
        length: RunLength::Epochs(1),
        workers: 1,
        ..TrainConfig::quickstart()
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-experiments-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn degradation_then_responses() {
    let out = dir("degradation");
    let stop = AtomicBool::new(false);
    // First only the residual nets, then everything: the residual parts are skipped.
    let only = vec!["cifar-resnet8".to_string(), "cifar-resnet14".to_string()];
    let r = degradation(&[8, 14], &tiny(), &out, Some(&only), &stop, &mut Silent).unwrap();
    assert!(!r.complete);
    assert_eq!(r.parts.len(), 2);
    let r = degradation(&[8, 14], &tiny(), &out, None, &stop, &mut Silent).unwrap();
    assert!(r.complete);
    let names: Vec<&str> = r.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cifar-plain8", "cifar-plain14", "cifar-resnet8", "cifar-resnet14"]);
    let status: Vec<PartStatus> = r.parts.iter().map(|p| p.status).collect();
    assert_eq!(status, [PartStatus::Started, PartStatus::Started, PartStatus::Skipped, PartStatus::Skipped]);
    for f in ["degradation.csv", "degradation.png", "degradation.svg", "summary.md", "summary.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("degradation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert!(r.table.contains("ResNet-14") && r.table.contains("plain-8"));

    let ckpts: Vec<PathBuf> = r.parts.iter().map(|p| p.dir.join("checkpoints/last.safetensors")).collect();
    let opts = OpenOptions {
        synthetic: SyntheticConfig { train: 256, test: 64, size: 16, seed: 0 },
        ..OpenOptions::default()
    };
    let rout = dir("responses");
    std::fs::create_dir_all(&rout).unwrap();
    let rep = responses(&ckpts, DatasetKind::Synthetic, None, &opts, 32, &rout).unwrap();
    assert_eq!(rep.networks.len(), 4);
    // Every 3x3 layer: the stem plus two per block (depth 6n + 2 has 3n blocks).
    assert_eq!(rep.networks[0].std.len(), 7);
    assert_eq!(rep.networks[1].std.len(), 13);
    assert!(rep.networks.iter().all(|n| n.std.iter().all(|s| s.is_finite() && *s > 0.0)));
    // Two plain/residual pairs and one pair of residual depths: three findings.
    assert_eq!(rep.findings.len(), 3, "{:?}", rep.findings);
    assert!(rout.join("responses.png").exists() && rout.join("responses.csv").exists());
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&rout).unwrap();
}

#[test]
fn a_finished_part_kept_without_its_checkpoints_keeps_its_parameter_count() {
    let out = dir("results-only");
    let stop = AtomicBool::new(false);
    let first = degradation(&[8], &tiny(), &out, None, &stop, &mut Silent).unwrap();
    for part in &first.parts {
        std::fs::remove_dir_all(part.dir.join("checkpoints")).unwrap();
    }
    let again = degradation(&[8], &tiny(), &out, None, &stop, &mut Silent).unwrap();
    for (a, b) in first.parts.iter().zip(&again.parts) {
        assert_eq!(b.status, PartStatus::Skipped);
        assert!(a.params > 0);
        assert_eq!(b.params, a.params, "{}", a.name);
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn shortcut_options_table() {
    let out = dir("shortcuts");
    let base = TrainConfig { model: "cifar-resnet8".into(), ..tiny() };
    let r = shortcuts(&base, &out, None, &AtomicBool::new(false), &mut Silent).unwrap();
    let options: Vec<&str> = r.rows.iter().map(|x| x.option.as_str()).collect();
    assert_eq!(options, ["A", "B", "C"]);
    let params: Vec<u64> = r.rows.iter().map(|x| x.part.params).collect();
    assert!(params[0] < params[1] && params[1] < params[2], "{params:?}");
    assert!(r.finding.contains("ordering"), "{}", r.finding);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_selection_naming_no_part_is_refused_before_training() {
    let out = dir("only-unknown");
    let stop = AtomicBool::new(false);
    let base = TrainConfig { model: "cifar-resnet8".into(), ..tiny() };
    let err = shortcuts(&base, &out, Some(&["D".to_string()]), &stop, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("\"D\"") && err.contains("cifar-resnet8-A") && err.contains("C"), "{err}");
    let only = vec!["cifar-resnet8".to_string(), "resnet14".to_string()];
    let err = degradation(&[8, 14], &tiny(), &out, Some(&only), &stop, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("\"resnet14\"") && err.contains("cifar-resnet14"), "{err}");
    assert!(!out.exists(), "nothing is trained or written for a bad selection");
}
