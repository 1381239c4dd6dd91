//! `mpirun -np 2 resnet train` (a build with the `mpi` feature, Open MPI or MPICH installed)
//! against the same run on two ranks as threads of this process: the MPI transport changes
//! nothing, so the metrics and the final network agree. `.ci/run` runs it with
//! `cargo test -p resnet-cli --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use resnet_train::config::TrainConfig;
use resnet_train::distributed::LocalGroup;
use resnet_train::metrics::EpochMetrics;
use resnet_train::trainer::{self, Silent};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

fn fresh(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn metrics(dir: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| EpochMetrics { images_per_sec: 0.0, seconds: 0.0, ..serde_json::from_str(l).unwrap() })
        .collect()
}

#[test]
fn two_mpi_ranks_train_as_two_ranks_in_one_process() {
    let over_mpi = fresh("mpirun");
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--synthetic-train", "256", "--synthetic-test", "64", "--synthetic-size", "16"])
        .args(["--model", "cifar-resnet8", "--batch-size", "32", "--epochs", "2", "--threads", "1", "--quiet"])
        .arg("--out")
        .arg(&over_mpi)
        .output()
        .expect("mpirun (install openmpi-bin, see the README)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mpirun failed:\n{log}");
    assert!(log.contains("on 2 ranks"), "{log}");

    // The same resolved configuration on two threads of this process, computing on one thread
    // as each MPI rank did (`--threads 1`).
    let _ = resnet_kernels::threads::set_num_threads(1);
    let config: TrainConfig = serde_json::from_slice(&std::fs::read(over_mpi.join("config.json")).unwrap()).unwrap();
    assert_eq!(config.world_size, 2);
    let in_process = fresh("threads");
    std::thread::scope(|s| {
        for comm in LocalGroup::new(2) {
            let (config, dir) = (config.clone(), &in_process);
            s.spawn(move || {
                trainer::run_with(config, dir, false, &AtomicBool::new(false), &mut Silent, &comm).unwrap()
            });
        }
    });
    let (a, b) = (metrics(&over_mpi), metrics(&in_process));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        for (what, p, q) in [("train loss", x.train_loss, y.train_loss), ("test loss", x.test_loss, y.test_loss)] {
            assert!((p - q).abs() <= 1e-4 * q.abs(), "epoch {}: {what} {p} over MPI, {q} in one process", x.epoch);
        }
        assert_eq!(x.test_error, y.test_error, "epoch {}", x.epoch);
    }
}
