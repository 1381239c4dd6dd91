//! The real HTTP path of `download`, against a server on 127.0.0.1 that this test starts and
//! that serves a generated archive. No other address is contacted.

use crate::common::*;
use crate::stream_server::{serve_files, serve_stream, Body};
use resnet_data::{download, download_from, fetch_verified, open, DataError, DatasetKind, OpenOptions, PublishedHash};
use std::net::TcpListener;

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn cifar_archive() -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> =
        (1..=5).map(|b| (format!("data_batch_{b}.bin"), cifar10_file(&[b, 0]))).collect();
    files.push(("test_batch.bin".into(), cifar10_file(&[7])));
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    tar_gz("cifar-10-batches-bin", &refs)
}

pub fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn verified_fetch_writes_the_file_and_it_opens() {
    let archive = cifar_archive();
    let base = serve_files(vec![("/cifar-10-binary.tar.gz".into(), archive.clone())], 1);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cifar-10-binary.tar.gz");
    let mut last = (0, None);
    fetch_verified(&format!("{base}/cifar-10-binary.tar.gz"), &dest, &md5_hex(&archive), &mut |d, t| last = (d, t))
        .unwrap();
    assert_eq!(last, (archive.len() as u64, Some(archive.len() as u64)));
    assert_eq!(std::fs::read(&dest).unwrap(), archive);
    assert_eq!(leftovers(tmp.path()), vec!["cifar-10-binary.tar.gz"], "no temporary file left");
    let s = open(DatasetKind::Cifar10, Some(tmp.path()), &OpenOptions::default()).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (10, 1));
}

#[test]
fn a_file_that_does_not_match_the_published_md5_is_discarded() {
    let base = serve_files(vec![("/cifar-10-binary.tar.gz".into(), cifar_archive())], 1);
    let tmp = tempfile::tempdir().unwrap();
    let e = download_from("cifar10", tmp.path(), Some(&base), &mut |_, _| {}).unwrap_err();
    match &e {
        DataError::Checksum { expected, actual, .. } => {
            assert_eq!(expected, "c32a1d4ab5d03f1284b67883e8d87530", "CIFAR-10's published md5");
            assert_eq!(actual, &md5_hex(&cifar_archive()));
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(e.to_string().contains(&base), "{e}");
    assert!(leftovers(tmp.path()).is_empty(), "neither the file nor its temporary copy is kept");
}

#[test]
fn base_address_from_the_environment_and_missing_files() {
    // The variable is set only in a child process running this same test, so that no other
    // test thread ever sees it (setting the environment of a threaded process is racy).
    const CHILD: &str = "RESNET_DATA_DOWNLOAD_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let base = serve_files(vec![], 1);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["download::base_address_from_the_environment_and_missing_files", "--exact", "--nocapture"])
            .env(CHILD, "1")
            .env(resnet_data::DOWNLOAD_BASE_ENV, &base)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("child checked the download error"), "the child did not run the check: {stdout}");
        return;
    }
    let base = std::env::var(resnet_data::DOWNLOAD_BASE_ENV).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let e = download("fashion-mnist", tmp.path(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains(&format!("{base}/train-images-idx3-ubyte.gz")) && e.contains("404"), "{e}");
    assert!(e.contains("by hand") && e.contains("fashion-mnist"), "{e}");
    assert!(leftovers(&tmp.path().join("fashion-mnist")).is_empty());
    println!("child checked the download error");
}

#[test]
fn offline_fails_fast_saying_where_to_put_the_files() {
    // Nothing listens on this port: the connection is refused at once, as offline.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let e = download_from("mnist", tmp.path(), Some(&format!("http://127.0.0.1:{port}")), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    let target = tmp.path().join("mnist");
    assert!(e.contains("download failed"), "{e}");
    assert!(e.contains("train-images-idx3-ubyte.gz") && e.contains("f68b3c2dcbeaaa9fbdd348bbdeb94873"), "{e}");
    assert!(e.contains(&target.display().to_string()) && e.contains("by hand"), "{e}");
    let e = download_from("imagenet", tmp.path(), None, &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("cifar10, cifar100, mnist, fashion-mnist"), "{e}");
}

/// MNIST's first file and its published size.
const MNIST_FIRST: &str = "train-images-idx3-ubyte.gz";
const MNIST_FIRST_BYTES: u64 = 9_912_422;

/// Downloads MNIST from a server that sends `body`, asserts that it is refused as too large and
/// that nothing is kept, and returns the message and the most bytes the progress callback saw.
fn mnist_refused_as_too_large(body: Body) -> (String, u64) {
    let base = serve_stream(body);
    let tmp = tempfile::tempdir().unwrap();
    let mut most = 0;
    let e = download_from("mnist", tmp.path(), Some(&base), &mut |done, _| most = most.max(done))
        .expect_err("a response larger than the published file");
    let m = e.to_string();
    assert!(matches!(e, DataError::TooLarge { .. }), "{m}");
    assert!(leftovers(&tmp.path().join("mnist")).is_empty(), "neither the file nor its temporary copy is kept");
    (m, most)
}

#[test]
fn a_response_announcing_more_than_the_published_size_is_refused_before_its_body() {
    let (m, most) = mnist_refused_as_too_large(Body::Announced(MNIST_FIRST_BYTES + (1 << 20)));
    assert!(m.contains(MNIST_FIRST) && m.contains(&MNIST_FIRST_BYTES.to_string()) && m.contains("announces"), "{m}");
    assert_eq!(most, 0, "no byte of the body was taken");
}

#[test]
fn a_transfer_past_the_published_size_is_stopped_there_and_discarded() {
    let (m, most) = mnist_refused_as_too_large(Body::Unannounced(MNIST_FIRST_BYTES + (1 << 20)));
    assert!(m.contains(MNIST_FIRST) && m.contains(&format!("more than the {MNIST_FIRST_BYTES} bytes")), "{m}");
    assert!(most <= MNIST_FIRST_BYTES, "{most} bytes were written, past the published size");
}

#[test]
fn an_endless_response_ends_at_the_published_size() {
    let (_, most) = mnist_refused_as_too_large(Body::Endless);
    assert!(most <= MNIST_FIRST_BYTES, "{most} bytes were written, past the published size");
}

#[test]
fn fetch_published_takes_any_limit() {
    let base = serve_stream(Body::Unannounced(5000));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("f.bin");
    let expected = resnet_data::Published { hash: PublishedHash::Md5(&md5_hex(&[0u8; 5000])), max_bytes: 4999 };
    let e = resnet_data::fetch_published(&format!("{base}/f.bin"), &dest, &expected, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("more than the 4999 bytes"), "{e}");
    assert!(leftovers(tmp.path()).is_empty());
    let base = serve_stream(Body::Unannounced(5000));
    let expected = resnet_data::Published { max_bytes: 5000, ..expected };
    resnet_data::fetch_published(&format!("{base}/f.bin"), &dest, &expected, &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), vec![0u8; 5000]);
}
