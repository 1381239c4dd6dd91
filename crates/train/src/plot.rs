//! Line plots in the style of the paper's figures (Fig. 6: training error dashed, test error
//! solid, against iterations; Fig. 7: layer responses), written as PNG and SVG side by side.

use crate::fsutil::FileError;
use std::path::Path;

#[cfg(feature = "plot")]
mod render;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    /// Solid line (test error in Fig. 6).
    Solid,
    /// Dashed line (training error in Fig. 6).
    Dashed,
}

/// One curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Line style.
    pub stroke: Stroke,
    /// Index into the palette; curves of one network share a colour.
    pub color: usize,
}

/// One panel.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Curves.
    pub series: Vec<Series>,
    /// Fixed y range; otherwise fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

/// Panels side by side.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Figure {
    /// Left to right.
    pub panels: Vec<Panel>,
}

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("{path}: cannot draw the plot: {reason}")]
    Draw {
        /// Target file.
        path: std::path::PathBuf,
        /// Backend message.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Writes `<stem>.png` and `<stem>.svg` (each atomically).
///
/// # Errors
/// [`PlotError`] naming the file.
#[cfg(feature = "plot")]
pub fn save(fig: &Figure, stem: &Path) -> Result<(), PlotError> {
    render::save(fig, stem)
}

/// Writes nothing: this build has no `plot` feature.
///
/// # Errors
/// None.
#[cfg(not(feature = "plot"))]
pub fn save(fig: &Figure, stem: &Path) -> Result<(), PlotError> {
    let _ = (fig, stem);
    Ok(())
}
