//! How a run reports its progress: the CLI draws progress bars from it, tests ignore it.

use crate::metrics::EpochMetrics;

/// One optimisation step, as reported to an [`Observer`].
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Epoch, from 1.
    pub epoch: u64,
    /// Batches of this epoch done.
    pub batch: u64,
    /// Batches of this epoch: an epoch's, or fewer when the run ends inside this epoch.
    pub batches: u64,
    /// Steps done in the run.
    pub iteration: u64,
    /// Steps of the run.
    pub total_iterations: u64,
    /// Learning rate used.
    pub lr: f32,
    /// Mean loss of the epoch so far.
    pub loss: f64,
    /// Training error of the epoch so far, percent.
    pub error: f64,
    /// Throughput of the epoch so far.
    pub images_per_sec: f64,
}

/// Receives progress; the CLI draws progress bars from it, tests ignore it.
pub trait Observer {
    /// A line worth telling the user.
    fn message(&mut self, _text: &str) {}
    /// An epoch (from 1) of `batches` batches starts at batch `start` (`batches` is fewer than an
    /// epoch's when the run ends inside this epoch).
    fn epoch_start(&mut self, _epoch: u64, _batches: u64, _start: u64) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// An evaluation of `batches` batches starts (`what`: "test", "validation").
    fn eval_start(&mut self, _what: &str, _batches: usize) {}
    /// `done` evaluation batches finished.
    fn eval_step(&mut self, _done: usize) {}
    /// An epoch finished with these metrics.
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
    /// The run's number of classes, once its data is open.
    fn classes(&mut self, _count: usize) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}
