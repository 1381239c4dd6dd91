//! The one error type of the crate.
//!
//! Every message starts with the file (or archive member, or URL) it is about, then the record
//! index or byte offset where that helps, then what is wrong, so that a user with a broken
//! dataset knows which file to look at.

use std::path::PathBuf;

/// Everything that can go wrong while reading, checking, downloading or loading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // ---- files ----------------------------------------------------------------------------
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder the dataset needs is not there.
    #[error("{}: {what}", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// What is missing and what was expected instead.
        what: String,
    },

    // ---- binary formats (CIFAR, IDX) ----------------------------------------------------------
    /// A record file whose size is not a whole number of records.
    #[error(
        "{file}: {size} bytes is not a multiple of the {record}-byte {format} record size \
         ({whole} whole records and {trailing} trailing bytes from offset {offset}); the file is truncated or not a {format} file"
    )]
    RecordSize {
        /// The file (or archive member).
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The record size of the format.
        record: usize,
        /// `CIFAR-10` or `CIFAR-100`.
        format: &'static str,
        /// Records that are complete.
        whole: u64,
        /// Bytes after the last complete record.
        trailing: u64,
        /// Where the partial record starts.
        offset: u64,
    },
    /// A label that is not a valid class index.
    #[error("{file} record {index} (byte offset {offset}): label {label} is out of range (the dataset has {classes} classes)")]
    LabelOutOfRange {
        /// The file (or archive member).
        file: String,
        /// The record (0-based).
        index: usize,
        /// Byte offset of the label.
        offset: u64,
        /// The label found.
        label: u32,
        /// Number of classes.
        classes: usize,
    },
    /// An IDX file whose header is malformed or disagrees with the data that follows.
    #[error("{file}: bad IDX file: {reason}")]
    Idx {
        /// The file.
        file: String,
        /// What is wrong, with the offending offsets and sizes.
        reason: String,
    },
    /// An archive (`.tar.gz`, `.gz`) that could not be read.
    #[error("{file}: bad archive: {reason}")]
    Archive {
        /// The archive (and member, where known).
        file: String,
        /// What is wrong.
        reason: String,
    },

    // ---- images -----------------------------------------------------------------------------
    /// A file in an image folder that is not a JPEG or PNG image.
    #[error("{}: not an image: {reason}", path.display())]
    NotAnImage {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        reason: String,
    },
    /// A JPEG or PNG file that could not be decoded (truncated, corrupt, unsupported).
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        reason: String,
    },
    /// A file too large for what it claims to be (an image over the per-image limit, a CIFAR batch
    /// file or archive member over the official size, a download over its published size),
    /// refused before it is read into memory.
    #[error("{file}: too large: {reason}")]
    TooLarge {
        /// The file, archive member or address.
        file: String,
        /// Its size (or how much arrived) and the limit it passes.
        reason: String,
    },
    /// A class folder with no file in it.
    #[error("{}: class folder is empty (every class needs at least one image)", path.display())]
    EmptyClass {
        /// The folder.
        path: PathBuf,
    },
    /// A sample whose shape or labels do not fit the rest of the dataset.
    #[error("{what}: {reason}")]
    Inconsistent {
        /// The sample, file or split.
        what: String,
        /// What does not fit.
        reason: String,
    },

    /// A folder whose layout cannot be read as a dataset: a symbolic-link loop, nesting past the
    /// depth limit, a folder reached twice, or a format that cannot be recognised.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The folder, link or file concerned.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },

    // ---- configuration ------------------------------------------------------------------------
    /// A loader, split or dataset option that does not fit the dataset.
    #[error("{what}: {reason}")]
    Config {
        /// The option or dataset concerned.
        what: String,
        /// What is wrong and what would be valid.
        reason: String,
    },

    // ---- download -----------------------------------------------------------------------------
    /// A file could not be fetched (no network, HTTP error, interrupted transfer).
    #[error("{url}: download failed: {reason}. {hint}")]
    Download {
        /// The address.
        url: String,
        /// The transport's reason.
        reason: String,
        /// Where to put the file by hand.
        hint: String,
    },
    /// A downloaded file whose checksum is not the published one; it was not kept.
    #[error(
        "{url}: {algorithm} {actual} does not {} the published {expected}; the download was discarded ({})",
        if expected.len() < actual.len() { "start with" } else { "match" },
        path.display()
    )]
    Checksum {
        /// The address.
        url: String,
        /// Where it would have been written.
        path: PathBuf,
        /// `md5` or `sha256`.
        algorithm: &'static str,
        /// The published hash (for a sha256, possibly only its first hex digits).
        expected: String,
        /// The whole hash of what arrived.
        actual: String,
    },

    // ---- loader -------------------------------------------------------------------------------
    /// A loader worker failed outside the dataset's own errors (a panic while building a batch).
    #[error("loader: batch {batch} of epoch {epoch} could not be built: {reason}")]
    Worker {
        /// The epoch.
        epoch: u64,
        /// The batch.
        batch: usize,
        /// What happened.
        reason: String,
    },
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    /// A [`DataError::Config`].
    pub(crate) fn config(what: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::Config { what: what.into(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_static_and_names_the_file() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<DataError>();
        let e = DataError::LabelOutOfRange {
            file: "data_batch_1.bin".into(),
            index: 3,
            offset: 9219,
            label: 12,
            classes: 10,
        };
        let m = e.to_string();
        assert!(m.contains("data_batch_1.bin") && m.contains("record 3") && m.contains("9219"), "{m}");
    }
}
