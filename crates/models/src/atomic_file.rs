//! Writing a file so that no reader ever sees half of it: the bytes go to a temporary file
//! beside it, are synced, and the temporary is renamed over the file. Checkpoints, exports and a
//! run's logs all write this way, with one naming of the temporaries (`.NAME.tmp-PID`), so a run
//! can recognise what a killed writer left behind.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary that [`write_atomic`] writes `path` through: `.NAME.tmp-PID` beside it.
pub fn temporary_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// The file a temporary named `name` was written for and the id of the process that wrote it,
/// if `name` is such a temporary.
pub fn temporary_target(name: &str) -> Option<(&str, u32)> {
    let (stem, pid) = name.rsplit_once(".tmp-")?;
    Some((stem.strip_prefix('.')?, pid.parse().ok()?))
}

/// Writes `bytes` to `path` through [`temporary_path`], then syncs the directory (best effort:
/// not every platform can open one). On an error the temporary is removed and `path` keeps its
/// old content.
///
/// # Errors
/// The I/O error; the caller names the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.file_name().is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"));
    }
    let tmp = temporary_path(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = tmp.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_names_its_target_and_writer() {
        let tmp = temporary_path(Path::new("run/checkpoints/last.safetensors"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(temporary_target(name), Some(("last.safetensors", std::process::id())));
        assert_eq!(tmp.parent(), Some(Path::new("run/checkpoints")));
        assert_eq!(temporary_target("notes.tmp-1"), None);
        assert_eq!(temporary_target(".notes.tmp-x"), None);
    }
}
