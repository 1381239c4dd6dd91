//! AVX-512 micro-kernels for direct convolution over NHWC data.
//!
//! Both kernels keep a tile of accumulators in the 32 zmm registers and stream the reduction
//! dimension through them, broadcasting one input value per FMA (the broadcast folds into the
//! FMA's memory operand):
//! - [`conv_tile`]: `R` consecutive output pixels x `NB` vectors of 16 output channels, reduced
//!   over the kernel window and input channels (forward pass, and stride-1 backward-data pass
//!   with flipped weights);
//! - [`wgrad_tile`]: `RC` input channels x `NB` vectors of output channels of one kernel tap,
//!   reduced over output pixels (weight gradient).
//!
//! Partial channel vectors use masked loads and stores, so any channel count works.

use std::arch::x86_64::*;

/// Mask with the low `n` (at most 16) lanes set.
pub fn lane_mask(n: usize) -> __mmask16 {
    debug_assert!(n <= 16);
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

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
pub struct TileAffine {
    /// Multiplier of the tile's first output channel (the others follow).
    pub scale: *const f32,
    /// Offset of the tile's first output channel (the others follow).
    pub shift: *const f32,
    /// The residual added to the tile's first output element, laid out as the output; or none.
    pub residual: Option<*const f32>,
    /// ReLU last.
    pub relu: bool,
}

// SAFETY (of Send and Sync): the parameters and the residual a `TileAffine` shared by parallel
// tasks points to are only read, and outlive those tasks (the convolution's arguments); one
// whose residual is the output tile itself is made and used by one task alone.
unsafe impl Send for TileAffine {}
// SAFETY: as above.
unsafe impl Sync for TileAffine {}

impl TileAffine {
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
/// the `NB` channel vectors starting at `w`/`y`, through `affine` when given.
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
/// - With `affine`: `scale + 16 * j + lane` and `shift + 16 * j + lane` are readable for every
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
    affine: Option<&TileAffine>,
) {
    // The residual is read after the sums are complete: ask for it now, so that it arrives
    // (from L3 or memory) while they are computed rather than stalling the stores.
    if let Some(q) = affine.and_then(|e| e.residual) {
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
    if let Some(e) = affine {
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

/// Geometry of the bf16 kernels: like [`ConvTileArgs`], but the input and the weights are
/// packed in pairs of input channels (one `u32` holds two bf16 values: channel `2p` in the low
/// half, `2p + 1` in the high half), so strides count pairs.
#[derive(Clone, Copy, Debug)]
pub struct ConvTileArgsBf16 {
    /// Pairs between the input windows of consecutive output pixels (`stride * pairs`).
    pub a_pixel_stride: usize,
    /// Pairs between consecutive input rows (`padded width * pairs`).
    pub a_row_stride: usize,
    /// Input channel pairs (`ceil(cin / 2)`).
    pub pairs: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output channels.
    pub cout: usize,
}

/// [`conv_tile`] on bf16 channel pairs with `vdpbf16ps` (two multiply-adds per lane per
/// instruction, accumulated in f32). Weights are `[kh, kw, pairs, cout]` pairs.
///
/// # Safety
/// - The CPU supports AVX-512F and AVX512_BF16.
/// - The ranges of [`conv_tile`], with channels counted in pairs.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn conv_tile_bf16<const R: usize, const NB: usize>(
    g: &ConvTileArgsBf16,
    a: *const u32,
    w: *const u32,
    y: *mut f32,
    masks: &[__mmask16; NB],
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: within the output tile (caller's contract).
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], y.add(r * g.cout + 16 * j)) };
            }
        }
    }
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let tap = ky * g.kw + kx;
            // SAFETY: offsets stay inside the window and weight ranges of the contract.
            let a_tap = unsafe { a.add(ky * g.a_row_stride + kx * g.pairs) };
            let w_tap = unsafe { w.add(tap * g.pairs * g.cout) };
            for p in 0..g.pairs {
                let mut wv = [_mm512_setzero_si512(); NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    // SAFETY: weight pair row p of this tap, lanes limited by the mask.
                    *v = unsafe { _mm512_maskz_loadu_epi32(masks[j], w_tap.add(p * g.cout + 16 * j) as *const i32) };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: input pair p of pixel r at this tap.
                    let b = _mm512_set1_epi32(unsafe { *a_tap.add(r * g.a_pixel_stride + p) } as i32);
                    for (v, wj) in row.iter_mut().zip(&wv) {
                        *v = _mm512_dpbf16_ps(*v, _mm512_castsi512_ps(b).into_bh(), _mm512_castsi512_ps(*wj).into_bh());
                    }
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: within the output tile.
            unsafe { _mm512_mask_storeu_ps(y.add(r * g.cout + 16 * j), masks[j], *v) };
        }
    }
}

/// [`conv_tile_s1k3`] on bf16 channel pairs: stride 1, 3-wide, one broadcast per input column.
///
/// # Safety
/// As [`conv_tile_bf16`] with stride 1 and `kw = 3`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn conv_tile_s1k3_bf16<const R: usize, const NB: usize>(
    g: &ConvTileArgsBf16,
    a: *const u32,
    w: *const u32,
    y: *mut f32,
    masks: &[__mmask16; NB],
    accumulate: bool,
) {
    debug_assert!(g.kw == 3 && g.a_pixel_stride == g.pairs);
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: within the output tile (caller's contract).
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], y.add(r * g.cout + 16 * j)) };
            }
        }
    }
    for ky in 0..g.kh {
        // SAFETY: row ky of every window and the weights of taps (ky, 0..3) (contract).
        let a_row = unsafe { a.add(ky * g.a_row_stride) };
        let w_row = unsafe { w.add(ky * 3 * g.pairs * g.cout) };
        for p in 0..g.pairs {
            let mut wv = [[_mm512_setzero_ps().into_bh(); NB]; 3];
            for (kx, taps) in wv.iter_mut().enumerate() {
                for (j, v) in taps.iter_mut().enumerate() {
                    // SAFETY: weight pair (ky, kx, p), lanes limited by the mask.
                    let raw = unsafe {
                        _mm512_maskz_loadu_epi32(
                            masks[j],
                            w_row.add((kx * g.pairs + p) * g.cout + 16 * j) as *const i32,
                        )
                    };
                    *v = _mm512_castsi512_ps(raw).into_bh();
                }
            }
            // SAFETY (all three loads): input columns c < R + 2 of this row, pair p.
            let bcast = |c: usize| {
                _mm512_castsi512_ps(_mm512_set1_epi32(unsafe { *a_row.add(c * g.pairs + p) } as i32)).into_bh()
            };
            let mut b0 = bcast(0);
            let mut b1 = bcast(1);
            for (r, row) in acc.iter_mut().enumerate() {
                let b2 = bcast(r + 2);
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_dpbf16_ps(*v, b0, wv[0][j]);
                    *v = _mm512_dpbf16_ps(*v, b1, wv[1][j]);
                    *v = _mm512_dpbf16_ps(*v, b2, wv[2][j]);
                }
                b0 = b1;
                b1 = b2;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: within the output tile.
            unsafe { _mm512_mask_storeu_ps(y.add(r * g.cout + 16 * j), masks[j], *v) };
        }
    }
}

/// Geometry of [`wgrad_pairs_bf16`], the weight gradient computed transposed over pixel pairs:
/// `acc[t][o][c] += sum_m dy[o][2m] x[t][m][c].lo + dy[o][2m + 1] x[t][m][c].hi`.
#[derive(Clone, Copy, Debug)]
pub struct WgradPairsArgs {
    /// Pixel pairs the sum runs over.
    pub pairs: usize,
    /// bf16 values between consecutive output channels' rows of the transposed `dy`.
    pub dy_stride: usize,
    /// Pairs between consecutive pixel pairs of `x` (the input channels).
    pub x_pair_stride: usize,
    /// Pairs between the first pixel pairs of consecutive taps of `x`.
    pub x_tap_stride: usize,
    /// Floats between consecutive output channels' rows of `acc`.
    pub acc_row_stride: usize,
    /// Floats between consecutive taps of `acc`.
    pub acc_tap_stride: usize,
}

/// The weight gradient's product with `vdpbf16ps`, for `T` taps, `R` output channels and `NB`
/// vectors of 16 input channels: lanes run over input channels, each output channel's pair of
/// pixels is broadcast once and serves every tap. `dy` is the output gradient transposed
/// (channels x pixels, bf16), `x` the input's pixel pairs (the low half holds the even pixel).
///
/// # Safety
/// - The CPU supports AVX-512F and AVX512_BF16.
/// - `dy + r * dy_stride + 2 * m` is readable for two values for `r < R`, `m < pairs`.
/// - `x + t * x_tap_stride + m * x_pair_stride + 16 * j` is readable for 16 pairs for `t < T`,
///   `m < pairs`, `j < NB`.
/// - `acc + t * acc_tap_stride + r * acc_row_stride + 16 * j` is readable and writable for 16
///   floats likewise, and overlaps neither input.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn wgrad_pairs_bf16<const T: usize, const R: usize, const NB: usize>(
    g: &WgradPairsArgs,
    dy: *const u16,
    x: *const u32,
    acc: *mut f32,
) {
    let mut sum = [[[_mm512_setzero_ps(); NB]; R]; T];
    for m in 0..g.pairs {
        let mut xv = [[_mm512_setzero_ps().into_bh(); NB]; T];
        for (t, taps) in xv.iter_mut().enumerate() {
            for (j, v) in taps.iter_mut().enumerate() {
                // SAFETY: pixel pair m of tap t, channels 16 * j.. (contract).
                let at = unsafe { x.add(t * g.x_tap_stride + m * g.x_pair_stride + 16 * j) };
                *v = _mm512_castsi512_ps(unsafe { _mm512_loadu_si512(at.cast()) }).into_bh();
            }
        }
        for r in 0..R {
            // SAFETY: pixels 2m and 2m + 1 of output channel r (contract); read unaligned.
            let two = unsafe { dy.add(r * g.dy_stride + 2 * m).cast::<u32>().read_unaligned() };
            let b = _mm512_castsi512_ps(_mm512_set1_epi32(two as i32)).into_bh();
            for (t, taps) in xv.iter().enumerate() {
                for (v, xj) in sum[t][r].iter_mut().zip(taps) {
                    *v = _mm512_dpbf16_ps(*v, b, *xj);
                }
            }
        }
    }
    for (t, rows) in sum.iter().enumerate() {
        for (r, row) in rows.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                // SAFETY: accumulator block (t, r, j) (contract).
                unsafe {
                    let at = acc.add(t * g.acc_tap_stride + r * g.acc_row_stride + 16 * j);
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *v));
                }
            }
        }
    }
}

/// Reinterprets 32 packed bf16 values held in a float vector's bits.
pub(crate) trait IntoBh {
    fn into_bh(self) -> __m512bh;
}

impl IntoBh for __m512 {
    #[inline(always)]
    fn into_bh(self) -> __m512bh {
        // SAFETY: both are 512-bit plain-data vectors; this only relabels the bits.
        unsafe { std::mem::transmute::<__m512, __m512bh>(self) }
    }
}

/// Converts `n` floats at `src` to bf16 (nearest, ties to even) at `dst`.
///
/// # Safety
/// The CPU supports AVX-512F and AVX512_BF16; `src` is readable and `dst` writable for `n`
/// elements, and they do not overlap.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn to_bf16(src: *const f32, dst: *mut u16, n: usize) {
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: 16 elements from i are in range.
        unsafe {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.add(i)));
            _mm256_storeu_si256(dst.add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
        }
        i += 16;
    }
    if i < n {
        let m = lane_mask(n - i);
        // SAFETY: the masked lanes cover exactly the elements left.
        unsafe {
            let v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src.add(i)));
            _mm256_mask_storeu_epi16(dst.add(i) as *mut i16, m, std::mem::transmute::<__m256bh, __m256i>(v));
        }
    }
}

/// The two index vectors of one block-swap stage.
type SwapIndices = ([i32; 16], [i32; 16]);

/// Permutation indices of one stage of [`transpose16_bf16`]: with rows `x` (row `i`) and `y`
/// (row `i + b`), the new row `i` takes `x`'s even `b`-blocks and `y`'s even ones, the new row
/// `i + b` their odd ones, which swaps the off-diagonal `b x b` blocks.
const fn swap_indices(b: usize) -> SwapIndices {
    let (mut lo, mut hi) = ([0; 16], [0; 16]);
    let mut j = 0;
    while j < 16 {
        if j & b == 0 {
            lo[j] = j as i32;
            hi[j] = (j + b) as i32;
        } else {
            lo[j] = (16 + j - b) as i32;
            hi[j] = (16 + j) as i32;
        }
        j += 1;
    }
    (lo, hi)
}

/// A 16 x 16 block of floats (`src` rows `src_stride` apart) transposed and rounded to bf16:
/// row `c` of `dst` (rows `dst_stride` apart) holds column `c` of the block. Four stages of
/// block swaps (8, 4, 2, 1), each a two-source permutation per pair of rows.
///
/// # Safety
/// The CPU supports AVX-512F and AVX512_BF16; `src` is readable for 16 rows of 16 floats and
/// `dst` writable for 16 rows of 16 bf16 at the given strides.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn transpose16_bf16(src: *const f32, src_stride: usize, dst: *mut u16, dst_stride: usize) {
    const STAGES: [(usize, SwapIndices); 4] =
        [(8, swap_indices(8)), (4, swap_indices(4)), (2, swap_indices(2)), (1, swap_indices(1))];
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, v) in r.iter_mut().enumerate() {
        // SAFETY: row i of the source block (caller's contract).
        *v = unsafe { _mm512_loadu_ps(src.add(i * src_stride)) };
    }
    for (b, (lo, hi)) in STAGES {
        // SAFETY: the index arrays are 16 i32 each.
        let (lo, hi) = unsafe { (_mm512_loadu_si512(lo.as_ptr().cast()), _mm512_loadu_si512(hi.as_ptr().cast())) };
        for i in (0..16).filter(|i| i & b == 0) {
            let (x, y) = (r[i], r[i + b]);
            r[i] = _mm512_permutex2var_ps(x, lo, y);
            r[i + b] = _mm512_permutex2var_ps(x, hi, y);
        }
    }
    for (i, v) in r.iter().enumerate() {
        // SAFETY: row i of the destination block (caller's contract).
        unsafe {
            _mm256_storeu_si256(
                dst.add(i * dst_stride) as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(*v)),
            )
        };
    }
}
