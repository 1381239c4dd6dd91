//! The f32 forward micro-kernels: any stride and kernel, and stride 1 with 3-wide kernels.

use std::arch::x86_64::*;

/// Geometry shared by the calls of [`conv_tile`] within one convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvTileArgs {
    /// Floats between the input windows of consecutive output pixels (`stride * cin`).
    pub a_pixel_stride: usize,
    /// Floats between consecutive input rows (`padded width * cin`).
    pub a_row_stride: usize,
    /// Input channels.
    pub cin: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Floats between consecutive weight rows (`cout` for a `[kh, kw, cin, cout]` weight).
    pub w_row_stride: usize,
    /// Floats between consecutive output pixels (`cout` for an NHWC output).
    pub y_pixel_stride: usize,
}

/// The eval-mode output transform a [`conv_tile`] may apply to its sums before it stores them:
/// `act(sum * scale + shift (+ residual))` per output channel, with the arithmetic (multiply,
/// then add; no fused multiply-add) of the batch-norm pass it replaces, so the values are the
/// same. Applying it in registers saves writing the raw tile and reading it back.
#[derive(Clone, Copy, Debug)]
pub struct RawOutputTransform {
    /// Multiplier of the tile's first output channel (the others follow).
    pub scale: *const f32,
    /// Offset of the tile's first output channel (the others follow).
    pub shift: *const f32,
    /// The residual added to the tile's first output element, laid out as the output; or none.
    pub residual: Option<*const f32>,
    /// ReLU last.
    pub relu: bool,
}

// SAFETY (of Send and Sync): the parameters and the residual a `RawOutputTransform` shared by parallel
// tasks points to are only read, and outlive those tasks (the convolution's arguments); one
// whose residual is the output tile itself is made and used by one task alone.
unsafe impl Send for RawOutputTransform {}
// SAFETY: as above.
unsafe impl Sync for RawOutputTransform {}

impl RawOutputTransform {
    /// `act(v * scale + shift (+ residual))` of one vector: the arithmetic every kernel that
    /// applies the transform shares, so that all of them give the batch-norm pass's values.
    ///
    /// # Safety
    /// The CPU supports AVX-512F (a safe call from the kernels, which enable it).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn apply(&self, v: __m512, scale: __m512, shift: __m512, residual: Option<__m512>) -> __m512 {
        let mut r = _mm512_add_ps(_mm512_mul_ps(v, scale), shift);
        if let Some(q) = residual {
            r = _mm512_add_ps(r, q);
        }
        if self.relu {
            _mm512_max_ps(r, _mm512_setzero_ps())
        } else {
            r
        }
    }
}

/// `y[r, j] (+)= sum_{ky, kx, ci} a[r, ky, kx, ci] * w[ky, kx, ci, j]` for `R` output pixels and
/// the `NB` channel vectors starting at `w`/`y`, through `transform` when given.
///
/// # Safety
/// - The CPU supports AVX-512F.
/// - `a` points at input element `(row 0, column 0, channel 0)` of pixel 0's window, and for every
///   `r < R`, `ky < kh`, `kx < kw`, `ci < cin` the element
///   `a + r * a_pixel_stride + ky * a_row_stride + kx * cin + ci` is readable.
/// - `w + ((ky * kw + kx) * cin + ci) * w_row_stride + 16 * j + lane` is readable for every tap,
///   input channel, `j < NB` and lane set in `masks[j]`.
/// - `y + r * y_pixel_stride + 16 * j + lane` is readable and writable likewise, and does not
///   overlap `a` or `w`.
/// - With `transform`: `scale + 16 * j + lane` and `shift + 16 * j + lane` are readable for every
///   lane set in `masks[j]`, and `residual + r * y_pixel_stride + 16 * j + lane` likewise. The
///   residual is either `y` itself (each element is read before the tile is stored over it) or
///   does not overlap the tile.
#[target_feature(enable = "avx512f")]
pub unsafe fn conv_tile<const R: usize, const NB: usize>(
    g: &ConvTileArgs,
    a: *const f32,
    w: *const f32,
    y: *mut f32,
    masks: &[__mmask16; NB],
    accumulate: bool,
    transform: Option<&RawOutputTransform>,
) {
    // The residual is read after the sums are complete: ask for it now, so that it arrives
    // (from L3 or memory) while they are computed rather than stalling the stores.
    if let Some(q) = transform.and_then(|e| e.residual) {
        for r in 0..R {
            for j in 0..NB {
                // SAFETY: a prefetch does not fault, and the address lies in the residual
                // (contract).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(q.add(r * g.y_pixel_stride + 16 * j) as *const i8) };
            }
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: within the output tile (caller's contract).
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], y.add(r * g.y_pixel_stride + 16 * j)) };
            }
        }
    }
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let tap = ky * g.kw + kx;
            // SAFETY: offsets stay inside the window and weight ranges of the contract.
            let a_tap = unsafe { a.add(ky * g.a_row_stride + kx * g.cin) };
            let w_tap = unsafe { w.add(tap * g.cin * g.w_row_stride) };
            for ci in 0..g.cin {
                let mut wv = [_mm512_setzero_ps(); NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    // SAFETY: weight row `ci` of this tap, lanes limited by the mask.
                    *v = unsafe { _mm512_maskz_loadu_ps(masks[j], w_tap.add(ci * g.w_row_stride + 16 * j)) };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: input element of pixel r, this tap, channel ci.
                    let b = _mm512_set1_ps(unsafe { *a_tap.add(r * g.a_pixel_stride + ci) });
                    for (v, wj) in row.iter_mut().zip(&wv) {
                        *v = _mm512_fmadd_ps(b, *wj, *v);
                    }
                }
            }
        }
    }
    if let Some(e) = transform {
        for j in 0..NB {
            // SAFETY: the channels of vector j, lanes limited by the mask (contract).
            let (scale, shift) = unsafe {
                (
                    _mm512_maskz_loadu_ps(masks[j], e.scale.add(16 * j)),
                    _mm512_maskz_loadu_ps(masks[j], e.shift.add(16 * j)),
                )
            };
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: the residual element of this output vector (contract).
                let q = e
                    .residual
                    .map(|q| unsafe { _mm512_maskz_loadu_ps(masks[j], q.add(r * g.y_pixel_stride + 16 * j)) });
                row[j] = e.apply(row[j], scale, shift, q);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: within the output tile.
            unsafe { _mm512_mask_storeu_ps(y.add(r * g.y_pixel_stride + 16 * j), masks[j], *v) };
        }
    }
}

/// [`conv_tile`] specialised to stride 1 and 3-wide kernels: each input column is broadcast once
/// and feeds all three horizontal taps (pixel `c`, `c - 1` and `c - 2`), so a tile of `R` pixels
/// needs `R + 2` broadcasts and three weight loads per input channel instead of `R` broadcasts
/// per tap. `g.a_pixel_stride` must be `g.cin` and `g.kw` must be 3.
///
/// # Safety
/// As [`conv_tile`] with stride 1 and `kw = 3`.
#[target_feature(enable = "avx512f")]
pub unsafe fn conv_tile_s1k3<const R: usize, const NB: usize>(
    g: &ConvTileArgs,
    a: *const f32,
    w: *const f32,
    y: *mut f32,
    masks: &[__mmask16; NB],
    accumulate: bool,
) {
    debug_assert!(g.kw == 3 && g.a_pixel_stride == g.cin);
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: within the output tile (caller's contract).
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], y.add(r * g.y_pixel_stride + 16 * j)) };
            }
        }
    }
    for ky in 0..g.kh {
        // SAFETY: row ky of every window and the weights of taps (ky, 0..3) (contract).
        let a_row = unsafe { a.add(ky * g.a_row_stride) };
        let w_row = unsafe { w.add(ky * 3 * g.cin * g.w_row_stride) };
        for ci in 0..g.cin {
            let mut wv = [[_mm512_setzero_ps(); NB]; 3];
            for (kx, taps) in wv.iter_mut().enumerate() {
                for (j, v) in taps.iter_mut().enumerate() {
                    // SAFETY: weight (ky, kx, ci), lanes limited by the mask.
                    *v = unsafe {
                        _mm512_maskz_loadu_ps(masks[j], w_row.add((kx * g.cin + ci) * g.w_row_stride + 16 * j))
                    };
                }
            }
            // Pixel r needs input columns r, r + 1, r + 2 (taps 0, 1, 2): keep a sliding window
            // of three broadcasts so each column is loaded once.
            // SAFETY (all three loads): input columns c < R + 2 of this row, channel ci.
            let mut b0 = _mm512_set1_ps(unsafe { *a_row.add(ci) });
            let mut b1 = _mm512_set1_ps(unsafe { *a_row.add(g.cin + ci) });
            for (r, row) in acc.iter_mut().enumerate() {
                let b2 = _mm512_set1_ps(unsafe { *a_row.add((r + 2) * g.cin + ci) });
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_fmadd_ps(b0, wv[0][j], *v);
                    *v = _mm512_fmadd_ps(b1, wv[1][j], *v);
                    *v = _mm512_fmadd_ps(b2, wv[2][j], *v);
                }
                b0 = b1;
                b1 = b2;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: within the output tile.
            unsafe { _mm512_mask_storeu_ps(y.add(r * g.y_pixel_stride + 16 * j), masks[j], *v) };
        }
    }
}
