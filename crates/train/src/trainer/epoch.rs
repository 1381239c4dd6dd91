//! A run in progress, one epoch at a time: the steps of an epoch (stopping early on request),
//! then its end: evaluation, the metrics row, the plot and the checkpoints.

use super::{Loaders, Observer, Outcome, RunDir, RunSummary, StepReport, TrainError};
use crate::checkpoint::{Checkpoint, EpochSums, Preprocess, Progress, TrainingState};
use crate::distributed::{
    broadcast_batch_norm_statistics, sum_evaluation, BucketExchange, Communicator, GradientBuckets,
};
use crate::evaluate::{evaluate, EvalResult};
use crate::metrics::{self, EpochMetrics};
use crate::schedule::Schedule;
use crate::step::{train_step, train_step_exchanging, StepBuffers};
use resnet_data::{Batch, Loader};
use resnet_models::{ResNet, TensorData};
use resnet_nn::optim::Sgd;
use resnet_nn::Tensor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A run in progress: the network and what its steps advance, and what its files record.
pub(super) struct Run<'a> {
    /// The run directory.
    pub run_dir: &'a RunDir,
    /// The network trained.
    pub net: ResNet,
    /// The optimizer, with its momentum.
    pub sgd: Sgd,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Where the run stands.
    pub progress: Progress,
    /// The metrics of the epochs done.
    pub history: Vec<EpochMetrics>,
    /// Iterations of the run.
    pub total: u64,
    /// Batches of an epoch.
    pub per_epoch: u64,
    /// Label smoothing of the loss.
    pub label_smoothing: f32,
    /// Save a checkpoint of every this many epochs (0: none).
    pub checkpoint_every: u64,
    /// What every checkpoint records besides the network and its optimizer state.
    pub record: Record,
    /// The title of the plot.
    pub title: String,
    /// Scratch of the steps, kept across them.
    pub buffers: StepBuffers,
    /// The best checkpoint, once written.
    pub best: Option<PathBuf>,
    /// The data-parallel ranks (one alone outside MPI); rank 0 writes every file.
    pub comm: &'a dyn Communicator,
    /// Where the gradients are averaged over the ranks.
    pub buckets: GradientBuckets,
    /// Whether a stop was asked of any rank by the last step (all ranks stop at the same step).
    pub stop_asked: bool,
}

/// What every checkpoint of a run records besides the network and its optimizer state.
pub(super) struct Record {
    /// Class names.
    pub classes: Vec<String>,
    /// How images are prepared for the network.
    pub preprocess: Preprocess,
    /// The run's configuration, as JSON.
    pub config: serde_json::Value,
}

/// What the steps of an epoch leave for its end.
struct TrainedEpoch {
    /// The epoch's sums.
    sums: EpochSums,
    /// The rate at the epoch's first step.
    lr_start: f32,
    /// The rate at its last step.
    lr: f32,
    /// Seconds spent in its steps.
    seconds: f64,
}

/// How the steps of an epoch ended.
enum Steps {
    /// All of them ran (or the run reached its length).
    Done(TrainedEpoch),
    /// A stop was asked for, and a checkpoint written.
    Interrupted,
}

impl Run<'_> {
    /// Trains until the run reaches its length, or a stop is asked for.
    pub fn train(
        &mut self,
        loaders: &Loaders,
        stop: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<Outcome, TrainError> {
        while self.progress.iteration < self.total {
            let Steps::Done(trained) = self.train_epoch(&loaders.train, stop, observer)? else {
                return Ok(Outcome::Interrupted);
            };
            self.end_epoch(trained, loaders, observer)?;
            if self.stop_asked && self.progress.iteration < self.total {
                observer.message(&format!("interrupted: checkpoint written to {}", self.run_dir.last().display()));
                return Ok(Outcome::Interrupted);
            }
        }
        Ok(Outcome::Finished)
    }

    /// The summary of the run, ended with `outcome`.
    pub fn summary(self, outcome: Outcome) -> RunSummary {
        RunSummary {
            outcome,
            dir: self.run_dir.root.clone(),
            history: self.history,
            last_checkpoint: self.run_dir.last(),
            best_checkpoint: self.best,
            classes: self.record.classes.len(),
        }
    }

    /// The steps of the current epoch, from where it stands; on a stop asked for inside the
    /// epoch, writes the last checkpoint with the epoch's partial sums.
    fn train_epoch(
        &mut self,
        loader: &Loader,
        stop: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<Steps, TrainError> {
        let epoch = self.progress.epoch;
        let first_step = self.progress.iteration - self.progress.batch;
        let batches = self.per_epoch.min(self.total - first_step);
        observer.epoch_start(epoch + 1, batches, self.progress.batch);
        let epoch_start = Instant::now();
        let mut sums = self.progress.partial.clone();
        let lr_start = self.schedule.lr(first_step);
        let mut lr = self.schedule.lr(self.progress.iteration);
        for batch in loader.epoch(epoch, self.progress.batch as usize) {
            lr = self.schedule.lr(self.progress.iteration);
            self.step(batch?, lr, &mut sums, stop)?;
            let elapsed = sums.seconds + epoch_start.elapsed().as_secs_f64();
            observer.step(&StepReport {
                epoch: epoch + 1,
                batch: self.progress.batch,
                batches,
                iteration: self.progress.iteration,
                total_iterations: self.total,
                lr,
                loss: sums.loss / sums.samples as f64,
                error: 100.0 * sums.errors as f64 / sums.samples as f64,
                images_per_sec: sums.samples as f64 / elapsed.max(1e-9),
            });
            if self.progress.iteration >= self.total {
                break;
            }
            if self.stop_asked && self.progress.batch < self.per_epoch {
                sums.seconds += epoch_start.elapsed().as_secs_f64();
                self.progress.partial = sums;
                self.progress.schedule = self.schedule.state.clone();
                self.save(&self.run_dir.last())?;
                observer.message(&format!("interrupted: checkpoint written to {}", self.run_dir.last().display()));
                return Ok(Steps::Interrupted);
            }
        }
        let seconds = sums.seconds + epoch_start.elapsed().as_secs_f64();
        Ok(Steps::Done(TrainedEpoch { sums, lr_start, lr, seconds }))
    }

    /// One SGD step on `batch` at rate `lr`, added to the epoch's `sums`: this rank's share of
    /// the batch, its gradients averaged with the other ranks' before the update, and the
    /// step's loss, errors and samples summed over the ranks, with whether a stop was asked of
    /// any of them (`stop` here).
    fn step(&mut self, batch: Batch, lr: f32, sums: &mut EpochSums, stop: &AtomicBool) -> Result<(), TrainError> {
        let n = batch.labels.len();
        let x = Tensor::from_vec(batch.shape, batch.images);
        let (comm, buckets) = (self.comm, &mut self.buckets);
        // Training batches are whole (`drop_last`) and split evenly: every rank has `n`.
        let global = n * comm.size();
        let ce = if comm.size() == 1 {
            train_step(&mut self.net, &mut self.sgd, &x, &batch.labels, lr, self.label_smoothing, &mut self.buffers)
        } else {
            let exchange = &mut BucketExchange { buckets, comm, local: n, global };
            let (net, sgd, buffers) = (&mut self.net, &mut self.sgd, &mut self.buffers);
            train_step_exchanging(net, sgd, &x, &batch.labels, lr, self.label_smoothing, buffers, exchange)
        };
        let mut step =
            [ce.loss * n as f64, ce.top1_errors as f64, n as f64, f64::from(u8::from(stop.load(Ordering::SeqCst)))];
        comm.all_reduce_sum_f64(&mut step);
        let [loss_sum, errors, samples, stops] = step;
        self.stop_asked = stops > 0.0;
        let loss = loss_sum / samples;
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                loss,
                iteration: self.progress.iteration + 1,
                epoch: self.progress.epoch + 1,
                kept: self.run_dir.kept(),
            });
        }
        sums.loss += loss_sum;
        sums.errors += errors as u64;
        sums.samples += samples as u64;
        self.schedule.observe_batch(self.progress.iteration, 100.0 * errors / samples);
        self.progress.iteration += 1;
        self.progress.batch += 1;
        Ok(())
    }

    /// The end of an epoch: evaluation, the metrics row and plot, the schedule's look at the
    /// monitored error, and the checkpoints.
    fn end_epoch(
        &mut self,
        trained: TrainedEpoch,
        loaders: &Loaders,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let TrainedEpoch { sums, lr_start, lr, seconds } = trained;
        let eval_start = Instant::now();
        let test = self.evaluate("test", &loaders.test, observer)?;
        let val = match &loaders.val {
            Some(l) => Some(self.evaluate("validation", l, observer)?),
            None => None,
        };
        let row = EpochMetrics {
            epoch: self.progress.epoch + 1,
            iteration: self.progress.iteration,
            lr: f64::from(lr),
            lr_start: Some(f64::from(lr_start)),
            lr_end: Some(f64::from(lr)),
            train_loss: sums.loss / sums.samples.max(1) as f64,
            train_error: 100.0 * sums.errors as f64 / sums.samples.max(1) as f64,
            test_loss: test.loss,
            test_error: test.top1_error,
            test_top5_error: test.top5_error,
            val_error: val.as_ref().map(|v| v.top1_error),
            images_per_sec: sums.samples as f64 / seconds.max(1e-9),
            seconds: seconds + eval_start.elapsed().as_secs_f64(),
            world_size: self.comm.size(),
        };
        self.history.push(row.clone());
        if self.writes_files() {
            metrics::write(&self.run_dir.root, &self.history)?;
            metrics::plot(&self.run_dir.root, &self.title, &self.history)?;
        }
        let monitored = row.val_error.unwrap_or(row.test_error);
        if self.schedule.observe_epoch(monitored) {
            observer
                .message(&format!("error plateaued: learning rate now {}", self.schedule.lr(self.progress.iteration)));
        }
        self.progress.epoch += 1;
        self.progress.batch = 0;
        self.progress.partial = EpochSums::default();
        self.progress.schedule = self.schedule.state.clone();
        self.save_epoch(monitored)?;
        observer.epoch_end(&row);
        Ok(())
    }

    /// Evaluates the network on `loader` (`what`: "test", "validation"): each rank its share
    /// of every batch with rank 0's batch-norm statistics, the results summed over the ranks.
    fn evaluate(&mut self, what: &str, loader: &Loader, observer: &mut dyn Observer) -> Result<EvalResult, TrainError> {
        observer.eval_start(what, loader.batches_per_epoch());
        broadcast_batch_norm_statistics(&mut self.net, self.comm);
        let local = evaluate(&mut self.net, loader, |done| observer.eval_step(done))?;
        Ok(sum_evaluation(local, self.comm))
    }

    /// Whether this process writes the run's files: rank 0 alone.
    fn writes_files(&self) -> bool {
        self.comm.rank() == 0
    }

    /// The checkpoints of a finished epoch: the best one when the `monitored` error is the
    /// lowest yet, the last one, and every `checkpoint_every` epochs one of its own.
    fn save_epoch(&mut self, monitored: f64) -> Result<(), TrainError> {
        if self.progress.best_error.is_none_or(|b| monitored < b) {
            self.progress.best_error = Some(monitored);
            self.save(&self.run_dir.best())?;
            self.best = Some(self.run_dir.best());
        }
        self.save(&self.run_dir.last())?;
        if self.checkpoint_every > 0 && self.progress.epoch.is_multiple_of(self.checkpoint_every) {
            self.save(&self.run_dir.epoch(self.progress.epoch))?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the network, its optimizer state and the run's position to `path`
    /// (on rank 0; the other ranks hold the same network and write nothing).
    fn save(&self, path: &Path) -> Result<(), TrainError> {
        if !self.writes_files() {
            return Ok(());
        }
        let mut ckpt = Checkpoint::from_network(&self.net, self.record.classes.clone(), self.record.preprocess.clone());
        let names = self.net.params().iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        ckpt.training = Some(TrainingState {
            // Frozen parameters have none.
            velocity: names.into_iter().zip(self.sgd.velocity.iter().cloned()).filter(|(_, v)| !v.is_empty()).collect(),
            progress: self.progress.clone(),
            config: self.record.config.clone(),
        });
        // A diverging run can overflow a batch norm's running variance while the loss is still
        // finite: such a network is not a good checkpoint.
        if let Some((tensor, count)) = non_finite(&ckpt) {
            return Err(TrainError::NonFinite {
                tensor,
                count,
                iteration: self.progress.iteration,
                epoch: self.progress.epoch + u64::from(self.progress.batch > 0),
                kept: self.run_dir.kept(),
            });
        }
        ckpt.save(path)?;
        Ok(())
    }
}

/// The first non-finite tensor of a checkpoint (weights, buffers, momentum) and how many are.
fn non_finite(ckpt: &Checkpoint) -> Option<(String, usize)> {
    let weights = ckpt.state.iter().filter_map(|t| match &t.data {
        TensorData::F32(v) => Some((t.name.as_str(), v.as_slice())),
        TensorData::I64(_) => None,
    });
    let velocity = ckpt.training.iter().flat_map(|t| t.velocity.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    let bad: Vec<&str> =
        weights.chain(velocity).filter(|(_, v)| v.iter().any(|x| !x.is_finite())).map(|(n, _)| n).collect();
    bad.first().map(|first| (first.to_string(), bad.len()))
}
