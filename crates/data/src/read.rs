//! Reading files into memory with their size checked first: an image file, a CIFAR batch file or
//! any other file is refused by its length before its bytes are read, and a stream without a
//! length (a pipe, a device such as `/dev/zero`) is read only up to the same limit.

use crate::transform::sniff_image;
use crate::DataError;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The largest image file read: 256 MiB. A JPEG or PNG photo is a few megabytes; a file over
/// this is refused before it is read (and the decoder refuses images whose pixels would take
/// over 512 MiB).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Bytes read before the rest of an image file: enough for the JPEG and PNG signatures.
const SIGNATURE_BYTES: usize = 16;

/// The bytes of one JPEG or PNG file, checked before they are read: the first bytes must be a
/// JPEG or PNG signature, and the file must be at most [`MAX_IMAGE_FILE_BYTES`]. A stream without
/// a length (a pipe, a device) is read up to that limit and refused beyond it.
///
/// # Errors
/// [`DataError::NotAnImage`] for another kind of file, [`DataError::TooLarge`] over the limit,
/// [`DataError::Io`] when it cannot be read.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let (mut file, len) = open_sized(path)?;
    let mut bytes = Vec::with_capacity(SIGNATURE_BYTES);
    (&mut file).take(SIGNATURE_BYTES as u64).read_to_end(&mut bytes).map_err(|e| DataError::io(path, e))?;
    sniff_image(&bytes, path)?;
    check_length(path, len, MAX_IMAGE_FILE_BYTES, "the limit for one image file")?;
    // Checked: the whole file fits the limit, so it may be reserved at once.
    bytes.reserve(len.map_or(0, |n| n as usize).saturating_sub(bytes.len()));
    read_rest(path, file, bytes, MAX_IMAGE_FILE_BYTES, "the limit for one image file")
}

/// The bytes of `path` if it holds at most `limit` bytes; `what` names the limit in the error
/// (`"a CIFAR-10 batch file (10000 records)"`).
///
/// # Errors
/// [`DataError::TooLarge`] over the limit, [`DataError::Io`] when it cannot be read.
pub(crate) fn read_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, DataError> {
    let (file, len) = open_sized(path)?;
    check_length(path, len, limit, what)?;
    let bytes = Vec::with_capacity(len.map_or(1 << 16, |n| n.min(limit) as usize));
    read_rest(path, file, bytes, limit, what)
}

/// Up to the first `n` bytes of `path`.
///
/// # Errors
/// [`DataError::Io`] when it cannot be read.
pub(crate) fn read_head(path: &Path, n: u64) -> Result<Vec<u8>, DataError> {
    let mut head = Vec::new();
    File::open(path).and_then(|f| f.take(n).read_to_end(&mut head)).map_err(|e| DataError::io(path, e))?;
    Ok(head)
}

/// Opens `path` and returns its length when it is a regular file (`None` for a pipe or device,
/// whose length says nothing about what a read returns).
fn open_sized(path: &Path) -> Result<(File, Option<u64>), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let meta = file.metadata().map_err(|e| DataError::io(path, e))?;
    Ok((file, meta.is_file().then_some(meta.len())))
}

fn check_length(path: &Path, len: Option<u64>, limit: u64, what: &str) -> Result<(), DataError> {
    match len {
        Some(n) if n > limit => Err(DataError::TooLarge {
            file: path.display().to_string(),
            reason: format!("{n} bytes is more than {what} ({limit} bytes); nothing was read"),
        }),
        _ => Ok(()),
    }
}

/// Appends the rest of `file` to `bytes`, stopping with an error once more than `limit` bytes
/// have arrived (a file that grew after its length was checked, or a stream).
fn read_rest(path: &Path, file: File, mut bytes: Vec<u8>, limit: u64, what: &str) -> Result<Vec<u8>, DataError> {
    let have = bytes.len() as u64;
    file.take((limit + 1).saturating_sub(have)).read_to_end(&mut bytes).map_err(|e| DataError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(DataError::TooLarge {
            file: path.display().to_string(),
            reason: format!("the stream goes on past {what} ({limit} bytes); reading stopped there"),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_stream_is_cut_at_the_limit() {
        // /dev/zero has no length: the cap, not the file, ends the read.
        let e = read_capped(Path::new("/dev/zero"), 1000, "a test limit").unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("goes on past a test limit (1000 bytes)"), "{e}");
        let e = read_image_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not an image"), "{e}");
    }
}
