//! Progress bars for training and evaluation (rate and ETA), or one log line per epoch with
//! `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use resnet_train::metrics::EpochMetrics;
use resnet_train::trainer::{Observer, StepReport};

/// Draws the training run.
pub struct EpochBars {
    quiet: bool,
    bar: Option<ProgressBar>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

impl EpochBars {
    /// Bars on stderr, or nothing but epoch lines when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
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
}

impl Observer for EpochBars {
    fn message(&mut self, text: &str) {
        self.line(text);
    }

    fn epoch_start(&mut self, epoch: u64, batches: u64, start: u64) {
        let bar = self.new_bar(batches, &format!("epoch {epoch:>3} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}"));
        if let Some(b) = &bar {
            b.set_position(start);
            b.reset_eta();
        }
        self.replace(bar);
    }

    fn step(&mut self, r: &StepReport) {
        if let Some(b) = &self.bar {
            b.set_position(r.batch);
            b.set_message(format!(
                "loss {:.4} err {:5.2}% lr {:.4} {:.0} img/s",
                r.loss, r.error, r.lr, r.images_per_sec
            ));
        }
    }

    fn eval_start(&mut self, what: &str, batches: usize) {
        let bar =
            self.new_bar(batches as u64, &format!("  {what:<10} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}}"));
        self.replace(bar);
    }

    fn eval_step(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.replace(None);
        let val = m.val_error.map(|v| format!(" | val error {v:.2}%")).unwrap_or_default();
        eprintln!(
            "epoch {:>3} it {:>6} lr {:.4} | train loss {:.4} error {:5.2}% | test loss {:.4} error {:5.2}% top-5 {:5.2}%{val} | {:.0} img/s {:.0}s",
            m.epoch, m.iteration, m.lr, m.train_loss, m.train_error, m.test_loss, m.test_error, m.test_top5_error, m.images_per_sec, m.seconds
        );
    }
}
