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
