//! Small generated dataset files and test datasets.

use resnet_data::{DataError, Dataset, Image, SharedDataset};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// One CIFAR record: `labels` then 3072 planar pixels derived from `seed`.
pub fn cifar_record(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(3).wrapping_add(seed)));
    r
}

/// A CIFAR-10 batch file of `labels.len()` records.
pub fn cifar10_file(labels: &[u8]) -> Vec<u8> {
    labels.iter().enumerate().flat_map(|(i, &l)| cifar_record(&[l], i as u8)).collect()
}

/// Writes the six CIFAR-10 batch files into `dir`: 2 records per training file, 3 test records.
pub fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 1..=5u8 {
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), cifar10_file(&[b, b + 1])).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar10_file(&[9, 0, 4])).unwrap();
}

/// A `.tar.gz` holding `files` (name, bytes) under `folder/`.
pub fn tar_gz(folder: &str, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("{folder}/{name}"), bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// An IDX file of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Writes MNIST-named IDX files into `dir`: `n_train` and `n_test` 4x5 images with labels `i % 10`.
pub fn write_mnist(dir: &Path, n_train: u32, n_test: u32, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels: Vec<u8> = (0..n * 20).map(|i| (i % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        put(&format!("{prefix}-images-idx3-ubyte"), idx(&[n, 4, 5], &pixels));
        put(&format!("{prefix}-labels-idx1-ubyte"), idx(&[n], &labels));
    }
}

/// An RGB image with a recognisable colour per class and index.
pub fn rgb(h: u32, w: u32, class: u8, i: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([class * 20, i.wrapping_mul(7), (x + y) as u8]))
}

pub fn jpeg_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(img).unwrap();
    out
}

pub fn png_bytes(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Writes `root/<split>/<class>/<k>.jpg`: `per_class` images for each of `classes`.
pub fn write_folder(root: &Path, split: &str, classes: &[&str], per_class: u8, size: u32) {
    for (c, name) in classes.iter().enumerate() {
        let dir = root.join(split).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..per_class {
            std::fs::write(dir.join(format!("{k:03}.jpg")), jpeg_bytes(&rgb(size, size, c as u8, k))).unwrap();
        }
    }
}

/// Writes an image folder with `classes` in both splits: two `size`-pixel images a class in
/// `train/`, one in `val/`.
pub fn write_two_splits(root: &Path, classes: &[&str], size: u32) {
    write_folder(root, "train", classes, 2, size);
    write_folder(root, "val", classes, 1, size);
}

/// A dataset whose pixels encode their own position: pixel `(y, x)` of sample `i` is
/// `[y + 1, x + 1, i % 256]`, so that crops and flips can be read back from the output.
pub struct Coords {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub classes: Vec<String>,
}

impl Coords {
    pub fn shared(n: usize, h: usize, w: usize) -> SharedDataset {
        Arc::new(Coords { n, h, w, classes: (0..10).map(|c| c.to_string()).collect() })
    }
}

impl Dataset for Coords {
    fn len(&self) -> usize {
        self.n
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn channels(&self) -> usize {
        3
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        Some((self.h, self.w))
    }
    fn label(&self, index: usize) -> u32 {
        (index % 10) as u32
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        let pixels =
            (0..self.h * self.w).flat_map(|p| [(p / self.w + 1) as u8, (p % self.w + 1) as u8, index as u8]).collect();
        Ok(Image { height: self.h, width: self.w, channels: 3, pixels })
    }
    fn describe(&self, index: usize) -> String {
        format!("coords {index}")
    }
}
