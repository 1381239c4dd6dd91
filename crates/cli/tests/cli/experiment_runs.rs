//! `resnet experiment`: a selection that names nothing is refused before any training.

use crate::common::{command, finish, run, scratch, signal, wait_for, TINY};
use std::process::Stdio;

#[test]
fn shortcuts_only_an_unknown_option_is_an_error() {
    let dir = scratch();
    run(dir.path(), ["experiment", "shortcuts", "--only", "D", "--out", "exp"]).fails_with(&[
        "--only \"D\"",
        "A",
        "B",
        "C",
    ]);
    assert!(!dir.path().join("exp").exists(), "nothing is written for a bad selection");
}

#[test]
fn degradation_only_an_unknown_network_is_an_error() {
    let dir = scratch();
    run(dir.path(), ["experiment", "degradation", "--depths", "20", "--only", "resnet21", "--out", "exp"])
        .fails_with(&["\"resnet21\"", "plain20", "resnet20"]);
}

#[test]
fn a_signal_stops_an_experiment_with_130_after_a_checkpoint() {
    let dir = scratch();
    let mut args = vec!["experiment", "shortcuts"];
    args.extend_from_slice(TINY);
    args.extend(["--epochs", "100000", "--out", "exp"]);
    let mut child = command(dir.path()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(&dir.path().join("exp/cifar-resnet8-A/config.json"), &mut child);
    signal(&child, "TERM");
    let r = finish(child);
    assert_eq!(r.code, Some(130), "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("run the same command again"), "{}", r.stdout);
    assert!(dir.path().join("exp/cifar-resnet8-A/checkpoints/last.safetensors").exists());
}

#[test]
fn depth_trains_each_depth_once_and_tables_it_beside_the_paper() {
    let dir = scratch();
    let words = [
        "experiment",
        "depth",
        "--depths",
        "8,20",
        "--dataset",
        "synthetic",
        "--synthetic-train",
        "32",
        "--synthetic-test",
        "16",
        "--synthetic-size",
        "16",
        "--batch-size",
        "16",
        "--iterations",
        "1",
        "--quiet",
        "--out",
        "exp",
    ];
    let first = run(dir.path(), words).ok();
    for needle in ["| 8 | 0.08M |", "| 20 | 0.27M |", "| 8.75 |", "figure:"] {
        assert!(first.stdout.contains(needle), "'{needle}' not in:\n{}", first.stdout);
    }
    for file in ["depth.md", "depth.json", "depth.png", "depth.svg", "resnet20/finished.json"] {
        assert!(dir.path().join("exp").join(file).exists(), "{file}");
    }
    let again = run(dir.path(), words).ok();
    assert!(again.stderr.contains("resnet20: finished earlier, skipped"), "{}", again.stderr);
    run(dir.path(), ["experiment", "depth", "--model", "resnet56", "--out", "exp2"]).fails_with(&["takes no --model"]);
    run(dir.path(), ["experiment", "depth", "--depths", "21", "--out", "exp3"]).fails_with(&["6n+2", "21"]);
}
