//! Every bad input of issue 3 gets an error naming the file (and record or offset) and what is
//! wrong; `skip_bad` skips and reports instead.

use crate::common::*;
use resnet_data::{open, DataError, DatasetKind, OpenOptions, Splits};
use std::path::Path;

fn err(kind: DatasetKind, path: &Path) -> String {
    match open(kind, Some(path), &OpenOptions::default()) {
        Ok(_) => panic!("{kind} at {} opened but should have failed", path.display()),
        Err(e) => e.to_string(),
    }
}

fn skip(kind: DatasetKind, path: &Path) -> Splits {
    open(kind, Some(path), &OpenOptions { skip_bad: true, ..Default::default() }).unwrap()
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` does not mention `{p}`");
    }
}

#[test]
fn truncated_and_corrupt_jpeg_and_png() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_two_splits(root, &["a", "b"], 16);
    let jpeg = jpeg_bytes(&rgb(40, 40, 1, 1));
    std::fs::write(root.join("train/a/cut.jpg"), &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    let e = err(DatasetKind::ImageFolder, root);
    assert_has(&e, &["train/a/cut.jpg", "truncated JPEG"]);
    let s = skip(DatasetKind::ImageFolder, root);
    assert_eq!((s.train.len(), s.skipped.len()), (4, 1));
    assert_has(&s.skipped[0], &["cut.jpg", "truncated"]);
    std::fs::remove_file(root.join("train/a/cut.jpg")).unwrap();

    let mut bad = jpeg.clone();
    bad[200..260].fill(0x55);
    std::fs::write(root.join("train/b/corrupt.jpg"), &bad).unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["train/b/corrupt.jpg", "cannot decode image"]);
    std::fs::remove_file(root.join("train/b/corrupt.jpg")).unwrap();

    let png = png_bytes(&image::DynamicImage::ImageRgb8(rgb(30, 30, 2, 2)));
    std::fs::write(root.join("val/a/cut.png"), &png[..png.len() / 2]).unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["val/a/cut.png", "cannot decode image"]);
    let mut flipped = png.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 0xff;
    std::fs::write(root.join("val/a/cut.png"), &flipped).unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["val/a/cut.png", "CRC"]);

    // Left on disk: opening succeeds; the bad file fails when loaded, or is skipped with skip_bad.
    let lazy = OpenOptions { in_memory: Some(false), ..Default::default() };
    let s = open(DatasetKind::ImageFolder, Some(root), &lazy).unwrap();
    let bad_index = (0..s.test.len()).find(|&i| s.test.describe(i).ends_with("cut.png")).unwrap();
    assert_has(&s.test.load(bad_index).unwrap_err().to_string(), &["cut.png"]);
    let s = open(DatasetKind::ImageFolder, Some(root), &OpenOptions { skip_bad: true, ..lazy }).unwrap();
    assert_eq!((s.test.len(), s.skipped.len()), (2, 1));
}

#[test]
fn non_image_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_two_splits(root, &["a"], 8);
    std::fs::write(root.join("train/a/notes.txt"), b"not an image").unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["train/a/notes.txt", "not an image", ".jpg"]);
    let s = skip(DatasetKind::ImageFolder, root);
    assert_eq!((s.train.len(), s.skipped.len()), (2, 1));
    std::fs::remove_file(root.join("train/a/notes.txt")).unwrap();

    std::fs::write(root.join("train/a/fake.jpg"), b"<html>404</html>").unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["train/a/fake.jpg", "not a JPEG or PNG", "3c 68 74 6d"]);
    std::fs::write(root.join("train/a/fake.jpg"), b"").unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["train/a/fake.jpg", "empty"]);
    std::fs::write(root.join("train/a/fake.jpg"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    assert_has(&err(DatasetKind::ImageFolder, root), &["fake.jpg", "Gif", "only JPEG and PNG"]);
}

#[test]
fn empty_class_folder_and_unknown_test_class() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_folder(root, "train", &["a", "b"], 2, 8);
    write_folder(root, "val", &["a"], 1, 8);
    std::fs::create_dir_all(root.join("train/c")).unwrap();
    let e = err(DatasetKind::ImageFolder, root);
    assert_has(&e, &["train/c", "class folder is empty"]);
    // Even with skip_bad: an empty class would silently shift nothing but train a dead output.
    assert!(open(DatasetKind::ImageFolder, Some(root), &OpenOptions { skip_bad: true, ..Default::default() }).is_err());
    std::fs::remove_dir(root.join("train/c")).unwrap();
    write_folder(root, "val", &["zz"], 1, 8);
    assert_has(&err(DatasetKind::ImageFolder, root), &["val/zz", "not one of the 2 training classes"]);
}

#[test]
fn missing_test_split_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("folder");
    write_folder(&root, "train", &["a"], 1, 8);
    assert_has(&err(DatasetKind::ImageFolder, &root), &["folder", "no test split", "val/"]);
    let e = err(DatasetKind::ImageFolder, tmp.path());
    assert_has(&e, &["train", "no training split"]);

    let cifar = tmp.path().join("cifar");
    write_cifar10(&cifar);
    std::fs::remove_file(cifar.join("test_batch.bin")).unwrap();
    assert_has(&err(DatasetKind::Cifar10, &cifar), &["test_batch.bin", "no test split"]);
    let archive = tmp.path().join("c.tar.gz");
    std::fs::write(&archive, tar_gz("cifar-10-batches-bin", &[("data_batch_1.bin", cifar10_file(&[1]))])).unwrap();
    assert_has(&err(DatasetKind::Cifar10, &archive), &["c.tar.gz", "data_batch_2.bin"]);
    assert_has(&err(DatasetKind::Cifar100, &cifar), &["no CIFAR-100 data here", "train.bin"]);

    let mnist = tmp.path().join("mnist");
    write_mnist(&mnist, 3, 2, false);
    std::fs::remove_file(mnist.join("t10k-labels-idx1-ubyte")).unwrap();
    assert_has(&err(DatasetKind::Mnist, &mnist), &["t10k-labels-idx1-ubyte", "no test split"]);
    assert_has(&err(DatasetKind::Mnist, &tmp.path().join("nowhere")), &["nowhere", "no such folder"]);
}

#[test]
fn cifar_size_not_a_multiple_and_label_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_cifar10(dir);
    let mut f = cifar10_file(&[1, 2]);
    f.truncate(f.len() - 100);
    std::fs::write(dir.join("data_batch_3.bin"), &f).unwrap();
    let e = err(DatasetKind::Cifar10, dir);
    assert_has(&e, &["data_batch_3.bin", "6046 bytes", "3073-byte", "offset 3073"]);
    let s = skip(DatasetKind::Cifar10, dir);
    assert_eq!((s.train.len(), s.skipped.len()), (9, 1), "{:?}", s.skipped);

    std::fs::write(dir.join("data_batch_3.bin"), cifar10_file(&[1, 10])).unwrap();
    let e = err(DatasetKind::Cifar10, dir);
    assert_has(&e, &["data_batch_3.bin record 1", "offset 3073", "label 10", "10 classes"]);
    let s = skip(DatasetKind::Cifar10, dir);
    assert_eq!((s.train.len(), s.skipped.len()), (9, 1));
    assert_has(&s.skipped[0], &["record 1", "label 10"]);
}

#[test]
fn idx_header_disagreeing_with_the_file_and_bad_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_mnist(d, 4, 2, false);
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[5, 4, 5], &[0; 80])).unwrap();
    let e = err(DatasetKind::Mnist, d);
    assert_has(&e, &["train-images-idx3-ubyte", "dimensions [5, 4, 5]", "promises 100 bytes", "offset 16", "after 80"]);
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[3, 4, 5], &[0; 60])).unwrap();
    assert_has(&err(DatasetKind::Mnist, d), &["3 images but 4 labels"]);
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[4, 4, 5], &[0; 80])).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[4], &[1, 2, 30, 4])).unwrap();
    assert_has(&err(DatasetKind::Mnist, d), &["train-labels-idx1-ubyte record 2", "offset 10", "label 30"]);
    assert_eq!(skip(DatasetKind::Mnist, d).train.len(), 3);
    let mut gz = gzip(&idx(&[4], &[1, 2, 3, 4]));
    gz.truncate(gz.len() - 6);
    std::fs::remove_file(d.join("train-labels-idx1-ubyte")).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte.gz"), gz).unwrap();
    assert_has(&err(DatasetKind::Mnist, d), &["train-labels-idx1-ubyte.gz"]);
}

#[test]
fn errors_are_send_sync_and_every_io_error_names_its_path() {
    fn check<T: Send + Sync + 'static>() {}
    check::<DataError>();
    let e = open(DatasetKind::Cifar10, Some(Path::new("/definitely/not/here")), &OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert_has(&e, &["/definitely/not/here"]);
}

/// An IDX header claiming `dims`, then zeros without end; reading more than `budget` bytes of
/// data is an error, so a reader that trusts the header stops there instead of filling memory.
struct EndlessIdx {
    header: Vec<u8>,
    served: usize,
    budget: usize,
}

impl std::io::Read for EndlessIdx {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.served >= self.header.len() + self.budget {
            return Err(std::io::Error::other("read past the header's first bytes of data"));
        }
        let n = buf.len().min(self.header.len() + self.budget - self.served);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.header.get(self.served + i).copied().unwrap_or(0);
        }
        self.served += n;
        Ok(n)
    }
}

#[test]
fn idx_dimensions_beyond_the_size_limit_are_refused_before_reading_the_data() {
    // 65,537 x 256 x 256 bytes is just over 4 GiB.
    let dims = [65_537, 256, 256];
    let header = idx(&dims, &[]);
    let endless = EndlessIdx { header, served: 0, budget: 1 << 20 };
    let e = resnet_data::read_idx(endless, "huge-idx3-ubyte", u64::MAX).unwrap_err();
    assert!(matches!(e, DataError::Idx { .. }), "{e}");
    assert_has(&e.to_string(), &["huge-idx3-ubyte", "dimensions [65537, 256, 256]", "4294967296 bytes"]);

    // The same claim in a small gzip of zeros, as a dataset file.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_mnist(d, 4, 2, false);
    std::fs::remove_file(d.join("train-images-idx3-ubyte")).unwrap();
    let mut claim = idx(&dims, &[]);
    claim.resize(claim.len() + (1 << 20), 0);
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), gzip(&claim)).unwrap();
    assert_has(
        &err(DatasetKind::Mnist, d),
        &["train-images-idx3-ubyte.gz", "dimensions [65537, 256, 256]", "4294967296 bytes"],
    );
}
