//! `download_weights` over real HTTP, against a server on 127.0.0.1 that this test starts and that
//! serves small generated files in place of torchvision's. No other address is contacted.

use crate::download::leftovers;
use crate::stream_server::{serve_files, serve_stream, Body};
use resnet_data::{download_weights_from, torchvision_weights, DataError, Fetched, TorchvisionWeights, WeightsVariant};
use sha2::Digest;
use std::net::TcpListener;

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A small stand-in for a weight file, and a table entry named, as torchvision names its files,
/// by the first 8 hex digits of its sha256.
fn stand_in() -> (Vec<u8>, TorchvisionWeights) {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file: &'static str = Box::leak(format!("resnet18-{}.pth", &sha256_hex(&body)[..8]).into_boxed_str());
    let weights = TorchvisionWeights { file, mib: 0.1, ..*torchvision_weights("resnet18", None).unwrap() };
    (body, weights)
}

/// An address where nothing listens: a connection is refused at once, as offline.
fn nowhere() -> String {
    format!("http://127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

#[test]
fn a_file_with_the_published_sha256_prefix_is_kept_and_not_fetched_again() {
    let (body, w) = stand_in();
    let base = serve_files(vec![(format!("/{}", w.file), body.clone())], 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("weights");
    let mut last = (0, None);
    let got = download_weights_from(&w, &dir, Some(&base), &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(got.path, dir.join(w.file));
    assert_eq!(got.fetched, Fetched::Downloaded);
    assert_eq!(std::fs::read(&got.path).unwrap(), body, "kept byte for byte, as published");
    assert_eq!(last, (body.len() as u64, Some(body.len() as u64)));
    assert_eq!(leftovers(&dir), vec![w.file.to_string()], "no temporary file left");
    // Nothing answers now: the file already there is verified and kept without a request.
    let again = download_weights_from(&w, &dir, Some(&nowhere()), &mut |_, _| {}).unwrap();
    assert_eq!((again.path, again.fetched), (got.path, Fetched::AlreadyPresent));
}

#[test]
fn a_file_whose_sha256_is_not_the_published_one_is_refused_and_nothing_is_left() {
    let (body, _) = stand_in();
    let real = torchvision_weights("resnet18", Some(WeightsVariant::V1)).unwrap();
    let base = serve_files(vec![(format!("/{}", real.file), body.clone())], 1);
    let tmp = tempfile::tempdir().unwrap();
    let e = download_weights_from(real, tmp.path(), Some(&base), &mut |_, _| {}).unwrap_err();
    let m = e.to_string();
    match &e {
        DataError::Checksum { algorithm, expected, actual, path, .. } => {
            assert_eq!((*algorithm, expected.as_str()), ("sha256", "f37072fd"), "torchvision's published prefix");
            assert_eq!(actual, &sha256_hex(&body));
            assert_eq!(path, &tmp.path().join("resnet18-f37072fd.pth"));
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(m.contains("resnet18-f37072fd.pth") && m.contains("f37072fd") && m.contains(&sha256_hex(&body)), "{m}");
    assert!(m.contains("does not start with the published"), "{m}");
    assert!(leftovers(tmp.path()).is_empty(), "neither the file nor its temporary copy is kept");
}

#[test]
fn a_file_of_that_name_with_another_hash_is_replaced_only_by_a_verified_download() {
    let (body, w) = stand_in();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join(w.file);
    std::fs::write(&dest, b"truncated").unwrap();
    // Offline: the wrong file stays as it was, and the error says where to put the right one.
    let m = download_weights_from(&w, tmp.path(), Some(&nowhere()), &mut |_, _| {}).unwrap_err().to_string();
    assert!(m.contains("download failed") && m.contains("by hand") && m.contains(w.sha256_prefix()), "{m}");
    assert!(m.contains(&tmp.path().display().to_string()) && m.contains(&w.url()), "{m}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"truncated");
    let base = serve_files(vec![(format!("/{}", w.file), body.clone())], 1);
    let got = download_weights_from(&w, tmp.path(), Some(&base), &mut |_, _| {}).unwrap();
    assert_eq!(got.fetched, Fetched::Replaced);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_transfer_past_the_published_size_is_stopped() {
    let w = torchvision_weights("resnet18", None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut most = 0;
    let e = download_weights_from(w, tmp.path(), Some(&serve_stream(Body::Endless)), &mut |d, _| most = most.max(d))
        .unwrap_err();
    assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains(&format!("more than the {} bytes", w.max_bytes())), "{e}");
    assert!(most <= w.max_bytes() && w.max_bytes() < 48_000_000, "{most} bytes were written");
    assert!(leftovers(tmp.path()).is_empty());
}
