//! Data input, end to end: `--data` without `--dataset` is recognised or refused (never trained
//! on the synthetic set instead), a symbolic-link loop ends with an error, huge or endless inputs
//! (a sparse 3 GB `.jpg`, `/dev/zero`, an endless download) are refused within a small, fixed
//! amount of memory or bytes.
//!
//! Runs that could grow without bound before the fixes run under an address-space cap
//! (`run_capped`), so that they fail rather than take the machine; nothing here is timed.

use crate::common::*;
use crate::stream_server::{serve_stream, Body};
use std::net::TcpListener;
use std::path::Path;

/// A cap far above what any of these runs needs, far below what an unbounded one reaches.
const CAP_MIB: u64 = 1024;

/// One CIFAR-10 record: `label`, then 3072 pixel bytes.
fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
    std::iter::once(label).chain((0..3072u32).map(|i| (i as u8).wrapping_mul(3).wrapping_add(seed))).collect()
}

/// The six CIFAR-10 batch files in `dir`: 2 records per training file, 3 test records.
fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 1..=5u8 {
        let bytes: Vec<u8> = [cifar_record(b, 0), cifar_record(b + 1, 1)].concat();
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    let test: Vec<u8> = [cifar_record(9, 0), cifar_record(0, 1), cifar_record(4, 2)].concat();
    std::fs::write(dir.join("test_batch.bin"), test).unwrap();
}

/// MNIST's four IDX files in `dir`: 4 training and 2 test images of 4x5.
fn write_mnist(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 4u32), ("t10k", 2)] {
        let pixels: Vec<u8> = (0..n * 20).map(|i| i as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| i as u8).collect();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), idx(&[n, 4, 5], &pixels)).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), idx(&[n], &labels)).unwrap();
    }
}

/// A sparse file of `len` bytes (no disk space used).
fn sparse(path: &Path, len: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// `resnet train` on `--data data` for one iteration of the smallest network, into `run`.
fn tiny_training(data: &str) -> [&str; 12] {
    [
        "train",
        "--data",
        data,
        "--iterations",
        "1",
        "--batch-size",
        "2",
        "--model",
        "cifar-resnet8",
        "--out",
        "run",
        "--quiet",
    ]
}

#[test]
fn train_with_data_and_no_dataset_trains_on_the_recognised_format() {
    let dir = scratch();
    write_cifar10(&dir.path().join("cifar"));
    let r = run(dir.path(), tiny_training("cifar")).ok();
    assert!(r.stderr.contains("--data cifar: recognised as cifar10 (data_batch_1.bin in cifar)"), "{}", r.stderr);
    assert!(r.stderr.contains("on cifar10"), "{}", r.stderr);
    let config = std::fs::read_to_string(dir.path().join("run/config.json")).unwrap();
    assert!(config.contains("\"cifar10\""), "{config}");
    assert!(!config.contains("\"synthetic\""), "{config}");
}

#[test]
fn train_with_data_of_no_known_format_refuses() {
    let dir = scratch();
    std::fs::create_dir_all(dir.path().join("photos/holiday")).unwrap();
    std::fs::write(dir.path().join("photos/readme.txt"), b"my photos").unwrap();
    run(dir.path(), tiny_training("photos")).fails_with(&[
        "photos",
        "cannot tell the dataset format",
        "holiday, readme.txt",
        "pass --dataset",
    ]);
    assert!(!dir.path().join("run").exists(), "nothing was trained");
}

#[test]
fn data_recognises_the_format_when_dataset_is_left_out() {
    let dir = scratch();
    write_mnist(&dir.path().join("downloads/mnist"));
    let r = run(dir.path(), ["data", "--data", "downloads"]).ok();
    assert!(r.stderr.contains("recognised as mnist"), "{}", r.stderr);
    assert!(r.stdout.contains("dataset   mnist") && r.stdout.contains("train 4, test 2"), "{}", r.stdout);
    write_cifar10(&dir.path().join("downloads/cifar-10-batches-bin"));
    run(dir.path(), ["data", "--data", "downloads"]).fails_with(&["more than one dataset", "cifar10 (", "mnist ("]);
    run(dir.path(), ["data"]).fails_with(&["--dataset"]);
}

#[cfg(unix)]
#[test]
fn data_on_a_symlink_loop_ends_with_an_error() {
    // The layout: `ln -s .. train/cat/loop; ln -s ../cat train/dog/catlink`.
    let dir = scratch();
    let root = dir.path().join("pets");
    for p in ["train/cat/a.png", "train/dog/a.png", "val/cat/a.png", "val/dog/a.png"] {
        sparse(&root.join(p), 100);
    }
    std::os::unix::fs::symlink("..", root.join("train/cat/loop")).unwrap();
    std::os::unix::fs::symlink("../cat", root.join("train/dog/catlink")).unwrap();
    run_capped(dir.path(), ["data", "--dataset", "imagefolder", "--data", "pets"], CAP_MIB).fails_with(&[
        "pets/train/cat/loop",
        "symbolic-link loop",
        "remove the link",
    ]);
    std::fs::remove_file(root.join("train/cat/loop")).unwrap();
    run_capped(dir.path(), ["data", "--dataset", "imagefolder", "--data", "pets"], CAP_MIB).fails_with(&[
        "pets/train/dog/catlink",
        "already listed",
        "twice",
    ]);
}

#[cfg(unix)]
#[test]
fn a_sparse_3gb_jpg_is_refused_without_reading_it() {
    let dir = scratch();
    sparse(&dir.path().join("pets/train/cat/x.jpg"), 3 << 30);
    sparse(&dir.path().join("pets/val/cat/y.jpg"), 3 << 30);
    run_capped(dir.path(), ["data", "--dataset", "imagefolder", "--data", "pets"], CAP_MIB).fails_with(&[
        "pets/train/cat/x.jpg",
        "not an image",
        "00 00 00 00",
    ]);
}

#[cfg(unix)]
#[test]
fn predict_on_dev_zero_is_refused_from_its_first_bytes() {
    let dir = scratch();
    run(
        dir.path(),
        [
            "train",
            "--iterations",
            "1",
            "--synthetic-train",
            "8",
            "--synthetic-test",
            "4",
            "--batch-size",
            "4",
            "--model",
            "cifar-resnet8",
            "--out",
            "run",
            "--quiet",
        ],
    )
    .ok();
    run_capped(dir.path(), ["predict", "--checkpoint", "run/checkpoints/last.safetensors", "/dev/zero"], CAP_MIB)
        .fails_with(&["/dev/zero", "not an image"]);
}

#[test]
fn download_stops_at_the_published_size() {
    // MNIST's first file is published at 9912422 bytes; this server sends a megabyte more.
    let dir = scratch();
    let mut c = command(dir.path());
    c.args(["download", "mnist", "--data", "d"])
        .env("RESNET_DOWNLOAD_BASE", serve_stream(Body::Unannounced(9_912_422 + (1 << 20))));
    run_command(c).fails_with(&["train-images-idx3-ubyte.gz", "too large", "more than the 9912422 bytes"]);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("d/mnist")).unwrap().collect();
    assert!(left.is_empty(), "nothing is kept: {left:?}");
}

#[test]
fn download_of_an_endless_stream_ends() {
    let dir = scratch();
    let mut c = command(dir.path());
    c.args(["download", "mnist", "--data", "d"]).env("RESNET_DOWNLOAD_BASE", serve_stream(Body::Endless));
    run_command(c).fails_with(&["too large", "9912422"]);
}

#[test]
fn download_says_when_an_address_is_plain_http() {
    // Nothing listens on this port: the connection is refused at once, as offline.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = scratch();
    let mut c = command(dir.path());
    c.args(["download", "fashion-mnist", "--data", "d"])
        .env("RESNET_DOWNLOAD_BASE", format!("http://127.0.0.1:{port}"));
    run_command(c).fails_with(&["plain HTTP", "checked against its published md5 and size", "download failed"]);
}
