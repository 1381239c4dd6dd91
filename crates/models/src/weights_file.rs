//! Reading a weights or checkpoint file whole, once it is known to be a regular file no larger
//! than any network within [`limits`](crate::limits) can need: a device, a FIFO or a huge file
//! is refused before anything is allocated for it.

use crate::limits::MAX_PARAMS;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Bytes per parameter a weights or checkpoint file may spend: `f64` weights (8) plus running
/// statistics, which never outnumber the parameters, in `f64` (8); or `f32` weights, momentum
/// and running statistics in a training checkpoint (12).
const MAX_BYTES_PER_PARAM: u64 = 16;

/// Room for headers, pickles, zip directories and checkpoint metadata.
const MAX_OVERHEAD_BYTES: u64 = 256 << 20;

/// The largest weights or checkpoint file [`read_weights_file`] reads: 16 bytes for each of
/// [`MAX_PARAMS`] parameters, plus 256 MiB of headers and metadata.
pub const MAX_WEIGHTS_FILE_BYTES: u64 = MAX_PARAMS * MAX_BYTES_PER_PARAM + MAX_OVERHEAD_BYTES;

/// The whole of a weights or checkpoint file.
///
/// # Errors
/// The I/O error, or one of kind [`io::ErrorKind::InvalidInput`] when `path` is not a regular
/// file or is larger than [`MAX_WEIGHTS_FILE_BYTES`]. The caller names the file.
pub fn read_weights_file(path: &Path) -> io::Result<Vec<u8>> {
    read_bounded(path, MAX_WEIGHTS_FILE_BYTES)
}

/// [`read_weights_file`] with a cap of `max_bytes`.
fn read_bounded(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file (a device, FIFO or directory cannot hold weights)",
        )
    };
    // Checked before opening, because opening a FIFO waits for a writer that may never come.
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path)?;
    // Checked again on the open handle, so the file checked is the file read.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let too_big = |size: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {size} bytes; weights of a network within the model limits take at most {max_bytes} bytes"),
        )
    };
    if meta.len() > max_bytes {
        return Err(too_big(meta.len().to_string()));
    }
    let expected = usize::try_from(meta.len()).map_err(|_| too_big(meta.len().to_string()))?;
    let mut bytes = Vec::with_capacity(expected);
    // One byte past the cap tells a file that grew while being read from one that fits.
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(format!("more than {max_bytes}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_refused_before_reading() {
        let err = read_weights_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("is not a regular file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_without_a_writer_is_refused_without_waiting_for_one() {
        let dir = std::env::temp_dir().join(format!("resnet-weights-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("w.safetensors");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        assert!(made, "this test needs mkfifo");
        let err = read_weights_file(&fifo).unwrap_err();
        assert!(err.to_string().contains("is not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_refused() {
        let err = read_weights_file(&std::env::temp_dir()).unwrap_err();
        assert!(err.to_string().contains("is not a regular file"), "{err}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_within_is_read() {
        let path = std::env::temp_dir().join(format!("resnet-weights-file-{}", std::process::id()));
        std::fs::write(&path, [7u8; 10]).unwrap();
        let err = read_bounded(&path, 9).unwrap_err();
        assert!(err.to_string().contains("is 10 bytes") && err.to_string().contains("at most 9 bytes"), "{err}");
        assert_eq!(read_bounded(&path, 10).unwrap(), [7u8; 10]);
        std::fs::remove_file(&path).unwrap();
    }
}
