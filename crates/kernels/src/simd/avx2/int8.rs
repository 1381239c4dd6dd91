//! The AVX2 int8 micro-kernel: `vpmaddwd` multiplies pairs of 16-bit values and adds each pair
//! into a 32-bit lane, exactly. The activations (u8) and weights (i8) are widened to 16 bits
//! when packed, so a product never saturates, unlike `vpmaddubsw`'s 16-bit pair sums
//! (`2 * 255 * 127` overflows them); the results are the VNNI kernel's bit for bit, at the
//! same two multiplies per 32 multiply-adds as the saturating sequence.

use crate::simd::int8::{ConvTileArgsI8, RawOutput, RawRequant, RawResidual};
use std::arch::x86_64::*;

/// Output channels of one 256-bit vector.
const LANES: usize = 8;

/// The most pixels of one call of `NB` vectors: `R * NB` accumulators, `NB` weight vectors, a
/// broadcast and a product in the 16 ymm registers.
pub const fn pixels_per_tile(nb: usize) -> usize {
    if nb == 1 {
        12
    } else {
        6
    }
}

/// [`pixels_per_tile`] of one and of two vectors.
pub const PIXELS_PER_TILE: [usize; 2] = [pixels_per_tile(1), pixels_per_tile(2)];

/// `out[r, j] = requant(sum_{ky, kx, p} a[r, ky, kx, p] . w[ky, kx, p, j])` for `R` output pixels
/// and `lanes` channels in `NB` vectors of eight, where `.` is `vpmaddwd`'s dot product of two
/// 16-bit activations (zero-extended u8) with two 16-bit weights (sign-extended i8).
///
/// # Safety
/// - The CPU supports AVX2 and FMA; `8 * (NB - 1) < lanes <= 8 * NB`.
/// - For every `r < R`, `ky < kh`, `kx < kw`, `p < groups`, the pair
///   `a + r * a_pixel_stride + ky * a_row_stride + kx * groups + p` is readable.
/// - `w + ((ky * kw + kx) * groups + p) * w_row_stride + c` is readable for every tap, pair and
///   channel `c < lanes`.
/// - `mult` and `offset` plus `c`, and the residual and the output plus `r * y_pixel_stride + c`,
///   are readable (the output writable) for `c < lanes`; the output overlaps none of the others.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn conv_tile_i8_avx2<const R: usize, const NB: usize>(
    g: &ConvTileArgsI8,
    a: *const u32,
    w: *const u32,
    rq: &RawRequant,
    lanes: usize,
) {
    debug_assert!(lanes > LANES * (NB - 1) && lanes <= LANES * NB);
    let last = lanes - LANES * (NB - 1);
    let last_mask = lane_mask(last);
    let mut acc = [[_mm256_setzero_si256(); NB]; R];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let tap = ky * g.kw + kx;
            // SAFETY: offsets stay inside the window and weight ranges of the contract.
            let a_tap = unsafe { a.add(ky * g.a_row_stride + kx * g.groups) };
            let w_tap = unsafe { w.add(tap * g.groups * g.w_row_stride) };
            for p in 0..g.groups {
                let mut wv = [_mm256_setzero_si256(); NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    // SAFETY: weight pair row p of this tap; a partial last vector reads only
                    // its lanes.
                    let at = unsafe { w_tap.add(p * g.w_row_stride + LANES * j) };
                    *v = if j + 1 < NB || last == LANES {
                        unsafe { _mm256_loadu_si256(at as *const __m256i) }
                    } else {
                        unsafe { _mm256_maskload_epi32(at as *const i32, last_mask) }
                    };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: input pair p of pixel r at this tap.
                    let b = _mm256_set1_epi32(unsafe { a_tap.add(r * g.a_pixel_stride + p).read_unaligned() } as i32);
                    for (v, wj) in row.iter_mut().zip(&wv) {
                        *v = _mm256_add_epi32(*v, _mm256_madd_epi16(b, *wj));
                    }
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let n = if j + 1 < NB { LANES } else { last };
            // SAFETY: element (r, 8 j) of the tile and `n` channels from it (contract).
            unsafe { store_requantized(rq, r * g.y_pixel_stride + LANES * j, LANES * j, *v, n) };
        }
    }
}

/// The mask vector of `maskload` with the low `n` (at most 8) lanes set.
#[target_feature(enable = "avx2")]
fn lane_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// Applies the epilogue to the sums `v` of output element `at` (from the tile's first), whose
/// channels start `channel` after the tile's first, and stores `n` lanes: the arithmetic of the
/// AVX-512 epilogue, eight lanes at a time.
///
/// # Safety
/// As [`conv_tile_i8_avx2`] for these `n` lanes.
#[target_feature(enable = "avx2,fma")]
unsafe fn store_requantized(rq: &RawRequant, at: usize, channel: usize, v: __m256i, n: usize) {
    let full = n == LANES;
    let mask = lane_mask(n);
    // SAFETY (every access): `n` elements of the epilogue's arrays at these offsets are within
    // the ranges of the contract; partial vectors go through masked loads or an 8-byte buffer.
    unsafe {
        let (mult, offset) = if full {
            (_mm256_loadu_ps(rq.mult.add(channel)), _mm256_loadu_ps(rq.offset.add(channel)))
        } else {
            (_mm256_maskload_ps(rq.mult.add(channel), mask), _mm256_maskload_ps(rq.offset.add(channel), mask))
        };
        let mut f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), mult, offset);
        let bytes = |from: *const u8| {
            let mut buf = [0u8; 8];
            std::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), n);
            _mm_loadl_epi64(buf.as_ptr() as *const __m128i)
        };
        match rq.residual {
            RawResidual::None => {}
            RawResidual::U8 { at: r, scale } => {
                let real = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes(r.add(at))));
                f = _mm256_fmadd_ps(real, _mm256_set1_ps(scale), f);
            }
            RawResidual::I8 { at: r, scale } => {
                let real = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes(r.add(at) as *const u8)));
                f = _mm256_fmadd_ps(real, _mm256_set1_ps(scale), f);
            }
        }
        let (packed, y) = match rq.output {
            RawOutput::U8 { at: y, inv_scale } => {
                let q = _mm256_mul_ps(f, _mm256_set1_ps(inv_scale));
                let q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
                let q = _mm256_cvtps_epi32(q);
                let words = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
                (_mm_packus_epi16(words, words), y.add(at))
            }
            RawOutput::I8 { at: y, inv_scale } => {
                let q = _mm256_mul_ps(f, _mm256_set1_ps(inv_scale));
                let q = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
                let q = _mm256_cvtps_epi32(q);
                let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
                (_mm_packs_epi16(words, words), y.add(at) as *mut u8)
            }
        };
        if full {
            _mm_storel_epi64(y as *mut __m128i, packed);
        } else {
            let mut buf = [0u8; 16];
            _mm_storeu_si128(buf.as_mut_ptr() as *mut __m128i, packed);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), y, n);
        }
    }
}
