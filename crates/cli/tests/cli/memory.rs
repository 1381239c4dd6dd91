//! Batches too large for the machine's memory: refused with what fits, before the loaders or the
//! first step allocate them. Each run is capped (`run_capped`), so that a batch the check let
//! through would fail its allocation (an abort, not exit 1) instead of taking the machine.

use crate::common::{run_capped, scratch};

/// Far below what the refused batches need, far above what a refusal costs.
const CAP_MIB: u64 = 4096;

/// ResNet-152 on generated 224x224 images: the synthetic set makes its images on demand, so a
/// large split costs nothing until a batch of it is built.
fn resnet152_on_synthetic<'a>(train: &'a str, test: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        "resnet152",
        "--dataset",
        "synthetic",
        "--synthetic-train",
        train,
        "--synthetic-test",
        test,
        "--synthetic-size",
        "224",
        "--normalize",
        "none",
        "--iterations",
        "1",
        "--quiet",
        "--out",
        "run",
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs ResNet-152 with `train` and `test` generated images and `extra` arguments, and asserts
/// that it exits 1 saying `needles` before any checkpoint is written.
fn refused_before_training(train: &str, test: &str, extra: &[&str], needles: &[&str]) {
    let dir = scratch();
    let out = run_capped(dir.path(), resnet152_on_synthetic(train, test, extra), CAP_MIB).fails_with(needles);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(!dir.path().join("run/checkpoints").exists(), "nothing was trained");
}

#[test]
fn a_training_batch_that_cannot_fit_is_refused_with_what_fits() {
    refused_before_training(
        "100000",
        "10",
        &["--batch-size", "100000"],
        &[
            "training resnet152 at batch 100000 on 224x224 images needs about",
            "may be planned on: use a smaller --batch-size (at most",
        ],
    );
}

#[test]
fn an_evaluation_batch_that_cannot_fit_is_refused_before_training() {
    refused_before_training(
        "8",
        "100000",
        &["--batch-size", "2", "--eval-batch-size", "100000"],
        &[
            "evaluating resnet152 at batch 100000 on 224x224 images needs about",
            "use a smaller --eval-batch-size (at most",
        ],
    );
}

#[test]
fn an_eval_batch_that_cannot_fit_is_refused_and_workers_are_bounded() {
    let dir = scratch();
    let train = [
        "train",
        "--model",
        "resnet18",
        "--dataset",
        "synthetic",
        "--synthetic-train",
        "4",
        "--synthetic-test",
        "2",
        "--synthetic-size",
        "224",
        "--normalize",
        "none",
        "--batch-size",
        "2",
        "--iterations",
        "1",
        "--quiet",
        "--out",
        "run",
    ];
    run_capped(dir.path(), train, CAP_MIB).ok();
    let ckpt = "run/checkpoints/last.safetensors";
    let eval = ["eval", "--checkpoint", ckpt, "--synthetic", "4", "100000", "224", "--batch-size", "100000"];
    let out = run_capped(dir.path(), eval, CAP_MIB)
        .fails_with(&["evaluating resnet18 at batch 100000", "use a smaller --batch-size (at most"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = run_capped(dir.path(), ["eval", "--checkpoint", ckpt, "--workers", "100000"], CAP_MIB)
        .fails_with(&["--workers", "at most"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}
