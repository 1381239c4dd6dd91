//! Paths inside a run directory.

use std::path::PathBuf;

/// Paths inside a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The directory.
    pub root: PathBuf,
}

impl RunDir {
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `checkpoints/last.safetensors`.
    pub fn last(&self) -> PathBuf {
        self.root.join("checkpoints").join("last.safetensors")
    }
    /// `checkpoints/best.safetensors`.
    pub fn best(&self) -> PathBuf {
        self.root.join("checkpoints").join("best.safetensors")
    }
    /// `checkpoints/epoch-K.safetensors`.
    pub fn epoch(&self, k: u64) -> PathBuf {
        self.root.join("checkpoints").join(format!("epoch-{k}.safetensors"))
    }
}

impl RunDir {
    /// The checkpoint a stopped run leaves, in words.
    pub(super) fn kept(&self) -> String {
        if self.last().exists() {
            format!("the last good checkpoint {} is kept", self.last().display())
        } else {
            "no checkpoint had been written yet".to_string()
        }
    }
}
