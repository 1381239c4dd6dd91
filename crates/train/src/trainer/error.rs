//! What can go wrong in a run.

use crate::checkpoint::CheckpointError;
use crate::fsutil::FileError;
use crate::lock::LockError;
use crate::memory::MemoryShortfall;
use crate::plot::PlotError;
use resnet_data::DataError;
use resnet_models::ModelError;
use std::path::PathBuf;

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building the network.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading or writing a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Writing a run file.
    #[error(transparent)]
    File(#[from] FileError),
    /// Drawing a plot.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// An inconsistent configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The loss stopped being finite.
    #[error("the training loss became {loss} at iteration {iteration} (epoch {epoch}): the run stopped; {kept}")]
    Diverged {
        /// The loss.
        loss: f64,
        /// Step at which it happened.
        iteration: u64,
        /// Epoch (from 1).
        epoch: u64,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// A parameter, buffer or momentum of the network stopped being finite (a diverging run whose
    /// loss was still finite); no checkpoint is written from it.
    #[error(
        "{tensor} became non-finite ({count} tensor(s) in all) at iteration {iteration} (epoch {epoch}): the run stopped; {kept}"
    )]
    NonFinite {
        /// The first tensor affected.
        tensor: String,
        /// Tensors affected.
        count: usize,
        /// Steps done.
        iteration: u64,
        /// Epoch (from 1).
        epoch: u64,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// Another process trains in the directory.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// `--out` names a directory that already holds a run.
    #[error(
        "{0} already holds a run (checkpoints/last.safetensors): resume it with --resume, or choose another --out"
    )]
    RunExists(PathBuf),
    /// A batch whose activations do not fit in the memory available.
    #[error(transparent)]
    Memory(#[from] MemoryShortfall),
    /// A run that cannot be resumed.
    #[error("cannot resume {dir}: {reason}")]
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}
