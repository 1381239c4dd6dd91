//! The ranks `mpirun` starts (cargo feature `mpi`): `MPI_COMM_WORLD` through rsmpi, on Open MPI
//! or MPICH, on one machine or many.
//!
//! One thread of this process initialises MPI and makes every MPI call (`MPI_THREAD_FUNNELED`);
//! the communicator hands it requests over a channel and waits for the answer, so it can be
//! shared with the compute pool's threads (synchronised batch norm sums its statistics from
//! inside the passes) without sharing MPI's handles.

use super::{Communicator, PendingSum};
use mpi::collective::SystemOperation;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use resnet_nn::ops::StatisticsSync;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the MPI thread is asked to do; each carries where to send the answer. A sum's buffer
/// comes back holding the sum (MPI's sums read one buffer and write another: the thread keeps
/// the other, so large sums allocate and copy nothing after the first).
enum Request {
    SumF32(Vec<f32>, Sender<Vec<f32>>),
    SumF64(Vec<f64>, Sender<Vec<f64>>),
    Broadcast(Vec<f32>, usize, Sender<Vec<f32>>),
    Gather(u64, Sender<Vec<u64>>),
    Abort(i32),
}

/// The way to the MPI thread, shareable between threads.
#[derive(Debug)]
struct Link {
    requests: Mutex<Sender<Request>>,
    /// How long a collective may wait for the other ranks.
    timeout: Duration,
    /// This rank and the job's size, for the message of a timeout.
    rank: usize,
    size: usize,
}

impl Link {
    /// Sends `request` (made with the answer's sender) and waits for the answer. A rank that
    /// waits longer than the timeout ends its process with a message naming itself: MPI cannot
    /// leave a collective that another rank never joins, and `mpirun` ends the job when one of
    /// its processes exits without finalising MPI.
    fn ask<T>(&self, request: impl FnOnce(Sender<T>) -> Request) -> T {
        let answer = self.send(request);
        self.wait(answer)
    }

    /// Hands `request` to the MPI thread; the answer comes on the receiver.
    fn send<T>(&self, request: impl FnOnce(Sender<T>) -> Request) -> Receiver<T> {
        let (tx, rx) = channel();
        let sent = self.requests.lock().unwrap_or_else(PoisonError::into_inner).send(request(tx));
        if sent.is_err() {
            panic!("the MPI thread ended while this rank still needed it");
        }
        rx
    }

    /// The answer on `rx`, waited for at most the timeout (see [`Link::ask`]).
    fn wait<T>(&self, rx: Receiver<T>) -> T {
        match rx.recv_timeout(self.timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                eprintln!(
                    "error: rank {} of {}: the other ranks did not answer for {} s; one of them has stopped or \
                     hangs, so this one ends the job (continue with --resume from the last checkpoint)",
                    self.rank,
                    self.size,
                    self.timeout.as_secs()
                );
                std::process::exit(1)
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the MPI thread ended while this rank still needed it"),
        }
    }

    fn sum_f64(&self, buf: &mut [f64]) {
        buf.copy_from_slice(&self.ask(|tx| Request::SumF64(buf.to_vec(), tx)));
    }
}

/// This process's place in the MPI job. MPI is finalised when it is dropped.
pub struct MpiCommunicator {
    link: Arc<Link>,
    rank: usize,
    size: usize,
    thread: Option<JoinHandle<()>>,
}

impl MpiCommunicator {
    /// Joins the MPI job this process was started in (a job of one process when it was not
    /// started by `mpirun`), on a thread of its own. A collective that waits longer than
    /// `timeout` for the other ranks ends the process (see [`Communicator`]'s callers): it must
    /// exceed the longest step and evaluation.
    ///
    /// # Errors
    /// When MPI was initialised already in this process, or its thread cannot start.
    pub fn init(timeout: Duration) -> Result<Self, String> {
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let thread = std::thread::Builder::new()
            .name("resnet-mpi".into())
            .spawn(move || serve(rx, ready_tx))
            .map_err(|e| format!("the MPI thread cannot start: {e}"))?;
        let (rank, size) = ready_rx.recv().map_err(|_| "MPI ended as it started".to_string())??;
        let link = Link { requests: Mutex::new(tx), timeout, rank, size };
        Ok(MpiCommunicator { link: Arc::new(link), rank, size, thread: Some(thread) })
    }
}

/// The MPI thread: initialises MPI, says the rank and size on `ready`, then answers requests
/// until every sender is gone, and finalises MPI.
fn serve(requests: Receiver<Request>, ready: Sender<Result<(usize, usize), String>>) {
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        let _ = ready.send(Err("MPI was initialised already in this process".into()));
        return;
    };
    let world = universe.world();
    let _ = ready.send(Ok((world.rank() as usize, world.size() as usize)));
    // The receiving side of the f32 sums, the largest kept.
    let mut spare: Vec<f32> = Vec::new();
    for request in requests {
        // An answer nobody waits for any more is dropped.
        match request {
            Request::SumF32(send, answer) => {
                let mut sum = std::mem::take(&mut spare);
                sum.resize(send.len(), 0.0);
                world.all_reduce_into(&send[..], &mut sum[..], SystemOperation::sum());
                spare = send;
                let _ = answer.send(sum);
            }
            Request::SumF64(send, answer) => {
                let mut sum = vec![0.0f64; send.len()];
                world.all_reduce_into(&send[..], &mut sum[..], SystemOperation::sum());
                let _ = answer.send(sum);
            }
            Request::Broadcast(mut buf, root, answer) => {
                world.process_at_rank(root as i32).broadcast_into(&mut buf[..]);
                let _ = answer.send(buf);
            }
            Request::Gather(value, answer) => {
                let mut all = vec![0u64; world.size() as usize];
                world.all_gather_into(&value, &mut all[..]);
                let _ = answer.send(all);
            }
            Request::Abort(code) => world.abort(code),
        }
    }
}

impl Drop for MpiCommunicator {
    fn drop(&mut self) {
        // Closing the channel ends the MPI thread, which finalises MPI.
        let (closed, _) = channel();
        drop(std::mem::replace(&mut *self.link.requests.lock().unwrap_or_else(PoisonError::into_inner), closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl StatisticsSync for Link {
    fn all_reduce_sum(&self, values: &mut [f64]) {
        self.sum_f64(values);
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
        buf.copy_from_slice(&self.link.ask(|tx| Request::SumF32(buf.to_vec(), tx)));
    }

    fn all_reduce_sum_owned(&self, buf: Vec<f32>) -> Vec<f32> {
        self.link.ask(|tx| Request::SumF32(buf, tx))
    }

    fn overlaps(&self) -> bool {
        true
    }

    fn start_all_reduce_sum(&self, buf: Vec<f32>) -> PendingSum {
        let answer = self.link.send(|tx| Request::SumF32(buf, tx));
        let link = self.link.clone();
        PendingSum::new(move || link.wait(answer))
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        self.link.sum_f64(buf);
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) {
        buf.copy_from_slice(&self.link.ask(|tx| Request::Broadcast(buf.to_vec(), root, tx)));
    }

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        self.link.ask(|tx| Request::Gather(value, tx))
    }

    fn abort(&self, code: i32) {
        let _ = self.link.requests.lock().unwrap_or_else(PoisonError::into_inner).send(Request::Abort(code));
        // MPI_Abort ends this process too; wait for it.
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    fn statistics_sync(&self) -> Option<Arc<dyn StatisticsSync>> {
        Some(self.link.clone())
    }
}
