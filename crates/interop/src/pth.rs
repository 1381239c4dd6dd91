//! PyTorch `.pth` state-dict archives: the zip file `torch.save(model.state_dict(), path)`
//! writes (PyTorch >= 1.6), `<name>/data.pkl` describing the dict and one entry `<name>/data/<key>`
//! of raw little-endian elements per storage. The pickle goes through [`crate::pickle`], which
//! executes nothing.

use crate::fsutil;
use crate::pickle::{self, PickleError, TensorRef};
use crate::InteropError;
use resnet_models::NamedTensor;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

/// data.pkl of a ResNet-152 state dict is about 60 KB; anything near this is not a state dict.
const MAX_PICKLE: u64 = 64 << 20;

/// Reads a `torch.save` state-dict archive. Tensors come back in the dict's order, converted to
/// `F32` (from float, double, half, bfloat16 storages) or `I64` (long, int storages).
///
/// # Errors
/// [`InteropError::Read`]; [`InteropError::NotPthArchive`] for other zip files, legacy
/// (pre-1.6) files and big-endian archives; [`InteropError::ForbiddenGlobal`] and
/// [`InteropError::ForbiddenOpcode`] for pickles that would run code or build objects;
/// [`InteropError::BadPickle`], [`InteropError::NotAStateDict`], [`InteropError::BadTensor`],
/// [`InteropError::Truncated`].
pub fn read_pth(path: &Path) -> Result<Vec<NamedTensor>, InteropError> {
    let bytes = fsutil::read(path)?;
    parse_pth(&bytes, path)
}

/// [`read_pth`] on bytes already in memory; `path` only names them in errors.
///
/// # Errors
/// As [`read_pth`], less the I/O error.
pub(crate) fn parse_pth(bytes: &[u8], path: &Path) -> Result<Vec<NamedTensor>, InteropError> {
    let not = |reason: String| InteropError::NotPthArchive { path: path.to_path_buf(), reason };
    if bytes.starts_with(crate::LEGACY_TORCH_MAGIC) {
        return Err(not("a legacy (PyTorch < 1.6) pickle file; re-save it with a current torch.save".into()));
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| match e {
        zip::result::ZipError::InvalidArchive(_) if bytes.starts_with(b"PK\x03\x04") => InteropError::Truncated {
            path: path.to_path_buf(),
            detail: format!("the zip archive's directory is missing or damaged ({e})"),
        },
        e => not(format!("not a readable zip archive: {e}")),
    })?;
    // torch puts everything under one top-level folder, whatever its name.
    let pickles: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(|n| n.to_string())
        .collect();
    let [pkl_name] = pickles.as_slice() else {
        return Err(not(format!("expected one <name>/data.pkl entry, found {}", pickles.len())));
    };
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(order) = read_entry(&mut zip, bytes.len() as u64, &format!("{prefix}byteorder"), 16, path) {
        if order != b"little" {
            return Err(not(format!(
                "byte order '{}'; only little-endian archives are read",
                String::from_utf8_lossy(&order)
            )));
        }
    }
    let pkl = read_entry(&mut zip, bytes.len() as u64, pkl_name, MAX_PICKLE, path)?;
    let entries = pickle::load_state_dict(&pkl)
        .map_err(|e| match e {
            PickleError::Opcode { name, code, offset } => {
                InteropError::ForbiddenOpcode { path: path.to_path_buf(), name, code, offset }
            }
            PickleError::Global { module, name, offset } => {
                InteropError::ForbiddenGlobal { path: path.to_path_buf(), module, name, offset }
            }
            PickleError::Bad { offset, reason } => InteropError::BadPickle { path: path.to_path_buf(), offset, reason },
        })?
        .map_err(|reason| InteropError::NotAStateDict { path: path.to_path_buf(), reason })?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let bad = |reason: String| InteropError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            shape: t.shape.iter().map(|&d| d as usize).collect(),
            reason,
        };
        let size = t.storage.elem.size() as u64;
        let want = t.storage.numel.checked_mul(size).ok_or_else(|| bad("storage size overflows".into()))?;
        if !storages.contains_key(&t.storage.key) {
            let entry = format!("{prefix}data/{}", t.storage.key);
            let data = read_entry(&mut zip, bytes.len() as u64, &entry, want, path)?;
            if data.len() as u64 != want {
                return Err(InteropError::Truncated {
                    path: path.to_path_buf(),
                    detail: format!(
                        "storage {entry} holds {} bytes, {} elements of {:?} need {want}",
                        data.len(),
                        t.storage.numel,
                        t.storage.elem
                    ),
                });
            }
            storages.insert(t.storage.key.clone(), data);
        }
        let raw = gather(&t, &storages[&t.storage.key]).map_err(bad)?;
        out.push(NamedTensor {
            name: name.clone(),
            shape: t.shape.iter().map(|&d| d as usize).collect(),
            data: t.storage.elem.decode(&raw),
        });
    }
    Ok(out)
}

/// An entry's bytes, at most `limit` (more means the entry is not what it claims to be) and at
/// most the `archive`'s length.
fn read_entry(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    archive: u64,
    name: &str,
    limit: u64,
    path: &Path,
) -> Result<Vec<u8>, InteropError> {
    let not = |reason: String| InteropError::NotPthArchive { path: path.to_path_buf(), reason };
    let mut f = zip.by_name(name).map_err(|e| not(format!("entry {name}: {e}")))?;
    if f.size() > limit {
        return Err(not(format!("entry {name} is {} bytes, more than the {limit} expected", f.size())));
    }
    // torch.save stores entries uncompressed: an entry cannot hold more than the whole archive.
    if f.size() > archive || f.compressed_size() > archive {
        return Err(InteropError::Truncated {
            path: path.to_path_buf(),
            detail: format!("entry {name} claims {} bytes in an archive of {archive} bytes", f.size()),
        });
    }
    let mut out = Vec::with_capacity(f.size() as usize);
    f.by_ref().take(limit).read_to_end(&mut out).map_err(|e| InteropError::Truncated {
        path: path.to_path_buf(),
        detail: format!("entry {name} cannot be read completely ({e})"),
    })?;
    Ok(out)
}

/// The tensor's elements in row-major order, as raw bytes, from a storage of `elem` elements.
fn gather(t: &TensorRef, storage: &[u8]) -> Result<Vec<u8>, String> {
    let size = t.storage.elem.size();
    let numel = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or("the element count overflows")?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    // Every index the view can reach must lie in the storage; this bounds the output too.
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))
        .ok_or("the strides overflow")?;
    if last >= t.storage.numel || numel > t.storage.numel {
        return Err(format!(
            "offset {} and strides {:?} reach element {last} of a storage of {}",
            t.offset, t.stride, t.storage.numel
        ));
    }
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            ok &= d == 1 || s == expect;
            expect *= d;
        }
        ok
    };
    let start = t.offset as usize * size;
    if contiguous {
        return Ok(storage[start..start + numel as usize * size].to_vec());
    }
    let mut out = Vec::with_capacity(numel as usize * size);
    let mut index = vec![0u64; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        let at = at as usize * size;
        out.extend_from_slice(&storage[at..at + size]);
        for k in (0..index.len()).rev() {
            index[k] += 1;
            if index[k] < t.shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elem::Elem;
    use crate::pickle::StorageRef;

    #[test]
    fn strided_views_are_gathered_and_bounds_checked() {
        let storage: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let s = StorageRef { elem: Elem::F32, key: "0".into(), numel: 6 };
        // The transpose of a 2x3 matrix.
        let t = TensorRef { storage: s.clone(), offset: 0, shape: vec![3, 2], stride: vec![1, 3] };
        let raw = gather(&t, &storage).unwrap();
        assert_eq!(Elem::F32.decode(&raw), resnet_models::TensorData::F32(vec![0., 3., 1., 4., 2., 5.]));
        let t = TensorRef { storage: s.clone(), offset: 1, shape: vec![2, 3], stride: vec![3, 1] };
        assert!(gather(&t, &storage).unwrap_err().contains("reach element 6"));
        let t = TensorRef { storage: s, offset: 0, shape: vec![1 << 40], stride: vec![0] };
        assert!(gather(&t, &storage).is_err());
    }
}
