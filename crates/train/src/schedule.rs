//! Learning-rate schedules: the paper's step schedules (CIFAR: 0.1, divided by 10 at 32k and 48k
//! iterations, stop at 64k; ImageNet: divided by 10 when the error plateaus), its warm-up for
//! the 110-layer network (0.01 until the training error is below 80%, then back to 0.1;
//! Section 4.2), and the cosine and linear warm-up schedules users expect.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// When a step decay happens: an absolute iteration, a fraction of the run (so a shortened run
/// keeps the paper's shape), or an epoch boundary.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Milestone {
    /// After this many iterations.
    Iteration(u64),
    /// After this fraction of the total iterations.
    Fraction(f64),
    /// At the start of this epoch (counted from 0).
    Epoch(u64),
}

impl FromStr for Milestone {
    type Err = String;
    /// `32000` (iterations), `0.5` (fraction of the run), `30ep` (epoch).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(e) = s.strip_suffix("ep") {
            return e.parse().map(Milestone::Epoch).map_err(|_| format!("bad epoch milestone '{s}'"));
        }
        if s.contains('.') {
            let f: f64 = s.parse().map_err(|_| format!("bad milestone '{s}'"))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("fractional milestone {f} must lie in [0, 1]"));
            }
            return Ok(Milestone::Fraction(f));
        }
        s.parse().map(Milestone::Iteration).map_err(|_| format!("bad milestone '{s}' (use 32000, 0.5 or 30ep)"))
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Milestone::Iteration(i) => write!(f, "{i}"),
            Milestone::Fraction(x) => write!(f, "{x}"),
            Milestone::Epoch(e) => write!(f, "{e}ep"),
        }
    }
}

impl Milestone {
    /// The iteration this milestone falls on.
    pub fn iteration(&self, total: u64, per_epoch: u64) -> u64 {
        match *self {
            Milestone::Iteration(i) => i,
            Milestone::Fraction(f) => (f * total as f64).round() as u64,
            Milestone::Epoch(e) => e * per_epoch,
        }
    }
}

/// How the learning rate decays after warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Decay {
    /// Multiply by `gamma` at each milestone.
    Step {
        /// Milestones.
        milestones: Vec<Milestone>,
        /// Factor (0.1 in the paper).
        gamma: f32,
    },
    /// Half-cosine from the base rate to `final_lr` over the run.
    Cosine {
        /// Rate at the end.
        final_lr: f32,
    },
    /// Multiply by `gamma` when the monitored error has not improved by `threshold` (relative)
    /// for `patience` epochs (the paper's ImageNet rule).
    Plateau {
        /// Epochs without improvement before a drop.
        patience: u32,
        /// Factor.
        gamma: f32,
        /// Relative improvement that counts.
        threshold: f64,
    },
    /// No decay.
    Constant,
}

/// Fraction milestones fixed to the iterations they fell on in a run's old length.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FrozenMilestones {
    /// Fractions kept, with their iterations.
    pub kept: Vec<(f64, u64)>,
    /// Fractions that fall at or after the new end, with their iterations: they would never
    /// lower the rate.
    pub dropped: Vec<(f64, u64)>,
}

impl Decay {
    /// The name of this decay when its shape is spread over the whole run, so that a new length
    /// would change the rates of the steps left (and make a finished run's rate jump back up).
    pub(crate) fn spread_over_the_run(&self) -> Option<&'static str> {
        match self {
            Decay::Cosine { .. } => Some("cosine"),
            Decay::Step { .. } | Decay::Plateau { .. } | Decay::Constant => None,
        }
    }

    /// Turns fraction milestones into the iterations they fell on in a run of `old_total`
    /// iterations, so that a run changed to `new_total` keeps its schedule up to the old end.
    pub(crate) fn freeze_fractions(&mut self, old_total: u64, new_total: u64) -> FrozenMilestones {
        let mut frozen = FrozenMilestones::default();
        let Decay::Step { milestones, .. } = self else { return frozen };
        milestones.retain_mut(|m| {
            let Milestone::Fraction(f) = *m else { return true };
            let at = m.iteration(old_total, 0);
            if at >= new_total {
                frozen.dropped.push((f, at));
                return false;
            }
            frozen.kept.push((f, at));
            *m = Milestone::Iteration(at);
            true
        });
        frozen
    }
}

/// Warm-up at the start of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Warmup {
    /// None.
    None,
    /// Linear ramp from `start_factor * base` to `base` over `iterations`.
    Linear {
        /// Length.
        iterations: u64,
        /// Starting fraction of the base rate.
        start_factor: f32,
    },
    /// The paper's 110-layer warm-up: `lr` until the training error (over the last
    /// `window` batches) is below `below_error` percent, then the base rate; never longer than
    /// `max_iterations`.
    UntilTrainError {
        /// Warm-up rate (0.01).
        lr: f32,
        /// Error threshold in percent (80).
        below_error: f64,
        /// Batches averaged.
        window: usize,
        /// Safety cap.
        max_iterations: u64,
    },
}

impl Warmup {
    /// The paper's 110-layer warm-up: 0.01 until the training error is below 80%.
    pub fn paper() -> Self {
        Warmup::UntilTrainError { lr: 0.01, below_error: 80.0, window: 20, max_iterations: 4000 }
    }
}

/// The mutable part of a schedule (saved in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Iteration at which the adaptive warm-up ended.
    pub warmup_ended_at: Option<u64>,
    /// Recent batch errors (percent) of the adaptive warm-up.
    pub recent_errors: Vec<f64>,
    /// Multiplier from plateau drops.
    pub plateau_factor: f32,
    /// Best monitored error (plateau).
    pub best: Option<f64>,
    /// Epochs since the best (plateau).
    pub bad_epochs: u32,
}

/// A learning-rate schedule over a run of `total` iterations.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Schedule {
    /// Base rate.
    pub base: f32,
    /// Decay.
    pub decay: Decay,
    /// Warm-up.
    pub warmup: Warmup,
    /// Iterations of the run.
    pub total: u64,
    /// Iterations per epoch (for epoch milestones).
    pub per_epoch: u64,
    /// Adaptive state.
    pub state: ScheduleState,
}

impl Schedule {
    /// A fresh schedule.
    pub fn new(base: f32, decay: Decay, warmup: Warmup, total: u64, per_epoch: u64) -> Self {
        Self {
            base,
            decay,
            warmup,
            total,
            per_epoch,
            state: ScheduleState { plateau_factor: 1.0, ..Default::default() },
        }
    }

    /// The rate of step `iteration` (counted from 0).
    pub fn lr(&self, iteration: u64) -> f32 {
        match &self.warmup {
            Warmup::UntilTrainError { lr, max_iterations, .. }
                if iteration < *max_iterations && self.state.warmup_ended_at.is_none_or(|end| iteration < end) =>
            {
                return *lr
            }
            Warmup::Linear { iterations, start_factor } if iteration < *iterations => {
                let t = iteration as f32 / *iterations as f32;
                return self.decayed(iteration) * (start_factor + (1.0 - start_factor) * t);
            }
            _ => {}
        }
        self.decayed(iteration)
    }

    fn decayed(&self, iteration: u64) -> f32 {
        match &self.decay {
            Decay::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|m| iteration >= m.iteration(self.total, self.per_epoch)).count();
                self.base * gamma.powi(passed as i32)
            }
            Decay::Cosine { final_lr } => {
                let t = (iteration as f64 / self.total.max(1) as f64).min(1.0);
                (f64::from(*final_lr)
                    + 0.5 * f64::from(self.base - final_lr) * (1.0 + (std::f64::consts::PI * t).cos()))
                    as f32
            }
            Decay::Plateau { .. } => self.base * self.state.plateau_factor,
            Decay::Constant => self.base,
        }
    }

    /// Reports a training batch's top-1 error (percent) after step `iteration`: ends the
    /// adaptive warm-up once the recent average falls below the threshold.
    pub fn observe_batch(&mut self, iteration: u64, error: f64) {
        if let Warmup::UntilTrainError { below_error, window, .. } = &self.warmup {
            if self.state.warmup_ended_at.is_some() {
                return;
            }
            let recent = &mut self.state.recent_errors;
            recent.push(error);
            if recent.len() > *window {
                recent.remove(0);
            }
            if recent.len() == *window && recent.iter().sum::<f64>() / (*window as f64) < *below_error {
                self.state.warmup_ended_at = Some(iteration + 1);
                recent.clear();
            }
        }
    }

    /// Reports an epoch's monitored error (plateau decay). Returns true when the rate dropped.
    pub fn observe_epoch(&mut self, error: f64) -> bool {
        let Decay::Plateau { patience, gamma, threshold } = &self.decay else { return false };
        match self.state.best {
            Some(best) if error >= best * (1.0 - threshold) => {
                self.state.bad_epochs += 1;
                if self.state.bad_epochs > *patience {
                    self.state.plateau_factor *= gamma;
                    self.state.bad_epochs = 0;
                    self.state.best = Some(error.min(best));
                    return true;
                }
            }
            _ => {
                self.state.best = Some(error);
                self.state.bad_epochs = 0;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_cifar_schedule() {
        let decay =
            Decay::Step { milestones: vec![Milestone::Iteration(32000), Milestone::Iteration(48000)], gamma: 0.1 };
        let s = Schedule::new(0.1, decay, Warmup::None, 64000, 390);
        assert_eq!(s.lr(0), 0.1);
        assert_eq!(s.lr(31999), 0.1);
        assert!((s.lr(32000) - 0.01).abs() < 1e-9);
        assert!((s.lr(48000) - 0.001).abs() < 1e-9);
    }

    #[test]
    fn fractional_and_epoch_milestones() {
        let m: Vec<Milestone> = ["0.5", "0.75", "30ep", "100"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(m[0].iteration(11700, 390), 5850);
        assert_eq!(m[1].iteration(11700, 390), 8775);
        assert_eq!(m[2].iteration(11700, 390), 11700);
        assert_eq!(m[3], Milestone::Iteration(100));
        assert!("1.5".parse::<Milestone>().is_err());
        assert!("abc".parse::<Milestone>().is_err());
    }

    #[test]
    fn fractions_freeze_at_the_old_length_and_past_the_new_end_are_dropped() {
        let milestones = vec![Milestone::Fraction(0.5), Milestone::Epoch(1), Milestone::Fraction(0.75)];
        let mut decay = Decay::Step { milestones, gamma: 0.1 };
        let frozen = decay.freeze_fractions(200, 120);
        assert_eq!(frozen.kept, [(0.5, 100)]);
        assert_eq!(frozen.dropped, [(0.75, 150)]);
        let kept = vec![Milestone::Iteration(100), Milestone::Epoch(1)];
        assert_eq!(decay, Decay::Step { milestones: kept, gamma: 0.1 });
        assert_eq!(Decay::Cosine { final_lr: 0.0 }.spread_over_the_run(), Some("cosine"));
        assert_eq!(Decay::Constant.spread_over_the_run(), None);
    }

    #[test]
    fn paper_warmup_ends_below_80_percent_error() {
        let mut s = Schedule::new(0.1, Decay::Constant, Warmup::paper(), 64000, 390);
        assert_eq!(s.lr(0), 0.01);
        for i in 0..30 {
            s.observe_batch(i, 90.0);
        }
        assert_eq!(s.lr(30), 0.01);
        // The 20-batch average drops below 80% with the 11th batch at 70% (iteration 40).
        for i in 30..50 {
            s.observe_batch(i, 70.0);
        }
        assert_eq!(s.state.warmup_ended_at, Some(41));
        assert_eq!(s.lr(40), 0.01);
        assert_eq!(s.lr(41), 0.1);
    }

    #[test]
    fn cosine_and_linear_warmup() {
        let s = Schedule::new(
            0.1,
            Decay::Cosine { final_lr: 0.0 },
            Warmup::Linear { iterations: 10, start_factor: 0.1 },
            100,
            10,
        );
        assert!((s.lr(0) - 0.01).abs() < 1e-6);
        assert!((s.lr(50) - 0.05).abs() < 1e-6);
        assert!(s.lr(100).abs() < 1e-7);
    }

    #[test]
    fn plateau_drops_after_patience() {
        let mut s =
            Schedule::new(0.1, Decay::Plateau { patience: 2, gamma: 0.1, threshold: 0.01 }, Warmup::None, 1000, 10);
        assert!(!s.observe_epoch(50.0));
        assert!(!s.observe_epoch(50.0));
        assert!(!s.observe_epoch(49.9));
        assert!(s.observe_epoch(49.8));
        assert!((s.lr(0) - 0.01).abs() < 1e-9);
    }
}
