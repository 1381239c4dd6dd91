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
    /// Per parameter (in `ResNet::for_each_param` order): its gradient's offset in `flat`, or
    /// `None` for a frozen parameter (it has none).
    offsets: Vec<Option<usize>>,
    /// Every trainable gradient, last parameter first.
    flat: Vec<f32>,
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
        GradientBuckets { offsets, flat: vec![0.0; at], bucket_len }
    }

    /// Buckets: the sums each step makes.
    pub fn count(&self) -> usize {
        self.flat.len().div_ceil(self.bucket_len)
    }

    /// Replaces every trainable gradient by the average over all ranks' samples: each rank's
    /// gradient (a mean over its `local` samples) weighs `local / global`, `global` being the
    /// samples of all ranks together, so unequal shares (an epoch's last batch) average right.
    pub fn average(&mut self, net: &mut ResNet, comm: &dyn Communicator, local: usize, global: usize) {
        let (weight, inv_global) = (local as f32, 1.0 / global as f32);
        let mut i = 0;
        net.for_each_param(|p| {
            if let Some(at) = self.offsets[i] {
                let dst = &mut self.flat[at..at + p.grad.len()];
                dst.iter_mut().zip(&p.grad).for_each(|(d, g)| *d = g * weight);
            }
            i += 1;
        });
        for bucket in self.flat.chunks_mut(self.bucket_len) {
            comm.all_reduce_sum(bucket);
        }
        let mut i = 0;
        net.for_each_param(|p| {
            if let Some(at) = self.offsets[i] {
                let n = p.grad.len();
                p.grad.iter_mut().zip(&self.flat[at..at + n]).for_each(|(g, s)| *g = s * inv_global);
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
