//! `resnet download`: the public datasets from their official addresses, each file verified with
//! the md5 its authors publish, written to a temporary file and renamed only once verified.

use crate::DataError;
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable that replaces every base address (for mirrors and for tests): files are
/// fetched from `$RESNET_DOWNLOAD_BASE/<file name>`.
pub const DOWNLOAD_BASE_ENV: &str = "RESNET_DOWNLOAD_BASE";

/// The most bytes [`fetch_verified`] accepts from one address: a transfer that goes on past this
/// is stopped and discarded, so an endless or oversized response cannot fill the disk.
/// [`download`] uses each file's published size instead.
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// One file of a dataset, its published md5 and its size in bytes.
struct Resource {
    file: &'static str,
    md5: &'static str,
    bytes: u64,
}

/// What a file to fetch must be: the md5 it must have and the most bytes it may have.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The published md5, lower-case hex.
    pub md5: &'a str,
    /// The size past which the transfer is stopped and discarded (the published size of the file,
    /// or [`MAX_DOWNLOAD_BYTES`]).
    pub max_bytes: u64,
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
/// [`DOWNLOAD_BASE_ENV`] when it is set); empty for an unknown name. An `http://` address among
/// them is plain HTTP: each file is still checked against its published md5 and size before it
/// is kept.
pub fn download_addresses(name: &str) -> Vec<String> {
    match std::env::var(DOWNLOAD_BASE_ENV).ok().filter(|b| !b.is_empty()) {
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
/// [`DOWNLOAD_BASE_ENV`].
///
/// # Errors
/// [`DataError::Download`] (no network, HTTP error) with where to put the files by hand,
/// [`DataError::Checksum`] for a file that arrived different from the published one,
/// [`DataError::TooLarge`] for a transfer larger than the published file,
/// [`DataError::Io`] when `dir` cannot be written.
pub fn download(name: &str, dir: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf, DataError> {
    let base = std::env::var(DOWNLOAD_BASE_ENV).ok().filter(|b| !b.is_empty());
    download_from(name, dir, base.as_deref(), progress)
}

/// [`download`] from `base` (`None`: the official addresses) instead of reading
/// [`DOWNLOAD_BASE_ENV`].
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
        let dest = target.join(r.file);
        if dest.is_file() && file_md5(&dest)? == r.md5 {
            let len = std::fs::metadata(&dest).map_err(|e| DataError::io(&dest, e))?.len();
            progress(len, Some(len));
            continue;
        }
        let mut last = None;
        for b in &bases {
            let url = format!("{}/{}", b.trim_end_matches('/'), r.file);
            match fetch_published(&url, &dest, &Published { md5: r.md5, max_bytes: r.bytes }, progress) {
                Ok(()) => {
                    last = None;
                    break;
                }
                // Another mirror may answer; a wrong checksum or a local disk error will not
                // get better elsewhere.
                Err(e @ DataError::Download { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(DataError::Download { url, reason, .. }) = last {
            let hint = format!(
                "Offline? Put {} (from {url}, md5 {}) into {} by hand and run `resnet data --dataset {name} --data {}`",
                r.file,
                r.md5,
                target.display(),
                dir.display()
            );
            return Err(DataError::Download { url, reason, hint });
        }
    }
    Ok(match src.subdir {
        Some(_) => target,
        None => target.join(src.files[0].file),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_md5(path: &Path) -> Result<String, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Fetches `url` into `dest` if its md5 is `md5`, accepting at most [`MAX_DOWNLOAD_BYTES`]:
/// [`fetch_published`] with that limit.
///
/// # Errors
/// As [`fetch_published`].
pub fn fetch_verified(
    url: &str,
    dest: &Path,
    md5: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), DataError> {
    fetch_published(url, dest, &Published { md5, max_bytes: MAX_DOWNLOAD_BYTES }, progress)
}

/// Fetches `url` into `dest` if it is the file `expected` describes: the bytes go to a hidden
/// temporary file beside `dest`, which is renamed to `dest` only once its md5 is verified (and
/// removed otherwise), so `dest` never holds a partial or wrong file. A response that announces
/// more than `expected.max_bytes` is refused before its body is read, and one that sends more is
/// stopped there.
///
/// # Errors
/// [`DataError::Download`] (its hint says where to put the file by hand),
/// [`DataError::TooLarge`], [`DataError::Checksum`], [`DataError::Io`].
pub fn fetch_published(
    url: &str,
    dest: &Path,
    expected: &Published<'_>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), DataError> {
    let (md5, max) = (expected.md5, expected.max_bytes);
    let too_large = |reason: String| DataError::TooLarge { file: url.to_string(), reason };
    let hint = || format!("Offline? Put the file (md5 {md5}) at {} by hand", dest.display());
    let fail = |reason: String| DataError::Download { url: url.to_string(), reason, hint: hint() };
    // Short connect and read timeouts make an offline machine fail in seconds, not minutes; the
    // transfer as a whole has no time limit (170 MB on a slow line is fine while bytes flow),
    // only a size limit.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(Duration::from_secs(15)))
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(t) = total.filter(|&t| t > max) {
        return Err(too_large(format!(
            "the server announces {t} bytes, more than the {max} bytes expected; nothing was downloaded"
        )));
    }
    let mut body = resp.into_body().into_reader();
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.part"));
    let result = (|| {
        let mut out = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let mut h = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        progress(0, total);
        loop {
            let n = body.read(&mut buf).map_err(|e| fail(format!("transfer interrupted after {done} bytes: {e}")))?;
            if n == 0 {
                break;
            }
            if done + n as u64 > max {
                return Err(too_large(format!(
                    "the server sent more than the {max} bytes expected; the download was stopped there and discarded"
                )));
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| DataError::io(&tmp, e))?;
            done += n as u64;
            progress(done, total);
        }
        out.sync_all().map_err(|e| DataError::io(&tmp, e))?;
        let actual = hex(&h.finalize());
        if actual != md5 {
            return Err(DataError::Checksum {
                url: url.to_string(),
                path: dest.to_path_buf(),
                expected: md5.to_string(),
                actual,
            });
        }
        std::fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover temporary file.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
