//! The experiments of He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (2015)
//! as functions, so anyone can reproduce the paper's figures with one command each:
//!
//! - [`degradation`]: plain and residual networks of several depths trained with one recipe
//!   (Section 4.2, Fig. 6): deeper plain nets train worse, deeper ResNets do not;
//! - [`responses`]: the standard deviation of each 3x3 layer's response (Section 4.2, Fig. 7):
//!   ResNets' responses are smaller than their plain twins';
//! - [`shortcuts`]: options A, B and C on one network (Section 3.3, Table 3);
//! - [`depth`]: test error against depth from 20 to 110 layers (Section 4.2, Table 6).
//!
//! Every training run is one *part* in its own directory, resumed where it stopped and skipped
//! once finished, so long experiments survive interruptions and can be split across sessions.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod degradation;
mod depth;
mod part;
mod responses;
mod shortcuts;

pub use degradation::{degradation, DegradationReport};
pub use depth::{depth, paper_error, DepthReport, DepthRow, PAPER_TABLE_6};
pub use part::{run_part, PartResult, PartStatus};
pub use responses::{responses, LayerResponses, ResponsesReport};
pub use shortcuts::{shortcuts, ShortcutRow, ShortcutsReport};

/// What can stop an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A training part failed.
    #[error("part {part}: {source}")]
    Part {
        /// The part's name.
        part: String,
        /// Why.
        #[source]
        source: Box<resnet_train::trainer::TrainError>,
    },
    /// Data could not be read.
    #[error(transparent)]
    Data(#[from] resnet_data::DataError),
    /// A checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] resnet_train::checkpoint::CheckpointError),
    /// A file could not be written.
    #[error(transparent)]
    File(#[from] resnet_train::fsutil::FileError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] resnet_train::plot::PlotError),
    /// A network could not be built.
    #[error(transparent)]
    Model(#[from] resnet_models::ModelError),
    /// Inconsistent arguments.
    #[error("{0}")]
    Config(String),
}

/// Refuses a selection (`--only`) with an entry that names none of `parts`, before anything is
/// trained: a misspelt name would otherwise train nothing and look like success.
fn check_selection(only: Option<&[String]>, parts: &[String]) -> Result<(), ExperimentError> {
    let Some(only) = only else { return Ok(()) };
    if only.is_empty() {
        return Err(ExperimentError::Config(format!("--only names no part; the parts are {}", parts.join(", "))));
    }
    for name in only {
        if !parts.contains(name) {
            return Err(ExperimentError::Config(format!(
                "--only {name:?} is not a part of this experiment; the parts are {}",
                parts.join(", ")
            )));
        }
    }
    Ok(())
}

/// Formats a markdown table.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out =
        format!("| {} |\n|{}|\n", header.join(" | "), header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}
