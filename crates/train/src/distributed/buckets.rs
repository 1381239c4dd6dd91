//! Gradient averaging over the ranks, in buckets.
//!
//! Every trainable parameter's gradient has a place in one flat buffer, last layer first (the
//! order the backward pass finishes them in), and the buffer is summed over the ranks a bucket
//! of [`BUCKET_BYTES`] at a time, as PyTorch's `DistributedDataParallel` does: a bucket's sum can
//! start as soon as the backward pass has filled it, and a message of megabytes costs little
//! more than its bytes.

use super::Communicator;
use resnet_models::ResNet;

/// Bytes of one bucket (PyTorch's default `bucket_cap_mb` is 25).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Where each gradient lies in the flat buffer, and the buffer.
#[derive(Clone, Debug)]
pub struct GradientBuckets {
    /// Per parameter (in `ResNet::for_each_param` order): its gradient's offset in the flat
    /// buffer, or `None` for a frozen parameter (it has none).
    offsets: Vec<Option<usize>>,
    /// Every trainable gradient, last parameter first, cut into buckets of `bucket_len` (the
    /// last shorter): each its own vector, so that a group can take it and give it back.
    buckets: Vec<Vec<f32>>,
    /// Elements of one bucket.
    bucket_len: usize,
}

impl GradientBuckets {
    /// The buckets of `net`'s trainable parameters, of `bucket_bytes` each (the last smaller).
    ///
    /// # Panics
    /// If `bucket_bytes` holds no f32.
    pub fn new(net: &mut ResNet, bucket_bytes: usize) -> Self {
        let bucket_len = bucket_bytes / std::mem::size_of::<f32>();
        assert!(bucket_len > 0, "a bucket holds at least one value");
        let mut sizes = Vec::new();
        net.for_each_param(|p| sizes.push((!p.frozen).then_some(p.len())));
        let mut offsets = vec![None; sizes.len()];
        let mut at = 0;
        for (offset, size) in offsets.iter_mut().zip(&sizes).rev() {
            if let Some(n) = size {
                *offset = Some(at);
                at += n;
            }
        }
        let buckets = (0..at).step_by(bucket_len).map(|start| vec![0.0; bucket_len.min(at - start)]).collect();
        GradientBuckets { offsets, buckets, bucket_len }
    }

    /// Buckets: the sums each step makes.
    pub fn count(&self) -> usize {
        self.buckets.len()
    }

    /// Replaces every trainable gradient by the average over all ranks' samples: each rank's
    /// gradient (a mean over its `local` samples) weighs `local / global`, `global` being the
    /// samples of all ranks together, so unequal shares (an epoch's last batch) average right.
    pub fn average(&mut self, net: &mut ResNet, comm: &dyn Communicator, local: usize, global: usize) {
        let _p = resnet_kernels::profile::scope("gradient allreduce");
        let (weight, inv_global) = (local as f32, 1.0 / global as f32);
        self.copy(net, |flat, grad| flat.iter_mut().zip(grad.iter()).for_each(|(d, g)| *d = g * weight));
        for bucket in &mut self.buckets {
            *bucket = comm.all_reduce_sum_owned(std::mem::take(bucket));
        }
        self.copy(net, |flat, grad| grad.iter_mut().zip(flat.iter()).for_each(|(g, s)| *g = s * inv_global));
    }

    /// Calls `f` on each trainable gradient and the stretches of the buckets that hold it, in
    /// order (a gradient may span two buckets).
    fn copy(&mut self, net: &mut ResNet, mut f: impl FnMut(&mut [f32], &mut [f32])) {
        let (offsets, buckets, len) = (&self.offsets, &mut self.buckets, self.bucket_len);
        let mut i = 0;
        net.for_each_param(|p| {
            if let Some(mut at) = offsets[i] {
                let mut grad = &mut p.grad[..];
                while !grad.is_empty() {
                    let (bucket, within) = (at / len, at % len);
                    let n = (len - within).min(grad.len());
                    let (head, rest) = grad.split_at_mut(n);
                    f(&mut buckets[bucket][within..within + n], head);
                    grad = rest;
                    at += n;
                }
            }
            i += 1;
        });
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
