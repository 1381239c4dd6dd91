//! The ranks `mpirun` starts (cargo feature `mpi`): `MPI_COMM_WORLD` through rsmpi, on Open MPI
//! or MPICH, on one machine or many.

use super::Communicator;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use std::cell::RefCell;

/// This process's place in the MPI job. MPI is finalised when it is dropped.
pub struct MpiCommunicator {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// The send side of an in-place sum (MPI's sums read one buffer and write another).
    scratch: RefCell<Vec<f32>>,
    scratch_f64: RefCell<Vec<f64>>,
    // Last, so that MPI is finalised after the communicator is done with.
    _universe: Universe,
}

impl MpiCommunicator {
    /// Joins the MPI job this process was started in (a job of one process when it was not
    /// started by `mpirun`).
    ///
    /// # Errors
    /// When MPI was initialised already in this process.
    pub fn init() -> Result<Self, String> {
        // Serialized: the trainer's thread makes every MPI call, never two at once.
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or("MPI was initialised already in this process")?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiCommunicator {
            world,
            rank,
            size,
            scratch: RefCell::new(Vec::new()),
            scratch_f64: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let mut send = self.scratch.borrow_mut();
        send.clear();
        send.extend_from_slice(buf);
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let mut send = self.scratch_f64.borrow_mut();
        send.clear();
        send.extend_from_slice(buf);
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
    }

    fn abort(&self, code: i32) {
        mpi::traits::Communicator::abort(&self.world, code)
    }

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        self.world.all_gather_into(&value, &mut all[..]);
        all
    }
}
