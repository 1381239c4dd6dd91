//! IDX files (LeCun et al.'s format of MNIST, also used by Fashion-MNIST and KMNIST), raw or
//! gzip-compressed. Images stay 1-channel.
//!
//! An IDX file is `00 00 <type> <ndims>`, then `ndims` big-endian `u32` dimensions, then the
//! data. Only unsigned bytes (type `0x08`) are read; that is what every image dataset uses.

use crate::memory::{MemoryDataset, Origin};
use crate::{DataError, DatasetKind, SharedDataset, Splits};
use flate2::read::GzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest deflate expansion ratio (about 1032:1); a gzip file of `n` bytes cannot justify
/// reserving more than this times `n` up front, whatever its header claims.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The most data one IDX file may declare (4 GiB: 70 times MNIST's training images, more than
/// this crate's in-memory datasets are meant for). Checked against the header's dimensions
/// before any data is read, so a small gzip of zeros cannot decompress into memory without end.
pub(crate) const MAX_IDX_DATA_BYTES: u64 = 4 << 30;

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[60000, 28, 28]` for MNIST's training images).
    pub dims: Vec<usize>,
    /// Row-major data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
    /// Bytes of header before the data (for offsets in messages).
    pub header_len: usize,
}

/// Parses an IDX file held in memory, raw or gzip-compressed (recognised by its magic bytes).
///
/// Never panics and never allocates more than the header justifies (and, for gzip, more than
/// the compressed size can expand to).
///
/// # Errors
/// [`DataError::Idx`] when the header is malformed, declares more than 4 GiB of data, or
/// disagrees with the size of the data, [`DataError::Archive`] when the gzip stream is corrupt.
pub fn parse_idx(bytes: &[u8], file: &str) -> Result<IdxArray, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_idx(GzDecoder::new(bytes), file, (bytes.len() as u64).saturating_mul(MAX_DEFLATE_RATIO))
    } else {
        read_idx(bytes, file, bytes.len() as u64)
    }
}

/// Reads an uncompressed IDX stream; `max_bytes` bounds what may be reserved up front (the size
/// the stream can have at most), the header's claim, itself at most 4 GiB, bounds what is read.
///
/// # Errors
/// As [`parse_idx`].
pub fn read_idx(mut reader: impl Read, file: &str, max_bytes: u64) -> Result<IdxArray, DataError> {
    let bad = |reason: String| DataError::Idx { file: file.to_string(), reason };
    let io = |e: std::io::Error| DataError::Archive { file: file.to_string(), reason: e.to_string() };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(io)?;
    if got < 4 {
        return Err(bad(format!("the file is {got} bytes, shorter than the 4-byte IDX header")));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(format!(
            "magic number {:02x} {:02x} {:02x} {:02x} at offset 0 does not start with 00 00: not an IDX file",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    if magic[2] != 0x08 {
        let name = match magic[2] {
            0x09 => "signed byte",
            0x0B => "i16",
            0x0C => "i32",
            0x0D => "f32",
            0x0E => "f64",
            _ => "unknown",
        };
        return Err(bad(format!(
            "data type 0x{:02x} ({name}) at offset 2 is not supported; image datasets use unsigned bytes (0x08)",
            magic[2]
        )));
    }
    let ndims = magic[3] as usize;
    if ndims == 0 || ndims > 4 {
        return Err(bad(format!("{ndims} dimensions declared at offset 3; expected 1 to 4")));
    }
    let mut raw = [0u8; 16];
    let got = read_up_to(&mut reader, &mut raw[..ndims * 4]).map_err(io)?;
    if got < ndims * 4 {
        return Err(bad(format!(
            "the header declares {ndims} dimensions ({} bytes) but the file ends at byte {}",
            ndims * 4,
            4 + got
        )));
    }
    let dims: Vec<usize> =
        raw[..ndims * 4].chunks_exact(4).map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize).collect();
    let header_len = 4 + ndims * 4;
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow a 64-bit size")))?;
    if expected > MAX_IDX_DATA_BYTES {
        return Err(bad(format!(
            "the header (dimensions {dims:?}) declares {expected} bytes of data; \
             at most {MAX_IDX_DATA_BYTES} bytes (4 GiB) are supported"
        )));
    }
    // Reserve no more than the stream can hold; read no more than the header claims (plus one
    // byte, to notice trailing data).
    let mut data = Vec::with_capacity(expected.min(max_bytes) as usize);
    (&mut reader).take(expected).read_to_end(&mut data).map_err(io)?;
    if (data.len() as u64) < expected {
        return Err(bad(format!(
            "the header (dimensions {dims:?}) promises {expected} bytes of data from offset {header_len}, \
             but the file ends after {} bytes of data",
            data.len()
        )));
    }
    let mut extra = [0u8; 1];
    if read_up_to(&mut reader, &mut extra).map_err(io)? > 0 {
        return Err(bad(format!(
            "the header (dimensions {dims:?}) promises {expected} bytes of data from offset {header_len}, \
             but the file goes on past offset {}",
            header_len as u64 + expected
        )));
    }
    Ok(IdxArray { dims, data, header_len })
}

/// `read_exact` that reports how much it got instead of failing at the end of the stream.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Class names of the MNIST family (`None` for a generic IDX dataset: labels name themselves).
fn class_names(kind: DatasetKind) -> Option<Vec<String>> {
    let names: &[&str] = match kind {
        DatasetKind::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        DatasetKind::FashionMnist => {
            &["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        }
        // KMNIST's classmap: the hiragana o, ki, su, tsu, na, ha, ma, ya, re, wo.
        DatasetKind::Kmnist => &["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
        _ => return None,
    };
    Some(names.iter().map(|s| s.to_string()).collect())
}

/// The first of `names` (each also tried with `.gz`) that exists in `dir`.
fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))]).find(|p| p.is_file())
}

/// One split's image and label files, parsed.
struct RawSplit {
    images: IdxArray,
    labels: IdxArray,
    image_file: String,
    label_file: String,
}

/// Reads an IDX file (raw or gzip) as a stream: the header is checked after its first bytes,
/// and no more is read or reserved than the header claims and the file's size can hold.
fn read_idx_file(p: &Path) -> Result<IdxArray, DataError> {
    let name = p.display().to_string();
    let file = std::fs::File::open(p).map_err(|e| DataError::io(p, e))?;
    let meta = file.metadata().map_err(|e| DataError::io(p, e))?;
    // A pipe or device has no meaningful length: reserve little and let the reads decide.
    let len = if meta.is_file() { meta.len() } else { 1 << 20 };
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| DataError::io(p, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        read_idx(GzDecoder::new(reader), &name, len.saturating_mul(MAX_DEFLATE_RATIO))
    } else {
        read_idx(reader, &name, len)
    }
}

fn read_split(images: &Path, labels: &Path) -> Result<RawSplit, DataError> {
    let parse =
        |p: &Path| -> Result<(IdxArray, String), DataError> { Ok((read_idx_file(p)?, p.display().to_string())) };
    let (images, image_file) = parse(images)?;
    let (labels, label_file) = parse(labels)?;
    let bad = |file: &str, reason: String| DataError::Idx { file: file.to_string(), reason };
    match images.dims.as_slice() {
        [_, h, w] | [_, h, w, 1 | 3] if *h > 0 && *w > 0 => {}
        d => {
            return Err(bad(
                &image_file,
                format!("images need dimensions (count, rows, columns) or (count, rows, columns, 1 or 3), not {d:?}"),
            ))
        }
    }
    if labels.dims.len() != 1 {
        return Err(bad(&label_file, format!("labels need one dimension (count), not {:?}", labels.dims)));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::Inconsistent {
            what: format!("{image_file} and {label_file}"),
            reason: format!("{} images but {} labels", images.dims[0], labels.dims[0]),
        });
    }
    Ok(RawSplit { images, labels, image_file, label_file })
}

impl RawSplit {
    fn shape(&self) -> (usize, usize, usize) {
        (self.images.dims[1], self.images.dims[2], self.images.dims.get(3).copied().unwrap_or(1))
    }

    fn into_dataset(
        self,
        classes: &[String],
        skipped: &mut Vec<String>,
        skip_bad: bool,
    ) -> Result<SharedDataset, DataError> {
        let shape = self.shape();
        let per = shape.0 * shape.1 * shape.2;
        let mut pixels = Vec::with_capacity(self.images.data.len());
        let mut labels = Vec::with_capacity(self.labels.data.len());
        let mut records = Vec::with_capacity(self.labels.data.len());
        for (i, &l) in self.labels.data.iter().enumerate() {
            if l as usize >= classes.len() {
                let err = DataError::LabelOutOfRange {
                    file: self.label_file.clone(),
                    index: i,
                    offset: (self.labels.header_len + i) as u64,
                    label: l as u32,
                    classes: classes.len(),
                };
                if !skip_bad {
                    return Err(err);
                }
                skipped.push(err.to_string());
                continue;
            }
            pixels.extend_from_slice(&self.images.data[i * per..(i + 1) * per]);
            labels.push(l as u32);
            records.push((0, i as u32));
        }
        let origin = Origin::Records { files: vec![self.image_file], records };
        Ok(Arc::new(MemoryDataset::fixed(classes.to_vec(), shape, pixels, labels, origin)))
    }
}

const TRAIN_IMAGES: &[&str] = &["train-images-idx3-ubyte", "train-images.idx3-ubyte"];
const TRAIN_LABELS: &[&str] = &["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"];
const TEST_IMAGES: &[&str] = &["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", "test-images-idx3-ubyte"];
const TEST_LABELS: &[&str] = &["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte", "test-labels-idx1-ubyte"];

/// The folder [`open`] reads `kind`'s files from: `path`, `path/<kind>` or `path/raw`, the first
/// holding a training or test images file.
pub(crate) fn locate(path: &Path, kind: DatasetKind) -> Option<PathBuf> {
    [path.to_path_buf(), path.join(kind.to_string()), path.join("raw")].into_iter().find(|d| holds_images(d))
}

/// Whether `dir` itself holds a training or test images file.
pub(crate) fn holds_images(dir: &Path) -> bool {
    find(dir, TRAIN_IMAGES).is_some() || find(dir, TEST_IMAGES).is_some()
}

/// Opens an IDX dataset: `PATH` (or `PATH/<name>`, where `resnet download` puts it, or
/// `PATH/raw`, torchvision's layout) holding `train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each raw
/// or `.gz`.
pub(crate) fn open(path: &Path, kind: DatasetKind, skip_bad: bool) -> Result<Splits, DataError> {
    if !path.is_dir() {
        return Err(DataError::Missing { path: path.to_path_buf(), what: "no such folder".into() });
    }
    let dir = locate(path, kind).ok_or_else(|| DataError::Missing {
        path: path.to_path_buf(),
        what: format!(
            "no {kind} data here: expected train-images-idx3-ubyte, train-labels-idx1-ubyte, \
                 t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz) in this folder or in {kind}/"
        ),
    })?;
    let need = |names: &[&str], what: &str| {
        find(&dir, names).ok_or_else(|| DataError::Missing { path: dir.join(names[0]), what: what.to_string() })
    };
    let train = read_split(
        &need(TRAIN_IMAGES, "the training images file is missing")?,
        &need(TRAIN_LABELS, "the training labels file is missing")?,
    )?;
    let test = read_split(
        &need(TEST_IMAGES, "the dataset has no test split: the test images file is missing")?,
        &need(TEST_LABELS, "the dataset has no test split: the test labels file is missing")?,
    )?;
    if train.shape() != test.shape() {
        return Err(DataError::Inconsistent {
            what: test.image_file.clone(),
            reason: format!("test images are {:?} (h, w, c) but training images are {:?}", test.shape(), train.shape()),
        });
    }
    let classes = class_names(kind).unwrap_or_else(|| {
        let max = train.labels.data.iter().chain(&test.labels.data).copied().max().unwrap_or(0);
        (0..=max).map(|l| l.to_string()).collect()
    });
    let mut skipped = Vec::new();
    let train = train.into_dataset(&classes, &mut skipped, skip_bad)?;
    let test = test.into_dataset(&classes, &mut skipped, skip_bad)?;
    Ok(Splits { train, test, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_raw_and_gz() {
        let f = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse_idx(&f, "a").unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &f).unwrap();
        assert_eq!(parse_idx(&gz.finish().unwrap(), "a.gz").unwrap(), a);
    }

    #[test]
    fn header_disagreeing_with_size_is_an_error() {
        let e = parse_idx(&idx(&[3, 2, 2], &[0; 11]), "t.idx").unwrap_err().to_string();
        assert!(e.contains("t.idx") && e.contains("promises 12 bytes") && e.contains("after 11"), "{e}");
        let e = parse_idx(&idx(&[3], &[0; 4]), "t.idx").unwrap_err().to_string();
        assert!(e.contains("goes on past offset 11"), "{e}");
        let e = parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "f.idx").unwrap_err().to_string();
        assert!(e.contains("0x0d (f32)"), "{e}");
        let e = parse_idx(&[0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("promises") || e.contains("overflow"), "{e}");
        assert!(parse_idx(b"PK", "z").unwrap_err().to_string().contains("shorter than the 4-byte"));
    }
}
