//! The f32 weight-gradient micro-kernels.

use std::arch::x86_64::*;

/// Geometry of one [`wgrad_tile`] call: `rows` output rows of `pixels` pixels each.
#[derive(Clone, Copy, Debug)]
pub struct WgradTileArgs {
    /// Output rows.
    pub rows: usize,
    /// Output pixels per row.
    pub pixels: usize,
    /// Floats between the inputs of consecutive output pixels (`stride * cin`).
    pub x_pixel_stride: usize,
    /// Floats between the inputs of consecutive output rows (`stride * padded width * cin`).
    pub x_row_stride: usize,
    /// Floats between consecutive output pixels of `dy` (`cout`).
    pub dy_pixel_stride: usize,
    /// Floats between consecutive output rows of `dy` (`out width * cout`).
    pub dy_row_stride: usize,
    /// Floats between consecutive input channels' rows of the accumulator (`cout`).
    pub acc_stride: usize,
}

/// `acc[c, j] += sum_pixels x[p, c] * dy[p, j]` for `RC` input channels and `NB` vectors of
/// output channels, where pixel `p` walks `rows x pixels`.
///
/// # Safety
/// - The CPU supports AVX-512F.
/// - `x + row * x_row_stride + p * x_pixel_stride + c` is readable for `row < rows`,
///   `p < pixels`, `c < RC`.
/// - `dy + row * dy_row_stride + p * dy_pixel_stride + 16 * j + lane` is readable for every lane
///   set in `masks[j]`.
/// - `acc + c * acc_stride + 16 * j + lane` is readable and writable likewise, and overlaps
///   neither input.
#[target_feature(enable = "avx512f")]
pub unsafe fn wgrad_tile<const RC: usize, const NB: usize>(
    g: &WgradTileArgs,
    x: *const f32,
    dy: *const f32,
    acc: *mut f32,
    masks: &[__mmask16; NB],
) {
    let mut sum = [[_mm512_setzero_ps(); NB]; RC];
    for row in 0..g.rows {
        // SAFETY: row starts inside both inputs (contract).
        let x_row = unsafe { x.add(row * g.x_row_stride) };
        let dy_row = unsafe { dy.add(row * g.dy_row_stride) };
        for p in 0..g.pixels {
            let mut dv = [_mm512_setzero_ps(); NB];
            for (j, v) in dv.iter_mut().enumerate() {
                // SAFETY: output-gradient pixel p of this row, masked lanes.
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], dy_row.add(p * g.dy_pixel_stride + 16 * j)) };
            }
            // SAFETY: input pixel p of this row.
            let xp = unsafe { x_row.add(p * g.x_pixel_stride) };
            for (c, s) in sum.iter_mut().enumerate() {
                // SAFETY: channel c < RC of that pixel.
                let b = _mm512_set1_ps(unsafe { *xp.add(c) });
                for (v, d) in s.iter_mut().zip(&dv) {
                    *v = _mm512_fmadd_ps(b, *d, *v);
                }
            }
        }
    }
    for (c, s) in sum.iter().enumerate() {
        for (j, v) in s.iter().enumerate() {
            // SAFETY: accumulator row c, masked lanes (contract).
            unsafe {
                let p = acc.add(c * g.acc_stride + 16 * j);
                _mm512_mask_storeu_ps(p, masks[j], _mm512_add_ps(_mm512_maskz_loadu_ps(masks[j], p), *v));
            }
        }
    }
}

/// Weight gradient of one kernel row (`ky`) of a stride-1, 3-wide convolution for `RC` input
/// channels: `acc[kx, c, j] += sum_p x[p + kx, c] * dy[p, j]` for `kx = 0, 1, 2`. Walking the
/// padded input columns `q`, each `x[q, c]` is broadcast once and meets the three output-gradient
/// vectors `dy[q]`, `dy[q - 1]`, `dy[q - 2]` kept in registers.
///
/// `g.pixels` is the output width, `g.x_pixel_stride` must be the channel count of `x`, and the
/// accumulator of tap `kx` starts `kx * tap_stride` floats after `acc`.
///
/// # Safety
/// - The CPU supports AVX-512F.
/// - For `row < rows` and `q < pixels + 2`, `x + row * x_row_stride + q * x_pixel_stride + c` is
///   readable for `c < RC`.
/// - `dy` as in [`wgrad_tile`]; `acc + kx * tap_stride + c * acc_stride + 16 * j + lane` is
///   readable and writable for `kx < 3`, `c < RC`, and masked lanes, overlapping no input.
#[target_feature(enable = "avx512f")]
pub unsafe fn wgrad_tile_s1k3<const RC: usize, const NB: usize>(
    g: &WgradTileArgs,
    tap_stride: usize,
    x: *const f32,
    dy: *const f32,
    acc: *mut f32,
    masks: &[__mmask16; NB],
) {
    let mut sum = [[[_mm512_setzero_ps(); NB]; RC]; 3];
    for row in 0..g.rows {
        // SAFETY: row starts inside both inputs (contract).
        let x_row = unsafe { x.add(row * g.x_row_stride) };
        let dy_row = unsafe { dy.add(row * g.dy_row_stride) };
        // window[d] holds dy[q - d] (zero outside the row).
        let mut window = [[_mm512_setzero_ps(); NB]; 3];
        for q in 0..g.pixels + 2 {
            window[2] = window[1];
            window[1] = window[0];
            for (j, v) in window[0].iter_mut().enumerate() {
                *v = if q < g.pixels {
                    // SAFETY: output-gradient pixel q < pixels, masked lanes.
                    unsafe { _mm512_maskz_loadu_ps(masks[j], dy_row.add(q * g.dy_pixel_stride + 16 * j)) }
                } else {
                    _mm512_setzero_ps()
                };
            }
            // SAFETY: padded input column q < pixels + 2.
            let xq = unsafe { x_row.add(q * g.x_pixel_stride) };
            for c in 0..RC {
                // SAFETY: channel c < RC of that column.
                let b = _mm512_set1_ps(unsafe { *xq.add(c) });
                for (kx, tap) in sum.iter_mut().enumerate() {
                    for (v, d) in tap[c].iter_mut().zip(&window[kx]) {
                        *v = _mm512_fmadd_ps(b, *d, *v);
                    }
                }
            }
        }
    }
    for (kx, tap) in sum.iter().enumerate() {
        for (c, s) in tap.iter().enumerate() {
            for (j, v) in s.iter().enumerate() {
                // SAFETY: accumulator of tap kx, row c, masked lanes (contract).
                unsafe {
                    let p = acc.add(kx * tap_stride + c * g.acc_stride + 16 * j);
                    _mm512_mask_storeu_ps(p, masks[j], _mm512_add_ps(_mm512_maskz_loadu_ps(masks[j], p), *v));
                }
            }
        }
    }
}
