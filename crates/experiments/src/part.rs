//! One training run of an experiment, in its own directory: started, resumed or skipped.

use crate::ExperimentError;
use resnet_train::config::TrainConfig;
use resnet_train::fsutil;
use resnet_train::metrics::{self, EpochMetrics};
use resnet_train::trainer::{self, Observer, Outcome, RunDir};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Where a part stood before this call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartStatus {
    /// Trained now from scratch.
    Started,
    /// Continued from its last checkpoint.
    Resumed,
    /// Already finished: nothing trained.
    Skipped,
}

/// A part's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartResult {
    /// Part name (the network).
    pub name: String,
    /// Its run directory.
    pub dir: PathBuf,
    /// What happened.
    pub status: PartStatus,
    /// Whether the run reached its length.
    pub finished: bool,
    /// Every epoch's metrics.
    pub history: Vec<EpochMetrics>,
    /// Wall seconds of all its epochs.
    pub seconds: f64,
    /// Trainable parameters.
    pub params: u64,
}

const DONE: &str = "finished.json";

/// Trains `config` in `root/name`, resuming an unfinished run there and skipping a finished one.
///
/// # Errors
/// The part's training error, named.
pub fn run_part(
    name: &str,
    config: TrainConfig,
    root: &Path,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<PartResult, ExperimentError> {
    let dir = root.join(name);
    let wrap = |e: trainer::TrainError| ExperimentError::Part { part: name.to_string(), source: Box::new(e) };
    // The trained network's own size, read back from its checkpoint (it knows the class count).
    let params_of = |dir: &Path| -> u64 {
        resnet_train::checkpoint::Checkpoint::load(&RunDir { root: dir.to_path_buf() }.last())
            .map(|c| c.spec.summary(c.preprocess.input_size.0, c.preprocess.input_size.1).params)
            .unwrap_or(0)
    };
    if dir.join(DONE).exists() {
        let history = metrics::read(&dir)?;
        let seconds = history.iter().map(|m| m.seconds).sum();
        observer.message(&format!("{name}: finished earlier, skipped"));
        // The count recorded when it finished, so that a run kept without its checkpoints (its
        // results alone, carried from another machine) still has it.
        let recorded = fsutil::read(&dir.join(DONE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<PartResult>(&bytes).ok())
            .map(|r| r.params)
            .filter(|&p| p > 0);
        let params = recorded.unwrap_or_else(|| params_of(&dir));
        return Ok(PartResult {
            name: name.into(),
            dir,
            status: PartStatus::Skipped,
            finished: true,
            history,
            seconds,
            params,
        });
    }
    let resume = RunDir { root: dir.clone() }.last().exists();
    let status = if resume { PartStatus::Resumed } else { PartStatus::Started };
    observer.message(&format!("{name}: {}", if resume { "resuming" } else { "training" }));
    let summary = trainer::run(config, &dir, resume, stop, observer).map_err(wrap)?;
    let finished = summary.outcome == Outcome::Finished;
    let seconds = summary.history.iter().map(|m| m.seconds).sum();
    let params = params_of(&dir);
    let result =
        PartResult { name: name.into(), dir: dir.clone(), status, finished, history: summary.history, seconds, params };
    if finished {
        let text = serde_json::to_string_pretty(&result).expect("part result serialises");
        fsutil::write_atomic(&dir.join(DONE), text.as_bytes())?;
    }
    Ok(result)
}
