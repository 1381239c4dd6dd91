//! `resnet download weights NETWORK`: the command line it accepts and refuses, and downloads from
//! a server on 127.0.0.1 serving small stand-ins for torchvision's files (the real ones are 45-230
//! MB, and tests reach no other address).

use crate::common::*;
use crate::stream_server::serve_files;
use std::net::TcpListener;

/// Asserts a usage error (exit 2, as clap's, with its pointer to `--help`) whose standard error
/// holds every one of `needles`, and that the download folder was not created.
#[track_caller]
fn usage_error(args: &[&str], needles: &[&str]) {
    let dir = scratch();
    let r = run(dir.path(), args).fails_with(needles);
    assert_eq!(r.code, Some(2), "a usage error exits 2:\n{}", r.stderr);
    assert!(r.stderr.contains("try '--help'"), "{}", r.stderr);
    assert!(!dir.path().join("d").exists(), "nothing is created for a refused command line");
}

#[test]
fn weights_need_a_network() {
    usage_error(&["download", "weights", "--data", "d"], &["required", "<NETWORK>"]);
}

#[test]
fn a_dataset_takes_no_network_nor_variant() {
    let usage = "Usage: resnet download [OPTIONS] <NAME> [NETWORK]";
    usage_error(
        &["download", "cifar10", "resnet18", "--data", "d"],
        &["'cifar10' takes no network", "resnet18", usage],
    );
    usage_error(
        &["download", "mnist", "--variant", "v1", "--data", "d"],
        &["--variant goes with 'weights'", "mnist", usage],
    );
}

#[test]
fn unknown_networks_and_unpublished_variants_are_refused() {
    usage_error(&["download", "weights", "resnet20", "--data", "d"], &["invalid value 'resnet20'", "resnet152"]);
    usage_error(
        &["download", "weights", "resnet18", "--variant", "v2", "--data", "d"],
        &["only v1 (IMAGENET1K_V1) for resnet18", "v2 exists for resnet50, resnet101, resnet152"],
    );
}

#[test]
fn a_file_that_is_not_torchvisions_is_refused_and_nothing_is_kept() {
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let base = serve_files(vec![("/resnet34-b627a593.pth".into(), body)], 1);
    let dir = scratch();
    let mut c = command(dir.path());
    c.args(["download", "weights", "resnet34", "--data", "d"]).env("RESNET_DOWNLOAD_BASE", &base);
    let r =
        run_command(c).fails_with(&["resnet34-b627a593.pth", "sha256", "does not start with the published b627a593"]);
    assert_eq!(r.code, Some(1));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("d")).unwrap().collect();
    assert!(left.is_empty(), "neither the file nor its temporary copy is kept: {left:?}");
}

#[test]
fn offline_says_where_to_put_the_file() {
    // Nothing listens on this port: the connection is refused at once, as offline.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = scratch();
    let mut c = command(dir.path());
    c.args(["download", "weights", "resnet50", "--variant", "v1", "--data", "d"])
        .env("RESNET_DOWNLOAD_BASE", format!("http://127.0.0.1:{port}"));
    run_command(c).fails_with(&[
        "download failed",
        "resnet50-0676ba61.pth",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "by hand",
    ]);
}

/// A 64-byte text whose sha256 starts with f37072fd, torchvision's published prefix for
/// ResNet-18, found by trying nonces (about 2^32 of them): an 8-digit prefix guards against
/// corruption, not against a forger, so the official addresses are HTTPS.
const STANDS_IN_FOR_RESNET18: &str = "resnet test fixture, not torchvision's weights: 000000009d292220";

#[test]
fn a_verified_file_is_kept_named_as_torchvision_names_it_and_not_fetched_twice() {
    let base = serve_files(vec![("/resnet18-f37072fd.pth".into(), STANDS_IN_FOR_RESNET18.into())], 1);
    let dir = scratch();
    let mut c = command(dir.path());
    c.args(["download", "weights", "resnet18", "--data", "d"]).env("RESNET_DOWNLOAD_BASE", &base);
    let r = run_command(c).ok();
    let f = "d/resnet18-f37072fd.pth";
    for needle in [
        "resnet18 IMAGENET1K_V1",
        "downloaded and verified (sha256 f37072fd...)",
        &format!("at {f}"),
        &format!("resnet predict --weights {f} image.jpg"),
        &format!("resnet train --init {f}"),
        &format!("resnet import --from torchvision {f} --out resnet18.safetensors"),
    ] {
        assert!(r.stdout.contains(needle), "stdout lacks {needle:?}:\n{}", r.stdout);
    }
    assert_eq!(std::fs::read_to_string(dir.path().join(f)).unwrap(), STANDS_IN_FOR_RESNET18, "kept as served");
    let names: Vec<_> = std::fs::read_dir(dir.path().join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["resnet18-f37072fd.pth"], "no temporary file left");
    // Nothing listens there now: the file already in place is verified and kept.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = command(dir.path());
    c.args(["download", "weights", "resnet18", "--data", "d"])
        .env("RESNET_DOWNLOAD_BASE", format!("http://127.0.0.1:{port}"));
    let r = run_command(c).ok();
    assert!(r.stdout.contains("already there, verified; not downloaded again"), "{}", r.stdout);
}
