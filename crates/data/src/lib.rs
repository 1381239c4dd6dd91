//! Data for training and evaluating ResNets (He et al. 2015, "Deep Residual Learning for Image
//! Recognition"): the datasets of the paper and of users, the paper's preprocessing and
//! augmentation (Section 3.4 for ImageNet, Section 4.2 for CIFAR-10), and a loader that decodes
//! and augments on worker threads.
//!
//! Every dataset is an [`Dataset`]: indexed samples of 8-bit images with class labels. A
//! [`Loader`] turns one into batches of normalised `f32` NHWC tensors.
//!
//! ```
//! use resnet_data::*;
//!
//! // The paper's CIFAR-10 input (Section 4.2): per-pixel mean subtracted, 4-pixel padding,
//! // random 32x32 crop and horizontal flip.
//! let synthetic = SyntheticConfig { train: 256, test: 64, size: 32, seed: 0 };
//! let splits = open(DatasetKind::Synthetic, None, &OpenOptions { synthetic, ..Default::default() })?;
//! let mean = pixel_mean(splits.train.as_ref(), 32, 32)?;
//! let loader = Loader::new(
//!     splits.train.clone(),
//!     LoaderConfig {
//!         batch_size: 128,
//!         shuffle: true,
//!         drop_last: true,
//!         seed: 0,
//!         workers: 2,
//!         prefetch: 2,
//!         mode: LoaderMode::Train(TrainAugment::PadCropFlip { pad: 4 }),
//!         normalize: Normalize::PixelMean { mean, scale: 1.0 / 255.0 },
//!         shard: Shard::WHOLE,
//!     },
//! )?;
//! for batch in loader.epoch(0, 0) {
//!     assert_eq!(batch?.shape, [128, 32, 32, 3]);
//! }
//! # Ok::<(), DataError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod augment;
mod channels;
mod cifar;
mod datasets;
mod detect;
#[cfg(feature = "download")]
mod download;
mod error;
#[cfg(feature = "download")]
mod fetch;
mod folder;
mod idx;
mod inspect;
mod loader;
mod memory;
mod normalize;
mod par;
#[cfg(feature = "download")]
mod pretrained;
mod read;
mod shard;
mod single;
mod synthetic;
mod transform;
mod walk;

pub use augment::{EvalView, TrainAugment};
pub use channels::with_channels;
pub use cifar::{parse_cifar, CifarFormat, CifarRecords};
pub use datasets::{open, validation_split, DatasetKind, OpenOptions, Splits, SyntheticConfig};
pub use detect::{detect_format, DetectedFormat};
#[cfg(feature = "download")]
pub use download::{download, download_addresses, download_from, downloadable};
pub use error::DataError;
#[cfg(feature = "download")]
pub use fetch::{
    fetch_published, fetch_verified, Fetched, Published, PublishedHash, DOWNLOAD_BASE_ENV, MAX_DOWNLOAD_BYTES,
    MIN_SHA256_PREFIX,
};
pub use idx::{parse_idx, read_idx, IdxArray};
pub use inspect::{inspect, inspect_with_validation, Inspection, PerClass, SplitCount};
pub use loader::{Batch, EpochIter, Loader, LoaderConfig, LoaderMode};
pub use normalize::{channel_mean_std, pixel_mean, Normalize};
#[cfg(feature = "download")]
pub use pretrained::{
    download_weights, download_weights_from, pretrained_networks, torchvision_weights, DownloadedWeights,
    TorchvisionWeights, WeightsVariant, TORCHVISION_WEIGHTS, TORCHVISION_WEIGHTS_BASE,
};
pub use read::{read_image_file, MAX_IMAGE_FILE_BYTES};
pub use shard::Shard;
pub use single::{prepare_views, read_image};
pub use walk::MAX_FOLDER_DEPTH;

use std::sync::Arc;

/// A decoded image: 8-bit samples in `height x width x channels` order (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` samples.
    pub pixels: Vec<u8>,
}

/// Indexed, labelled images.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names; a label is an index into this list.
    fn classes(&self) -> &[String];
    /// Channels of every image (1 or 3).
    fn channels(&self) -> usize;
    /// `(height, width)` when every image has that size (CIFAR, MNIST), `None` otherwise.
    fn image_size(&self) -> Option<(usize, usize)>;
    /// Label of sample `index`, without decoding it.
    fn label(&self, index: usize) -> u32;
    /// Decodes sample `index`.
    ///
    /// # Errors
    /// A [`DataError`] naming the file (and record) and what is wrong with it.
    fn load(&self, index: usize) -> Result<Image, DataError>;
    /// Where sample `index` comes from, for messages (`train/cat/0001.jpg`,
    /// `data_batch_2.bin record 17`).
    fn describe(&self, index: usize) -> String;
}

/// A shared dataset.
pub type SharedDataset = Arc<dyn Dataset>;
