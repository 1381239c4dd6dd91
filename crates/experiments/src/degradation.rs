//! Plain against residual networks of growing depth, trained alike (Section 4.2, Fig. 6).

use crate::part::{run_part, PartResult};
use crate::{markdown_table, ExperimentError};
use resnet_models::zoo;
use resnet_train::config::TrainConfig;
use resnet_train::fsutil;
use resnet_train::plot::{self, Figure, Panel};
use resnet_train::trainer::Observer;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Results of [`degradation`].
#[derive(Clone, Debug, Serialize)]
pub struct DegradationReport {
    /// One per network trained (plain and residual for each depth, in that order).
    pub parts: Vec<PartResult>,
    /// Markdown table of final errors.
    pub table: String,
    /// True when every part finished.
    pub complete: bool,
}

/// The zoo name of the CIFAR network of `depth` (generic names for depths outside the zoo).
pub fn cifar_name(depth: usize, residual: bool) -> String {
    let short = if residual { format!("resnet{depth}") } else { format!("plain{depth}") };
    match zoo::spec(&short, &Default::default()) {
        Ok(s) if s.family == resnet_models::Family::Cifar => short,
        _ => format!("cifar-{short}"),
    }
}

/// Trains the plain and the residual CIFAR network of each depth in `depths` with `base`'s
/// recipe (only the model changes) into `out/<name>`, then writes `degradation.csv`,
/// `degradation.png`/`.svg` (left plain, right residual; training error dashed, test error solid)
/// and `summary.md`. `only` restricts the run to the named networks (to split the work); the
/// outputs then cover every part finished so far.
///
/// # Errors
/// A part's training error, invalid depths, or an `only` entry that names no part.
pub fn degradation(
    depths: &[usize],
    base: &TrainConfig,
    out: &Path,
    only: Option<&[String]>,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<DegradationReport, ExperimentError> {
    check_depths(depths)?;
    let names: Vec<String> =
        [false, true].iter().flat_map(|&residual| depths.iter().map(move |&d| cifar_name(d, residual))).collect();
    crate::check_selection(only, &names)?;
    let mut parts = Vec::new();
    let mut complete = true;
    for residual in [false, true] {
        for &d in depths {
            let name = cifar_name(d, residual);
            let selected = only.is_none_or(|o| o.iter().any(|n| n == &name));
            let done_before = out.join(&name).join("finished.json").exists();
            if !selected && !done_before {
                complete = false;
                continue;
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                complete = false;
                break;
            }
            let config = TrainConfig { model: name.clone(), ..base.clone() };
            let part = run_part(&name, config, out, stop, observer)?;
            complete &= part.finished;
            parts.push(part);
        }
    }
    let mut csv = String::from("network,depth,residual,epoch,iteration,train_error,test_error\n");
    for p in &parts {
        let (depth, residual) = describe(&p.name);
        for m in &p.history {
            csv.push_str(&format!(
                "{},{depth},{residual},{},{},{:.4},{:.4}\n",
                p.name, m.epoch, m.iteration, m.train_error, m.test_error
            ));
        }
    }
    fsutil::write_atomic(&out.join("degradation.csv"), csv.as_bytes())?;
    let panel = |residual: bool| {
        let mut series = Vec::new();
        for (i, p) in parts.iter().filter(|p| describe(&p.name).1 == residual).enumerate() {
            series.extend(resnet_train::metrics::error_series(&label(&p.name), &p.history, i));
        }
        Panel {
            title: if residual { "ResNet".into() } else { "plain".into() },
            x_label: "iterations".into(),
            y_label: "error (%)".into(),
            series,
            y_range: None,
        }
    };
    let mut fig = Figure { panels: vec![panel(false), panel(true)] };
    // Both panels on one scale, as in the paper.
    let ymax =
        parts.iter().flat_map(|p| p.history.iter().flat_map(|m| [m.train_error, m.test_error])).fold(0.0f64, f64::max);
    for p in &mut fig.panels {
        p.y_range = Some((0.0, (ymax * 1.05).max(1.0)));
    }
    plot::save(&fig, &out.join("degradation"))?;
    let rows: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            let last = p.history.last();
            vec![
                label(&p.name),
                p.params.to_string(),
                last.map_or("-".into(), |m| format!("{:.2}", m.train_error)),
                last.map_or("-".into(), |m| format!("{:.2}", m.test_error)),
                last.map_or("-".into(), |m| m.iteration.to_string()),
                format!("{:.0}", p.seconds),
                if p.finished { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    let table = markdown_table(
        &["network", "params", "final train error (%)", "final test error (%)", "iterations", "seconds", "finished"],
        &rows,
    );
    fsutil::write_atomic(&out.join("summary.md"), table.as_bytes())?;
    let report = DegradationReport { parts, table, complete };
    fsutil::write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&report).expect("report").as_bytes())?;
    Ok(report)
}

/// Refuses a depth no CIFAR network has (6n+2 layers).
pub(crate) fn check_depths(depths: &[usize]) -> Result<(), ExperimentError> {
    match depths.iter().find(|&&d| d < 8 || (d - 2) % 6 != 0) {
        Some(d) => Err(ExperimentError::Config(format!("CIFAR depths are 6n+2 (20, 32, 44, 56, 110); {d} is not"))),
        None if depths.is_empty() => Err(ExperimentError::Config("give at least one depth".into())),
        None => Ok(()),
    }
}

/// `(depth, residual)` of a part name.
fn describe(name: &str) -> (usize, bool) {
    let short = name.trim_start_matches("cifar-");
    let residual = short.starts_with("resnet");
    let depth = short.trim_start_matches("resnet").trim_start_matches("plain").parse().unwrap_or(0);
    (depth, residual)
}

/// `plain-20`, `ResNet-56`, as the paper writes them.
fn label(name: &str) -> String {
    let (depth, residual) = describe(name);
    if residual {
        format!("ResNet-{depth}")
    } else {
        format!("plain-{depth}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert_eq!(cifar_name(20, false), "plain20");
        assert_eq!(cifar_name(56, true), "resnet56");
        assert_eq!(cifar_name(50, true), "cifar-resnet50");
        assert_eq!(describe("cifar-plain26"), (26, false));
        assert_eq!(label("resnet110"), "ResNet-110");
    }
}
