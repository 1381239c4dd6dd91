//! `detect_format`: each layout that `open` reads is recognised as its format, with the evidence,
//! and the format it names opens the same path; anything else is refused with what is there.

use crate::common::*;
use resnet_data::{detect_format, open, DataError, DatasetKind, OpenOptions};
use std::path::Path;

/// Recognises `path` as `kind`, checks the evidence names `evidence`, and opens it as that kind.
fn recognised(path: &Path, kind: DatasetKind, evidence: &str) {
    let found = detect_format(path).unwrap_or_else(|e| panic!("{} not recognised: {e}", path.display()));
    assert_eq!(found.kind, kind, "{found}");
    assert!(found.evidence.contains(evidence), "{found}");
    assert!(found.to_string().starts_with(kind.name()), "{found}");
    open(kind, Some(path), &OpenOptions::default()).unwrap_or_else(|e| panic!("detected {kind} does not open: {e}"));
}

fn layout_error(path: &Path) -> String {
    match detect_format(path) {
        Err(e @ DataError::Layout { .. }) => e.to_string(),
        Err(e) => panic!("expected a layout error, got: {e}"),
        Ok(f) => panic!("{} recognised as {f} but should not be", path.display()),
    }
}

#[test]
fn cifar10_folder_parent_archive_and_folder_holding_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = tmp.path().join("data/cifar-10-batches-bin");
    write_cifar10(&bins);
    recognised(&bins, DatasetKind::Cifar10, "data_batch_1.bin");
    recognised(&tmp.path().join("data"), DatasetKind::Cifar10, "cifar-10-batches-bin");

    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&bins)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let dl = tmp.path().join("download");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("cifar-10-binary.tar.gz"), tar_gz("cifar-10-batches-bin", &refs)).unwrap();
    recognised(&dl, DatasetKind::Cifar10, "official archive");
    recognised(&dl.join("cifar-10-binary.tar.gz"), DatasetKind::Cifar10, "official archive");
}

#[test]
fn cifar100_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let records = |n: u8| -> Vec<u8> { (0..n).flat_map(|i| cifar_record(&[i % 20, i % 100], i)).collect() };
    std::fs::write(dir.join("train.bin"), records(4)).unwrap();
    std::fs::write(dir.join("test.bin"), records(2)).unwrap();
    recognised(&dir, DatasetKind::Cifar100, "train.bin");
    recognised(tmp.path(), DatasetKind::Cifar100, "cifar-100-binary");
}

#[test]
fn the_mnist_family_by_folder_name_and_generic_idx() {
    let tmp = tempfile::tempdir().unwrap();
    // Where `resnet download` puts them: DIR/mnist, DIR/fashion-mnist.
    write_mnist(&tmp.path().join("dl/fashion-mnist"), 3, 2, true);
    recognised(&tmp.path().join("dl"), DatasetKind::FashionMnist, "fashion-mnist");
    recognised(&tmp.path().join("dl/fashion-mnist"), DatasetKind::FashionMnist, "named for the dataset");
    // torchvision's layout: DIR/MNIST/raw.
    write_mnist(&tmp.path().join("tv/MNIST/raw"), 3, 2, false);
    recognised(&tmp.path().join("tv/MNIST"), DatasetKind::Mnist, "raw");
    // A folder with another name: the generic format, which says how to get class names.
    write_mnist(&tmp.path().join("digits"), 3, 2, false);
    recognised(&tmp.path().join("digits"), DatasetKind::Idx, "--dataset mnist");
}

#[test]
fn image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path(), "train", &["a", "b"], 1, 8);
    write_folder(tmp.path(), "test", &["a", "b"], 1, 8);
    recognised(tmp.path(), DatasetKind::ImageFolder, "train");
}

#[test]
fn an_unknown_folder_is_refused_saying_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"hello").unwrap();
    std::fs::create_dir_all(tmp.path().join("train/a")).unwrap();
    let e = layout_error(tmp.path());
    assert!(e.contains("cannot tell the dataset format") && e.contains("notes.txt, train"), "{e}");
    assert!(e.contains("--dataset") && e.contains("data_batch_1.bin") && e.contains("train-images-idx3-ubyte"), "{e}");
    let e = layout_error(&tmp.path().join("notes.txt"));
    assert!(e.contains("notes.txt") && e.contains("--dataset"), "{e}");
    let empty = tmp.path().join("train/a");
    assert!(layout_error(&empty).contains("an empty folder"));
    match detect_format(&tmp.path().join("nowhere")) {
        Err(DataError::Missing { path, .. }) => assert!(path.ends_with("nowhere")),
        other => panic!("expected a missing-path error, got {other:?}"),
    }
}

#[test]
fn two_datasets_in_one_folder_are_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(&tmp.path().join("cifar-10-batches-bin"));
    write_mnist(&tmp.path().join("mnist"), 3, 2, true);
    let e = layout_error(tmp.path());
    assert!(e.contains("more than one dataset") && e.contains("cifar10 (") && e.contains("mnist ("), "{e}");
}
