//! Per-epoch metrics of a run: `metrics.csv` and `metrics.jsonl` (one row per epoch), and the
//! training-curve plot (Fig. 6 style), all rewritten atomically after every epoch.

use crate::fsutil::{self, FileError};
use crate::plot::{self, Figure, Panel, PlotError, Series, Stroke};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One epoch of a run. Errors are percentages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: u64,
    /// Optimisation steps done at the end of the epoch.
    pub iteration: u64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Learning rate of the epoch's first step (absent in rows written before it was logged).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr_start: Option<f64>,
    /// Learning rate of the epoch's last step, as `lr` (absent in rows written before it was
    /// logged); with `lr_start` it shows a drop inside the epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr_end: Option<f64>,
    /// Mean training loss over the epoch's batches (before each update).
    pub train_loss: f64,
    /// Training top-1 error over the epoch's batches (before each update), percent.
    pub train_error: f64,
    /// Test loss (NaN where a record written by another tool, such as
    /// `bench/pytorch_cifar_train.py`, has none).
    #[serde(default = "not_recorded")]
    pub test_loss: f64,
    /// Test top-1 error, percent.
    pub test_error: f64,
    /// Test top-5 error, percent (NaN where a record has none, as `test_loss`).
    #[serde(default = "not_recorded")]
    pub test_top5_error: f64,
    /// Held-out validation top-1 error (`--val-split`), percent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_error: Option<f64>,
    /// Training throughput of the epoch.
    pub images_per_sec: f64,
    /// Wall seconds of the epoch (training and evaluation).
    pub seconds: f64,
    /// Data-parallel ranks that trained the epoch (`images_per_sec` is theirs together).
    #[serde(default = "one_rank")]
    pub world_size: usize,
}

fn one_rank() -> usize {
    1
}

fn not_recorded() -> f64 {
    f64::NAN
}

// New columns go at the end, so readers of the older columns by position keep working.
const CSV_HEADER: &str = "epoch,iteration,lr,train_loss,train_error,test_loss,test_error,test_top5_error,val_error,images_per_sec,seconds,lr_start,lr_end";

fn csv_row(m: &EpochMetrics) -> String {
    format!(
        "{},{},{},{:.6},{:.4},{:.6},{:.4},{:.4},{},{:.2},{:.3},{},{}",
        m.epoch,
        m.iteration,
        m.lr,
        m.train_loss,
        m.train_error,
        m.test_loss,
        m.test_error,
        m.test_top5_error,
        m.val_error.map(|v| format!("{v:.4}")).unwrap_or_default(),
        m.images_per_sec,
        m.seconds,
        m.lr_start.map(|v| v.to_string()).unwrap_or_default(),
        m.lr_end.map(|v| v.to_string()).unwrap_or_default()
    )
}

/// Writes `metrics.csv` and `metrics.jsonl` for `history` into `dir`.
///
/// # Errors
/// A [`FileError`] naming the file.
pub fn write(dir: &Path, history: &[EpochMetrics]) -> Result<(), FileError> {
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    let mut jsonl = String::new();
    for m in history {
        csv.push_str(&csv_row(m));
        csv.push('\n');
        jsonl.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        jsonl.push('\n');
    }
    fsutil::write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
    fsutil::write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())
}

/// Reads `metrics.jsonl` (to resume a run).
///
/// # Errors
/// A [`FileError`] when the file cannot be read; a line that does not parse is reported as
/// invalid data with its line number.
pub fn read(dir: &Path) -> Result<Vec<EpochMetrics>, FileError> {
    let path = dir.join("metrics.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&fsutil::read(&path)?).into_owned();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                FileError::new(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("line {}: {e}", i + 1)),
                )
            })
        })
        .collect()
}

/// One run's training error (dashed) and test error (solid) against iterations, in one colour,
/// labelled `"{name} train"` and `"{name} test"` (or `train error`, `test error` without a name).
pub fn error_series(name: &str, history: &[EpochMetrics], color: usize) -> [Series; 2] {
    let pts = |f: fn(&EpochMetrics) -> f64| history.iter().map(|m| (m.iteration as f64, f(m))).collect();
    let label = |what: &str| if name.is_empty() { format!("{what} error") } else { format!("{name} {what}") };
    [
        Series { label: label("train"), points: pts(|m| m.train_error), stroke: Stroke::Dashed, color },
        Series { label: label("test"), points: pts(|m| m.test_error), stroke: Stroke::Solid, color },
    ]
}

/// The training curves of one run: error against iterations, training dashed and test solid.
pub fn curves(title: &str, history: &[EpochMetrics]) -> Figure {
    let mut series = error_series("", history, 0).to_vec();
    if history.iter().any(|m| m.val_error.is_some()) {
        let points = history.iter().filter_map(|m| m.val_error.map(|v| (m.iteration as f64, v))).collect();
        series.push(Series { label: "validation error".into(), points, stroke: Stroke::Solid, color: 1 });
    }
    Figure {
        panels: vec![Panel {
            title: title.to_string(),
            x_label: "iterations".into(),
            y_label: "error (%)".into(),
            series,
            y_range: None,
        }],
    }
}

/// Writes `curves.png` and `curves.svg` into `dir`.
///
/// # Errors
/// [`PlotError`] naming the file.
pub fn plot(dir: &Path, title: &str, history: &[EpochMetrics]) -> Result<(), PlotError> {
    plot::save(&curves(title, history), &dir.join("curves"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: u64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            iteration: epoch * 390,
            lr: 0.1,
            lr_start: Some(0.1),
            lr_end: Some(0.1),
            train_loss: 1.5,
            train_error: 50.0,
            test_loss: 1.4,
            test_error: 45.0,
            test_top5_error: 5.0,
            val_error: None,
            images_per_sec: 400.0,
            seconds: 120.0,
            world_size: 1,
        }
    }

    #[test]
    fn csv_and_jsonl_round_trip() {
        let dir = std::env::temp_dir().join(format!("resnet-metrics-{}", std::process::id()));
        let h = vec![row(1), row(2)];
        write(&dir, &h).unwrap();
        assert_eq!(read(&dir).unwrap(), h);
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER);
        let first = lines.next().unwrap();
        assert!(first.starts_with("1,390,0.1,1.500000,50.0000"), "{first}");
        assert!(first.ends_with(",0.1,0.1"), "{first}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_without_test_loss_or_top5_read_for_plotting() {
        let dir = std::env::temp_dir().join(format!("resnet-metrics-foreign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = r#"{"epoch": 1, "epochs": 30, "iteration": 390, "lr": 0.1, "train_loss": 1.9, "train_error": 71.7, "test_error": 60.3, "seconds": 240.0, "images_per_sec": 208.0}"#;
        std::fs::write(dir.join("metrics.jsonl"), format!("{line}\n")).unwrap();
        let rows = read(&dir).unwrap();
        assert_eq!((rows[0].iteration, rows[0].test_error, rows[0].train_error), (390, 60.3, 71.7));
        assert!(rows[0].test_loss.is_nan() && rows[0].test_top5_error.is_nan());
        let figure = curves("foreign", &rows);
        assert_eq!(figure.panels[0].series[1].points, vec![(390.0, 60.3)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
