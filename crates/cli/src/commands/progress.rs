//! Progress bars for training and evaluation (rate and ETA of the epoch and of the whole run),
//! or one log line per epoch with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use resnet_train::metrics::EpochMetrics;
use resnet_train::trainer::{Observer, StepReport};
use std::time::{Duration, Instant};

/// Draws the training run.
pub struct EpochBars {
    quiet: bool,
    bar: Option<ProgressBar>,
    /// When this process's first step began, and the iteration it began at.
    run_start: Option<(Instant, u64)>,
    /// The latest step, for the whole-run estimate.
    last: Option<(u64, u64)>,
    /// When the current evaluation began.
    eval_start: Instant,
    /// The run's classes, once known: top-5 error is shown only for more than five.
    classes: Option<usize>,
}

/// Top-5 error says nothing when there are five classes or fewer (it is always zero).
pub fn top5_means_something(classes: Option<usize>) -> bool {
    classes.is_none_or(|c| c > 5)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

/// `1h02m`, `3m05s`, `42s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `0.1000` for a constant rate, `0.1000->0.0100` for one that changed in the epoch.
fn lr_range(start: Option<f64>, end: f64) -> String {
    match start {
        Some(s) if s != end => format!("{s:.4}->{end:.4}"),
        _ => format!("{end:.4}"),
    }
}

impl EpochBars {
    /// Bars on stderr, or nothing but epoch lines when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None, run_start: None, last: None, eval_start: Instant::now(), classes: None }
    }

    fn replace(&mut self, bar: Option<ProgressBar>) {
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        self.bar = bar;
    }

    fn new_bar(&self, len: u64, template: &str) -> Option<ProgressBar> {
        if self.quiet {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(style(template));
        Some(bar)
    }

    /// Removes any bar left.
    pub fn finish(&mut self) {
        self.replace(None);
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Time left in the whole run at the pace of this process so far (steps, evaluations and
    /// checkpoints together), once a step has been timed.
    fn run_eta(&self) -> Option<Duration> {
        let ((start, first), (done, total)) = (self.run_start?, self.last?);
        let steps = done.checked_sub(first).filter(|s| *s > 0)?;
        let per_step = start.elapsed().as_secs_f64() / steps as f64;
        // An absurd length (2^64 iterations) is no estimate, not a panic.
        Duration::try_from_secs_f64(per_step * total.saturating_sub(done) as f64).ok()
    }
}

impl Observer for EpochBars {
    fn message(&mut self, text: &str) {
        self.line(text);
    }

    fn epoch_start(&mut self, epoch: u64, batches: u64, start: u64) {
        let bar =
            self.new_bar(batches, &format!("epoch {epoch:>3} [{{bar:30}}] {{pos}}/{{len}} {{msg}} epoch ETA {{eta}}"));
        if let Some(b) = &bar {
            b.set_position(start);
            b.reset_eta();
        }
        self.replace(bar);
    }

    fn step(&mut self, r: &StepReport) {
        if self.run_start.is_none() {
            // Timed from the end of this first step, so start-up is not counted as training.
            self.run_start = Some((Instant::now(), r.iteration));
        }
        self.last = Some((r.iteration, r.total_iterations));
        if let Some(b) = &self.bar {
            b.set_position(r.batch);
            let run =
                self.run_eta().map(|d| format!(" | run {}/{} ETA {}", r.iteration, r.total_iterations, duration(d)));
            b.set_message(format!(
                "loss {:.4} err {:5.2}% lr {:.4} {:.0} img/s{}",
                r.loss,
                r.error,
                r.lr,
                r.images_per_sec,
                run.unwrap_or_default()
            ));
        }
    }

    fn eval_start(&mut self, what: &str, batches: usize) {
        self.eval_start = Instant::now();
        let bar = self
            .new_bar(batches as u64, &format!("  {what:<10} [{{bar:30}}] {{pos}}/{{len}} batches {{msg}} ETA {{eta}}"));
        self.replace(bar);
    }

    fn eval_step(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            let seconds = self.eval_start.elapsed().as_secs_f64().max(1e-9);
            b.set_message(format!("{:.1} batches/s", done as f64 / seconds));
        }
    }

    fn classes(&mut self, count: usize) {
        self.classes = Some(count);
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.replace(None);
        let top5 = if top5_means_something(self.classes) {
            format!(" top-5 {:5.2}%", m.test_top5_error)
        } else {
            String::new()
        };
        let val = m.val_error.map(|v| format!(" | val error {v:.2}%")).unwrap_or_default();
        let eta = match (self.run_eta(), self.last) {
            (Some(d), Some((done, total))) if done < total => format!(" | run ETA {}", duration(d)),
            _ => String::new(),
        };
        eprintln!(
            "epoch {:>3} it {:>6} lr {} | train loss {:.4} error {:5.2}% | test loss {:.4} error {:5.2}%{top5}{val} | {:.0} img/s {:.0}s{eta}",
            m.epoch,
            m.iteration,
            lr_range(m.lr_start, m.lr),
            m.train_loss,
            m.train_error,
            m.test_loss,
            m.test_error,
            m.images_per_sec,
            m.seconds
        );
    }
}
