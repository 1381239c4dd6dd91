//! ImageFolder: `PATH/train/<class>/*` and `PATH/val/<class>/*` (or `test/`), JPEG and PNG.
//! How ImageNet (the paper's Section 3.4 data) and most user data arrive. The class index is the
//! position of the folder name in the sorted training class folders; the names travel with the
//! trained model.

use crate::transform::decode_rgb;
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
            if let Ok((w, h)) = image::image_dimensions(&self.files[k * n / probes]) {
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
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        decode_rgb(&bytes, path)
    }
    fn describe(&self, index: usize) -> String {
        let p = &self.files[index];
        p.strip_prefix(&self.root).unwrap_or(p).display().to_string()
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of `dir` that are not hidden (`.DS_Store`, editors' files).
fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        if !is_hidden(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Files under `dir`, recursively, sorted.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for p in entries(dir)? {
        if p.is_dir() {
            files_under(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
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
    for (cdir, name) in class_dirs.iter().zip(&names) {
        let label = classes.iter().position(|c| c == name).ok_or_else(|| DataError::Inconsistent {
            what: cdir.display().to_string(),
            reason: format!("class `{name}` is not one of the {} training classes", classes.len()),
        })?;
        let mut all = Vec::new();
        files_under(cdir, &mut all)?;
        let mut count = 0;
        for f in all {
            if !has_image_extension(&f) {
                let err = DataError::NotAnImage {
                    path: f.clone(),
                    reason: "the extension is not .jpg, .jpeg or .png".into(),
                };
                if !skip_bad {
                    return Err(err);
                }
                skipped.push(err.to_string());
                continue;
            }
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
