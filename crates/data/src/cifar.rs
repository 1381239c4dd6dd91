//! CIFAR-10 and CIFAR-100 in the official binary layout (Krizhevsky 2009), the datasets of the
//! paper's Section 4.2: read from the extracted folder or straight from the official `.tar.gz`.
//!
//! A CIFAR-10 record is 1 label byte and 3072 pixel bytes (the 1024 red, then green, then blue
//! samples of a 32x32 image, row-major); a CIFAR-100 record has 2 label bytes (coarse, fine).
//! Records are converted to HWC on reading and kept in memory (150 MB for CIFAR-10's train split).

use crate::memory::{MemoryDataset, Origin};
use crate::read::read_capped;
use crate::{DataError, SharedDataset, Splits};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SIDE: usize = 32;
const PIXELS: usize = SIDE * SIDE * 3;

/// The CIFAR-10 classes, in label order (`batches.meta.txt`).
pub(crate) const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The CIFAR-100 fine classes, in label order (`fine_label_names.txt`).
pub(crate) const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// The CIFAR-100 coarse classes (superclasses), in label order (`coarse_label_names.txt`).
pub(crate) const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// Which CIFAR binary layout a file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarFormat {
    /// 1 label byte per record, 10 classes.
    Cifar10,
    /// 2 label bytes per record (coarse, fine); `coarse` selects the 20 superclasses instead of
    /// the 100 fine classes.
    Cifar100 {
        /// Use the coarse label.
        coarse: bool,
    },
}

impl CifarFormat {
    /// Bytes of one record: the labels and the 32x32x3 pixels.
    pub fn record_size(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarFormat::Cifar10 => 1,
            CifarFormat::Cifar100 { .. } => 2,
        }
    }

    /// Offset of the label used, inside a record.
    fn label_offset(self) -> usize {
        match self {
            CifarFormat::Cifar10 | CifarFormat::Cifar100 { coarse: true } => 0,
            CifarFormat::Cifar100 { coarse: false } => 1,
        }
    }

    /// Class names, in label order.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            CifarFormat::Cifar10 => &CIFAR10_CLASSES,
            CifarFormat::Cifar100 { coarse: false } => &CIFAR100_FINE,
            CifarFormat::Cifar100 { coarse: true } => &CIFAR100_COARSE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CifarFormat::Cifar10 => "CIFAR-10",
            CifarFormat::Cifar100 { .. } => "CIFAR-100",
        }
    }

    /// Records in the official file `name`: 10000 in each CIFAR-10 batch and in CIFAR-100's
    /// `test.bin`, 50000 in its `train.bin`. No file of the format holds more, so a file or archive
    /// member larger than this is refused before it is read.
    pub fn max_records(self, name: &str) -> u64 {
        match (self, name) {
            (CifarFormat::Cifar100 { .. }, "train.bin") => 50_000,
            _ => 10_000,
        }
    }

    /// The most bytes the file `name` can have: [`CifarFormat::max_records`] whole records.
    fn max_bytes(self, name: &str) -> u64 {
        self.max_records(name) * self.record_size() as u64
    }

    /// What [`CifarFormat::max_bytes`] is, for messages.
    fn max_what(self, name: &str) -> String {
        format!(
            "what a {} {name} holds, {} records of {} bytes",
            self.name(),
            self.max_records(name),
            self.record_size()
        )
    }

    /// (train files, test file, folder inside the official archive, official archive name).
    fn layout(self) -> (&'static [&'static str], &'static str, &'static str, &'static str) {
        match self {
            CifarFormat::Cifar10 => (
                &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
                "test_batch.bin",
                "cifar-10-batches-bin",
                "cifar-10-binary.tar.gz",
            ),
            CifarFormat::Cifar100 { .. } => (&["train.bin"], "test.bin", "cifar-100-binary", "cifar-100-binary.tar.gz"),
        }
    }
}

/// The records of one CIFAR binary file, converted to HWC.
#[derive(Clone, Debug, Default)]
pub struct CifarRecords {
    /// `32 x 32 x 3` HWC pixels per kept record, back to back.
    pub pixels: Vec<u8>,
    /// The label of each kept record.
    pub labels: Vec<u32>,
    /// The index inside the file of each kept record.
    pub records: Vec<u32>,
    /// With `skip_bad`: one line per skipped record (or trailing partial record), saying why.
    pub skipped: Vec<String>,
}

/// Parses the bytes of one CIFAR binary file (`data_batch_1.bin`, `train.bin`, ...).
///
/// Allocates at most the size of `bytes`; never panics on any input.
///
/// # Errors
/// [`DataError::RecordSize`] when the size is not a whole number of records and
/// [`DataError::LabelOutOfRange`] for a label that is not a class; with `skip_bad` the partial
/// record and the bad records are skipped instead and listed in [`CifarRecords::skipped`].
pub fn parse_cifar(bytes: &[u8], file: &str, format: CifarFormat, skip_bad: bool) -> Result<CifarRecords, DataError> {
    let record = format.record_size();
    let whole = bytes.len() / record;
    let trailing = bytes.len() % record;
    let mut out = CifarRecords::default();
    if trailing != 0 {
        let err = DataError::RecordSize {
            file: file.to_string(),
            size: bytes.len() as u64,
            record,
            format: format.name(),
            whole: whole as u64,
            trailing: trailing as u64,
            offset: (whole * record) as u64,
        };
        if !skip_bad {
            return Err(err);
        }
        out.skipped.push(err.to_string());
    }
    let classes = format.classes().len();
    out.pixels.reserve_exact(whole * PIXELS);
    out.labels.reserve_exact(whole);
    out.records.reserve_exact(whole);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[format.label_offset()] as u32;
        if label as usize >= classes {
            let err = DataError::LabelOutOfRange {
                file: file.to_string(),
                index,
                offset: (index * record + format.label_offset()) as u64,
                label,
                classes,
            };
            if !skip_bad {
                return Err(err);
            }
            out.skipped.push(err.to_string());
            continue;
        }
        // Planar RGB to interleaved HWC.
        let planes = &rec[format.label_bytes()..];
        let (r, rest) = planes.split_at(SIDE * SIDE);
        let (g, b) = rest.split_at(SIDE * SIDE);
        for p in 0..SIDE * SIDE {
            out.pixels.extend_from_slice(&[r[p], g[p], b[p]]);
        }
        out.labels.push(label);
        out.records.push(index as u32);
    }
    Ok(out)
}

/// One split being assembled from several files.
#[derive(Default)]
struct Split {
    pixels: Vec<u8>,
    labels: Vec<u32>,
    files: Vec<String>,
    records: Vec<(u32, u32)>,
}

impl Split {
    fn add(&mut self, file: String, r: CifarRecords, skipped: &mut Vec<String>) {
        let f = self.files.len() as u32;
        self.files.push(file);
        self.pixels.extend_from_slice(&r.pixels);
        self.labels.extend_from_slice(&r.labels);
        self.records.extend(r.records.iter().map(|&i| (f, i)));
        skipped.extend(r.skipped);
    }

    fn into_dataset(self, format: CifarFormat) -> SharedDataset {
        let classes = format.classes().iter().map(|s| s.to_string()).collect();
        let origin = Origin::Records { files: self.files, records: self.records };
        Arc::new(MemoryDataset::fixed(classes, (SIDE, SIDE, 3), self.pixels, self.labels, origin))
    }
}

/// Opens CIFAR-10 or CIFAR-100 at `path`: the folder of `.bin` files, a folder holding the
/// official archive's folder (`cifar-10-batches-bin/`, `cifar-100-binary/`), the official
/// `.tar.gz` itself, or a folder holding it (where `resnet download` puts it).
pub(crate) fn open(path: &Path, format: CifarFormat, skip_bad: bool) -> Result<Splits, DataError> {
    let (train_files, test_file, subdir, archive) = format.layout();
    if path.is_file() {
        return open_archive(path, format, skip_bad);
    }
    if !path.is_dir() {
        return Err(DataError::Missing { path: path.to_path_buf(), what: "no such file or folder".into() });
    }
    match locate(path, format) {
        Some(Located::Folder(dir, _)) => return open_folder(&dir, format, skip_bad),
        Some(Located::Archive(file)) => return open_archive(&file, format, skip_bad),
        None => {}
    }
    Err(DataError::Missing {
        path: path.to_path_buf(),
        what: format!(
            "no {} data here: expected {} and {test_file}, the folder {subdir}/ holding them, or the official \
             {archive} (`resnet download {}`)",
            format.name(),
            train_files.join(", "),
            if format == CifarFormat::Cifar10 { "cifar10" } else { "cifar100" }
        ),
    })
}

/// Where the data of `format` is under the folder `path`.
pub(crate) enum Located {
    /// A folder holding batch files, and the first of them found.
    Folder(PathBuf, &'static str),
    /// The official archive.
    Archive(PathBuf),
}

/// Finds `format`'s data under the folder `path` as [`open`] would: batch files in it, in the
/// official archive's folder inside it, or the official archive inside it.
pub(crate) fn locate(path: &Path, format: CifarFormat) -> Option<Located> {
    let (train_files, test_file, subdir, archive) = format.layout();
    let first_bin = |dir: &Path| train_files.iter().chain([&test_file]).copied().find(|f| dir.join(f).is_file());
    if let Some(f) = first_bin(path) {
        return Some(Located::Folder(path.to_path_buf(), f));
    }
    if let Some(f) = first_bin(&path.join(subdir)) {
        return Some(Located::Folder(path.join(subdir), f));
    }
    path.join(archive).is_file().then(|| Located::Archive(path.join(archive)))
}

/// The official archive name of `format` (`cifar-10-binary.tar.gz`).
pub(crate) fn archive_name(format: CifarFormat) -> &'static str {
    format.layout().3
}

fn open_folder(dir: &Path, format: CifarFormat, skip_bad: bool) -> Result<Splits, DataError> {
    let (train_files, test_file, _, _) = format.layout();
    let mut skipped = Vec::new();
    let mut read = |name: &str, split: &mut Split, missing: String| -> Result<(), DataError> {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(DataError::Missing { path: p, what: missing });
        }
        let bytes = read_capped(&p, format.max_bytes(name), &format.max_what(name))?;
        let label = p.display().to_string();
        split.add(label.clone(), parse_cifar(&bytes, &label, format, skip_bad)?, &mut skipped);
        Ok(())
    };
    let mut train = Split::default();
    for f in train_files {
        read(f, &mut train, format!("training file {f} of {} is missing", format.name()))?;
    }
    let mut test = Split::default();
    read(test_file, &mut test, format!("the dataset has no test split: {test_file} is missing"))?;
    Ok(Splits { train: train.into_dataset(format), test: test.into_dataset(format), skipped })
}

fn open_archive(path: &Path, format: CifarFormat, skip_bad: bool) -> Result<Splits, DataError> {
    let (train_files, test_file, _, _) = format.layout();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let archive_err = |reason: String| DataError::Archive { file: path.display().to_string(), reason };
    let mut tar = tar::Archive::new(GzDecoder::new(std::io::BufReader::new(file)));
    // Members are parsed as they stream past, so at most one raw member is in memory at a time.
    let mut found: Vec<Option<(String, CifarRecords)>> = vec![None; train_files.len() + 1];
    let entries = tar.entries().map_err(|e| archive_err(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
        let member = entry.path().map_err(|e| archive_err(e.to_string()))?.to_path_buf();
        let Some(name) = member.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(slot) = train_files.iter().chain([&test_file]).position(|f| *f == name) else { continue };
        let label = format!("{}:{}", path.display(), member.display());
        // A member larger than the official file is refused by its header, before any of it is
        // decompressed; the read is capped too, and the vector grows with the bytes that arrive.
        let limit = format.max_bytes(name);
        let size =
            entry.header().size().map_err(|e| DataError::Archive { file: label.clone(), reason: e.to_string() })?;
        if size > limit {
            return Err(DataError::TooLarge {
                file: label,
                reason: format!(
                    "the archive says {size} bytes, more than {} ({limit} bytes); nothing was read",
                    format.max_what(name)
                ),
            });
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::Archive { file: label.clone(), reason: e.to_string() })?;
        found[slot] = Some((label.clone(), parse_cifar(&bytes, &label, format, skip_bad)?));
    }
    let mut skipped = Vec::new();
    let mut take = |slot: usize, split: &mut Split, what: &str| -> Result<(), DataError> {
        let name = train_files.iter().chain([&test_file]).nth(slot).copied().unwrap_or_default();
        match found[slot].take() {
            Some((label, r)) => {
                split.add(label, r, &mut skipped);
                Ok(())
            }
            None => Err(DataError::Missing {
                path: PathBuf::from(path),
                what: format!("the archive has no member {name} ({what})"),
            }),
        }
    };
    let mut train = Split::default();
    for i in 0..train_files.len() {
        take(i, &mut train, "training data")?;
    }
    let mut test = Split::default();
    take(train_files.len(), &mut test, "the dataset has no test split")?;
    Ok(Splits { train: train.into_dataset(format), test: test.into_dataset(format), skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(format: CifarFormat, label: u8, seed: u8) -> Vec<u8> {
        let mut r = vec![label; format.label_bytes()];
        r.extend((0..PIXELS).map(|i| (i as u8).wrapping_mul(seed)));
        r
    }

    #[test]
    fn class_lists_have_the_official_sizes() {
        assert_eq!(CIFAR100_FINE.len(), 100);
        assert_eq!(CIFAR100_COARSE.len(), 20);
        let mut sorted = CIFAR100_FINE.to_vec();
        sorted.sort();
        assert_eq!(sorted, CIFAR100_FINE.to_vec(), "fine labels are in alphabetical order");
    }

    #[test]
    fn planar_becomes_hwc() {
        let mut bytes = vec![3u8];
        bytes.extend(std::iter::repeat_n(10u8, 1024));
        bytes.extend(std::iter::repeat_n(20u8, 1024));
        bytes.extend(std::iter::repeat_n(30u8, 1024));
        bytes[1 + 5] = 99; // red sample of pixel 5 (row 0, column 5)
        let r = parse_cifar(&bytes, "x.bin", CifarFormat::Cifar10, false).unwrap();
        assert_eq!(r.labels, vec![3]);
        assert_eq!(&r.pixels[0..3], &[10, 20, 30]);
        assert_eq!(&r.pixels[15..18], &[99, 20, 30]);
    }

    #[test]
    fn cifar100_fine_and_coarse() {
        let mut rec = vec![7u8, 42];
        rec.extend(std::iter::repeat_n(0u8, PIXELS));
        let fine = parse_cifar(&rec, "train.bin", CifarFormat::Cifar100 { coarse: false }, false).unwrap();
        let coarse = parse_cifar(&rec, "train.bin", CifarFormat::Cifar100 { coarse: true }, false).unwrap();
        assert_eq!((fine.labels[0], coarse.labels[0]), (42, 7));
    }

    #[test]
    fn bad_size_and_label_are_errors_or_skipped() {
        let mut bytes = record(CifarFormat::Cifar10, 1, 3);
        bytes.extend(record(CifarFormat::Cifar10, 11, 5));
        bytes.extend(record(CifarFormat::Cifar10, 2, 7));
        let e = parse_cifar(&bytes, "b.bin", CifarFormat::Cifar10, false).unwrap_err().to_string();
        assert!(e.contains("b.bin record 1") && e.contains("label 11"), "{e}");
        bytes.extend([1, 2, 3]);
        let e = parse_cifar(&bytes, "b.bin", CifarFormat::Cifar10, false).unwrap_err().to_string();
        assert!(e.contains("b.bin") && e.contains("not a multiple of the 3073-byte"), "{e}");
        let r = parse_cifar(&bytes, "b.bin", CifarFormat::Cifar10, true).unwrap();
        assert_eq!(r.labels, vec![1, 2]);
        assert_eq!(r.records, vec![0, 2]);
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    }
}
