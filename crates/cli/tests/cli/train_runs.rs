//! `resnet train` end to end: run length and schedule checks, resuming (extending a run, refusing
//! other changes, from another directory), the run-directory lock, signals, bounds on threads,
//! the metrics it writes, and the usage errors of its flags.

use crate::common::{command, finish, path, run, scratch, signal, tiny_cifar, wait_for, Run, TINY};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

fn train(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["train"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    run(dir, args)
}

/// `resnet train` with `extra`, started in the background.
fn spawn_train(dir: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["train"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    command(dir).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("resnet starts")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&read(&run_dir.join("config.json"))).unwrap()
}

/// The named column of every row of `metrics.csv`.
fn column(run_dir: &Path, name: &str) -> Vec<String> {
    let text = read(&run_dir.join("metrics.csv"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    lines.map(|l| l.split(',').nth(i).unwrap().to_string()).collect()
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

// Item 3: milestones beyond the run.

#[test]
fn a_shortened_paper_recipe_scales_its_milestones_and_says_so() {
    let dir = scratch();
    let r =
        train(dir.path(), &["--recipe", "cifar-paper", "--dataset", "synthetic", "--epochs", "2", "--out", "run"]).ok();
    assert!(r.stderr.contains("milestones") && r.stderr.contains("scaled"), "{}", r.stderr);
    // 8 steps: the rate drops at steps 4 and 6, so the second epoch ends at 0.1 / 100.
    let lrs = column(&path(dir.path(), "run"), "lr");
    let last: f64 = lrs.last().unwrap().parse().unwrap();
    assert!((last - 0.001).abs() < 1e-6, "learning rates {lrs:?}");
}

#[test]
fn explicit_milestones_beyond_the_run_are_refused() {
    let dir = scratch();
    train(dir.path(), &["--milestones", "32000,48000", "--epochs", "2", "--out", "run"]).fails_with(&[
        "milestone",
        "32000",
        "beyond",
        "8 iterations",
    ]);
}

// Item 4: resuming with other flags.

#[test]
fn resume_extends_a_finished_run() {
    let dir = scratch();
    train(dir.path(), &["--epochs", "1", "--out", "run"]).ok();
    let r = run(dir.path(), ["train", "--resume", "run", "--epochs", "2", "--quiet"]).ok();
    assert!(r.stdout.contains("done: 2 epochs"), "{}", r.stdout);
    assert_eq!(column(&dir.path().join("run"), "epoch"), ["1", "2"]);
    assert_eq!(config(&dir.path().join("run"))["length"], serde_json::json!({"Epochs": 2}));
}

#[test]
fn resume_refuses_any_other_change() {
    let dir = scratch();
    train(dir.path(), &["--epochs", "1", "--out", "run"]).ok();
    let r = run(dir.path(), ["train", "--resume", "run", "--model", "resnet32", "--lr", "0.5"])
        .fails_with(&["--model", "--lr", "--resume", "--epochs"]);
    assert_eq!(r.code, Some(2));
    let r = run(dir.path(), ["train", "--resume", "run", "--iterations", "2"]).fails_with(&["4 iterations"]);
    assert_eq!(r.code, Some(1));
}

// Item 6 (training half): a diverging run keeps only a finite checkpoint.

#[test]
fn a_diverging_run_never_keeps_a_non_finite_checkpoint() {
    let dir = scratch();
    // Two steps per epoch: epochs end while the loss is still finite and the weights are not.
    let args = ["train", "--model", "cifar-resnet8", "--synthetic-train", "64", "--synthetic-test", "32"];
    let more = ["--synthetic-size", "16", "--batch-size", "32", "--lr", "1e10", "--epochs", "8", "--out", "run"];
    run(dir.path(), args.iter().chain(&more)).fails_with(&["stopped"]);
    for name in ["last", "best"] {
        let path = dir.path().join(format!("run/checkpoints/{name}.safetensors"));
        if !path.exists() {
            continue;
        }
        let ckpt = resnet_train::checkpoint::Checkpoint::load(&path).unwrap();
        for t in &ckpt.state {
            if let resnet_models::TensorData::F32(v) = &t.data {
                assert!(v.iter().all(|x| x.is_finite()), "{} is not finite in {name}.safetensors", t.name);
            }
        }
    }
}

// Item 7: one run per directory.

/// Runs `second` in `dir` while a long training run holds `dir/run`, then stops that run;
/// returns what `second` did and the holder's process id.
fn beside_a_busy_run(dir: &Path, second: impl FnOnce() -> Run) -> (Run, u32) {
    let mut first = spawn_train(dir, &["--epochs", "100000", "--out", "run"]);
    wait_for(&dir.join("run/config.json"), &mut first);
    let pid = first.id();
    let second = second();
    signal(&first, "INT");
    finish(first);
    (second, pid)
}

#[test]
fn a_second_run_into_a_busy_directory_is_refused() {
    let dir = scratch();
    let (second, pid) = beside_a_busy_run(dir.path(), || train(dir.path(), &["--epochs", "1", "--out", "run"]));
    second.fails_with(&["run", "in use", &format!("pid {pid}")]);
}

#[test]
fn resuming_a_busy_run_is_refused() {
    let dir = scratch();
    let (resumed, pid) = beside_a_busy_run(dir.path(), || run(dir.path(), ["train", "--resume", "run"]));
    resumed.fails_with(&["run", &format!("pid {pid}")]);
}

#[test]
fn a_lock_left_by_a_dead_process_does_not_block() {
    let dir = scratch();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(dir.path().join("run/run.lock"), format!("{}\n", dead_pid())).unwrap();
    train(dir.path(), &["--iterations", "2", "--out", "run"]).ok();
}

// Item 9: signals.

/// Stops a run with `times` signals `name` sent back to back (as `timeout` sends one to the
/// process and one to its group).
fn stopped_by(name: &str, times: usize) {
    let dir = scratch();
    let mut child = spawn_train(dir.path(), &["--epochs", "100000", "--out", "run"]);
    wait_for(&dir.path().join("run/config.json"), &mut child);
    for _ in 0..times {
        signal(&child, name);
    }
    let r = finish(child);
    assert_eq!(r.code, Some(130), "SIG{name}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("stopped"), "{}", r.stdout);
    assert!(dir.path().join("run/checkpoints/last.safetensors").exists(), "no checkpoint after SIG{name}");
}

#[test]
fn sigint_writes_a_checkpoint_and_exits_130() {
    stopped_by("INT", 1);
}

#[test]
fn sigterm_writes_a_checkpoint_and_exits_130() {
    stopped_by("TERM", 1);
}

#[test]
fn a_signal_delivered_twice_at_once_still_writes_a_checkpoint() {
    stopped_by("INT", 2);
}

#[test]
fn temporaries_of_dead_processes_are_removed_on_resume() {
    let dir = scratch();
    train(dir.path(), &["--epochs", "1", "--out", "run"]).ok();
    let stale = [
        dir.path().join(format!("run/checkpoints/.last.safetensors.tmp-{}", dead_pid())),
        dir.path().join(format!("run/.metrics.csv.tmp-{}", dead_pid())),
    ];
    for s in &stale {
        std::fs::write(s, b"half a file").unwrap();
    }
    run(dir.path(), ["train", "--resume", "run"]).ok();
    for s in &stale {
        assert!(!s.exists(), "{} is still there", s.display());
    }
}

// Item 10: a run resumes from any working directory.

#[test]
fn resume_from_another_directory_finds_relative_data() {
    let dir = scratch();
    tiny_cifar(&dir.path().join("data"));
    let args = ["--dataset", "cifar10", "--data", "data", "--epochs", "1", "--out", "run"];
    train(dir.path(), &args).ok();
    let stored = PathBuf::from(config(&dir.path().join("run"))["data"].as_str().unwrap());
    assert!(stored.is_absolute(), "config.json stores {}", stored.display());
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    run(&elsewhere, ["train", "--resume", "../run", "--epochs", "2", "--quiet"]).ok();
}

// Item 12: a data path that is not UTF-8.

#[cfg(unix)]
#[test]
fn a_non_utf8_data_path_is_a_clear_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch();
    let data = dir.path().join(std::ffi::OsStr::from_bytes(b"data-\xff"));
    std::fs::create_dir_all(&data).unwrap();
    let mut c = command(dir.path());
    c.args(["train", "--dataset", "imagefolder", "--out", "run", "--data"]).arg(&data);
    let out = c.output().unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    r.fails_with(&["UTF-8", "data-"]);
}

// Item 14: bounded threads.

#[test]
fn absurd_worker_and_thread_counts_are_usage_errors() {
    let dir = scratch();
    let r = train(dir.path(), &["--workers", "100000", "--out", "run"]).fails_with(&["--workers", "100000", "at most"]);
    assert_eq!(r.code, Some(2));
    let r = run(dir.path(), ["--threads", "100000", "info", "resnet18"]).fails_with(&["--threads", "at most"]);
    assert_eq!(r.code, Some(2));
}

// Item 22: what the progress and metrics say.

#[test]
fn metrics_log_the_rate_each_epoch_started_and_ended_with() {
    let dir = scratch();
    // One epoch of 4 steps with the drop at step 2.
    train(dir.path(), &["--epochs", "1", "--milestones", "0.5", "--out", "run"]).ok();
    let run_dir = path(dir.path(), "run");
    let start: f64 = column(&run_dir, "lr_start")[0].parse().unwrap();
    let end: f64 = column(&run_dir, "lr_end")[0].parse().unwrap();
    let lr: f64 = column(&run_dir, "lr")[0].parse().unwrap();
    assert!((start - 0.1).abs() < 1e-6 && (end - 0.01).abs() < 1e-6 && lr == end, "{start} {end} {lr}");
    let jsonl = read(&run_dir.join("metrics.jsonl"));
    assert!(jsonl.contains("\"lr_start\"") && jsonl.contains("\"lr_end\""), "{jsonl}");
}

#[test]
fn quiet_epoch_lines_show_the_rate_change_and_the_run_eta() {
    let dir = scratch();
    let r = train(dir.path(), &["--epochs", "2", "--milestones", "0.25", "--out", "run"]).ok();
    let first = r.stderr.lines().find(|l| l.starts_with("epoch   1")).unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(first.contains("lr 0.1000->0.0100"), "{first}");
    assert!(first.contains("run ETA"), "{first}");
}

// Item 23: words and flag checks.

#[test]
fn one_epoch_is_singular() {
    let dir = scratch();
    let r = train(dir.path(), &["--epochs", "1", "--out", "run"]).ok();
    assert!(r.stdout.contains("done: 1 epoch,"), "{}", r.stdout);
}

#[test]
fn out_of_range_optimiser_flags_are_usage_errors() {
    let dir = scratch();
    for (args, needle) in [
        (&["--momentum", "5"][..], "--momentum"),
        (&["--weight-decay=-1"][..], "--weight-decay"),
        (&["--gamma", "0"][..], "--gamma"),
        (&["--milestones", "2,1"][..], "--milestones"),
        (&["--lr", "0"][..], "--lr"),
        (&["--warmup", "abc"][..], "--warmup"),
        (&["--pca"][..], "--pca"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--out", "run"]);
        let r = train(dir.path(), &all).fails_with(&[needle]);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(!dir.path().join("run").exists(), "{args:?} created the run directory");
    }
}

// Extending a run keeps the rate it ended with.

#[test]
fn extending_a_paper_recipe_run_continues_at_its_last_rate() {
    let dir = scratch();
    // 8 steps: the scaled milestones fall at steps 4 and 6, the run ends at 0.001.
    train(dir.path(), &["--recipe", "cifar-paper", "--dataset", "synthetic", "--epochs", "2", "--out", "run"]).ok();
    let r = run(dir.path(), ["train", "--resume", "run", "--epochs", "4", "--quiet"]).ok();
    assert!(r.stderr.contains("of the old run are kept at iterations 4,6"), "{}", r.stderr);
    assert!(r.stderr.contains("continues at learning rate 0.001"), "{}", r.stderr);
    let run_dir = path(dir.path(), "run");
    let ends = column(&run_dir, "lr_end");
    let starts = column(&run_dir, "lr_start");
    assert_eq!(starts[2], ends[1], "the rate jumped after the old end: starts {starts:?}, ends {ends:?}");
    assert_eq!(ends[3], ends[1], "starts {starts:?}, ends {ends:?}");
    assert_eq!(
        config(&run_dir)["decay"]["Step"]["milestones"],
        serde_json::json!([{"Iteration": 4}, {"Iteration": 6}])
    );
}

#[test]
fn a_cosine_run_refuses_a_new_length() {
    let dir = scratch();
    train(dir.path(), &["--schedule", "cosine", "--epochs", "1", "--out", "run"]).ok();
    let r = run(dir.path(), ["train", "--resume", "run", "--epochs", "2"]).fails_with(&["run", "cosine", "new run"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(config(&path(dir.path(), "run"))["length"], serde_json::json!({"Epochs": 1}));
}
