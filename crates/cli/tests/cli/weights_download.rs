//! `resnet download weights NETWORK`: the command line it accepts and refuses, and a download
//! from a server on 127.0.0.1 that serves a file other than torchvision's (the files themselves
//! are too large, and this machine has no internet; `resnet-data`'s tests download a verified one).

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
