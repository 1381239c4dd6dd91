//! The bf16 micro-kernels (`vdpbf16ps`, f32 sums) and the conversions to bf16.

use super::lane_mask;
use std::arch::x86_64::*;

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
    /// Output channels (the weights' row length).
    pub cout: usize,
    /// Floats between consecutive output pixels (`cout` for a plain output).
    pub y_pixel_stride: usize,
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
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], y.add(r * g.y_pixel_stride + 16 * j)) };
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
            unsafe { _mm512_mask_storeu_ps(y.add(r * g.y_pixel_stride + 16 * j), masks[j], *v) };
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
                *v = unsafe { _mm512_maskz_loadu_ps(masks[j], y.add(r * g.y_pixel_stride + 16 * j)) };
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
            unsafe { _mm512_mask_storeu_ps(y.add(r * g.y_pixel_stride + 16 * j), masks[j], *v) };
        }
    }
}

/// Geometry of [`wgrad_pairs_bf16`], the weight gradient computed transposed over pixel pairs:
/// `acc[t][o][c] += sum_m dy[o][m].lo x[t][m][c].lo + dy[o][m].hi x[t][m][c].hi`, where
/// `dy[o][m]` holds output channel `o`'s pixels `2m` and `2m + 1`.
#[derive(Clone, Copy, Debug)]
pub struct WgradPairsArgs {
    /// Pixel pairs the sum runs over.
    pub pairs: usize,
    /// bf16 values between consecutive output channels of `dy`: 2 where it is stored as pixel
    /// pairs (pairs x channels, pair `m` of channel `o` the `m * channels + o`th pair).
    pub dy_stride: usize,
    /// bf16 values between consecutive pixel pairs of `dy`: twice the channels in that layout.
    pub dy_pair_stride: usize,
    /// Pairs between consecutive pixel pairs of `x` (the input channels).
    pub x_pair_stride: usize,
    /// Pairs between the first pixel pairs of consecutive taps of `x`.
    pub x_tap_stride: usize,
    /// Floats between consecutive output channels' rows of `acc`.
    pub acc_row_stride: usize,
    /// Floats between consecutive taps of `acc`.
    pub acc_tap_stride: usize,
    /// Cache lines to prefetch toward L2 while the call runs, spread over its pixel pairs, from
    /// `prefetch` (the next band's reads; a hint that never faults, so any address will do).
    pub prefetch: *const u8,
    /// How many (zero for none).
    pub prefetch_lines: usize,
}

/// The weight gradient's product with `vdpbf16ps`, for `T` taps, `R` output channels and `NB`
/// vectors of 16 input channels: lanes run over input channels, each output channel's pair of
/// pixels is broadcast once and serves every tap. `dy` is the output gradient in bf16, laid out
/// as `g`'s strides say, `x` the input's pixel pairs (in both, the low half holds the even
/// pixel).
///
/// # Safety
/// - The CPU supports AVX-512F and AVX512_BF16.
/// - `dy + r * dy_stride + m * dy_pair_stride` is readable for two values for `r < R`,
///   `m < pairs`.
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
        // Lines m, m + pairs, ...: one a pair unless the call has more lines than pairs. A
        // prefetch is a hint: it reads nothing and never faults, wherever it points.
        let mut line = m;
        while line < g.prefetch_lines {
            _mm_prefetch::<_MM_HINT_T1>(g.prefetch.wrapping_add(64 * line).cast());
            line += g.pairs;
        }
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
            let two = unsafe { dy.add(r * g.dy_stride + m * g.dy_pair_stride).cast::<u32>().read_unaligned() };
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
