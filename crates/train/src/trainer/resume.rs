//! Opening a run: a fresh configuration, or a run directory's `config.json` and last checkpoint
//! with the changes a resume may make, and the optimizer state and position restored from it.

use super::{Observer, RunDir, TrainError};
use crate::checkpoint::{Checkpoint, CheckpointError, Progress};
use crate::config::{RunLength, TrainConfig};
use crate::fsutil;
use crate::metrics::{self, EpochMetrics};
use crate::schedule::{FrozenMilestones, Schedule};
use resnet_models::{ResNet, ResNetSpec};
use resnet_nn::optim::Sgd;
use std::collections::HashMap;
use std::path::Path;

/// What a resumed run may change: its length (to extend a finished run, or shorten one not yet
/// past the new end) and its loader workers. Everything else stays as `config.json` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumeChanges {
    /// A new length of the run.
    pub length: Option<RunLength>,
    /// A new number of loader workers (the batches do not depend on it).
    pub workers: Option<usize>,
}

/// How a run starts.
pub(super) enum Start<'a> {
    /// A new run with this configuration.
    Fresh(Box<TrainConfig>),
    /// The run in the directory, from its last checkpoint.
    Resume(&'a ResumeChanges),
}

/// A run's configuration as it will train; for a resumed run, its last checkpoint and what the
/// resume changed.
pub(super) struct Opened {
    /// The configuration.
    pub config: TrainConfig,
    /// The last checkpoint of a resumed run.
    pub checkpoint: Option<Checkpoint>,
    /// The changes a resume made, in words.
    pub changed: Vec<String>,
    /// The length of the run before a resume changed it.
    pub old_length: Option<RunLength>,
}

/// The error of a run that cannot be resumed.
pub(super) fn cannot_resume(run_dir: &RunDir, reason: String) -> TrainError {
    TrainError::Resume { dir: run_dir.root.clone(), reason }
}

impl Start<'_> {
    /// Refuses a resume of what is not a run directory, or a fresh configuration no run can
    /// train with; checked before locking, so that a mistyped path gets no lock file.
    pub fn check_before_lock(&self, run_dir: &RunDir) -> Result<(), TrainError> {
        let resume = matches!(self, Start::Resume(_));
        if resume && !run_dir.root.is_dir() {
            return Err(cannot_resume(run_dir, "no such directory".into()));
        }
        if resume && !run_dir.config().is_file() {
            return Err(cannot_resume(run_dir, "it has no config.json: it is not a run directory".into()));
        }
        if let Start::Fresh(config) = self {
            super::validate::validate(config)?;
        }
        Ok(())
    }

    /// The configuration (and checkpoint) the run starts from, once its directory is locked.
    pub fn open(self, run_dir: &RunDir) -> Result<Opened, TrainError> {
        match self {
            Start::Resume(changes) => open_resumed(changes, run_dir),
            Start::Fresh(config) => {
                let mut config = *config;
                if run_dir.last().exists() {
                    return Err(TrainError::RunExists(run_dir.root.clone()));
                }
                // Absolute, so that the run resumes from any working directory.
                config.data = config.data.map(|d| std::path::absolute(&d).unwrap_or(d));
                Ok(Opened { config, checkpoint: None, changed: Vec::new(), old_length: None })
            }
        }
    }
}

/// Reads the run's `config.json`, applies `changes` to it and loads its last checkpoint.
fn open_resumed(changes: &ResumeChanges, run_dir: &RunDir) -> Result<Opened, TrainError> {
    let resume_err = |reason: String| cannot_resume(run_dir, reason);
    let bytes = fsutil::read(&run_dir.config()).map_err(|e| resume_err(format!("no readable config.json ({e})")))?;
    let mut config: TrainConfig =
        serde_json::from_slice(&bytes).map_err(|e| resume_err(format!("config.json does not parse: {e}")))?;
    let mut changed = Vec::new();
    let mut old_length = None;
    if let Some(length) = changes.length.filter(|l| *l != config.length) {
        changed.push(format!("length {length} (was {})", config.length));
        old_length = Some(config.length);
        config.length = length;
    }
    if let Some(workers) = changes.workers.filter(|w| *w != config.workers) {
        changed.push(format!("loader workers {workers} (was {})", config.workers));
        config.workers = workers;
    }
    let last = run_dir.last();
    if !last.exists() {
        return Err(resume_err("it has no checkpoints/last.safetensors".into()));
    }
    let ckpt = Checkpoint::load(&last)?;
    if ckpt.training.is_none() {
        return Err(resume_err(format!("{} holds weights only, no training state", last.display())));
    }
    Ok(Opened { config, checkpoint: Some(ckpt), changed, old_length })
}

impl Opened {
    /// Refuses a change of length that the schedule cannot take, and says where the fraction
    /// milestones of the old length stay. `iterations` converts a length to iterations.
    pub fn check_length_change(
        &mut self,
        run_dir: &RunDir,
        iterations: impl Fn(RunLength) -> u64,
    ) -> Result<(), TrainError> {
        let total = iterations(self.config.length);
        let Some(old_total) = self.old_length.map(iterations).filter(|t| *t != total) else { return Ok(()) };
        if let Some(name) = self.config.decay.spread_over_the_run() {
            return Err(cannot_resume(
                run_dir,
                format!(
                    "its {name} learning-rate schedule is spread over its {old_total} iterations, so a length of \
                     {total} would change the rate of every step left (a finished run's rate would jump back up); \
                     start a new run for another length"
                ),
            ));
        }
        self.changed.extend(frozen_milestones(self.config.decay.freeze_fractions(old_total, total)));
        Ok(())
    }
}

/// Says where the fraction milestones of a run whose length changed were fixed.
fn frozen_milestones(frozen: FrozenMilestones) -> Vec<String> {
    let list =
        |pairs: &[(f64, u64)], pick: fn(&(f64, u64)) -> String| pairs.iter().map(pick).collect::<Vec<_>>().join(",");
    let mut said = Vec::new();
    if !frozen.kept.is_empty() {
        said.push(format!(
            "milestones {} of the old run are kept at iterations {}",
            list(&frozen.kept, |(f, _)| f.to_string()),
            list(&frozen.kept, |(_, at)| at.to_string())
        ));
    }
    if !frozen.dropped.is_empty() {
        said.push(format!(
            "milestones {} of the old run (iterations {}) fall after the new end and are dropped",
            list(&frozen.dropped, |(f, _)| f.to_string()),
            list(&frozen.dropped, |(_, at)| at.to_string())
        ));
    }
    said
}

/// What a resumed run restores its optimizer and position from.
pub(super) struct Restore<'a> {
    /// The run's last checkpoint.
    pub checkpoint: &'a Checkpoint,
    /// The run directory.
    pub run_dir: &'a RunDir,
    /// Iterations of the run (with a changed length, the new one).
    pub total: u64,
    /// The changes the resume made, in words.
    pub changed: &'a [String],
}

impl Restore<'_> {
    /// Restores the momentum of every parameter of `net` into `sgd` and the state of
    /// `schedule`; returns where the run stood and the metrics of the epochs it finished.
    pub fn apply(
        &self,
        net: &ResNet,
        sgd: &mut Sgd,
        schedule: &mut Schedule,
        observer: &mut dyn Observer,
    ) -> Result<(Progress, Vec<EpochMetrics>), TrainError> {
        let resume_err = |reason: String| cannot_resume(self.run_dir, reason);
        let total = self.total;
        let t = self.checkpoint.training.as_ref().expect("a resumed checkpoint holds its training state");
        let progress = t.progress.clone();
        schedule.state = progress.schedule.clone();
        let velocity: HashMap<&str, &Vec<f32>> = t.velocity.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for p in net.params() {
            match velocity.get(p.name.as_str()) {
                // A frozen parameter has no optimizer state.
                None if p.frozen => sgd.velocity.push(Vec::new()),
                Some(v) if v.len() == p.len() => sgd.velocity.push((*v).clone()),
                _ => return Err(resume_err(format!("the checkpoint lacks the optimizer state of {}", p.name))),
            }
        }
        let mut history = metrics::read(&self.run_dir.root)?;
        history.truncate(progress.epoch as usize);
        if progress.iteration > total {
            return Err(resume_err(format!(
                "the run has done {} iterations ({} epochs); a length of {total} iterations would end before that",
                progress.iteration, progress.epoch
            )));
        }
        if !self.changed.is_empty() {
            observer.message(&format!(
                "changed: {}; the run is now {total} iterations and continues at learning rate {}",
                self.changed.join(", "),
                schedule.lr(progress.iteration)
            ));
        }
        observer.message(&format!(
            "resuming {} at epoch {}, iteration {} of {total}",
            self.run_dir.root.display(),
            progress.epoch + 1,
            progress.iteration
        ));
        Ok((progress, history))
    }
}

fn describe_difference(a: &ResNetSpec, b: &ResNetSpec) -> String {
    let mut diffs = Vec::new();
    if a.name != b.name || a.depths != b.depths || a.block != b.block || a.widths != b.widths {
        diffs.push(format!("architecture {} vs {}", a.name, b.name));
    }
    if a.residual != b.residual {
        diffs.push("plain vs residual".to_string());
    }
    if a.shortcut != b.shortcut {
        diffs.push(format!("shortcut option {} vs {}", a.shortcut, b.shortcut));
    }
    if a.stride_placement != b.stride_placement {
        diffs.push(format!("stride placement {:?} vs {:?}", a.stride_placement, b.stride_placement));
    }
    if a.num_classes != b.num_classes {
        diffs.push(format!("{} vs {} classes", a.num_classes, b.num_classes));
    }
    if a.in_channels != b.in_channels {
        diffs.push(format!("{} vs {} input channels", a.in_channels, b.in_channels));
    }
    diffs.join(", ")
}

/// Checks that a checkpoint was made for `spec` and `classes`.
///
/// # Errors
/// [`CheckpointError::Mismatch`] saying what differs.
pub(super) fn check_compatible(
    ckpt: &Checkpoint,
    path: &Path,
    spec: &ResNetSpec,
    classes: &[String],
) -> Result<(), CheckpointError> {
    if &ckpt.spec != spec {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            reason: format!(
                "the checkpoint holds another network than this run needs: {}",
                describe_difference(&ckpt.spec, spec)
            ),
        });
    }
    if ckpt.classes != classes {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            reason: format!(
                "the checkpoint's {} classes ({}...) differ from the dataset's {} ({}...)",
                ckpt.classes.len(),
                ckpt.classes.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                classes.len(),
                classes.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(())
}
