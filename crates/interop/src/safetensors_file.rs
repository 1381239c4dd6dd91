//! torchvision state dicts as `safetensors.torch.save_file(model.state_dict(), path)` writes them:
//! one tensor per state-dict key, `F32` parameters and running statistics in torchvision's
//! layouts, `I64` scalars for `num_batches_tracked`.

use crate::elem::Elem;
use crate::fsutil;
use crate::InteropError;
use resnet_models::{NamedTensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensorError, TensorView};
use safetensors::SafeTensors;
use std::path::Path;

/// The safetensors crate refuses larger headers; so do we, before trusting a length.
const MAX_HEADER: u64 = 100_000_000;

/// Reads every tensor of a safetensors file, in file order. `F16`, `BF16` and `F64` tensors are
/// converted to `F32`; `I32` to `I64`.
///
/// # Errors
/// [`InteropError::Read`], [`InteropError::NotSafetensors`] (with what gave it away),
/// [`InteropError::Truncated`] (with how much is missing) or [`InteropError::UnsupportedDtype`].
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>, InteropError> {
    let bytes = fsutil::read(path)?;
    parse_safetensors(&bytes, path)
}

/// [`read_safetensors`] on bytes already in memory; `path` only names them in errors.
///
/// # Errors
/// As [`read_safetensors`], less the I/O error.
pub(crate) fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<Vec<NamedTensor>, InteropError> {
    check_framing(bytes, path)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| classify(e, bytes, path))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| classify(e, bytes, path))?;
    let mut out = Vec::with_capacity(st.len());
    for name in meta.offset_keys() {
        let view = st.tensor(&name).map_err(|e| classify(e, bytes, path))?;
        let elem = match view.dtype() {
            Dtype::F32 => Elem::F32,
            Dtype::F64 => Elem::F64,
            Dtype::F16 => Elem::F16,
            Dtype::BF16 => Elem::BF16,
            Dtype::I64 => Elem::I64,
            Dtype::I32 => Elem::I32,
            other => {
                return Err(InteropError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    tensor: name,
                    shape: view.shape().to_vec(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        out.push(NamedTensor { shape: view.shape().to_vec(), data: elem.decode(view.data()), name });
    }
    Ok(out)
}

/// Tells "not safetensors at all" from "a safetensors file cut short" before the parser runs,
/// since its errors do not separate the two.
fn check_framing(bytes: &[u8], path: &Path) -> Result<(), InteropError> {
    let not = |reason: String| Err(InteropError::NotSafetensors { path: path.to_path_buf(), reason });
    if bytes.len() < 8 {
        return not(format!("{} bytes; the format starts with an 8-byte header length", bytes.len()));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let starts_json = bytes.get(8) == Some(&b'{');
    if !(2..=MAX_HEADER).contains(&n) || (!starts_json && bytes.len() > 8) {
        return not(format!("the first 8 bytes {:02x?} are not the length of a JSON header", &bytes[..8]));
    }
    if 8 + n > bytes.len() as u64 {
        if starts_json || bytes.len() == 8 {
            return Err(InteropError::Truncated {
                path: path.to_path_buf(),
                detail: format!("the header is {n} bytes long but the file ends {} bytes into it", bytes.len() - 8),
            });
        }
        return not("no JSON header".into());
    }
    Ok(())
}

fn classify(e: SafeTensorError, bytes: &[u8], path: &Path) -> InteropError {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            let data = bytes.len() - 8 - header_len(bytes);
            match declared_data_len(bytes) {
                Some(want) if want > data => InteropError::Truncated {
                    path: path.to_path_buf(),
                    detail: format!("the header declares {want} bytes of tensor data but only {data} follow it"),
                },
                Some(want) => InteropError::NotSafetensors {
                    path: path.to_path_buf(),
                    reason: format!("{} bytes of trailing data after the {want} bytes of tensors", data - want),
                },
                None => InteropError::NotSafetensors { path: path.to_path_buf(), reason: e.to_string() },
            }
        }
        other => InteropError::NotSafetensors { path: path.to_path_buf(), reason: other.to_string() },
    }
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().expect("framing checked")) as usize
}

/// The end of the last tensor's data, from the raw header (the parser does not report it).
fn declared_data_len(bytes: &[u8]) -> Option<usize> {
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len(bytes)]).ok()?;
    header
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .map(|m| m as usize)
}

/// Serialises tensors as `safetensors.torch.save_file` does (`F32` and `I64`, no metadata), so
/// `model.load_state_dict(safetensors.torch.load_file(path))` takes the result.
pub(crate) fn safetensors_bytes(tensors: &[NamedTensor]) -> Vec<u8> {
    let raw: Vec<(&str, Dtype, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|t| match &t.data {
            TensorData::F32(v) => (t.name.as_str(), Dtype::F32, t.shape.as_slice(), le_bytes(v, f32::to_le_bytes)),
            TensorData::I64(v) => (t.name.as_str(), Dtype::I64, t.shape.as_slice(), le_bytes(v, i64::to_le_bytes)),
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = raw
        .iter()
        .map(|(n, d, s, b)| {
            let view = TensorView::new(*d, s.to_vec(), b)
                .unwrap_or_else(|e| panic!("tensor {n}: shape {s:?} does not match its data: {e}"));
            (*n, view)
        })
        .collect();
    safetensors::serialize(views, None).expect("tensors with consistent shapes serialise")
}

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Writes tensors in torchvision's safetensors layout, atomically.
///
/// # Errors
/// [`InteropError::Write`] naming the file; an existing file is left intact on failure.
///
/// # Panics
/// If a tensor's shape does not match its data length.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<(), InteropError> {
    fsutil::write_atomic(path, &safetensors_bytes(tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "fc.weight".into(),
                shape: vec![2, 3],
                data: TensorData::F32(vec![1., 2., 3., 4., 5., -0.]),
            },
            NamedTensor { name: "bn1.num_batches_tracked".into(), shape: vec![], data: TensorData::I64(vec![9]) },
        ]
    }

    #[test]
    fn bytes_round_trip() {
        let bytes = safetensors_bytes(&sample());
        let mut back = parse_safetensors(&bytes, Path::new("x")).unwrap();
        back.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = sample();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back, want);
    }

    #[test]
    fn truncation_and_garbage_are_told_apart() {
        let bytes = safetensors_bytes(&sample());
        let p = Path::new("w.safetensors");
        for cut in [bytes.len() - 1, 8 + header_len(&bytes), 20, 8] {
            let e = parse_safetensors(&bytes[..cut], p).unwrap_err();
            assert!(matches!(e, InteropError::Truncated { .. }), "cut at {cut}: {e}");
            assert!(e.to_string().starts_with("w.safetensors: truncated file"), "{e}");
        }
        for junk in [&b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"[..], b"hello world, this is text", b"abc"] {
            let e = parse_safetensors(junk, p).unwrap_err();
            assert!(matches!(e, InteropError::NotSafetensors { .. }), "{e}");
        }
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0; 4]);
        assert!(matches!(parse_safetensors(&extra, p), Err(InteropError::NotSafetensors { .. })));
    }
}
