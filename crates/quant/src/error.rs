use thiserror::Error;

/// Why a network cannot be quantized or a quantization record cannot be used.
#[derive(Debug, Error)]
pub enum QuantError {
    /// The record lacks the range of an activation the network has.
    #[error("the quantization record has no range for activation '{0}' (it was calibrated for another network)")]
    MissingActivation(String),
    /// The record holds a range the network does not have.
    #[error(
        "the quantization record has a range for '{0}', which this network does not have (another network's record)"
    )]
    UnknownActivation(String),
    /// A recorded range is unusable.
    #[error("activation '{name}': {reason}")]
    BadRange {
        /// The activation.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The record's format is not this version's.
    #[error("quantization format '{0}' is not '{expected}'", expected = crate::RECORD_FORMAT)]
    Format(String),
    /// Calibration saw no images, or values that are not finite.
    #[error("calibration: {0}")]
    Calibration(String),
}
