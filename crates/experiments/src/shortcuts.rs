//! Shortcut options A, B and C on one network (Section 3.3, Table 3): zero-padding identity,
//! projections where the shape changes, projections everywhere.

use crate::part::{run_part, PartResult};
use crate::{markdown_table, ExperimentError};
use resnet_models::Shortcut;
use resnet_train::config::TrainConfig;
use resnet_train::fsutil;
use resnet_train::trainer::Observer;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct ShortcutRow {
    /// Option.
    pub option: String,
    /// The part.
    pub part: PartResult,
}

/// Results of [`shortcuts`].
#[derive(Clone, Debug, Serialize)]
pub struct ShortcutsReport {
    /// A, B, C.
    pub rows: Vec<ShortcutRow>,
    /// Markdown table.
    pub table: String,
    /// The paper's ordering (C <= B <= A in test error), as observed or not.
    pub finding: String,
}

/// Trains `base.model` with shortcut options A, B and C into `out/<model>-<option>` and writes
/// `summary.md` / `summary.json` with errors and parameter counts.
///
/// # Errors
/// A part's training error, or an `only` entry that names no part.
pub fn shortcuts(
    base: &TrainConfig,
    out: &Path,
    only: Option<&[String]>,
    stop: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<ShortcutsReport, ExperimentError> {
    const OPTIONS: [Shortcut; 3] = [Shortcut::A, Shortcut::B, Shortcut::C];
    let names: Vec<String> =
        OPTIONS.iter().flat_map(|option| [format!("{}-{option}", base.model), option.to_string()]).collect();
    crate::check_selection(only, &names)?;
    let mut rows = Vec::new();
    for option in OPTIONS {
        let name = format!("{}-{option}", base.model);
        let selected = only.is_none_or(|o| o.iter().any(|n| n == &name || n == &option.to_string()));
        if (!selected && !out.join(&name).join("finished.json").exists())
            || stop.load(std::sync::atomic::Ordering::SeqCst)
        {
            continue;
        }
        let config = TrainConfig { shortcut: Some(option), ..base.clone() };
        rows.push(ShortcutRow { option: option.to_string(), part: run_part(&name, config, out, stop, observer)? });
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let last = r.part.history.last();
            vec![
                r.option.clone(),
                r.part.params.to_string(),
                last.map_or("-".into(), |m| format!("{:.2}", m.train_error)),
                last.map_or("-".into(), |m| format!("{:.2}", m.test_error)),
                last.map_or("-".into(), |m| format!("{:.2}", m.test_top5_error)),
                format!("{:.0}", r.part.seconds),
                if r.part.finished { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    let errors: Vec<Option<f64>> = rows.iter().map(|r| r.part.history.last().map(|m| m.test_error)).collect();
    let finding = match errors.as_slice() {
        [Some(a), Some(b), Some(c)] if rows.iter().all(|r| r.part.finished) => {
            let ok = c <= b && b <= a;
            format!(
                "test error A {a:.2}%, B {b:.2}%, C {c:.2}%: the paper's ordering C <= B <= A is {}",
                if ok { "observed" } else { "not observed" }
            )
        }
        _ => "not all three options have finished; no ordering stated".to_string(),
    };
    let mut table = markdown_table(
        &["option", "params", "final train error (%)", "final test error (%)", "top-5 (%)", "seconds", "finished"],
        &table_rows,
    );
    table.push_str(&format!("\n{finding}\n"));
    fsutil::write_atomic(&out.join("summary.md"), table.as_bytes())?;
    let report = ShortcutsReport { rows, table, finding };
    fsutil::write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&report).expect("report").as_bytes())?;
    Ok(report)
}
