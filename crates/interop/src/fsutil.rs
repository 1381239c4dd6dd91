//! Reading and atomically writing whole files, with errors that name them.

use crate::InteropError;
use std::io::Write;
use std::path::Path;

/// The whole of a weights file, refused unless it is a regular file within
/// [`resnet_models::MAX_WEIGHTS_FILE_BYTES`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, InteropError> {
    resnet_models::read_weights_file(path).map_err(|error| InteropError::Read { path: path.to_path_buf(), error })
}

/// Writes through a temporary file in the same directory and a rename, so readers never see a
/// half-written file and a failed export leaves the old one intact.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), InteropError> {
    let err = |error| InteropError::Write { path: path.to_path_buf(), error };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| err(std::io::Error::other("the path names no file")))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary file is ours and useless now.
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}
