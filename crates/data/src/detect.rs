//! Recognising a dataset's format from its files, for a `--data PATH` given without `--dataset`:
//! the format is named with the evidence for it, or the path is refused with what was looked
//! for, never guessed.

use crate::cifar::{self, CifarFormat, Located};
use crate::{idx, DataError, DatasetKind};
use std::path::Path;

/// A format recognised by [`detect_format`] and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedFormat {
    /// The format, to pass to [`crate::open`] with the same path.
    pub kind: DatasetKind,
    /// What was found that says so (`data_batch_1.bin in data/cifar-10-batches-bin`).
    pub evidence: String,
}

impl std::fmt::Display for DetectedFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.kind, self.evidence)
    }
}

/// IDX folder names that say which dataset the files are (`resnet download`'s and
/// torchvision's, lower-cased).
const IDX_FOLDER_NAMES: [(&str, DatasetKind); 5] = [
    ("mnist", DatasetKind::Mnist),
    ("fashion-mnist", DatasetKind::FashionMnist),
    ("fashionmnist", DatasetKind::FashionMnist),
    ("fashion_mnist", DatasetKind::FashionMnist),
    ("kmnist", DatasetKind::Kmnist),
];

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// The dataset kind an IDX folder's name says, if any.
fn idx_kind_by_name(dir: &Path) -> Option<DatasetKind> {
    let name = dir.file_name()?.to_str()?.to_ascii_lowercase();
    IDX_FOLDER_NAMES.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
}

/// The IDX formats found under `path`, where [`crate::open`] would find them: files in `path`
/// itself, else in `path/mnist`, `path/fashion-mnist` or `path/kmnist` (where `resnet download`
/// puts them), else in `path/raw` (torchvision's layout).
fn idx_candidates(path: &Path) -> Vec<DetectedFormat> {
    let by_folder_name = |dir: &Path| {
        // The folder's name (`mnist`, torchvision's `FashionMNIST`) says which dataset; otherwise
        // the generic `idx`, whose classes are the label numbers.
        let named = idx_kind_by_name(path);
        let evidence = match named {
            Some(_) => format!("IDX files in {}, a folder named for the dataset", shown(dir)),
            None => format!(
                "IDX files in {}; classes are named by their label numbers (pass --dataset mnist, \
                 fashion-mnist or kmnist for names)",
                shown(dir)
            ),
        };
        vec![DetectedFormat { kind: named.unwrap_or(DatasetKind::Idx), evidence }]
    };
    if idx::holds_images(path) {
        return by_folder_name(path);
    }
    let found: Vec<DetectedFormat> = [DatasetKind::Mnist, DatasetKind::FashionMnist, DatasetKind::Kmnist]
        .into_iter()
        .filter(|k| idx::holds_images(&path.join(k.name())))
        .map(|kind| DetectedFormat { kind, evidence: format!("IDX files in {}", shown(&path.join(kind.name()))) })
        .collect();
    if found.is_empty() && idx::holds_images(&path.join("raw")) {
        return by_folder_name(&path.join("raw"));
    }
    found
}

fn cifar_candidates(path: &Path) -> Vec<DetectedFormat> {
    let mut found = Vec::new();
    for (kind, format) in
        [(DatasetKind::Cifar10, CifarFormat::Cifar10), (DatasetKind::Cifar100, CifarFormat::Cifar100 { coarse: false })]
    {
        let evidence = match cifar::locate(path, format) {
            Some(Located::Folder(dir, file)) => format!("{file} in {}", shown(&dir)),
            Some(Located::Archive(file)) => format!("the official archive {}", shown(&file)),
            None => continue,
        };
        found.push(DetectedFormat { kind, evidence });
    }
    found
}

fn image_folder_candidate(path: &Path) -> Option<DetectedFormat> {
    let train = path.join("train");
    let test = ["val", "test"].iter().map(|d| path.join(d)).find(|p| p.is_dir())?;
    let has_class_folder = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|rd| rd.flatten().any(|e| e.path().is_dir()));
    (has_class_folder(&train) && has_class_folder(&test)).then(|| DetectedFormat {
        kind: DatasetKind::ImageFolder,
        evidence: format!("class folders in {} and {}", shown(&train), shown(&test)),
    })
}

/// Up to `n` names in `dir`, for a message saying what is there instead.
fn some_names(dir: &Path, n: usize) -> String {
    let Ok(rd) = std::fs::read_dir(dir) else { return "nothing readable".into() };
    let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.is_empty() {
        return "an empty folder".into();
    }
    names.sort();
    let more = names.len().saturating_sub(n);
    names.truncate(n);
    let mut s = names.join(", ");
    if more > 0 {
        s += &format!(" and {more} more");
    }
    s
}

/// Recognises the dataset format at `path`: a CIFAR-10 or CIFAR-100 binary folder (or the
/// official archive, or a folder holding either), the MNIST family's IDX files, or an image
/// folder (`train/<class>/`, `val/<class>/` or `test/<class>/`). It looks at names only, as
/// [`crate::open`] does to find the files, and reads no data.
///
/// # Errors
/// [`DataError::Missing`] when `path` does not exist; [`DataError::Layout`] when nothing is
/// recognised (saying what was looked for and what is there) or when more than one format is
/// (naming each, so that `--dataset` can choose).
pub fn detect_format(path: &Path) -> Result<DetectedFormat, DataError> {
    if path.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        for (kind, format) in [
            (DatasetKind::Cifar10, CifarFormat::Cifar10),
            (DatasetKind::Cifar100, CifarFormat::Cifar100 { coarse: false }),
        ] {
            if name == cifar::archive_name(format) {
                return Ok(DetectedFormat { kind, evidence: format!("the official archive {}", shown(path)) });
            }
        }
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            reason: "cannot tell the dataset format of this file: only the official CIFAR archives \
                     (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz) are recognised by name; pass --dataset"
                .into(),
        });
    }
    if !path.is_dir() {
        return Err(DataError::Missing { path: path.to_path_buf(), what: "no such file or folder".into() });
    }
    let mut found = cifar_candidates(path);
    found.extend(idx_candidates(path));
    found.extend(image_folder_candidate(path));
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DataError::Layout {
            path: path.to_path_buf(),
            reason: format!(
                "cannot tell the dataset format: found {}; expected CIFAR batch files (data_batch_1.bin..., \
                 test_batch.bin; or train.bin, test.bin for CIFAR-100) or their official .tar.gz, the IDX files \
                 of the MNIST family (train-images-idx3-ubyte...), or an image folder (train/<class>/ and \
                 val/<class>/ or test/<class>/); pass --dataset to name the format",
                some_names(path, 8)
            ),
        }),
        _ => {
            let list: Vec<String> = found.iter().map(|f| f.to_string()).collect();
            Err(DataError::Layout {
                path: path.to_path_buf(),
                reason: format!(
                    "more than one dataset here: {}; pass --dataset (and a --data path to its own folder)",
                    list.join("; ")
                ),
            })
        }
    }
}
