//! The data-parallel group a `resnet train` process belongs to: the MPI job `mpirun` started
//! it in (cargo feature `mpi`), or itself alone.

use resnet_train::distributed::{Communicator, Solo};
use std::time::Duration;

/// How long a rank waits for the others in one collective before it ends the job, unless told:
/// longer than any step or evaluation of a sensible run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Variables the launchers of Open MPI, MPICH and PMIx set in every process they start.
const LAUNCHER_VARIABLES: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"];

/// Variables the launchers of Open MPI, MPICH and PMIx set to each process's rank.
const RANK_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"];

/// Whether a launcher started this process as a rank other than the first: known before MPI
/// starts, so that what every rank would say (the data it recognised) is said once, by rank 0.
pub fn follower() -> bool {
    RANK_VARIABLES.iter().find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok()).is_some_and(|rank| rank > 0)
}

/// This process's group: the MPI job when `mpirun` started it, else one process alone. A rank
/// that waits `timeout` for the others in one collective ends the job.
///
/// # Errors
/// MPI that cannot start; or, in a build without the `mpi` feature, a launch of several
/// processes (each would train alone into the same directory).
pub fn join(timeout: Duration) -> anyhow::Result<Box<dyn Communicator>> {
    let launched = LAUNCHER_VARIABLES.iter().any(|v| std::env::var_os(v).is_some());
    if !launched {
        return Ok(Box::new(Solo));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(resnet_train::distributed::MpiCommunicator::init(timeout).map_err(anyhow::Error::msg)?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = timeout;
        let size = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
            .unwrap_or(1);
        if size > 1 {
            anyhow::bail!(
                "started as one of {size} MPI processes, but this resnet was built without MPI: build it with \
                 `cargo build --release --features mpi` (see the README)"
            );
        }
        Ok(Box::new(Solo))
    }
}
