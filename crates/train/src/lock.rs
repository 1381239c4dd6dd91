//! One run per directory: a run holds an exclusive lock on `run.lock` in its directory for as
//! long as it trains. The lock is the operating system's file lock, so it ends with the process
//! however the process ends: a lock file left by a killed run never blocks the next one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run directory.
const LOCK_FILE: &str = "run.lock";

/// Why a run directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process trains in the directory.
    #[error(
        "{dir} is in use by another training run ({holder}, lock file {lock}): wait for it to end, or choose another directory"
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// `pid N` of the holder, as it wrote it.
        holder: String,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock the run directory {dir} ({lock}): {source}")]
    Io {
        /// The run directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// A held lock on a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    held: bool,
}

impl RunLock {
    /// Creates `dir` if needed and locks it for this process, writing this process's id into
    /// the lock file.
    ///
    /// # Errors
    /// [`LockError::Busy`] naming the directory and the holder's pid when another run holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let lock = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { dir: dir.to_path_buf(), lock: lock.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: until this process holds the lock, the pid in it is the holder's.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io)?;
        let held = match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid not yet written".to_string(),
                };
                return Err(LockError::Busy { dir: dir.to_path_buf(), lock, holder });
            }
            // A file system without file locks (some network mounts): the run goes on unguarded
            // rather than not at all, and says so (`held`).
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => false,
            Err(TryLockError::Error(e)) => return Err(io(e)),
        };
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file, held })
    }

    /// Whether the directory is locked: false on a file system without file locks, where
    /// nothing stops a second run into it.
    pub fn held(&self) -> bool {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_and_a_released_one_does_not() {
        let dir = std::env::temp_dir().join(format!("resnet-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = RunLock::acquire(&dir).unwrap();
        assert!(held.held());
        let err = RunLock::acquire(&dir).unwrap_err();
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        // A lock file whose holder is gone (as a killed run leaves it) does not block.
        std::fs::write(dir.join(LOCK_FILE), "4194303\n").unwrap();
        RunLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
