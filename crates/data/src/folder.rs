//! ImageFolder: `PATH/train/<class>/*` and `PATH/val/<class>/*` (or `test/`), JPEG and PNG.
//! How ImageNet (the paper's Section 3.4 data) and most user data arrive. The class index is the
//! position of the folder name in the sorted training class folders; the names travel with the
//! trained model.

use crate::read::{read_head, read_image_file};
use crate::transform::decode_rgb;
use crate::walk::{entries, Found, Walk};
use crate::{DataError, Dataset, Image};
use std::path::{Path, PathBuf};

/// Image files on disk, decoded on every [`Dataset::load`].
pub(crate) struct FolderDataset {
    root: PathBuf,
    classes: Vec<String>,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
}

impl FolderDataset {
    /// Bytes the decoded split would take in memory, estimated from the headers of up to 32
    /// files spread over it (reading a header costs one small read, not a decode).
    pub(crate) fn estimated_decoded_bytes(&self) -> u64 {
        let n = self.files.len();
        if n == 0 {
            return 0;
        }
        let probes = n.min(32);
        let mut pixels = 0u64;
        let mut seen = 0u64;
        for k in 0..probes {
            if let Some((w, h)) = dimensions_from_head(&self.files[k * n / probes]) {
                pixels += w as u64 * h as u64;
                seen += 1;
            }
        }
        // Files whose header cannot be read will fail later with a precise error; assume
        // ImageNet-sized images for them so that the estimate errs towards streaming.
        let avg = pixels.checked_div(seen).unwrap_or(500 * 400);
        avg * 3 * n as u64
    }
}

/// Bytes of a file's start read to find its image size: the size sits in the first few
/// kilobytes of a PNG, and after any EXIF block (at most 64 KiB) in a JPEG.
const HEADER_PROBE_BYTES: u64 = 128 << 10;

/// The `(width, height)` an image file's header states, read from its first bytes only (the
/// decoders' own `image_dimensions` reads a whole JPEG file first).
fn dimensions_from_head(path: &Path) -> Option<(u32, u32)> {
    let head = read_head(path, HEADER_PROBE_BYTES).ok()?;
    image::ImageReader::new(std::io::Cursor::new(head)).with_guessed_format().ok()?.into_dimensions().ok()
}

impl Dataset for FolderDataset {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn channels(&self) -> usize {
        3
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        None
    }
    fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        let path = &self.files[index];
        decode_rgb(&read_image_file(path)?, path)
    }
    fn describe(&self, index: usize) -> String {
        let p = &self.files[index];
        p.strip_prefix(&self.root).unwrap_or(p).display().to_string()
    }
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Reads one split folder. `classes` is `None` for the training split (its folders define the
/// classes) and the training classes for the test split.
fn read_split(
    root: &Path,
    dir: &Path,
    classes: Option<&[String]>,
    skip_bad: bool,
    skipped: &mut Vec<String>,
) -> Result<FolderDataset, DataError> {
    let class_dirs: Vec<PathBuf> = entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: "no class folders: expected one folder per class holding its images".into(),
        });
    }
    let names: Vec<String> =
        class_dirs.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let classes: Vec<String> = match classes {
        None => names.clone(),
        Some(c) => c.to_vec(),
    };
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut walk = Walk::new(dir)?;
    for (cdir, name) in class_dirs.iter().zip(&names) {
        let label = classes.iter().position(|c| c == name).ok_or_else(|| DataError::Inconsistent {
            what: cdir.display().to_string(),
            reason: format!("class `{name}` is not one of the {} training classes", classes.len()),
        })?;
        let mut count = 0;
        for found in walk.files_under(cdir)? {
            let bad = match &found {
                Found::File(f) if has_image_extension(f) => None,
                Found::File(f) => Some((f.clone(), "the extension is not .jpg, .jpeg or .png".to_string())),
                Found::Other(f, what) => Some((f.clone(), what.clone())),
            };
            if let Some((path, reason)) = bad {
                let err = DataError::NotAnImage { path, reason };
                if !skip_bad {
                    return Err(err);
                }
                skipped.push(err.to_string());
                continue;
            }
            let Found::File(f) = found else { continue };
            files.push(f);
            labels.push(label as u32);
            count += 1;
        }
        if count == 0 {
            return Err(DataError::EmptyClass { path: cdir.clone() });
        }
    }
    Ok(FolderDataset { root: root.to_path_buf(), classes, files, labels })
}

/// Lists `PATH/train` and `PATH/val` (or `PATH/test`); decoding is left to the caller.
pub(crate) fn open(path: &Path, skip_bad: bool) -> Result<(FolderDataset, FolderDataset, Vec<String>), DataError> {
    let train_dir = path.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::Missing {
            path: train_dir,
            what: "no training split: expected PATH/train/<class>/*.jpg|png and PATH/val/<class>/* (or test/)".into(),
        });
    }
    let test_dir =
        ["val", "test"].iter().map(|d| path.join(d)).find(|p| p.is_dir()).ok_or_else(|| DataError::Missing {
            path: path.to_path_buf(),
            what: "the dataset has no test split: expected PATH/val/<class>/* or PATH/test/<class>/*".into(),
        })?;
    let mut skipped = Vec::new();
    let train = read_split(path, &train_dir, None, skip_bad, &mut skipped)?;
    let test = read_split(path, &test_dir, Some(&train.classes), skip_bad, &mut skipped)?;
    Ok((train, test, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_from_the_head_of_a_file_larger_than_the_probe() {
        let tmp = tempfile::tempdir().unwrap();
        // Noise compresses badly: the file is several times the probe, its size in the header.
        let mut state = 1u32;
        let img = image::RgbImage::from_fn(900, 700, |_, _| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let b = state.to_le_bytes();
            image::Rgb([b[1], b[2], b[3]])
        });
        for (name, format) in [("big.jpg", image::ImageFormat::Jpeg), ("big.png", image::ImageFormat::Png)] {
            let path = tmp.path().join(name);
            img.save_with_format(&path, format).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 2 * HEADER_PROBE_BYTES, "{name} is too small");
            assert_eq!(dimensions_from_head(&path), Some((900, 700)), "{name}");
        }
        std::fs::write(tmp.path().join("zero.jpg"), vec![0u8; 1000]).unwrap();
        assert_eq!(dimensions_from_head(&tmp.path().join("zero.jpg")), None);
    }
}
