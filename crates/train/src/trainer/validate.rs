//! The checks a configuration passes before a run trains on it.

use super::TrainError;
use crate::config::{RunLength, TrainConfig};
use crate::schedule::{Decay, Milestone};
use resnet_models::LayerGroup;

/// Refuses a configuration no run can train with.
pub(super) fn validate(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: &str| Err(TrainError::Config(m.to_string()));
    if config.batch_size < 2 {
        return bad("the batch size must be at least 2 (batch norm needs batch statistics)");
    }
    if config.eval_batch_size == 0 {
        return bad("the evaluation batch size must be at least 1");
    }
    let ranks = config.world_size.max(1);
    if !config.batch_size.is_multiple_of(ranks) || config.batch_size / ranks < 2 {
        return Err(TrainError::Config(format!(
            "--batch-size {} is the batch of all {ranks} ranks together: it must be a multiple of {ranks} with at \
             least 2 per rank (batch norm needs batch statistics)",
            config.batch_size
        )));
    }
    if config.eval_batch_size < ranks {
        return Err(TrainError::Config(format!(
            "--eval-batch-size {} gives some of the {ranks} ranks no image of a batch: use at least {ranks}",
            config.eval_batch_size
        )));
    }
    if matches!(config.length, RunLength::Epochs(0) | RunLength::Iterations(0)) {
        return bad("the run must be at least one epoch or one iteration long");
    }
    use crate::config::ranges;
    ranges::lr(config.lr)
        .and(ranges::label_smoothing(config.label_smoothing))
        .and(ranges::momentum(config.momentum))
        .and(ranges::weight_decay(config.weight_decay))
        .map_err(TrainError::Config)?;
    if let Decay::Step { gamma, .. } | Decay::Plateau { gamma, .. } = &config.decay {
        ranges::gamma(*gamma).map_err(TrainError::Config)?;
    }
    let most = crate::system::max_threads();
    if config.workers > most {
        return Err(TrainError::Config(format!(
            "at most {most} loader workers (4 per core of this machine), not {}",
            config.workers
        )));
    }
    if let Some(d) = &config.data {
        if d.to_str().is_none() {
            return Err(TrainError::Config(format!(
                "the data path {} is not valid UTF-8, which config.json cannot store (the run could not be \
                 resumed): rename it, or link to it from a UTF-8 path",
                d.display()
            )));
        }
    }
    validate_fine_tune(config)
}

/// Refuses fine-tuning settings no run can use: parts no ResNet has, a learning-rate multiplier
/// out of range, starting weights at a path `config.json` cannot store, absurd output or input
/// counts.
fn validate_fine_tune(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Config(m));
    let f = &config.fine_tune;
    for name in f.freeze.iter().filter(|n| *n != "backbone") {
        name.parse::<LayerGroup>().map_err(TrainError::Config)?;
    }
    crate::config::ranges::lr_multiplier(f.lr_backbone).map_err(TrainError::Config)?;
    if let Some(p) = &f.init {
        if p.to_str().is_none() {
            return bad(format!(
                "the --init path {} is not valid UTF-8, which config.json cannot store: rename it, or link to it \
                 from a UTF-8 path",
                p.display()
            ));
        }
    }
    if let Some(c) = config.in_channels.filter(|c| !matches!(c, 1 | 3)) {
        return bad(format!("--in-channels takes 1 (grey) or 3 (RGB), not {c}"));
    }
    let most = resnet_models::limits::MAX_CLASSES;
    if let Some(n) = config.classes.filter(|&n| n == 0 || n > most) {
        return bad(format!("--classes must lie in 1..={most}, not {n}"));
    }
    Ok(())
}

/// Checks that the schedule fits a run of `total` iterations: every step milestone given in
/// iterations or epochs inside the run (one beyond it would never lower the rate; a fraction of
/// the run is inside it by definition, however short the run) and the milestones in order.
pub(super) fn check_schedule(config: &TrainConfig, total: u64, per_epoch: u64) -> Result<(), TrainError> {
    let Decay::Step { milestones, .. } = &config.decay else { return Ok(()) };
    let mut previous: Option<u64> = None;
    for m in milestones {
        let at = m.iteration(total, per_epoch);
        if at >= total && !matches!(m, Milestone::Fraction(_)) {
            return Err(TrainError::Config(format!(
                "the milestone {m} (iteration {at}) is at or beyond the end of the run ({total} iterations, \
                 {per_epoch} per epoch), so the learning rate would never drop there; give milestones inside \
                 the run, as iterations, fractions of the run (0.5,0.75) or epochs (30ep,45ep)"
            )));
        }
        if previous.is_some_and(|p| at < p) {
            return Err(TrainError::Config(format!(
                "the milestones must increase: {m} (iteration {at}) does not come after the one before it"
            )));
        }
        previous = Some(at);
    }
    Ok(())
}
