//! Data-parallel training: `N` processes (ranks) train one network, each on its share of every
//! batch (see `resnet_data::Shard`), and average their gradients before every SGD step, so that
//! each step is the step one process would take on the whole batch (with batch norm over each
//! rank's share, as the paper's per-GPU batch norm).
//!
//! [`Communicator`] is what the trainer needs of a group of ranks; [`Solo`] is one process alone,
//! [`LocalGroup`] ranks as threads of one process (the tests' group), and `MpiCommunicator`
//! (cargo feature `mpi`) the ranks `mpirun` starts, on one machine or many. [`GradientBuckets`]
//! averages the gradients in buckets of about 25 MB, last layers first.

mod buckets;
mod local;
#[cfg(feature = "mpi")]
mod mpi;

pub use buckets::{broadcast_batch_norm_statistics, broadcast_network, BucketExchange, GradientBuckets, BUCKET_BYTES};
pub use local::LocalGroup;
#[cfg(feature = "mpi")]
pub use mpi::MpiCommunicator;

use crate::evaluate::EvalResult;
use resnet_nn::ops::StatisticsSync;
use std::sync::Arc;

/// The collective operations of a group of ranks. Every rank calls the same operations in the
/// same order with buffers of the same length; a call returns once every rank has made it.
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by its sum over the ranks.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// [`Communicator::all_reduce_sum`] of a buffer handed over and handed back (the same
    /// length), which a group that moves buffers between threads does without copying them.
    fn all_reduce_sum_owned(&self, mut buf: Vec<f32>) -> Vec<f32> {
        self.all_reduce_sum(&mut buf);
        buf
    }
    /// Whether [`Communicator::start_all_reduce_sum`] returns before the sum is done (so that
    /// the backward pass can go on meanwhile); where not, the sums wait for the pass's end.
    fn overlaps(&self) -> bool {
        false
    }
    /// Starts [`Communicator::all_reduce_sum_owned`] of `buf`; the sum is [`PendingSum::wait`]'s.
    /// Ranks start their sums in the same order.
    fn start_all_reduce_sum(&self, buf: Vec<f32>) -> PendingSum {
        let sum = self.all_reduce_sum_owned(buf);
        PendingSum(Box::new(move || sum))
    }
    /// [`Communicator::all_reduce_sum`] in f64 (loss sums and counts, which f32 would round).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Copies `root`'s `buf` to every rank.
    fn broadcast(&self, buf: &mut [f32], root: usize);
    /// Every rank's `value`, in rank order (to compare what the ranks were started with).
    fn all_gather_u64(&self, value: u64) -> Vec<u64>;
    /// Ends every rank of the job with exit status `code`, so that none waits forever for a rank
    /// that failed (MPI's `MPI_Abort`); a group without that power does nothing.
    fn abort(&self, code: i32) {
        let _ = code;
    }
    /// A handle that sums batch statistics over the group from any thread (synchronised batch
    /// norm), where the group has one.
    fn statistics_sync(&self) -> Option<Arc<dyn StatisticsSync>> {
        None
    }
}

/// A sum over the ranks under way.
pub struct PendingSum(Box<dyn FnOnce() -> Vec<f32> + Send>);

impl PendingSum {
    /// A sum whose result `wait` gives.
    pub fn new(wait: impl FnOnce() -> Vec<f32> + Send + 'static) -> Self {
        PendingSum(Box::new(wait))
    }

    /// Waits for the sum.
    pub fn wait(self) -> Vec<f32> {
        (self.0)()
    }
}

impl std::fmt::Debug for PendingSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingSum")
    }
}

/// One process alone: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _: &mut [f32]) {}

    fn all_reduce_sum_f64(&self, _: &mut [f64]) {}

    fn broadcast(&self, _: &mut [f32], _: usize) {}

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
}

/// `local`, one rank's evaluation of its share of a split, made the evaluation of the whole
/// split: its counts, loss and confusion matrix summed over the ranks.
pub fn sum_evaluation(local: EvalResult, comm: &dyn Communicator) -> EvalResult {
    if comm.size() == 1 {
        return local;
    }
    let n = local.count as f64;
    // Counts come back from the percentages exactly: `100 * count / n` rounds to within far
    // less than half a count for any split that fits in memory.
    let count_of = |percent: f64| (percent * n / 100.0).round();
    let mut sums =
        vec![local.loss * n, count_of(local.top1_error), count_of(local.top5_error), n, local.non_finite as f64];
    sums.extend(local.confusion.iter().flatten().map(|&c| c as f64));
    comm.all_reduce_sum_f64(&mut sums);
    let total = sums[3].max(1.0);
    let k = local.confusion.len();
    let confusion: Vec<Vec<u64>> =
        sums[5..].chunks(k.max(1)).take(k).map(|row| row.iter().map(|&c| c as u64).collect()).collect();
    let per_class_accuracy = crate::evaluate::per_class_accuracy(&confusion);
    EvalResult {
        top1_error: 100.0 * sums[1] / total,
        top5_error: 100.0 * sums[2] / total,
        loss: sums[0] / total,
        count: sums[3] as u64,
        views: local.views,
        per_class_accuracy,
        confusion,
        non_finite: sums[4] as u64,
    }
}

/// A hash of `config` as every rank resolved it, gathered and compared: ranks started with
/// different models, data or flags would train different things under one name.
///
/// # Errors
/// A message naming the ranks whose configuration differs from rank 0's.
pub fn check_same_config(config: &crate::config::TrainConfig, comm: &dyn Communicator) -> Result<(), String> {
    use std::hash::{Hash, Hasher};
    if comm.size() == 1 {
        return Ok(());
    }
    let text =
        serde_json::to_string(config).map_err(|e| format!("the configuration cannot be written as JSON: {e}"))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let hashes = comm.all_gather_u64(hasher.finish());
    let differ: Vec<String> = (1..hashes.len()).filter(|&r| hashes[r] != hashes[0]).map(|r| r.to_string()).collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "rank(s) {} were started with another configuration than rank 0 (model, data, flags and seed must be \
             the same on every rank: start them with one command line)",
            differ.join(", ")
        ))
    }
}
