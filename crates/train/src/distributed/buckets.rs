//! Gradient averaging over the ranks, in buckets.
//!
//! Every trainable parameter's gradient has a place in one flat buffer, last layer first (the
//! order the backward pass finishes them in), and the buffer is summed over the ranks a bucket
//! of [`BUCKET_BYTES`] at a time, as PyTorch's `DistributedDataParallel` does: a bucket's sum can
//! start as soon as the backward pass has filled it, and a message of megabytes costs little
//! more than its bytes.

use super::{Communicator, PendingSum};
use crate::step::GradientExchange;
use resnet_models::ResNet;
use resnet_nn::Param;
use std::collections::HashMap;

/// Bytes of one bucket (PyTorch's default `bucket_cap_mb` is 25).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Where each gradient lies in the flat buffer, and the buffer.
#[derive(Debug)]
pub struct GradientBuckets {
    /// Each trainable parameter's gradient offset in the flat buffer, by name.
    offsets: HashMap<String, usize>,
    /// Every trainable gradient, last parameter first, cut into buckets of `bucket_len` (the
    /// last shorter): each its own vector, so that a group can take it and give it back.
    buckets: Vec<Vec<f32>>,
    /// Elements of one bucket.
    bucket_len: usize,
    /// Per bucket, the values still to be filled this step.
    unfilled: Vec<usize>,
    /// Per bucket, its sum when started before the end of the backward pass.
    pending: Vec<Option<PendingSum>>,
}

impl GradientBuckets {
    /// The buckets of `net`'s trainable parameters, of `bucket_bytes` each (the last smaller).
    ///
    /// # Panics
    /// If `bucket_bytes` holds no f32.
    pub fn new(net: &mut ResNet, bucket_bytes: usize) -> Self {
        let bucket_len = bucket_bytes / std::mem::size_of::<f32>();
        assert!(bucket_len > 0, "a bucket holds at least one value");
        let mut offsets = HashMap::new();
        let mut at = 0;
        for p in net.params().into_iter().rev().filter(|p| !p.frozen) {
            offsets.insert(p.name.clone(), at);
            at += p.len();
        }
        let buckets: Vec<Vec<f32>> =
            (0..at).step_by(bucket_len).map(|start| vec![0.0; bucket_len.min(at - start)]).collect();
        let unfilled = buckets.iter().map(Vec::len).collect();
        let pending = buckets.iter().map(|_| None).collect();
        GradientBuckets { offsets, buckets, bucket_len, unfilled, pending }
    }

    /// Buckets: the sums each step makes.
    pub fn count(&self) -> usize {
        self.buckets.len()
    }

    /// Replaces every trainable gradient by the average over all ranks' samples: each rank's
    /// gradient (a mean over its `local` samples) weighs `local / global`, `global` being the
    /// samples of all ranks together, so unequal shares (an epoch's last batch) average right.
    /// [`Self::ready`] then [`Self::finish`] in one, after the backward pass.
    pub fn average(&mut self, net: &mut ResNet, comm: &dyn Communicator, local: usize, global: usize) {
        self.ready(&net.params(), comm, local);
        self.finish(net, comm, global);
    }

    /// Takes `params`' final gradients (a rank's mean over its `local` samples) into their
    /// buckets, and starts the sum of every bucket this fills where the group sums while the
    /// backward pass goes on ([`Communicator::overlaps`]). Buckets fill last layer first, the
    /// order the pass finishes them in, so every rank starts the same sums in the same order.
    pub fn ready(&mut self, params: &[&Param], comm: &dyn Communicator, local: usize) {
        let weight = local as f32;
        for p in params {
            let Some(&at) = self.offsets.get(&p.name) else { continue };
            let mut filled = Vec::new();
            for_each_stretch(at, p.grad.len(), self.bucket_len, |bucket, within, from, n| {
                let dst = &mut self.buckets[bucket][within..within + n];
                dst.iter_mut().zip(&p.grad[from..from + n]).for_each(|(d, g)| *d = g * weight);
                self.unfilled[bucket] -= n;
                if self.unfilled[bucket] == 0 {
                    filled.push(bucket);
                }
            });
            if comm.overlaps() {
                for b in filled {
                    self.pending[b] = Some(comm.start_all_reduce_sum(std::mem::take(&mut self.buckets[b])));
                }
            }
        }
    }

    /// Sums the buckets not yet started, waits for every sum, and gives each trainable
    /// gradient its average over the `global` samples of all ranks.
    pub fn finish(&mut self, net: &mut ResNet, comm: &dyn Communicator, global: usize) {
        let _p = resnet_kernels::profile::scope("gradient allreduce");
        for (bucket, pending) in self.buckets.iter_mut().zip(&mut self.pending) {
            *bucket = match pending.take() {
                Some(sum) => sum.wait(),
                None => comm.all_reduce_sum_owned(std::mem::take(bucket)),
            };
        }
        self.unfilled.iter_mut().zip(&self.buckets).for_each(|(u, b)| *u = b.len());
        let inv_global = 1.0 / global as f32;
        let (offsets, buckets, len) = (&self.offsets, &self.buckets, self.bucket_len);
        net.for_each_param(|p| {
            let Some(&at) = offsets.get(&p.name) else { return };
            let grad = &mut p.grad;
            for_each_stretch(at, grad.len(), len, |bucket, within, from, n| {
                let src = &buckets[bucket][within..within + n];
                grad[from..from + n].iter_mut().zip(src).for_each(|(g, s)| *g = s * inv_global);
            });
        });
    }
}

/// A step's exchange through `buckets` over `comm`: this rank's `local` samples of `global`.
#[allow(missing_debug_implementations)]
pub struct BucketExchange<'a> {
    /// The buckets.
    pub buckets: &'a mut GradientBuckets,
    /// The group.
    pub comm: &'a dyn Communicator,
    /// This rank's samples.
    pub local: usize,
    /// All ranks' samples.
    pub global: usize,
}

impl GradientExchange for BucketExchange<'_> {
    fn ready(&mut self, params: &[&Param]) {
        self.buckets.ready(params, self.comm, self.local);
    }

    fn finish(&mut self, net: &mut ResNet) {
        self.buckets.finish(net, self.comm, self.global);
    }
}

/// Calls `f(bucket, offset in the bucket, offset in the gradient, length)` for each stretch of
/// buckets of `bucket_len` that the `len` values from flat offset `at` span (a gradient may span
/// two or more buckets).
fn for_each_stretch(mut at: usize, len: usize, bucket_len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut from = 0;
    while from < len {
        let (bucket, within) = (at / bucket_len, at % bucket_len);
        let n = (bucket_len - within).min(len - from);
        f(bucket, within, from, n);
        from += n;
        at += n;
    }
}

/// Copies rank 0's parameters and batch-norm statistics to every rank (at the start of a run,
/// a resumed one included, so every rank starts from the same network).
pub fn broadcast_network(net: &mut ResNet, comm: &dyn Communicator) {
    if comm.size() == 1 {
        return;
    }
    net.for_each_param(|p| comm.broadcast(p.value_mut(), 0));
    broadcast_batch_norm_statistics(net, comm);
}

/// Copies rank 0's batch-norm running statistics to every rank: with batch norm per rank, each
/// rank's estimates follow its own samples, and rank 0's are the ones its checkpoints keep.
pub fn broadcast_batch_norm_statistics(net: &mut ResNet, comm: &dyn Communicator) {
    if comm.size() == 1 {
        return;
    }
    net.for_each_batch_norm(|bn| {
        comm.broadcast(&mut bn.running_mean, 0);
        comm.broadcast(&mut bn.running_var, 0);
    });
}
