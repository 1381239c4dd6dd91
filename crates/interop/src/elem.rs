//! Element types that weight files use, and their exact conversion to our `f32`/`i64` storage.

use resnet_models::TensorData;

/// An element type found in a weight file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
}

impl Elem {
    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Elem::F16 | Elem::BF16 => 2,
            Elem::F32 | Elem::I32 => 4,
            Elem::F64 | Elem::I64 => 8,
        }
    }

    /// Little-endian elements to tensor data. Half and bfloat16 widen exactly; doubles round to
    /// nearest (weights never need more than `f32`); integers stay integers.
    ///
    /// # Panics
    /// If `bytes` is not a whole number of elements (callers check sizes first).
    pub(crate) fn decode(self, bytes: &[u8]) -> TensorData {
        assert_eq!(bytes.len() % self.size(), 0, "{self:?} data of {} bytes", bytes.len());
        match self {
            Elem::F32 => {
                TensorData::F32(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
            Elem::F64 => TensorData::F32(
                bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            ),
            Elem::F16 => TensorData::F32(
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            ),
            Elem::BF16 => TensorData::F32(
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            ),
            Elem::I64 => TensorData::I64(
                bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            ),
            Elem::I32 => TensorData::I64(
                bytes.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_types_widen_exactly() {
        // 1.5 in f16 is 0x3e00, in bf16 0x3fc0; -2 in f16 is 0xc000.
        assert_eq!(Elem::F16.decode(&[0x00, 0x3e, 0x00, 0xc0]), TensorData::F32(vec![1.5, -2.0]));
        assert_eq!(Elem::BF16.decode(&[0xc0, 0x3f]), TensorData::F32(vec![1.5]));
        assert_eq!(Elem::F64.decode(&0.1f64.to_le_bytes()), TensorData::F32(vec![0.1f32]));
        assert_eq!(Elem::I32.decode(&(-7i32).to_le_bytes()), TensorData::I64(vec![-7]));
    }
}
