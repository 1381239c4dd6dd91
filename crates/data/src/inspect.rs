//! A dataset's vital statistics, for `resnet data` and for reports.

use crate::normalize::channel_mean_std;
use crate::{DataError, Dataset, SharedDataset, Splits};
use serde::Serialize;

/// Samples in one split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitCount {
    /// Number of samples.
    pub count: usize,
}

/// Samples per class, per split (indexed by label).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerClass {
    /// Training split.
    pub train: Vec<usize>,
    /// Held-out validation split, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<Vec<usize>>,
    /// Test split.
    pub test: Vec<usize>,
}

/// What [`inspect`] reports. As JSON: `train.count`, `test.count`, `classes`, `per_class`,
/// `mean`, `std`, `image_size`, `channels`, `skipped`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inspection {
    /// Training split (without the validation samples, when held out).
    pub train: SplitCount,
    /// Held-out validation split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<SplitCount>,
    /// Test split.
    pub test: SplitCount,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Samples per class.
    pub per_class: PerClass,
    /// Per-channel mean over the training split, 0..255 scale.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation over the training split, 0..255 scale.
    pub std: Vec<f32>,
    /// `[height, width]` when every image has that size, `null` otherwise.
    pub image_size: Option<[usize; 2]>,
    /// 1 or 3.
    pub channels: usize,
    /// Samples skipped while opening (with `skip_bad`), what and why.
    pub skipped: Vec<String>,
}

fn per_class(ds: &dyn Dataset, classes: usize) -> Vec<usize> {
    let mut v = vec![0; classes];
    for i in 0..ds.len() {
        if let Some(c) = v.get_mut(ds.label(i) as usize) {
            *c += 1;
        }
    }
    v
}

/// Counts, class balance, image size and the training split's channel statistics. Decodes the
/// training split once (in parallel) for the mean and std.
///
/// # Errors
/// The first training sample that fails to load.
pub fn inspect(splits: &Splits) -> Result<Inspection, DataError> {
    inspect_with_validation(splits, None)
}

/// [`inspect`], reporting a validation split held out of `splits.train` by
/// [`crate::validation_split`] (`splits.train` is then the rest).
///
/// # Errors
/// As [`inspect`].
pub fn inspect_with_validation(splits: &Splits, val: Option<&SharedDataset>) -> Result<Inspection, DataError> {
    let train = &splits.train;
    let classes = train.classes().to_vec();
    let (mean, std) = channel_mean_std(train.as_ref())?;
    let size = match (train.image_size(), splits.test.image_size()) {
        (Some(a), Some(b)) if a == b => Some([a.0, a.1]),
        _ => None,
    };
    Ok(Inspection {
        train: SplitCount { count: train.len() },
        val: val.map(|v| SplitCount { count: v.len() }),
        test: SplitCount { count: splits.test.len() },
        per_class: PerClass {
            train: per_class(train.as_ref(), classes.len()),
            val: val.map(|v| per_class(v.as_ref(), classes.len())),
            test: per_class(splits.test.as_ref(), classes.len()),
        },
        classes,
        mean,
        std,
        image_size: size,
        channels: train.channels(),
        skipped: splits.skipped.clone(),
    })
}
