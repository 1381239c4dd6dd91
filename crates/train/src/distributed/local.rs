//! Ranks as threads of one process: a [`Communicator`] without MPI, for tests of the
//! data-parallel step and as the reference the MPI ranks are compared with.

use super::Communicator;
use resnet_nn::ops::StatisticsSync;
use std::sync::{Arc, Barrier, Mutex, PoisonError};

/// What the threads of a group share: a slot per rank and a barrier.
#[derive(Debug)]
struct Shared {
    slots: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

/// One rank of a group of threads; make the group with [`LocalGroup::new`] and move one member
/// to each thread.
#[derive(Clone, Debug)]
pub struct LocalGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// The `size` members of a new group, rank 0 first.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        assert!(size > 0, "a group has at least one rank");
        let shared = Arc::new(Shared { slots: Mutex::new(vec![Vec::new(); size]), barrier: Barrier::new(size) });
        (0..size).map(|rank| LocalGroup { rank, size, shared: shared.clone() }).collect()
    }

    /// Every rank's `values`, in rank order, once every rank has given its own.
    fn exchange(&self, values: Vec<f64>) -> Vec<Vec<f64>> {
        let lock = || self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner);
        lock()[self.rank] = values;
        self.shared.barrier.wait();
        let all = lock().clone();
        // No rank writes its next values before every rank has read these.
        self.shared.barrier.wait();
        all
    }

    /// The sums over ranks in rank order, the same on every rank.
    fn sum(&self, values: Vec<f64>) -> Vec<f64> {
        let all = self.exchange(values);
        let mut sum = vec![0.0; all[0].len()];
        for v in &all {
            assert_eq!(v.len(), sum.len(), "ranks reduced buffers of different lengths");
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
        sum
    }
}

impl Communicator for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        // Summed in f32 in rank order, as a two-rank MPI sum is.
        let all = self.exchange(buf.iter().map(|&v| f64::from(v)).collect());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = all.iter().fold(0.0f32, |s, v| s + v[i] as f32);
        }
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        buf.copy_from_slice(&self.sum(buf.to_vec()));
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) {
        let all = self.exchange(buf.iter().map(|&v| f64::from(v)).collect());
        buf.iter_mut().zip(&all[root]).for_each(|(b, &v)| *b = v as f32);
    }

    fn statistics_sync(&self) -> Option<Arc<dyn StatisticsSync>> {
        Some(Arc::new(self.clone()))
    }

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        // Carried as the bits of an f64: copied, never computed with, so every bit survives.
        self.exchange(vec![f64::from_bits(value)]).iter().map(|v| v[0].to_bits()).collect()
    }
}

impl StatisticsSync for LocalGroup {
    fn all_reduce_sum(&self, values: &mut [f64]) {
        self.all_reduce_sum_f64(values);
    }
}
