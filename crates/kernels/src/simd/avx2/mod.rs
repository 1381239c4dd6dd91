//! AVX2 micro-kernels for CPUs without AVX-512 (AMD Zen 2 and 3, Intel before Ice Lake, and
//! Skylake-SP's int8 without VNNI): [`conv_tile_i8_avx2`], the int8 convolution on `vpmaddwd`.

mod int8;

pub use int8::{conv_tile_i8_avx2, PIXELS_PER_TILE};
