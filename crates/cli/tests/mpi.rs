//! Data-parallel training over MPI (a build with the `mpi` feature; Open MPI installed):
//! `mpirun -np 2 resnet train` against the same run on two ranks as threads of this process
//! (the MPI transport changes nothing), and two MPI ranks with `--sync-bn` against one process
//! with the whole batch (the same trajectory). `.ci/run` runs them with
//! `cargo test -p resnet-cli --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use resnet_models::TensorData;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::distributed::{LocalGroup, MpiCommunicator};
use resnet_train::metrics::EpochMetrics;
use resnet_train::trainer::{self, Observer, Silent, StepReport};
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

/// `mpirun` starting two ranks (as root, on more ranks than cores if need be).
fn mpirun_two_ranks() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"]);
    c
}

/// Runs an `mpirun` job to its end; returns its standard output and error, after checking it
/// succeeded.
fn succeeds(mut job: Command) -> String {
    let out = job.output().expect("mpirun (install openmpi-bin, see the README)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mpirun failed:\n{log}");
    log
}

#[test]
fn two_mpi_ranks_train_as_two_ranks_in_one_process() {
    let over_mpi = fresh("mpirun");
    let mut job = mpirun_two_ranks();
    job.arg(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--synthetic-train", "256", "--synthetic-test", "64", "--synthetic-size", "16"])
        .args(["--model", "cifar-resnet8", "--batch-size", "32", "--epochs", "2", "--threads", "1", "--quiet"])
        .arg("--out")
        .arg(&over_mpi);
    let log = succeeds(job);
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

/// A CIFAR-10 binary folder of 16 generated images per file.
fn tiny_cifar(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 11u32;
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        let mut bytes = Vec::new();
        for i in 0..16u8 {
            bytes.push(i % 10);
            bytes.extend((0..3072).map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            }));
        }
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

/// What every rank would say about the run (the data it recognised, where it trains) is said
/// once, by rank 0.
#[test]
fn only_the_first_rank_speaks() {
    let (data, out_dir) = (fresh("tiny-cifar"), fresh("speaks"));
    tiny_cifar(&data);
    let mut job = mpirun_two_ranks();
    job.arg(env!("CARGO_BIN_EXE_resnet"))
        .args(["train", "--model", "cifar-resnet8", "--batch-size", "16", "--epochs", "1", "--threads", "1", "--quiet"])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out_dir);
    let log = succeeds(job);
    for line in ["recognised as cifar10", "on 2 ranks into", "epoch   1"] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} in:\n{log}");
    }
}

/// The run of the `--sync-bn` comparison: 10 steps of batch 128 on generated images. At a
/// rate of 0.02 the two summation orders (one process's against two ranks' sums) part by about
/// 1e-5 of the parameters after 10 steps; at 0.1 the steps amplify the same rounding to 2e-4
/// (after one step the two agree to 5e-7 either way).
fn sync_bn_run(sync_bn: bool) -> TrainConfig {
    TrainConfig {
        model: "cifar-resnet8".into(),
        synthetic_train: 1280,
        synthetic_test: 256,
        synthetic_size: 16,
        batch_size: 128,
        eval_batch_size: 128,
        length: RunLength::Iterations(10),
        sync_bn,
        lr: 0.02,
        ..TrainConfig::quickstart()
    }
}

/// Each step's loss over the whole batch, from the epoch's running mean the trainer reports.
#[derive(Default)]
struct StepLosses {
    means: Vec<f64>,
}

impl Observer for StepLosses {
    fn step(&mut self, report: &StepReport) {
        self.means.push(report.loss);
    }
}

impl StepLosses {
    fn losses(&self) -> Vec<f64> {
        (0..self.means.len())
            .map(|k| (k + 1) as f64 * self.means[k] - k as f64 * if k > 0 { self.means[k - 1] } else { 0.0 })
            .collect()
    }
}

/// Where a child rank of [`two_ranks_with_sync_bn_follow_one_process_with_the_whole_batch`]
/// writes; set only in the processes `mpirun` starts for it.
const CHILD: &str = "RESNET_MPI_TEST_OUT";

#[test]
fn sync_bn_rank() {
    // A rank of the test below, started by its mpirun; nothing to do otherwise.
    let Some(out) = std::env::var_os(CHILD).map(PathBuf::from) else { return };
    let _ = resnet_kernels::threads::set_num_threads(1);
    let comm = MpiCommunicator::init(std::time::Duration::from_secs(600)).unwrap();
    let mut steps = StepLosses::default();
    trainer::run_with(sync_bn_run(true), &out.join("run"), false, &AtomicBool::new(false), &mut steps, &comm).unwrap();
    if resnet_train::distributed::Communicator::rank(&comm) == 0 {
        std::fs::write(out.join("losses.json"), serde_json::to_string(&steps.losses()).unwrap()).unwrap();
    }
}

/// Every float tensor of a checkpoint, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    Checkpoint::load(path)
        .unwrap()
        .state
        .into_iter()
        .filter_map(|t| match t.data {
            TensorData::F32(v) => Some((t.name, v)),
            TensorData::I64(_) => None,
        })
        .collect()
}

#[test]
fn two_ranks_with_sync_bn_follow_one_process_with_the_whole_batch() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let over_mpi = fresh("sync-bn");
    std::fs::create_dir_all(&over_mpi).unwrap();
    let mut job = mpirun_two_ranks();
    job.arg("-x").arg(format!("{CHILD}={}", over_mpi.display()));
    job.arg(std::env::current_exe().unwrap()).args(["--exact", "sync_bn_rank", "--test-threads", "1"]);
    succeeds(job);
    let ranks: Vec<f64> = serde_json::from_slice(&std::fs::read(over_mpi.join("losses.json")).unwrap()).unwrap();

    // One process, the whole batch, one compute thread as each rank had.
    let _ = resnet_kernels::threads::set_num_threads(1);
    let alone = fresh("whole-batch");
    let mut steps = StepLosses::default();
    trainer::run(sync_bn_run(false), &alone, false, &AtomicBool::new(false), &mut steps).unwrap();
    let whole = steps.losses();

    assert_eq!(ranks.len(), 10);
    for (k, (a, b)) in ranks.iter().zip(&whole).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "step {}: loss {a} on two ranks, {b} in one process", k + 1);
    }
    // Trainable tensors (not the running statistics): all of them together within 1e-4 of the
    // one-process values (relative L2), and every convolution and classifier weight within
    // 1e-4 of its largest value. Batch-norm shifts start at zero and stay small, so on their
    // own scale they show the same rounding larger.
    let trained = |dir: &Path| {
        let all = tensors(&dir.join("checkpoints/last.safetensors"));
        all.into_iter().filter(|(n, _)| !n.contains("running") && !n.contains("num_batches")).collect::<Vec<_>>()
    };
    let (two, one) = (trained(&over_mpi.join("run")), trained(&alone));
    let (mut diff2, mut norm2) = (0.0f64, 0.0f64);
    for ((name, a), (other, b)) in two.iter().zip(&one) {
        assert_eq!(name, other);
        diff2 += a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>();
        norm2 += b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>();
        if name.ends_with("weight") && !name.contains("bn") {
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst <= 1e-4 * scale, "{name}: differs by {worst} (largest {scale}) after 10 steps");
        }
    }
    let relative = (diff2 / norm2).sqrt();
    assert!(relative <= 1e-4, "the parameters differ by {relative:.3e} (relative L2) after 10 steps");
}

/// Set in the processes of [`a_rank_that_hangs_ends_the_job_naming_the_rank_that_waited`]'s
/// mpirun.
const HANG: &str = "RESNET_MPI_TEST_HANG";

#[test]
fn hanging_rank() {
    // A rank of the test below: rank 1 never joins the sum rank 0 waits in.
    if std::env::var_os(HANG).is_none() {
        return;
    }
    let comm = MpiCommunicator::init(std::time::Duration::from_secs(2)).unwrap();
    if resnet_train::distributed::Communicator::rank(&comm) == 1 {
        std::thread::sleep(std::time::Duration::from_secs(120));
        return;
    }
    resnet_train::distributed::Communicator::all_reduce_sum_f64(&comm, &mut [1.0]);
}

#[test]
fn a_rank_that_hangs_ends_the_job_naming_the_rank_that_waited() {
    if std::env::var_os(CHILD).is_some() || std::env::var_os(HANG).is_some() {
        return;
    }
    let mut job = mpirun_two_ranks()
        .arg("-x")
        .arg(format!("{HANG}=1"))
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "hanging_rank", "--test-threads", "1", "--nocapture"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun (install openmpi-bin, see the README)");
    let start = std::time::Instant::now();
    while job.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() > 60 {
            let _ = job.kill();
            panic!("the job still runs a minute after its 2-second timeout");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = job.wait_with_output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the job should fail:\n{log}");
    assert!(log.contains("rank 0 of 2: the other ranks did not answer for 2 s"), "{log}");
}
