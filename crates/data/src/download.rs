//! `resnet download`: the public datasets from their official addresses, each file verified with
//! the md5 its authors publish, written to a temporary file and renamed only once verified
//! ([`crate::fetch_published`]).

use crate::fetch::{base_from_env, fetch_unless_present, Published, PublishedHash};
use crate::DataError;
use std::path::{Path, PathBuf};

/// One file of a dataset, its published md5 and its size in bytes.
struct Resource {
    file: &'static str,
    md5: &'static str,
    bytes: u64,
}

/// A downloadable dataset.
struct Source {
    name: &'static str,
    /// Base addresses, tried in order. An `http://` address is used only where the publisher
    /// offers no `https://` one: the md5 checked before a file is kept protects its integrity,
    /// not the connection.
    bases: &'static [&'static str],
    files: &'static [Resource],
    /// Sub-folder of the download folder (MNIST and Fashion-MNIST share file names).
    subdir: Option<&'static str>,
}

const SOURCES: [Source; 4] = [
    // md5s from the CIFAR page (https://www.cs.toronto.edu/~kriz/cifar.html).
    Source {
        name: "cifar10",
        bases: &["https://www.cs.toronto.edu/~kriz/"],
        files: &[Resource {
            file: "cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            bytes: 170_052_171,
        }],
        subdir: None,
    },
    Source {
        name: "cifar100",
        bases: &["https://www.cs.toronto.edu/~kriz/"],
        files: &[Resource {
            file: "cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            bytes: 168_513_733,
        }],
        subdir: None,
    },
    // LeCun's page publishes no checksums; these are the md5s torchvision verifies against (the
    // same files, mirrored by PyTorch, which is tried when the original address refuses).
    Source {
        name: "mnist",
        bases: &["https://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        files: &[
            Resource { file: "train-images-idx3-ubyte.gz", md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873", bytes: 9_912_422 },
            Resource { file: "train-labels-idx1-ubyte.gz", md5: "d53e105ee54ea40749a09fcbcd1e9432", bytes: 28_881 },
            Resource { file: "t10k-images-idx3-ubyte.gz", md5: "9fb629c4189551a2d022fa330f9573f3", bytes: 1_648_877 },
            Resource { file: "t10k-labels-idx1-ubyte.gz", md5: "ec29112dd5afa0611ce80d1b7f02629c", bytes: 4_542 },
        ],
        subdir: Some("mnist"),
    },
    // md5s from the Fashion-MNIST README (github.com/zalandoresearch/fashion-mnist). Its
    // publisher serves the files over plain http only (an S3 website address).
    Source {
        name: "fashion-mnist",
        bases: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        files: &[
            Resource { file: "train-images-idx3-ubyte.gz", md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d", bytes: 26_421_880 },
            Resource { file: "train-labels-idx1-ubyte.gz", md5: "25c81989df183df01b3e8a0aad5dffbe", bytes: 29_515 },
            Resource { file: "t10k-images-idx3-ubyte.gz", md5: "bef4ecab320f06d8554ea6380940ec79", bytes: 4_422_102 },
            Resource { file: "t10k-labels-idx1-ubyte.gz", md5: "bb300cfdad3c16e7a12a480ee83cd310", bytes: 5_148 },
        ],
        subdir: Some("fashion-mnist"),
    },
];

/// Names [`download`] knows.
pub fn downloadable() -> Vec<&'static str> {
    SOURCES.iter().map(|s| s.name).collect()
}

/// The base addresses [`download`] tries for dataset `name`, in order (the value of
/// [`DOWNLOAD_BASE_ENV`](crate::DOWNLOAD_BASE_ENV) when it is set); empty for an unknown name. An
/// `http://` address among them is plain HTTP: each file is still checked against its published
/// md5 and size before it is kept.
pub fn download_addresses(name: &str) -> Vec<String> {
    match base_from_env() {
        Some(b) if SOURCES.iter().any(|s| s.name == name) => vec![b],
        _ => SOURCES
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.bases.iter().map(|b| b.to_string()).collect())
            .unwrap_or_default(),
    }
}

/// Downloads dataset `name` (`cifar10`, `cifar100`, `mnist`, `fashion-mnist`) into `dir` and
/// returns the path to pass to [`crate::open`]: the CIFAR archive (read without extracting it),
/// or the folder of the four IDX files (`dir/mnist`, `dir/fashion-mnist`). Files already there
/// with the right md5 are kept. Each transfer is stopped as soon as it passes the file's
/// published size. `progress` gets the bytes of the current file so far and its
/// length when the server says it. The base address can be replaced by setting
/// [`DOWNLOAD_BASE_ENV`](crate::DOWNLOAD_BASE_ENV).
///
/// # Errors
/// [`DataError::Download`] (no network, HTTP error) with where to put the files by hand,
/// [`DataError::Checksum`] for a file that arrived different from the published one,
/// [`DataError::TooLarge`] for a transfer larger than the published file,
/// [`DataError::Io`] when `dir` cannot be written.
pub fn download(name: &str, dir: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf, DataError> {
    download_from(name, dir, base_from_env().as_deref(), progress)
}

/// [`download`] from `base` (`None`: the official addresses) instead of reading
/// [`DOWNLOAD_BASE_ENV`](crate::DOWNLOAD_BASE_ENV).
///
/// # Errors
/// As [`download`], and [`DataError::Config`] for an unknown name.
pub fn download_from(
    name: &str,
    dir: &Path,
    base: Option<&str>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf, DataError> {
    let src = SOURCES.iter().find(|s| s.name == name).ok_or_else(|| {
        DataError::config(
            format!("download {name}"),
            format!("unknown dataset; choose one of {}", downloadable().join(", ")),
        )
    })?;
    let target = src.subdir.map_or_else(|| dir.to_path_buf(), |s| dir.join(s));
    std::fs::create_dir_all(&target).map_err(|e| DataError::io(&target, e))?;
    let bases: Vec<String> = match base {
        Some(b) => vec![b.to_string()],
        None => src.bases.iter().map(|b| b.to_string()).collect(),
    };
    for r in src.files {
        let expected = Published { hash: PublishedHash::Md5(r.md5), max_bytes: r.bytes };
        match fetch_unless_present(&bases, &target.join(r.file), &expected, progress) {
            Ok(_) => {}
            Err(DataError::Download { url, reason, .. }) => {
                let hint = format!(
                    "Offline? Put {} (from {url}, md5 {}) into {} by hand and run `resnet data --dataset {name} --data {}`",
                    r.file,
                    r.md5,
                    target.display(),
                    dir.display()
                );
                return Err(DataError::Download { url, reason, hint });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(match src.subdir {
        Some(_) => target,
        None => target.join(src.files[0].file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DOWNLOAD_BASE_ENV;

    #[test]
    fn every_file_has_a_size_and_plain_http_is_named() {
        for s in &SOURCES {
            assert!(s.files.iter().all(|r| r.bytes > 0 && r.md5.len() == 32), "{}", s.name);
            // Only Fashion-MNIST's publisher has no HTTPS address; `resnet download` says so.
            let plain = s.bases.iter().any(|b| b.starts_with("http://"));
            assert_eq!(plain, s.name == "fashion-mnist", "{}", s.name);
        }
        if std::env::var_os(DOWNLOAD_BASE_ENV).is_none() {
            assert!(download_addresses("fashion-mnist")[0].starts_with("http://"));
            assert!(download_addresses("cifar10")[0].starts_with("https://"));
        }
        assert!(download_addresses("imagenet").is_empty());
    }
}
