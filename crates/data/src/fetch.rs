//! One verified HTTP transfer, shared by the dataset and the pretrained-weight downloads: the
//! bytes go to a temporary file that is renamed only once its size and published hash (md5 or a
//! sha256 prefix) are checked.

use crate::DataError;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Environment variable that replaces every base address (for mirrors and for tests): files are
/// fetched from `$RESNET_DOWNLOAD_BASE/<file name>`.
pub const DOWNLOAD_BASE_ENV: &str = "RESNET_DOWNLOAD_BASE";

/// The most bytes [`fetch_verified`] accepts from one address: a transfer that goes on past this
/// is stopped and discarded, so an endless or oversized response cannot fill the disk.
/// [`crate::download`] and [`crate::download_weights`] use each file's published size instead.
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// The shortest sha256 prefix accepted as a published hash: torchvision's file names carry 8 hex
/// digits, and fewer would let a wrong file through too easily.
pub const MIN_SHA256_PREFIX: usize = 8;

/// The checksum a publisher gives for a file, lower-case hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishedHash<'a> {
    /// The whole md5 (32 hex digits), as the datasets' publishers give it.
    Md5(&'a str),
    /// The leading hex digits of the sha256, [`MIN_SHA256_PREFIX`] to 64 of them: torchvision's
    /// file names end in the first 8, which `torch.hub` checks; all 64 check the whole digest.
    Sha256Prefix(&'a str),
}

impl PublishedHash<'_> {
    /// `md5` or `sha256`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            PublishedHash::Md5(_) => "md5",
            PublishedHash::Sha256Prefix(_) => "sha256",
        }
    }

    /// The published hex digits.
    pub fn hex(&self) -> &str {
        match self {
            PublishedHash::Md5(h) | PublishedHash::Sha256Prefix(h) => h,
        }
    }

    /// Whether `actual`, the whole digest of a file in lower-case hex, is the published one.
    pub fn is_met_by(&self, actual: &str) -> bool {
        match self {
            PublishedHash::Md5(h) => actual == *h,
            PublishedHash::Sha256Prefix(h) => actual.starts_with(h),
        }
    }

    /// A prefix too short to mean anything, or not lower-case hex, is a mistake in the caller's
    /// table, not in the download.
    fn assert_well_formed(&self) {
        let h = self.hex();
        let lower_hex = h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let len_ok = match self {
            PublishedHash::Md5(_) => h.len() == 32,
            PublishedHash::Sha256Prefix(_) => (MIN_SHA256_PREFIX..=64).contains(&h.len()),
        };
        assert!(lower_hex && len_ok, "published {} {h:?} is not a valid lower-case hex digest", self.algorithm());
    }
}

/// What a file to fetch must be: the hash it must have and the most bytes it may have.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The published hash.
    pub hash: PublishedHash<'a>,
    /// The size past which the transfer is stopped and discarded (the published size of the file,
    /// or [`MAX_DOWNLOAD_BYTES`]).
    pub max_bytes: u64,
}

/// The digest being computed, of the kind a [`PublishedHash`] names.
enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn for_hash(hash: &PublishedHash<'_>) -> Hasher {
        match hash {
            PublishedHash::Md5(_) => Hasher::Md5(Md5::new()),
            PublishedHash::Sha256Prefix(_) => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    fn finish_hex(self) -> String {
        let digest = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The base address set by [`DOWNLOAD_BASE_ENV`], if any.
pub(crate) fn base_from_env() -> Option<String> {
    std::env::var(DOWNLOAD_BASE_ENV).ok().filter(|b| !b.is_empty())
}

/// Whether `path` is a file whose digest is the published `hash`.
///
/// # Errors
/// [`DataError::Io`] when the file is there but cannot be read.
pub(crate) fn file_has_hash(path: &Path, hash: &PublishedHash<'_>) -> Result<bool, DataError> {
    if !path.is_file() {
        return Ok(false);
    }
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Hasher::for_hash(hash);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hash.is_met_by(&h.finish_hex()))
}

/// What [`fetch_unless_present`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The file was already there with the published hash; nothing was downloaded.
    AlreadyPresent,
    /// The file was downloaded and verified; nothing was there before.
    Downloaded,
    /// A file of that name with another hash was there; the verified download replaced it.
    Replaced,
}

/// Puts the file `expected` describes at `dest`: kept if it is already there with the published
/// hash, else fetched from `<base>/<file name>` for each of `bases` in turn until one answers.
/// `progress` gets the bytes so far and the length when the server says it (for a file already
/// there, its length once).
///
/// # Errors
/// The [`DataError::Download`] of the last base when none answers (another base may answer; a
/// wrong checksum or a local disk error will not get better elsewhere, and is returned at once),
/// and the errors of [`fetch_published`].
pub(crate) fn fetch_unless_present(
    bases: &[String],
    dest: &Path,
    expected: &Published<'_>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched, DataError> {
    let present = dest.is_file();
    if present && file_has_hash(dest, &expected.hash)? {
        let len = std::fs::metadata(dest).map_err(|e| DataError::io(dest, e))?.len();
        progress(len, Some(len));
        return Ok(Fetched::AlreadyPresent);
    }
    let file = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut last = None;
    for b in bases {
        let url = format!("{}/{file}", b.trim_end_matches('/'));
        match fetch_published(&url, dest, expected, progress) {
            Ok(()) => return Ok(if present { Fetched::Replaced } else { Fetched::Downloaded }),
            Err(e @ DataError::Download { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| DataError::config(format!("download {file}"), "no address to download from")))
}

/// Fetches `url` into `dest` if its md5 is `md5`, accepting at most [`MAX_DOWNLOAD_BYTES`]:
/// [`fetch_published`] with that limit.
///
/// # Errors
/// As [`fetch_published`].
///
/// # Panics
/// If `md5` is not 32 lower-case hex digits.
pub fn fetch_verified(
    url: &str,
    dest: &Path,
    md5: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), DataError> {
    fetch_published(url, dest, &Published { hash: PublishedHash::Md5(md5), max_bytes: MAX_DOWNLOAD_BYTES }, progress)
}

/// Fetches `url` into `dest` if it is the file `expected` describes: the bytes go to a hidden
/// temporary file beside `dest`, which is renamed to `dest` only once its hash is verified (and
/// removed otherwise), so `dest` never holds a partial or wrong file. A response that announces
/// more than `expected.max_bytes` is refused before its body is read, and one that sends more is
/// stopped there.
///
/// # Errors
/// [`DataError::Download`] (its hint says where to put the file by hand),
/// [`DataError::TooLarge`], [`DataError::Checksum`], [`DataError::Io`].
///
/// # Panics
/// If the published hash is malformed: an md5 that is not 32 lower-case hex digits, a sha256
/// prefix shorter than [`MIN_SHA256_PREFIX`] or longer than 64.
pub fn fetch_published(
    url: &str,
    dest: &Path,
    expected: &Published<'_>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), DataError> {
    expected.hash.assert_well_formed();
    let (hash, max) = (expected.hash, expected.max_bytes);
    let too_large = |reason: String| DataError::TooLarge { file: url.to_string(), reason };
    let hint = || format!("Offline? Put the file ({} {}) at {} by hand", hash.algorithm(), hash.hex(), dest.display());
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
        let mut h = Hasher::for_hash(&hash);
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
        let actual = h.finish_hex();
        if !hash.is_met_by(&actual) {
            return Err(DataError::Checksum {
                url: url.to_string(),
                path: dest.to_path_buf(),
                algorithm: hash.algorithm(),
                expected: hash.hex().to_string(),
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
    fn a_sha256_prefix_is_met_by_digests_that_start_with_it() {
        let p = PublishedHash::Sha256Prefix("f37072fd");
        assert!(p.is_met_by("f37072fd0000000000000000000000000000000000000000000000000000abcd"));
        assert!(!p.is_met_by("f37072fe0000000000000000000000000000000000000000000000000000abcd"));
        let m = PublishedHash::Md5("c32a1d4ab5d03f1284b67883e8d87530");
        assert!(m.is_met_by("c32a1d4ab5d03f1284b67883e8d87530"));
        assert!(!m.is_met_by("c32a1d4ab5d03f1284b67883e8d8753"), "an md5 must match whole");
        assert_eq!((p.algorithm(), m.algorithm()), ("sha256", "md5"));
    }

    #[test]
    fn digests_are_the_standard_ones() {
        let mut s = Hasher::for_hash(&PublishedHash::Sha256Prefix("00000000"));
        s.update(b"abc");
        assert_eq!(s.finish_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut m = Hasher::for_hash(&PublishedHash::Md5("00000000000000000000000000000000"));
        m.update(b"abc");
        assert_eq!(m.finish_hex(), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    #[should_panic(expected = "not a valid lower-case hex digest")]
    fn an_empty_sha256_prefix_is_a_caller_mistake() {
        // An empty prefix would accept every file.
        PublishedHash::Sha256Prefix("").assert_well_formed();
    }

    #[test]
    #[should_panic(expected = "not a valid lower-case hex digest")]
    fn an_upper_case_md5_is_a_caller_mistake() {
        PublishedHash::Md5("C32A1D4AB5D03F1284B67883E8D87530").assert_well_formed();
    }
}
