//! Files are checked before they are read: a huge image file, an oversized CIFAR batch file or
//! archive member, a huge IDX file are refused with an error after a bounded amount of memory.
//! Memory is measured by a counting allocator (so this test has its own binary); the large files
//! are sparse (`File::set_len`) and take no disk space.

use resnet_data::{open, read_image, DataError, DatasetKind, OpenOptions, MAX_IMAGE_FILE_BYTES};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::Write;
use std::path::Path;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What any of these checks may allocate: headers, paths and messages, far below the files.
const BOUND: usize = 8 << 20;

/// Runs `f` and returns its result and the bytes allocated meanwhile (by every thread: the
/// bound is loose enough for the other tests of this binary running beside it).
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let r = f();
    (r, region.change().bytes_allocated)
}

/// A sparse file of `len` bytes starting with `head`.
fn sparse(path: &Path, head: &[u8], len: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head).unwrap();
    f.set_len(len).unwrap();
}

fn png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])).save(path).unwrap();
}

fn image_folder_with(root: &Path, name: &str, head: &[u8], len: u64) {
    png(&root.join("train/cat/a.png"));
    png(&root.join("val/cat/a.png"));
    sparse(&root.join("train/cat").join(name), head, len);
}

fn open_in_memory(kind: DatasetKind, path: &Path) -> Result<resnet_data::Splits, DataError> {
    open(kind, Some(path), &OpenOptions { in_memory: Some(true), ..Default::default() })
}

#[test]
fn a_huge_file_named_jpg_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    // Zeros: not an image, told from the first bytes.
    image_folder_with(tmp.path(), "x.jpg", &[], 1 << 30);
    let (r, bytes) = allocated_by(|| open_in_memory(DatasetKind::ImageFolder, tmp.path()));
    let e = r.err().expect("a 1 GiB file of zeros is not an image").to_string();
    assert!(e.contains("x.jpg") && e.contains("not an image"), "{e}");
    assert!(bytes < BOUND, "allocated {bytes} bytes to refuse it");

    // A JPEG signature, then more than the per-image limit: refused by its size.
    let tmp = tempfile::tempdir().unwrap();
    image_folder_with(
        tmp.path(),
        "big.jpg",
        &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F'],
        MAX_IMAGE_FILE_BYTES + 1,
    );
    let (r, bytes) = allocated_by(|| open_in_memory(DatasetKind::ImageFolder, tmp.path()));
    let e = r.err().expect("an image over the limit").to_string();
    assert!(e.contains("big.jpg") && e.contains("too large") && e.contains(&MAX_IMAGE_FILE_BYTES.to_string()), "{e}");
    assert!(bytes < BOUND, "allocated {bytes} bytes to refuse it");

    let (r, bytes) = allocated_by(|| read_image(&tmp.path().join("train/cat/big.jpg"), 3));
    assert!(matches!(r, Err(DataError::TooLarge { .. })), "{r:?}");
    assert!(bytes < BOUND, "read_image allocated {bytes} bytes to refuse it");
}

#[cfg(unix)]
#[test]
fn a_device_given_as_an_image_is_refused_from_its_first_bytes() {
    let (r, bytes) = allocated_by(|| read_image(Path::new("/dev/zero"), 3));
    let e = r.expect_err("/dev/zero is not an image").to_string();
    assert!(e.contains("/dev/zero") && e.contains("not an image"), "{e}");
    assert!(bytes < BOUND, "allocated {bytes} bytes to refuse it");
}

#[test]
fn a_cifar_batch_file_larger_than_the_official_one_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 11000 records of label 0: a whole number of valid records, but more than a batch holds.
    sparse(&dir.join("data_batch_1.bin"), &[], 11_000 * 3073);
    for name in ["data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        sparse(&dir.join(name), &[], 3073);
    }
    let (r, bytes) = allocated_by(|| open_in_memory(DatasetKind::Cifar10, dir));
    let e = r.err().expect("an oversized batch file").to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("too large") && e.contains("10000 records"), "{e}");
    assert!(bytes < BOUND, "allocated {bytes} bytes to refuse it");
}

/// A `.tar.gz` whose `cifar-10-batches-bin/data_batch_1.bin` header claims `claimed` bytes while
/// only a few follow: a reader that trusts the header would reserve or read that much.
fn archive_claiming(claimed: u64) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_path("cifar-10-batches-bin/data_batch_1.bin").unwrap();
    h.set_size(claimed);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, &[0u8; 3073][..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_tar_member_larger_than_the_official_file_is_refused_by_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, archive_claiming(3 << 30)).unwrap();
    let (r, bytes) = allocated_by(|| open_in_memory(DatasetKind::Cifar10, &path));
    let e = r.err().expect("a member over the official size").to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("too large") && e.contains(&(3u64 << 30).to_string()), "{e}");
    assert!(e.contains("10000 records"), "{e}");
    assert!(bytes < BOUND, "allocated {bytes} bytes to refuse it");
}

#[test]
fn an_idx_file_is_checked_from_its_header_not_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Zeros: data type 0x00 at offset 2 is refused after 4 bytes.
    sparse(&dir.join("train-images-idx3-ubyte"), &[], 1 << 30);
    sparse(&dir.join("train-labels-idx1-ubyte"), &[0, 0, 8, 1, 0, 0, 0, 0], 8);
    sparse(&dir.join("t10k-images-idx3-ubyte"), &[0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], 16);
    sparse(&dir.join("t10k-labels-idx1-ubyte"), &[0, 0, 8, 1, 0, 0, 0, 0], 8);
    let (r, bytes) = allocated_by(|| open_in_memory(DatasetKind::Mnist, dir));
    let e = r.err().expect("a file of zeros is not IDX").to_string();
    assert!(e.contains("train-images-idx3-ubyte") && e.contains("data type 0x00"), "{e}");
    assert!(bytes < BOUND, "allocated {bytes} bytes to refuse it");
}
