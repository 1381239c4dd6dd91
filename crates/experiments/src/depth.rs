//! Test error against depth: CIFAR ResNets of 20 to 110 (or 1202) layers trained with one
//! schedule (Section 4.2, Table 6), beside the paper's figures.

use crate::degradation::cifar_name;
use crate::part::{run_part, PartResult};
use crate::{markdown_table, ExperimentError};
use resnet_train::config::TrainConfig;
use resnet_train::fsutil;
use resnet_train::plot::{self, Figure, Panel, Series, Stroke};
use resnet_train::trainer::Observer;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The paper's Table 6: CIFAR-10 test error (%) of the ResNets of each depth.
pub const PAPER_TABLE_6: [(usize, f64); 6] =
    [(20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43), (1202, 7.93)];

/// The paper's test error of the ResNet of `depth`, where Table 6 has one.
pub fn paper_error(depth: usize) -> Option<f64> {
    PAPER_TABLE_6.iter().find(|(d, _)| *d == depth).map(|(_, e)| *e)
}

/// One depth's result.
#[derive(Clone, Debug, Serialize)]
pub struct DepthRow {
    /// Layers.
    pub depth: usize,
    /// Trainable parameters.
    pub params: u64,
    /// Final test error (%), once the run has an epoch.
    pub test_error: Option<f64>,
    /// Final training error (%).
    pub train_error: Option<f64>,
    /// The paper's test error (%).
    pub paper: Option<f64>,
    /// PyTorch's final test error (%) on the same data and schedule, from a finished run of
    /// `bench/pytorch_cifar_train.py` in `out/pytorch-<name>`.
    pub pytorch: Option<f64>,
    /// Wall seconds of training.
    pub seconds: f64,
    /// Training images per second over the run.
    pub images_per_sec: Option<f64>,
    /// Whether the run reached its length.
    pub finished: bool,
}

/// Results of [`depth`].
#[derive(Clone, Debug, Serialize)]
pub struct DepthReport {
    /// One per depth, in the order given.
    pub rows: Vec<DepthRow>,
    /// Markdown table.
    pub table: String,
    /// Whether the final test error falls at every step of depth among the finished runs.
    pub falls_with_depth: Option<bool>,
    /// True when every run finished.
    pub complete: bool,
}

/// Trains the CIFAR ResNet of each depth with the configuration `config_for` gives its name into
/// `out/<name>` (resuming or skipping runs already there), then writes `depth.md`,
/// `depth.json` and `depth.png`/`.svg` (test error against depth, ours and the paper's). `only`
/// restricts training to the named networks; the outputs cover every run finished so far.
///
/// # Errors
/// A run's training error, depths that are not 6n+2, or an `only` entry that names no run.
pub fn depth(
    depths: &[usize],
    config_for: &dyn Fn(&str) -> Result<TrainConfig, ExperimentError>,
    out: &Path,
    only: Option<&[String]>,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<DepthReport, ExperimentError> {
    crate::degradation::check_depths(depths)?;
    let names: Vec<String> = depths.iter().map(|&d| cifar_name(d, true)).collect();
    crate::check_selection(only, &names)?;
    let mut rows = Vec::new();
    let mut complete = true;
    for (&d, name) in depths.iter().zip(&names) {
        let selected = only.is_none_or(|o| o.contains(name));
        let started = out.join(name).join("config.json").exists();
        if !(selected || started) || stop.load(std::sync::atomic::Ordering::SeqCst) {
            complete = false;
            continue;
        }
        let part = run_part(name, config_for(name)?, out, stop, observer)?;
        complete &= part.finished;
        rows.push(DepthRow { pytorch: pytorch_error(&out.join(format!("pytorch-{name}")))?, ..row(d, &part) });
    }
    let table = table(&rows);
    let falls_with_depth = falls(&rows);
    fsutil::write_atomic(&out.join("depth.md"), table.as_bytes())?;
    plot::save(&figure(&rows), &out.join("depth"))?;
    let report = DepthReport { rows, table, falls_with_depth, complete };
    fsutil::write_atomic(&out.join("depth.json"), serde_json::to_string_pretty(&report).expect("report").as_bytes())?;
    Ok(report)
}

/// The final test error of a finished PyTorch reference run in `dir` (its `metrics.jsonl`, one
/// line per epoch, the last of epoch `epochs`); `None` where there is no run or it has not
/// finished.
///
/// # Errors
/// A `metrics.jsonl` that cannot be read or whose last line is not such a record.
pub fn pytorch_error(dir: &Path) -> Result<Option<f64>, ExperimentError> {
    let path = dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ExperimentError::Config(format!("{}: {e}", path.display()))),
    };
    let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else { return Ok(None) };
    let bad = |why: &str| ExperimentError::Config(format!("{}: the last line {why}", path.display()));
    let record: serde_json::Value = serde_json::from_str(last).map_err(|e| bad(&format!("is not JSON ({e})")))?;
    let number = |key: &str| record.get(key).and_then(serde_json::Value::as_f64);
    match (number("epoch"), number("epochs"), number("test_error")) {
        (Some(epoch), Some(epochs), Some(error)) if (0.0..=100.0).contains(&error) => {
            Ok((epoch >= epochs).then_some(error))
        }
        _ => Err(bad("lacks epoch, epochs or a test_error in percent")),
    }
}

fn row(depth: usize, part: &PartResult) -> DepthRow {
    let last = part.history.last();
    let images: f64 = part.history.iter().map(|m| m.images_per_sec * m.seconds).sum();
    DepthRow {
        depth,
        params: part.params,
        test_error: last.map(|m| m.test_error),
        train_error: last.map(|m| m.train_error),
        paper: paper_error(depth),
        pytorch: None,
        seconds: part.seconds,
        images_per_sec: (part.seconds > 0.0).then(|| images / part.seconds),
        finished: part.finished,
    }
}

/// Whether each finished run's test error is below the shallower one's before it.
fn falls(rows: &[DepthRow]) -> Option<bool> {
    let errors: Vec<f64> = rows.iter().filter(|r| r.finished).filter_map(|r| r.test_error).collect();
    (errors.len() >= 2).then(|| errors.windows(2).all(|w| w[1] < w[0]))
}

fn table(rows: &[DepthRow]) -> String {
    let percent = |v: Option<f64>| v.map_or("-".into(), |e| format!("{e:.2}"));
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.depth.to_string(),
                format!("{:.2}M", r.params as f64 / 1e6),
                percent(r.test_error),
                percent(r.pytorch),
                percent(r.paper),
                percent(r.train_error),
                format!("{:.0}", r.seconds / 60.0),
                r.images_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
                if r.finished { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    markdown_table(
        &[
            "depth",
            "params",
            "test error (%)",
            "PyTorch (%)",
            "paper (%)",
            "training error (%)",
            "minutes",
            "images/s",
            "finished",
        ],
        &rows,
    )
}

fn figure(rows: &[DepthRow]) -> Figure {
    let ours = rows.iter().filter_map(|r| r.test_error.map(|e| (r.depth as f64, e))).collect();
    let paper = rows.iter().filter_map(|r| r.paper.map(|e| (r.depth as f64, e))).collect();
    let pytorch: Vec<_> = rows.iter().filter_map(|r| r.pytorch.map(|e| (r.depth as f64, e))).collect();
    Figure {
        panels: vec![Panel {
            title: "CIFAR-10 test error against depth".into(),
            x_label: "layers".into(),
            y_label: "test error (%)".into(),
            series: [
                Series { label: "ours".into(), points: ours, stroke: Stroke::Solid, color: 0 },
                Series { label: "PyTorch, the same schedule".into(), points: pytorch, stroke: Stroke::Solid, color: 2 },
                Series { label: "the paper (Table 6)".into(), points: paper, stroke: Stroke::Dashed, color: 1 },
            ]
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect(),
            y_range: None,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(depth: usize, test: f64, finished: bool) -> DepthRow {
        DepthRow {
            depth,
            params: 0,
            test_error: Some(test),
            train_error: None,
            paper: paper_error(depth),
            pytorch: None,
            seconds: 60.0,
            images_per_sec: None,
            finished,
        }
    }

    #[test]
    fn the_trend_is_read_from_finished_runs_only() {
        assert_eq!(falls(&[r(20, 14.6, true), r(32, 13.0, true), r(44, 12.9, true)]), Some(true));
        assert_eq!(falls(&[r(20, 14.6, true), r(32, 15.0, true)]), Some(false));
        assert_eq!(falls(&[r(20, 14.6, true), r(32, 20.0, false)]), None);
        assert_eq!(paper_error(110), Some(6.43));
        assert_eq!(paper_error(50), None);
        assert!(table(&[r(56, 12.5, true)]).contains("| 56 | 0.00M | 12.50 | - | 6.97 |"));
        let with_torch = DepthRow { pytorch: Some(13.25), ..r(56, 12.5, true) };
        assert!(table(&[with_torch]).contains("| 56 | 0.00M | 12.50 | 13.25 | 6.97 |"));
    }

    #[test]
    fn pytorch_reference_runs_count_once_finished_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("resnet-depth-pytorch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(pytorch_error(&dir.join("absent")).unwrap(), None);
        let file = dir.join("metrics.jsonl");
        let line = |epoch: u32, error: f64| format!("{{\"epoch\":{epoch},\"epochs\":30,\"test_error\":{error}}}\n");
        std::fs::write(&file, line(1, 80.0) + &line(2, 60.5)).unwrap();
        assert_eq!(pytorch_error(&dir).unwrap(), None, "an unfinished run has no final error");
        std::fs::write(&file, line(29, 14.0) + &line(30, 13.25)).unwrap();
        assert_eq!(pytorch_error(&dir).unwrap(), Some(13.25));
        for bad in ["{\"epoch\":30}\n", "not json\n", "{\"epoch\":30,\"epochs\":30,\"test_error\":140}\n"] {
            std::fs::write(&file, bad).unwrap();
            let err = pytorch_error(&dir).unwrap_err().to_string();
            assert!(err.contains("metrics.jsonl"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
