//! Datasets held in memory, subsets of other datasets, and the one-off parallel pass that decodes
//! a dataset into memory (or checks every sample of one that stays on disk).

use crate::{par, DataError, Dataset, Image, SharedDataset};
use std::sync::Arc;

/// Where each sample of a [`MemoryDataset`] came from, for [`Dataset::describe`].
pub(crate) enum Origin {
    /// One description per sample.
    Names(Vec<String>),
    /// Fixed-size records of binary files: the file names and, per sample, (file, record).
    Records { files: Vec<String>, records: Vec<(u32, u32)> },
}

/// Pixels of all samples.
enum Store {
    /// Every image `h x w x c`, packed back to back: one allocation for CIFAR and MNIST.
    Fixed { h: usize, w: usize, c: usize, data: Vec<u8> },
    /// Images of different sizes (a small ImageFolder).
    Varied(Vec<Image>),
}

/// Decoded images and labels, in memory.
pub(crate) struct MemoryDataset {
    classes: Vec<String>,
    channels: usize,
    store: Store,
    labels: Vec<u32>,
    origin: Origin,
}

impl MemoryDataset {
    /// Records of one size, packed HWC back to back.
    ///
    /// # Panics
    /// If the sizes disagree (a bug in the parser that built them).
    pub(crate) fn fixed(
        classes: Vec<String>,
        (h, w, c): (usize, usize, usize),
        data: Vec<u8>,
        labels: Vec<u32>,
        origin: Origin,
    ) -> Self {
        assert_eq!(data.len(), labels.len() * h * w * c, "packed pixels do not match the labels");
        Self { classes, channels: c, store: Store::Fixed { h, w, c, data }, labels, origin }
    }

    /// Images that may differ in size; packed when they do not.
    ///
    /// # Panics
    /// If the counts disagree or the channels differ (a bug in the caller).
    pub(crate) fn from_images(
        classes: Vec<String>,
        channels: usize,
        images: Vec<Image>,
        labels: Vec<u32>,
        names: Vec<String>,
    ) -> Self {
        assert!(images.len() == labels.len() && labels.len() == names.len(), "counts disagree");
        assert!(images.iter().all(|i| i.channels == channels), "mixed channel counts");
        let first = images.first().map(|i| (i.height, i.width));
        let same = images.iter().all(|i| Some((i.height, i.width)) == first);
        let store = match first {
            Some((h, w)) if same => {
                let mut data = Vec::with_capacity(images.len() * h * w * channels);
                for i in &images {
                    data.extend_from_slice(&i.pixels);
                }
                Store::Fixed { h, w, c: channels, data }
            }
            _ => Store::Varied(images),
        };
        Self { classes, channels, store, labels, origin: Origin::Names(names) }
    }
}

impl Dataset for MemoryDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        match &self.store {
            Store::Fixed { h, w, .. } => Some((*h, *w)),
            Store::Varied(_) => None,
        }
    }
    fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        assert!(index < self.labels.len(), "sample {index} of {}", self.labels.len());
        Ok(match &self.store {
            Store::Fixed { h, w, c, data } => {
                let n = h * w * c;
                Image { height: *h, width: *w, channels: *c, pixels: data[index * n..(index + 1) * n].to_vec() }
            }
            Store::Varied(v) => v[index].clone(),
        })
    }
    fn describe(&self, index: usize) -> String {
        match &self.origin {
            Origin::Names(n) => n[index].clone(),
            Origin::Records { files, records } => {
                let (f, r) = records[index];
                format!("{} record {r}", files[f as usize])
            }
        }
    }
}

/// Some samples of another dataset, in the given order.
pub(crate) struct Subset {
    inner: SharedDataset,
    indices: Vec<usize>,
}

impl Subset {
    /// The samples `indices` of `inner`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub(crate) fn new(inner: SharedDataset, indices: Vec<usize>) -> Self {
        assert!(indices.iter().all(|&i| i < inner.len()), "subset index out of range");
        Self { inner, indices }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        self.inner.image_size()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(self.indices[index])
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        self.inner.load(self.indices[index])
    }
    fn describe(&self, index: usize) -> String {
        self.inner.describe(self.indices[index])
    }
}

/// Decodes every sample of `ds` once, in parallel, and keeps the pixels in memory.
///
/// With `skip_bad`, samples that fail to decode are left out and described in the returned list;
/// without it the first bad sample (lowest index) is the error.
pub(crate) fn materialize(ds: &SharedDataset, skip_bad: bool) -> Result<(SharedDataset, Vec<String>), DataError> {
    let decoded = par::map(ds.len(), |i| ds.load(i));
    let mut images = Vec::with_capacity(decoded.len());
    let mut labels = Vec::with_capacity(decoded.len());
    let mut names = Vec::with_capacity(decoded.len());
    let mut skipped = Vec::new();
    for (i, r) in decoded.into_iter().enumerate() {
        match r {
            Ok(img) => {
                images.push(img);
                labels.push(ds.label(i));
                names.push(ds.describe(i));
            }
            Err(e) if skip_bad => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    let mem = MemoryDataset::from_images(ds.classes().to_vec(), ds.channels(), images, labels, names);
    Ok((Arc::new(mem), skipped))
}

/// Decodes every sample of `ds` once to find the bad ones, keeps nothing, and returns the dataset
/// without them (for `skip_bad` on a dataset too large for memory).
pub(crate) fn without_bad(ds: &SharedDataset) -> (SharedDataset, Vec<String>) {
    let checked = par::map(ds.len(), |i| ds.load(i).err().map(|e| e.to_string()));
    let mut keep = Vec::with_capacity(checked.len());
    let mut skipped = Vec::new();
    for (i, e) in checked.into_iter().enumerate() {
        match e {
            None => keep.push(i),
            Some(e) => skipped.push(e),
        }
    }
    if skipped.is_empty() {
        return (ds.clone(), skipped);
    }
    (Arc::new(Subset::new(ds.clone(), keep)), skipped)
}
