//! The int8 micro-kernel (`vpdpbusd`: unsigned 8-bit activations times signed 8-bit weights,
//! four products summed into each 32-bit lane, exactly) and its requantizing epilogue.

use super::lane_mask;
use crate::simd::int8::{ConvTileArgsI8, RawOutput, RawRequant, RawResidual};
use std::arch::x86_64::*;

/// `out[r, j] = requant(sum_{ky, kx, q} a[r, ky, kx, q] . w[ky, kx, q, j])` for `R` output pixels
/// and the `NB` channel vectors starting at `w` and the epilogue's pointers, where `.` is the
/// dot product of four u8 activations with four i8 weights.
///
/// # Safety
/// - The CPU supports AVX-512F/BW/VL and AVX512_VNNI.
/// - For every `r < R`, `ky < kh`, `kx < kw`, `q < groups`, the quad
///   `a + r * a_pixel_stride + ky * a_row_stride + kx * groups + q` is readable.
/// - `w + ((ky * kw + kx) * groups + q) * w_row_stride + 16 * j + lane` is readable for every tap,
///   quad, `j < NB` and lane set in `masks[j]`.
/// - `mult` and `offset` plus `16 * j + lane`, and the residual and the output plus
///   `r * y_pixel_stride + 16 * j + lane`, are readable (the output writable) likewise; the output
///   overlaps none of the others.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn conv_tile_i8<const R: usize, const NB: usize>(
    g: &ConvTileArgsI8,
    a: *const u32,
    w: *const u32,
    rq: &RawRequant,
    masks: &[__mmask16; NB],
) {
    // The epilogue's residual bytes (each pixel's first and last), wanted in cache by the time
    // the sums are done; a prefetch never faults.
    let residual = match rq.residual {
        RawResidual::None => None,
        RawResidual::U8 { at, .. } => Some(at as *const i8),
        RawResidual::I8 { at, .. } => Some(at),
    };
    if let Some(at) = residual {
        for r in 0..R {
            let pixel = at.wrapping_add(r * g.y_pixel_stride);
            _mm_prefetch::<_MM_HINT_T0>(pixel);
            _mm_prefetch::<_MM_HINT_T0>(pixel.wrapping_add(16 * NB - 1));
        }
    }
    let mut acc = [[_mm512_setzero_si512(); NB]; R];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let tap = ky * g.kw + kx;
            // SAFETY: offsets stay inside the window and weight ranges of the contract.
            let a_tap = unsafe { a.add(ky * g.a_row_stride + kx * g.groups) };
            let w_tap = unsafe { w.add(tap * g.groups * g.w_row_stride) };
            for q in 0..g.groups {
                let mut wv = [_mm512_setzero_si512(); NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    // SAFETY: weight quad row q of this tap, lanes limited by the mask.
                    *v = unsafe {
                        _mm512_maskz_loadu_epi32(masks[j], w_tap.add(q * g.w_row_stride + 16 * j) as *const i32)
                    };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: input quad q of pixel r at this tap.
                    let b = _mm512_set1_epi32(unsafe { a_tap.add(r * g.a_pixel_stride + q).read_unaligned() } as i32);
                    for (v, wj) in row.iter_mut().zip(&wv) {
                        *v = _mm512_dpbusd_epi32(*v, b, *wj);
                    }
                }
            }
        }
    }
    for (j, &mask) in masks.iter().enumerate() {
        // SAFETY: the lanes in `mask` of channel vector j's multipliers and offsets (contract).
        let (mult, offset) = unsafe {
            (_mm512_maskz_loadu_ps(mask, rq.mult.add(16 * j)), _mm512_maskz_loadu_ps(mask, rq.offset.add(16 * j)))
        };
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: element (r, 16 j) of the tile, lanes limited by the mask (contract).
            unsafe { store_requantized(rq, r * g.y_pixel_stride + 16 * j, row[j], mult, offset, mask) };
        }
    }
}

/// Applies the epilogue to the sums `v` of output element `at` (from the tile's first), with
/// their channels' multipliers and offsets, and stores the lanes in `mask`.
///
/// # Safety
/// As [`conv_tile_i8`] for these lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn store_requantized(rq: &RawRequant, at: usize, v: __m512i, mult: __m512, offset: __m512, mask: __mmask16) {
    // SAFETY (every access): the lanes in `mask` of the residual and the output at this offset
    // are within the ranges of the contract.
    unsafe {
        let mut f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), mult, offset);
        match rq.residual {
            RawResidual::None => {}
            RawResidual::U8 { at: r, scale } => {
                let bytes = _mm_maskz_loadu_epi8(mask, r.add(at) as *const i8);
                let real = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
                f = _mm512_fmadd_ps(real, _mm512_set1_ps(scale), f);
            }
            RawResidual::I8 { at: r, scale } => {
                let bytes = _mm_maskz_loadu_epi8(mask, r.add(at));
                let real = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
                f = _mm512_fmadd_ps(real, _mm512_set1_ps(scale), f);
            }
        }
        match rq.output {
            RawOutput::U8 { at: y, inv_scale } => {
                // Below zero and NaN clamp to 0 here; past 255, including past i32's range
                // (converted to 0x8000_0000), the unsigned saturation gives 255.
                let q = _mm512_max_ps(_mm512_mul_ps(f, _mm512_set1_ps(inv_scale)), _mm512_setzero_ps());
                let bytes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(q));
                _mm_mask_storeu_epi8(y.add(at) as *mut i8, mask, bytes);
            }
            RawOutput::I8 { at: y, inv_scale } => {
                let q = _mm512_mul_ps(f, _mm512_set1_ps(inv_scale));
                let q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-128.0)), _mm512_set1_ps(127.0));
                _mm_mask_storeu_epi8(y.add(at), mask, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(q)));
            }
        }
    }
}

/// The masks of `NB` vectors covering `channels` lanes.
pub fn channel_masks<const NB: usize>(channels: usize) -> [__mmask16; NB] {
    std::array::from_fn(|j| lane_mask(channels.saturating_sub(16 * j).min(16)))
}
