//! Reading and atomically writing whole files, with errors that name them.

use crate::InteropError;
use std::path::Path;

/// The whole of a weights file, refused unless it is a regular file within
/// [`resnet_models::MAX_WEIGHTS_FILE_BYTES`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, InteropError> {
    resnet_models::read_weights_file(path).map_err(|error| InteropError::Read { path: path.to_path_buf(), error })
}

/// Writes through a temporary file and a rename ([`resnet_models::write_atomic`]), so readers
/// never see a half-written file and a failed export leaves the old one intact.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), InteropError> {
    resnet_models::write_atomic(path, bytes).map_err(|error| InteropError::Write { path: path.to_path_buf(), error })
}
