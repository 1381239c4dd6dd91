//! Files that are never half-written: every output goes to a temporary name in the same
//! directory, is flushed to disk, and is renamed over the target, so a crash (or a full disk)
//! leaves either the old file or the new one, never a broken one.

use std::fs;
use std::path::{Path, PathBuf};

/// An I/O failure with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// Wraps an I/O error with its path.
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        Self { path: path.to_path_buf(), source }
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
///
/// # Errors
/// A [`FileError`] naming the file; the previous content of `path`, if any, is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| FileError::new(dir, e))?;
    resnet_models::write_atomic(path, bytes).map_err(|e| FileError::new(path, e))
}

/// Whether `target` is a file a training run writes (see the trainer's run-directory layout):
/// only those temporaries are a run's to clean up, whatever else shares the directory.
fn is_run_output(target: &str) -> bool {
    const FILES: [&str; 7] = [
        "config.json",
        "metrics.csv",
        "metrics.jsonl",
        "curves.png",
        "curves.svg",
        "last.safetensors",
        "best.safetensors",
    ];
    FILES.contains(&target)
        || target
            .strip_prefix("epoch-")
            .and_then(|t| t.strip_suffix(".safetensors"))
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// The id of the process that writes the temporary file `name` (see
/// [`resnet_models::temporary_path`]), if `name` is one of a run output.
fn temporary_owner(name: &str) -> Option<u32> {
    resnet_models::temporary_target(name).filter(|(target, _)| is_run_output(target)).map(|(_, pid)| pid)
}

/// Whether process `pid` may be running. Where the OS does not say (no `/proc`), it may: a file
/// is never removed on a guess.
fn process_alive(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files of run outputs that [`write_atomic`] calls of processes that no
/// longer run left in `dir` (a run killed while writing); returns the files removed.
///
/// # Errors
/// A [`FileError`] when `dir` exists but cannot be listed or a file cannot be removed.
pub(crate) fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::new(dir, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FileError::new(dir, e))?;
        let Some(pid) = entry.file_name().to_str().and_then(temporary_owner) else { continue };
        if pid == std::process::id() || process_alive(pid) || !entry.path().is_file() {
            continue;
        }
        fs::remove_file(entry.path()).map_err(|e| FileError::new(&entry.path(), e))?;
        removed.push(entry.path());
    }
    Ok(removed)
}

/// Reads a whole file, naming it in the error.
///
/// # Errors
/// A [`FileError`].
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(|e| FileError::new(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("resnet-fsutil-{}", std::process::id()));
        let path = dir.join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_and_others_kept() {
        let dir = std::env::temp_dir().join(format!("resnet-fsutil-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.join(format!(".last.safetensors.tmp-{dead}"));
        let own = dir.join(format!(".last.safetensors.tmp-{}", std::process::id()));
        let plain = dir.join("notes.tmp-1");
        let epoch = dir.join(format!(".epoch-12.safetensors.tmp-{dead}"));
        let foreign = dir.join(format!(".notes.txt.tmp-{dead}"));
        for f in [&stale, &own, &plain, &epoch, &foreign] {
            fs::write(f, b"x").unwrap();
        }
        let mut removed = remove_stale_temporaries(&dir).unwrap();
        removed.sort();
        let mut expected = vec![epoch.clone(), stale.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        // Another program's temporary of the same naming is not ours to remove.
        assert!(!stale.exists() && !epoch.exists() && own.exists() && plain.exists() && foreign.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("resnet-fsutil-fail-{}", std::process::id()));
        let path = dir.join("b.txt");
        write_atomic(&path, b"old").unwrap();
        // A directory where the temporary file should go makes creation fail.
        let blocker = dir.join(format!(".b.txt.tmp-{}", std::process::id()));
        fs::create_dir_all(&blocker).unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        assert_eq!(err.path, path);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        fs::remove_dir_all(&dir).unwrap();
    }
}
