//! Opening a dataset by name, and holding out a validation set.

use crate::cifar::{self, CifarFormat};
use crate::memory::{self, Subset};
use crate::synthetic::SyntheticDataset;
use crate::{folder, idx, DataError, SharedDataset};
use resnet_kernels::rng::Rng;
use std::path::Path;
use std::sync::Arc;

/// Decoded splits under this size are kept in memory when [`OpenOptions::in_memory`] is `None`.
const AUTO_IN_MEMORY_BYTES: u64 = 2 << 30;

/// The dataset formats, by their command-line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// CIFAR-10, official binary layout (`cifar10`).
    Cifar10,
    /// CIFAR-100, official binary layout (`cifar100`).
    Cifar100,
    /// `PATH/train/<class>/*`, `PATH/val/<class>/*` (`imagefolder`).
    ImageFolder,
    /// MNIST, IDX files (`mnist`).
    Mnist,
    /// Fashion-MNIST, IDX files (`fashion-mnist`).
    FashionMnist,
    /// Kuzushiji-MNIST, IDX files (`kmnist`).
    Kmnist,
    /// Any IDX dataset with MNIST's file names; classes are the labels found (`idx`).
    Idx,
    /// Generated shapes, no files (`synthetic`).
    Synthetic,
}

impl DatasetKind {
    /// Every kind, in the order of the command-line help.
    pub const ALL: [DatasetKind; 8] = [
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageFolder,
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
        DatasetKind::Idx,
        DatasetKind::Synthetic,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageFolder => "imagefolder",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Idx => "idx",
            DatasetKind::Synthetic => "synthetic",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DatasetKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown dataset `{s}`; valid names: {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Size of the `synthetic` dataset.
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Training samples.
    pub train: usize,
    /// Test samples.
    pub test: usize,
    /// Image side in pixels.
    pub size: usize,
    /// Generator seed: the same seed gives the same images.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { train: 10_000, test: 2_000, size: 32, seed: 0 }
    }
}

/// Options of [`open`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// CIFAR-100: use the 20 coarse labels instead of the 100 fine ones.
    pub cifar100_coarse: bool,
    /// Skip bad samples (undecodable images, labels out of range, non-image files, a partial last
    /// record) and list them in [`Splits::skipped`] instead of failing. For a split left on disk
    /// this decodes every image once while opening.
    pub skip_bad: bool,
    /// The `synthetic` dataset's size and seed.
    pub synthetic: SyntheticConfig,
    /// Decode once and keep in memory: `Some(true)` always, `Some(false)` never (images are
    /// decoded on every load), `None` when the decoded split is under about 2 GiB. CIFAR and IDX
    /// data are always in memory (their files are the decoded pixels).
    pub in_memory: Option<bool>,
}

/// The training and test splits of a dataset.
pub struct Splits {
    /// Training split.
    pub train: SharedDataset,
    /// Test split (`test/` or `val/` for an image folder).
    pub test: SharedDataset,
    /// With [`OpenOptions::skip_bad`]: one line per skipped sample saying what and why.
    pub skipped: Vec<String>,
}

/// Keeps a lazily decoded split in memory or on disk as the options say, dropping bad samples
/// when asked.
fn finish(
    ds: SharedDataset,
    decoded_bytes: u64,
    opts: &OpenOptions,
) -> Result<(SharedDataset, Vec<String>), DataError> {
    if opts.in_memory.unwrap_or(decoded_bytes < AUTO_IN_MEMORY_BYTES) {
        memory::materialize(&ds, opts.skip_bad)
    } else if opts.skip_bad {
        Ok(memory::without_bad(&ds))
    } else {
        Ok((ds, Vec::new()))
    }
}

/// Opens dataset `kind` at `path` (`None` only for `synthetic`).
///
/// Paths: CIFAR takes the folder of `.bin` files, a folder holding `cifar-10-batches-bin/` (or
/// `cifar-100-binary/`), or the official `.tar.gz` (or a folder holding it). ImageFolder takes
/// the folder holding `train/` and `val/` (or `test/`). The MNIST family takes the folder of the
/// four IDX files (raw or `.gz`), or its parent when they sit in `<name>/`.
///
/// # Errors
/// [`DataError::Config`] without a path; otherwise the first bad file or sample, named, unless
/// [`OpenOptions::skip_bad`] skips it.
pub fn open(kind: DatasetKind, path: Option<&Path>, opts: &OpenOptions) -> Result<Splits, DataError> {
    let need_path =
        || path.ok_or_else(|| DataError::config(format!("dataset {kind}"), "needs a path (--data PATH) to its files"));
    match kind {
        DatasetKind::Cifar10 => cifar::open(need_path()?, CifarFormat::Cifar10, opts.skip_bad),
        DatasetKind::Cifar100 => {
            cifar::open(need_path()?, CifarFormat::Cifar100 { coarse: opts.cifar100_coarse }, opts.skip_bad)
        }
        DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Kmnist | DatasetKind::Idx => {
            idx::open(need_path()?, kind, opts.skip_bad)
        }
        DatasetKind::ImageFolder => {
            let (train, test, mut skipped) = folder::open(need_path()?, opts.skip_bad)?;
            let (train_bytes, test_bytes) = (train.estimated_decoded_bytes(), test.estimated_decoded_bytes());
            let (train, s1) = finish(Arc::new(train), train_bytes, opts)?;
            let (test, s2) = finish(Arc::new(test), test_bytes, opts)?;
            skipped.extend(s1);
            skipped.extend(s2);
            Ok(Splits { train, test, skipped })
        }
        DatasetKind::Synthetic => {
            let c = &opts.synthetic;
            if c.size == 0 || c.train == 0 || c.test == 0 {
                return Err(DataError::config("dataset synthetic", "train, test and size must be at least 1"));
            }
            let bytes = |n: usize| (n * c.size * c.size * 3) as u64;
            let (train, _) = finish(Arc::new(SyntheticDataset::new(c.train, c.size, c.seed, 0)), bytes(c.train), opts)?;
            let (test, _) = finish(Arc::new(SyntheticDataset::new(c.test, c.size, c.seed, 1)), bytes(c.test), opts)?;
            Ok(Splits { train, test, skipped: Vec::new() })
        }
    }
}

/// Stream tag of the validation split's shuffle.
const VAL_TAG: u64 = 0x0A11_D5E7;

/// Holds out `count` samples of `train` as a validation set, as the paper did on CIFAR-10 to
/// choose its schedule (45k/5k, Section 4.2). Returns `(rest of train, validation)`: disjoint,
/// together all of `train`, each in the original order, and the same for the same seed.
///
/// # Errors
/// [`DataError::Config`] unless `1 <= count < train.len()`.
pub fn validation_split(
    train: &SharedDataset,
    count: usize,
    seed: u64,
) -> Result<(SharedDataset, SharedDataset), DataError> {
    let n = train.len();
    if count == 0 || count >= n {
        return Err(DataError::config(
            "validation split",
            format!("holding out {count} of {n} training samples must leave at least one of each"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::derive(seed, &[VAL_TAG, n as u64]).shuffle(&mut order);
    let mut val = order[..count].to_vec();
    let mut rest = order[count..].to_vec();
    val.sort_unstable();
    rest.sort_unstable();
    Ok((Arc::new(Subset::new(train.clone(), rest)), Arc::new(Subset::new(train.clone(), val))))
}
