//! The real CIFAR-10 (JPEG copy from shared/datasets) opened as an ImageFolder. Skips, saying
//! so, when the copy is absent (under CI=true, which provides it, that is a failure).

use resnet_data::{inspect, open, DatasetKind, OpenOptions};
use std::path::{Path, PathBuf};

/// Where the copy is: `$RESNET_CIFAR10_JPG` when set (the extracted folder or the `.tar.gz`;
/// only there), else the extracted `../data/cifar10-jpg` beside the repository, else
/// `../shared/datasets/cifar10-jpg.tar.gz`.
fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RESNET_CIFAR10_JPG") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [repo.join("../data/cifar10-jpg"), repo.join("../shared/datasets/cifar10-jpg.tar.gz")]
        .into_iter()
        .find(|p| p.exists())
}

#[test]
fn cifar10_jpeg_copy_has_the_official_counts_classes_and_means() {
    let Some(found) = locate() else {
        resnet_kernels::skip::skip_unless_ci(
            "CIFAR-10 JPEG copy not found (set RESNET_CIFAR10_JPG, or put it at \
             ../shared/datasets/cifar10-jpg.tar.gz or ../data/cifar10-jpg)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = if found.is_file() {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&found).unwrap());
        tar::Archive::new(gz).unpack(tmp.path()).unwrap();
        tmp.path().join("cifar10-jpg")
    } else {
        found.clone()
    };
    println!("using {} ({})", found.display(), root.display());
    let splits = open(DatasetKind::ImageFolder, Some(&root), &OpenOptions::default()).unwrap();
    let info = inspect(&splits).unwrap();
    assert_eq!((info.train.count, info.test.count), (50_000, 10_000));
    let official = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    assert_eq!(info.classes, official);
    assert_eq!(info.per_class.train, vec![5_000; 10]);
    assert_eq!(info.per_class.test, vec![1_000; 10]);
    assert_eq!((info.image_size, info.channels), (Some([32, 32]), 3));
    // The official CIFAR-10 training means; JPEG quality 75 moves them by a fraction of a level.
    for (m, want) in info.mean.iter().zip([125.3, 123.0, 113.9]) {
        assert!((m - want).abs() < 1.0, "means {:?}", info.mean);
    }
    for (s, want) in info.std.iter().zip([63.0, 62.1, 66.7]) {
        assert!((s - want).abs() < 2.0, "stds {:?}", info.std);
    }
    println!("mean {:?} std {:?}", info.mean, info.std);
}
