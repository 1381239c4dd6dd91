//! Data-parallel training with ranks as threads (`LocalGroup`): the averaged step against a
//! single-process simulation of it, every bucket reduced, the trainer's files written by rank 0
//! alone, stops agreed, and ranks started differently refused.

mod common;

use common::{fresh_dir, learning_run};
use resnet_kernels::rng::Rng;
use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{InitConfig, ResNet};
use resnet_nn::optim::{Sgd, SgdConfig};
use resnet_nn::Param;
use resnet_nn::Tensor;
use resnet_train::config::{RunLength, TrainConfig};
use resnet_train::distributed::BucketExchange;
use resnet_train::distributed::{Communicator, GradientBuckets, LocalGroup};
use resnet_train::step::{train_step_exchanging, GradientExchange, StepBuffers};
use resnet_train::trainer::{self, Outcome, Silent};
use std::sync::atomic::AtomicBool;

fn network() -> ResNet {
    let mut net = ResNet::new(spec("cifar-resnet8", &ModelOptions::default()).unwrap()).unwrap();
    net.init(&InitConfig::default());
    net
}

/// A batch of `n` random 16-pixel images and labels.
fn batch(n: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let x = Tensor::from_vec([n, 16, 16, 3], (0..n * 16 * 16 * 3).map(|_| rng.normal() as f32).collect());
    (x, (0..n).map(|i| (i % 10) as u32).collect())
}

/// Rows `from..from + n` of `x`.
fn rows(x: &Tensor, from: usize, n: usize) -> Tensor {
    let per = x.len() / x.n();
    let [_, h, w, c] = x.shape();
    Tensor::from_vec([n, h, w, c], x.data()[from * per..(from + n) * per].to_vec())
}

fn params(net: &mut ResNet) -> Vec<f32> {
    let mut all = Vec::new();
    net.for_each_param(|p| all.extend_from_slice(p.value()));
    all
}

fn gradients(net: &mut ResNet) -> Vec<f32> {
    let mut all = Vec::new();
    net.for_each_param(|p| all.extend_from_slice(&p.grad));
    all
}

const STEPS: usize = 10;

/// An exchange that only calls `F` on the network after the backward pass (to read or replace
/// its gradients before the update).
struct AfterPass<F>(F);

impl<F: FnMut(&mut ResNet) + Send> GradientExchange for AfterPass<F> {
    fn ready(&mut self, _: &[&Param]) {}

    fn finish(&mut self, net: &mut ResNet) {
        (self.0)(net)
    }
}

/// `ranks` ranks as threads, each stepping on its share of every batch with the gradients
/// averaged over them (buckets of `bucket_bytes`): rank 0's losses (the mean over all ranks)
/// and parameters after `STEPS` steps.
fn data_parallel(ranks: usize, batch_size: usize, bucket_bytes: usize) -> (Vec<f64>, Vec<f32>) {
    let group = LocalGroup::new(ranks);
    let results: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = group
            .into_iter()
            .map(|comm| {
                s.spawn(move || {
                    let mut net = network();
                    let mut buckets = GradientBuckets::new(&mut net, bucket_bytes);
                    let (mut sgd, mut buffers) = (Sgd::new(SgdConfig::default()), StepBuffers::default());
                    let share = batch_size / ranks;
                    let losses: Vec<f64> = (0..STEPS)
                        .map(|step| {
                            let (x, labels) = batch(batch_size, step as u64);
                            let at = comm.rank() * share;
                            let mine = rows(&x, at, share);
                            let exchange = &mut BucketExchange {
                                buckets: &mut buckets,
                                comm: &comm,
                                local: share,
                                global: batch_size,
                            };
                            let ce = train_step_exchanging(
                                &mut net,
                                &mut sgd,
                                &mine,
                                &labels[at..at + share],
                                0.05,
                                0.0,
                                &mut buffers,
                                exchange,
                            );
                            let mut sum = [ce.loss * share as f64];
                            comm.all_reduce_sum_f64(&mut sum);
                            sum[0] / batch_size as f64
                        })
                        .collect();
                    (losses, params(&mut net))
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for other in &results[1..] {
        assert_eq!(other.1, results[0].1, "every rank holds the same network");
    }
    results.into_iter().next().unwrap()
}

/// One process doing what the ranks do: the gradients of each share from the same weights
/// (batch norm over each share), averaged, then the SGD step.
fn simulated(ranks: usize, batch_size: usize) -> (Vec<f64>, Vec<f32>) {
    let mut net = network();
    let (mut sgd, mut buffers) = (Sgd::new(SgdConfig::default()), StepBuffers::default());
    let share = batch_size / ranks;
    let losses = (0..STEPS)
        .map(|step| {
            let (x, labels) = batch(batch_size, step as u64);
            let start = params(&mut net);
            let mut sum = vec![0.0f32; start.len()];
            let mut loss = 0.0;
            for r in 0..ranks {
                // Each share's gradient from the step's starting weights, without an update.
                let mut probe = network();
                let mut i = 0;
                probe.for_each_param(|p| {
                    let n = p.len();
                    p.value_mut().copy_from_slice(&start[i..i + n]);
                    i += n;
                });
                let mut no_update = Sgd::new(SgdConfig::default());
                let mut grads = Vec::new();
                let x = rows(&x, r * share, share);
                let at = r * share;
                let ce = train_step_exchanging(
                    &mut probe,
                    &mut no_update,
                    &x,
                    &labels[at..at + share],
                    0.0,
                    0.0,
                    &mut StepBuffers::default(),
                    &mut AfterPass(|net: &mut ResNet| grads = gradients(net)),
                );
                loss += ce.loss * share as f64;
                sum.iter_mut().zip(&grads).for_each(|(s, g)| *s += g * share as f32);
            }
            let mut i = 0;
            net.for_each_param(|p| {
                let n = p.len();
                p.grad = sum[i..i + n].iter().map(|s| s / batch_size as f32).collect();
                i += n;
            });
            let _ = &mut buffers;
            let mut index = 0;
            net.for_each_param(|p| {
                sgd.update(index, p, 0.05);
                index += 1;
            });
            loss / batch_size as f64
        })
        .collect();
    (losses, params(&mut net))
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: differ by {worst} (largest {scale})");
}

#[test]
fn two_ranks_follow_the_single_process_simulation_of_per_rank_batch_norm() {
    // Buckets of 64 KB: cifar-resnet8's gradients (about 300 KB) span several, so a bucket left
    // out of the sum would leave its parameters apart from the simulation's.
    let (losses, params) = data_parallel(2, 32, 64 << 10);
    let (want_losses, want_params) = simulated(2, 32);
    for (step, (a, b)) in losses.iter().zip(&want_losses).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "step {step}: loss {a} against {b}");
    }
    assert_close(&params, &want_params, "parameters after 10 steps");
}

#[test]
fn every_bucket_is_averaged() {
    // Each rank's gradient is its rank plus one everywhere: the average is 1.5 in every bucket.
    let group = LocalGroup::new(2);
    let grads: Vec<Vec<f32>> = std::thread::scope(|s| {
        let runs: Vec<_> = group
            .into_iter()
            .map(|comm| {
                s.spawn(move || {
                    let mut net = network();
                    let mut buckets = GradientBuckets::new(&mut net, 4096);
                    assert!(buckets.count() > 10, "{} buckets", buckets.count());
                    let value = comm.rank() as f32 + 1.0;
                    net.for_each_param(|p| p.grad = vec![value; p.len()]);
                    buckets.average(&mut net, &comm, 8, 16);
                    gradients(&mut net)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for g in &grads {
        let apart = g.iter().filter(|&&v| v != 1.5).count();
        assert_eq!(apart, 0, "{apart} of {} gradient values were not averaged", g.len());
    }
}

fn trainer_metrics_without_time(m: resnet_train::metrics::EpochMetrics) -> resnet_train::metrics::EpochMetrics {
    resnet_train::metrics::EpochMetrics { images_per_sec: 0.0, seconds: 0.0, ..m }
}

fn tiny(epochs: u64) -> TrainConfig {
    TrainConfig { synthetic_train: 256, synthetic_test: 64, length: RunLength::Epochs(epochs), ..learning_run() }
}

/// Trains `configs[r]` as rank `r` of a group of threads into `dir`, rank `stopper` (if any)
/// asked to stop from the start.
fn train_ranks(
    configs: Vec<TrainConfig>,
    dir: &std::path::Path,
    stopper: Option<usize>,
) -> Vec<Result<trainer::RunSummary, trainer::TrainError>> {
    let group = LocalGroup::new(configs.len());
    std::thread::scope(|s| {
        let runs: Vec<_> = group
            .into_iter()
            .zip(configs)
            .map(|(comm, config)| {
                s.spawn(move || {
                    let stop = AtomicBool::new(stopper == Some(comm.rank()));
                    trainer::run_with(config, dir, false, &stop, &mut Silent, &comm)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn rank_zero_writes_the_run_and_records_the_world_size() {
    let dir = fresh_dir("dp-files");
    let results = train_ranks(vec![tiny(1), tiny(1)], &dir, None);
    let summaries: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    // Every metric but the wall-clock ones, which each rank times itself.
    let untimed =
        |s: &trainer::RunSummary| s.history.iter().map(|m| trainer_metrics_without_time(m.clone())).collect::<Vec<_>>();
    assert_eq!(untimed(&summaries[0]), untimed(&summaries[1]), "the ranks agree on every metric");
    let m = &summaries[0].history[0];
    assert_eq!(m.world_size, 2);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["world_size"], 2);
    assert!(dir.join("checkpoints/last.safetensors").exists());
    let jsonl = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(jsonl.contains("\"world_size\":2"), "{jsonl}");
}

#[test]
fn a_stop_asked_of_one_rank_stops_every_rank_at_the_same_step() {
    let dir = fresh_dir("dp-stop");
    let results = train_ranks(vec![tiny(3), tiny(3)], &dir, Some(1));
    for r in results {
        let s = r.unwrap();
        assert_eq!(s.outcome, Outcome::Interrupted);
    }
    assert!(dir.join("checkpoints/last.safetensors").exists(), "rank 0 wrote the checkpoint");
}

#[test]
fn ranks_started_with_different_configurations_are_refused() {
    let dir = fresh_dir("dp-mismatch");
    let results = train_ranks(vec![tiny(1), TrainConfig { seed: 6, ..tiny(1) }], &dir, None);
    for r in results {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("rank(s) 1") && e.contains("another configuration"), "{e}");
    }
}

#[test]
fn a_batch_the_ranks_do_not_divide_is_refused() {
    let dir = fresh_dir("dp-batch");
    let results = train_ranks(vec![TrainConfig { batch_size: 33, ..tiny(1) }; 2], &dir, None);
    for r in results {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("--batch-size 33") && e.contains("multiple of 2"), "{e}");
    }
}

/// A group of one that records when sums start, against when the backward pass hands over
/// gradients: a group that overlaps, without the other ranks.
#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<&'static str>>,
}

impl Communicator for Recorder {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) {
        self.events.lock().unwrap().push("sum after the pass");
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) {}
    fn broadcast(&self, _: &mut [f32], _: usize) {}
    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
    fn overlaps(&self) -> bool {
        true
    }
    fn start_all_reduce_sum(&self, buf: Vec<f32>) -> resnet_train::distributed::PendingSum {
        self.events.lock().unwrap().push("sum started");
        resnet_train::distributed::PendingSum::new(move || buf)
    }
}

#[test]
fn buckets_start_summing_during_the_backward_pass_and_average_the_same() {
    let (x, labels) = batch(8, 1);
    // The gradients averaged after the pass (a group of one: the gradients themselves).
    let mut plain = network();
    let mut sgd = Sgd::new(SgdConfig::default());
    let mut grads = Vec::new();
    let capture = &mut AfterPass(|net: &mut ResNet| grads = gradients(net));
    train_step_exchanging(&mut plain, &mut sgd, &x, &labels, 0.0, 0.0, &mut StepBuffers::default(), capture);
    // Overlapped: small buckets fill and start while the pass goes on.
    let recorder = Recorder::default();
    let mut net = network();
    let mut buckets = GradientBuckets::new(&mut net, 16 << 10);
    let exchange = &mut BucketExchange { buckets: &mut buckets, comm: &recorder, local: 8, global: 8 };
    let mut sgd = Sgd::new(SgdConfig::default());
    let mut after = Vec::new();
    resnet_train::step::train_step_exchanging(
        &mut net,
        &mut sgd,
        &x,
        &labels,
        0.0,
        0.0,
        &mut StepBuffers::default(),
        exchange,
    );
    net.for_each_param(|p| after.extend_from_slice(&p.grad));
    let events = recorder.events.lock().unwrap().clone();
    assert!(events.len() > 10 && events.iter().all(|e| *e == "sum started"), "{events:?}");
    assert_eq!(after, grads, "the same gradients as summed after the pass");
}
