//! The three transforms of Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016) on AVX-512, 16 channels per vector.
//!
//! A 6x6 input tile `d` and a 3x3 filter `g` give the 4x4 output tile
//! `Y = A^T [(G g G^T) ⊙ (B^T d B)] A` of the correlation the convolutions compute, with
//!
//! ```text
//! B^T = [4  0 -5  0 1 0]   G = [ 1/4     0     0 ]   A^T = [1 1  1 1  1 0]
//!       [0 -4 -4  1 1 0]       [-1/6  -1/6  -1/6 ]         [0 1 -1 2 -2 0]
//!       [0  4 -4 -1 1 0]       [-1/6   1/6  -1/6 ]         [0 1  1 4  4 0]
//!       [0 -2 -1  2 1 0]       [1/24  1/12   1/6 ]         [0 1 -1 8 -8 1]
//!       [0  2 -1 -2 1 0]       [1/24 -1/12   1/6 ]
//!       [0  4  0 -5 0 1]       [ 0      0     1  ]
//! ```
//!
//! Channels are the vector lanes (NHWC keeps them contiguous), so every transform is the same
//! few adds on 16 channels at once; the 36 products per tile are then 36 independent matrix
//! products over the channels, which the caller runs on the direct convolution's micro-kernel.

use super::avx512::{IntoBh, RawOutputTransform};
use std::arch::x86_64::*;

/// `B^T d` along one axis.
#[target_feature(enable = "avx512f")]
#[inline]
fn input_1d(d: [__m512; 6]) -> [__m512; 6] {
    let (four, five, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0), _mm512_set1_ps(2.0));
    let s12 = _mm512_add_ps(d[1], d[2]);
    let d12 = _mm512_sub_ps(d[1], d[2]);
    let s34 = _mm512_add_ps(d[3], d[4]);
    let d43 = _mm512_sub_ps(d[4], d[3]);
    let d31 = _mm512_sub_ps(d[3], d[1]);
    let d42 = _mm512_sub_ps(d[4], d[2]);
    [
        _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
        _mm512_fnmadd_ps(four, s12, s34),
        _mm512_fmadd_ps(four, d12, d43),
        _mm512_fmadd_ps(two, d31, d42),
        _mm512_fnmadd_ps(two, d31, d42),
        _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
    ]
}

/// `A^T m` along one axis.
#[target_feature(enable = "avx512f")]
#[inline]
fn output_1d(m: [__m512; 6]) -> [__m512; 4] {
    let s12 = _mm512_add_ps(m[1], m[2]);
    let d12 = _mm512_sub_ps(m[1], m[2]);
    let s34 = _mm512_add_ps(m[3], m[4]);
    let d34 = _mm512_sub_ps(m[3], m[4]);
    [
        _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
        _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m[5]),
    ]
}

/// `G g` along one axis.
#[target_feature(enable = "avx512f")]
#[inline]
fn filter_1d(g: [__m512; 3]) -> [__m512; 6] {
    let s02 = _mm512_add_ps(g[0], g[2]);
    let sixth = _mm512_set1_ps(1.0 / 6.0);
    let a = _mm512_fmadd_ps(_mm512_set1_ps(1.0 / 24.0), g[0], _mm512_mul_ps(sixth, g[2]));
    let b = _mm512_mul_ps(_mm512_set1_ps(1.0 / 12.0), g[1]);
    [
        _mm512_mul_ps(_mm512_set1_ps(0.25), g[0]),
        _mm512_mul_ps(_mm512_set1_ps(-1.0 / 6.0), _mm512_add_ps(s02, g[1])),
        _mm512_mul_ps(_mm512_set1_ps(-1.0 / 6.0), _mm512_sub_ps(s02, g[1])),
        _mm512_add_ps(a, b),
        _mm512_sub_ps(a, b),
        g[2],
    ]
}

/// Transforms a 3x3 weight `[3, 3, cin, cout]` into `u = [36, cin, cout]`: `G g G^T` for every
/// (input, output) channel pair, position `6 * row + column` of the 6x6 result first.
///
/// # Safety
/// - The CPU supports AVX-512F; `cout` is a multiple of 16.
/// - `w` holds `9 * cin * cout` readable floats and `u` `36 * cin * cout` writable ones.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_filter(w: *const f32, cin: usize, cout: usize, u: *mut f32) {
    // SAFETY: the whole weight is the block of all its channels (contract).
    unsafe { transform_filter_block(w, cout, cin * cout, cin, cout, u, [cout, cin * cout]) }
}

/// [`transform_filter`] of a block of a weight: `cin` input channels by `cols` output channels
/// starting at `w`, in a weight of `w_cols` output channels whose taps lie `w_tap` floats apart
/// (`w_cols` times its input channels), written to `u` with input channel `ci`'s position `p`
/// at `ci * row + p * position` (`[36, cin, cols]`: `[row, position] = [cols, cin * cols]`).
///
/// # Safety
/// - The CPU supports AVX-512F; `cols` is a multiple of 16.
/// - `w` is input channel `ci0` and output channel `co0` of a `[3, 3, w_tap / w_cols, w_cols]`
///   weight, readable, with `ci0 + cin <= w_tap / w_cols` and `co0 + cols <= w_cols`.
/// - `u` holds the `cols` floats at each of those places, writable, none overlapping.
#[target_feature(enable = "avx512f")]
pub unsafe fn transform_filter_block(
    w: *const f32,
    w_cols: usize,
    w_tap: usize,
    cin: usize,
    cols: usize,
    u: *mut f32,
    [row, position]: [usize; 2],
) {
    debug_assert!(cols.is_multiple_of(16));
    for ci in 0..cin {
        for co in (0..cols).step_by(16) {
            let mut g = [_mm512_setzero_ps(); 9];
            for (k, v) in g.iter_mut().enumerate() {
                // SAFETY: tap `k` of pair (ci, co..co + 16) lies in the weight (contract).
                *v = unsafe { _mm512_loadu_ps(w.add(k * w_tap + ci * w_cols + co)) };
            }
            // Columns of the filter through G (rows: ky), then its rows. (Plain arrays rather
            // than closures, which would be calls without this function's target features.)
            let mut cols_g = [[_mm512_setzero_ps(); 6]; 3];
            for (kx, col) in cols_g.iter_mut().enumerate() {
                *col = filter_1d([g[kx], g[3 + kx], g[6 + kx]]);
            }
            let at = ci * row + co;
            for a in 0..6 {
                let row = filter_1d([cols_g[0][a], cols_g[1][a], cols_g[2][a]]);
                for (b, v) in row.into_iter().enumerate() {
                    // SAFETY: position (a, b) of pair (ci, co..co + 16) lies in `u` (contract).
                    unsafe { _mm512_storeu_ps(u.add((6 * a + b) * position + at), v) };
                }
            }
        }
    }
}

/// Asks for the cache lines of channels `channels` of the pixels in `rows` x `cols` (those
/// inside the image `win` describes), for writing when `WRITE`: what the next tile will read or
/// write, one tile ahead, since a tile's loads and stores wait on memory when its pixels are not
/// yet in cache.
#[target_feature(enable = "avx512f")]
#[inline]
fn prefetch_pixels<const WRITE: bool, T>(
    img: *const T,
    win: &TileWindow,
    rows: std::ops::Range<isize>,
    cols: std::ops::Range<isize>,
    channels: std::ops::Range<usize>,
) {
    let clip = |r: std::ops::Range<isize>, n: usize| {
        r.start.clamp(0, n as isize) as usize..r.end.clamp(0, n as isize) as usize
    };
    let (rows, cols) = (clip(rows, win.h), clip(cols, win.w));
    // NHWC: with every channel, a row's pixels are one contiguous run of elements, so one line
    // every 64 bytes: the lines a loop over pixels and channel blocks asks for, in one loop
    // instead of three (docs/tuning.md, "Prefetches"). With some channels, a run per pixel.
    let (runs, run) = if channels.len() == win.c { (1, cols.len() * win.c) } else { (cols.len(), channels.len()) };
    for y in rows {
        for x in cols.start..cols.start + runs {
            let start = img.wrapping_add((y * win.w + x) * win.c + channels.start);
            for at in (0..run).step_by(64 / std::mem::size_of::<T>()) {
                // A prefetch never faults; the address, formed by wrapping arithmetic, is only
                // a hint (and inside the image: row and column clipped to it).
                let p = start.wrapping_add(at) as *const i8;
                if WRITE {
                    _mm_prefetch::<_MM_HINT_ET0>(p)
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(p)
                }
            }
        }
    }
}

/// The pixels the next tile of the same row of tiles reads or writes beyond a tile whose
/// window is `size` pixels square and starts at `win`, tiles being 4 pixels apart; at the end of
/// a row of tiles, those of the first tile of the next row that the row above did not touch.
fn next_tile_pixels(win: &TileWindow, size: isize) -> (std::ops::Range<isize>, std::ops::Range<isize>) {
    let (y0, x0) = (win.y0, win.x0);
    if x0 + size < win.w as isize {
        (y0..y0 + size, x0 + size..x0 + size + 4)
    } else {
        // The first window of a row starts at column 0 or left of it, in the padding, less
        // than 4 to the left (windows being 4 apart): the column congruent to `x0` mod 4.
        let first = match x0.rem_euclid(4) {
            0 => 0,
            r => r - 4,
        };
        (y0 + size..y0 + size + 4, first..first + size)
    }
}

/// Where one tile's input is read and its output written: a window of an NHWC image.
#[derive(Clone, Copy, Debug)]
pub struct TileWindow {
    /// Image height and width.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Channels of a pixel.
    pub c: usize,
    /// Top row and left column of the window (negative or past the edge: zero padding on
    /// input, nothing written on output).
    pub y0: isize,
    /// Left column of the window.
    pub x0: isize,
}

/// Defines an input-tile transform that reads the image's `$in` values with `$load` (as `f32`)
/// and stores each transformed vector with `$store`.
macro_rules! input_tile_fn {
    ($(#[$doc:meta])* $name:ident, $features:literal, $in:ty, $load:ident, $elem:ty, $store:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            img: *const $in,
            win: &TileWindow,
            transform: Option<(*const f32, *const f32)>,
            v: *mut $elem,
            stride: usize,
        ) {
            let zero = _mm512_setzero_ps();
            // Rows and columns of the window inside the image.
            let (a0, a1) = ((-win.y0).clamp(0, 6) as usize, (win.h as isize - win.y0).clamp(0, 6) as usize);
            let (b0, b1) = ((-win.x0).clamp(0, 6) as usize, (win.w as isize - win.x0).clamp(0, 6) as usize);
            let inside = (a0, a1, b0, b1) == (0, 6, 0, 6);
            // The next tile's new input pixels, so that they arrive while this tile is
            // transformed.
            let (rows, cols) = next_tile_pixels(win, 6);
            prefetch_pixels::<false, $in>(img, win, rows, cols, 0..win.c);
            for c0 in (0..win.c).step_by(16) {
                // SAFETY: channel block c0 of the transform (contract).
                let t = transform.map(|(a, b)| unsafe { (_mm512_loadu_ps(a.add(c0)), _mm512_loadu_ps(b.add(c0))) });
                // Every position is written once, loaded or (outside the image) zero, so the array is
                // not zeroed first (that was a `memset` call per tile).
                let mut d = [std::mem::MaybeUninit::<__m512>::uninit(); 36];
                for a in 0..6 {
                    for b in 0..6 {
                        d[6 * a + b].write(if inside || ((a0..a1).contains(&a) && (b0..b1).contains(&b)) {
                            let (row, ix) = ((win.y0 + a as isize) as usize * win.w, (win.x0 + b as isize) as usize);
                            // SAFETY: row a and column b are inside the image (a0..a1, b0..b1), block
                            // c0 inside the pixel.
                            let x = unsafe { $load(img.add((row + ix) * win.c + c0)) };
                            match t {
                                None => x,
                                Some((k, s)) => _mm512_max_ps(_mm512_fmadd_ps(x, k, s), zero),
                            }
                        } else {
                            zero
                        });
                    }
                }
                // SAFETY: the loops above wrote all 36 positions (a and b over 0..6); `MaybeUninit<T>`
                // has the layout of `T`.
                let d = unsafe { std::mem::transmute::<[std::mem::MaybeUninit<__m512>; 36], [__m512; 36]>(d) };
                let mut cols = [[zero; 6]; 6];
                for (b, col) in cols.iter_mut().enumerate() {
                    *col = input_1d([d[b], d[6 + b], d[12 + b], d[18 + b], d[24 + b], d[30 + b]]);
                }
                for a in 0..6 {
                    let row = input_1d([cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a]]);
                    for (b, x) in row.into_iter().enumerate() {
                        // SAFETY: position 6a + b < 36, block c0 (contract).
                        unsafe { $store(v.add((6 * a + b) * stride + c0), x) };
                    }
                }
            }
        }
    };
}

input_tile_fn!(
    /// Reads the 6x6 input window `win` of the image at `img` (zero outside the image; through
    /// `max(x * scale + shift, 0)` per channel when `transform` is given) and stores `B^T d B` of
    /// every 16-channel block `c0`, position `p`, at `v + p * stride + c0`.
    ///
    /// # Safety
    /// - The CPU supports AVX-512F; `win.c` is a multiple of 16.
    /// - `img` holds the `win.h * win.w * win.c` floats of the image; `transform`'s pointers hold
    ///   `win.c` floats each.
    /// - `v + p * stride + c0 .. + 16` is writable for every `p < 36` and block `c0 < win.c`.
    input_tile,
    "avx512f",
    f32,
    load_f32,
    f32,
    store_f32
);

input_tile_fn!(
    /// [`input_tile`] storing the transformed tile in bf16 (nearest, ties to even): 16
    /// channels of one position as 16 consecutive bf16 values, so that consecutive channel
    /// pairs are the `u32` pairs the bf16 products broadcast. `v` and `stride` count bf16
    /// values.
    ///
    /// # Safety
    /// As [`input_tile`], and the CPU supports AVX512_BF16.
    input_tile_bf16,
    "avx512f,avx512bf16",
    f32,
    load_f32,
    u16,
    store_bf16
);

input_tile_fn!(
    /// [`input_tile`] of an image stored in bf16 (`img` holds its bf16 values), widened as
    /// they are loaded: the same tile as from the widened image.
    ///
    /// # Safety
    /// As [`input_tile`], `img` holding the image's values in bf16.
    input_tile_of_bf16,
    "avx512f",
    u16,
    load_bf16,
    f32,
    store_f32
);

input_tile_fn!(
    /// [`input_tile_bf16`] of an image stored in bf16, as [`input_tile_of_bf16`] reads it.
    ///
    /// # Safety
    /// As [`input_tile_bf16`], `img` holding the image's values in bf16.
    input_tile_bf16_of_bf16,
    "avx512f,avx512bf16",
    u16,
    load_bf16,
    u16,
    store_bf16
);

/// Loads 16 floats from `p`.
///
/// # Safety
/// The CPU supports AVX-512F; `p` is readable for 16 floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_f32(p: *const f32) -> __m512 {
    // SAFETY: contract.
    unsafe { _mm512_loadu_ps(p) }
}

/// Loads 16 bf16 values from `p`, widened to the floats they stand for.
///
/// # Safety
/// The CPU supports AVX-512F; `p` is readable for 16 bf16 values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_bf16(p: *const u16) -> __m512 {
    // SAFETY: contract.
    let bits = unsafe { _mm256_loadu_si256(p.cast()) };
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
}

/// Stores 16 floats at `p`.
///
/// # Safety
/// The CPU supports AVX-512F; `p` is writable for 16 floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_f32(p: *mut f32, x: __m512) {
    // SAFETY: contract.
    unsafe { _mm512_storeu_ps(p, x) }
}

/// Stores 16 floats rounded to bf16 at `p`.
///
/// # Safety
/// The CPU supports AVX-512F and AVX512_BF16; `p` is writable for 16 bf16 values.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn store_bf16(p: *mut u16, x: __m512) {
    // SAFETY: contract; `__m256bh` and `__m256i` are both 256 bits.
    unsafe { _mm256_storeu_si256(p as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x))) }
}

/// What [`output_tile`] does with each output vector it computes: the epilogues a convolution
/// fuses into its output. The pointers are to images laid out as the output's (offset `p` of a
/// pixel's block in the output is offset `p` in them).
#[derive(Clone, Copy, Debug)]
pub enum TileWrite {
    /// `y = v`.
    Store,
    /// `y += v`.
    Accumulate,
    /// `y = act(v * scale + shift (+ residual))` per channel, as
    /// [`crate::conv::OutputTransform`] (the same operations in the same order): the parameters
    /// of every channel (`win.c` floats), and the residual image if any.
    Transform(RawOutputTransform),
    /// `stored = bf16(v)` (to nearest, ties to even, as [`crate::activations`] rounds) into the
    /// image of bf16 bits at the pointer; the output image is not written.
    StoreBf16(*mut u16),
}

// SAFETY (of Send and Sync): a transform's pointers are only read (see `RawOutputTransform`);
// parallel tasks sharing a bf16 image write only the pixels of their own tiles (the contract of
// `output_tile`), as they do the output's.
unsafe impl Send for TileWrite {}
// SAFETY: as above.
unsafe impl Sync for TileWrite {}

impl TileWrite {
    /// The same epilogue for the image `offset` floats further on (its own pointers moved).
    pub fn offset(self, offset: usize) -> Self {
        let at = |p: *const f32| p.wrapping_add(offset);
        match self {
            TileWrite::Transform(a) => TileWrite::Transform(RawOutputTransform { residual: a.residual.map(at), ..a }),
            TileWrite::StoreBf16(p) => TileWrite::StoreBf16(p.wrapping_add(offset)),
            other => other,
        }
    }

    /// The image it reads besides the output, if any.
    fn input(self) -> Option<*const f32> {
        match self {
            TileWrite::Transform(a) => a.residual,
            _ => None,
        }
    }
}

/// `A^T m A` of every 16-channel block `c0` in `channels` of one tile (position `p` at `m + p *
/// stride + c0 - channels.start`), written to the pixels of the 4x4 output window `win` of the
/// image at `img` that lie inside it, through the epilogue `out`. With `sums`, the written values
/// (as stored: rounded, for bf16) are also added per channel into `sums[..len]` and their squares
/// into `sums[len..]`, where `len` is `channels.len()` (a training-mode batch norm's statistics,
/// gathered while the output is in registers rather than in a pass after).
///
/// # Safety
/// - `sums`, if given, holds `2 * channels.len()` writable floats that nothing else touches
///   meanwhile.
/// - The CPU supports AVX-512F; `channels` starts and ends at multiples of 16 within `win.c`.
/// - `m + p * stride + c .. + 16` is readable for every `p < 36` and block `c < channels.len()`.
/// - `img` holds the `win.h * win.w * win.c` floats of the output image, writable, and no other
///   thread touches the window's pixels of these channels meanwhile; with
///   [`TileWrite::StoreBf16`] it is not used (and may be null).
/// - The images `out` points to hold `win.h * win.w * win.c` readable floats (for this image)
///   and its per-channel parameters `win.c`; none overlaps the window's output pixels. A bf16
///   image holds as many writable values, of which no other thread touches the window's pixels
///   in these channels meanwhile (`img` is then not written).
#[target_feature(enable = "avx512f")]
pub unsafe fn output_tile(
    m: *const f32,
    stride: usize,
    img: *mut f32,
    win: &TileWindow,
    out: TileWrite,
    sums: Option<*mut f32>,
    channels: std::ops::Range<usize>,
) {
    // The next tile's output pixels in these channels, for writing, and those of the images the
    // epilogue reads (docs/tuning.md).
    let (next_rows, next_cols) = next_tile_pixels(win, 4);
    match out {
        TileWrite::StoreBf16(p) => {
            prefetch_pixels::<true, u16>(p, win, next_rows.clone(), next_cols.clone(), channels.clone())
        }
        _ => prefetch_pixels::<true, f32>(img, win, next_rows.clone(), next_cols.clone(), channels.clone()),
    }
    if let Some(src) = out.input() {
        prefetch_pixels::<false, f32>(src, win, next_rows, next_cols, channels.clone());
    }
    // One loop per epilogue, each with its epilogue inlined: `f(at, c0, v)` stores the vector
    // at offset `at` (block `c0`) for the transform's `v` and returns it as stored, since a
    // `match` per vector inside one loop slows the plain store (docs/tuning.md).
    // SAFETY (each arm): the contract of this function, which `output_tile_with` shares; the
    // epilogue reads offset `at` of its images and block `c0` of its parameters, and writes
    // offset `at` of the output image (or of the bf16 one) in a pixel this thread owns.
    unsafe {
        match out {
            TileWrite::Store => output_tile_with(m, stride, win, sums, channels, |at, _, v| {
                _mm512_storeu_ps(img.add(at), v);
                v
            }),
            TileWrite::Accumulate => output_tile_with(m, stride, win, sums, channels, |at, _, v| {
                let y = _mm512_add_ps(_mm512_loadu_ps(img.add(at)), v);
                _mm512_storeu_ps(img.add(at), y);
                y
            }),
            TileWrite::Transform(a) => output_tile_with(m, stride, win, sums, channels, |at, c0, v| {
                let (scale, shift) = (_mm512_loadu_ps(a.scale.add(c0)), _mm512_loadu_ps(a.shift.add(c0)));
                let y = a.apply(v, scale, shift, a.residual.map(|q| _mm512_loadu_ps(q.add(at))));
                _mm512_storeu_ps(img.add(at), y);
                y
            }),
            TileWrite::StoreBf16(p) => output_tile_with(m, stride, win, sums, channels, |at, _, v| {
                let (bits, stored) = round_to_bf16(v);
                _mm256_storeu_si256(p.add(at).cast(), bits);
                stored
            }),
        }
    }
}

/// `v` rounded to bf16 as [`crate::activations`] rounds (to nearest, ties to even; a NaN stays
/// a NaN, quieted), in AVX-512F integer operations: the 16 bits of each, and the values they
/// stand for. (`vcvtneps2bf16` would treat subnormal inputs as zero, which the scalar rounding
/// does not.)
#[target_feature(enable = "avx512f")]
#[inline]
fn round_to_bf16(v: __m512) -> (__m256i, __m512) {
    let b = _mm512_castps_si512(v);
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let quiet = _mm512_or_si512(b, _mm512_set1_epi32(0x40 << 16));
    let high = _mm512_srli_epi32::<16>(_mm512_mask_blend_epi32(nan, rounded, quiet));
    (_mm512_cvtepi32_epi16(high), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(high)))
}

/// [`output_tile`]'s transform with the epilogue `f` (see there) and the sums, without the
/// prefetch.
///
/// # Safety
/// As [`output_tile`], for what `f` reads too.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn output_tile_with(
    m: *const f32,
    stride: usize,
    win: &TileWindow,
    sums: Option<*mut f32>,
    channels: std::ops::Range<usize>,
    f: impl Fn(usize, usize, __m512) -> __m512,
) {
    let rows = (win.h as isize - win.y0).clamp(0, 4) as usize;
    let cols = (win.w as isize - win.x0).clamp(0, 4) as usize;
    let (first, len) = (channels.start, channels.len());
    for c0 in channels.step_by(16) {
        let mut d = [_mm512_setzero_ps(); 36];
        for (p, v) in d.iter_mut().enumerate() {
            // SAFETY: position p < 36, block c0 of `channels` (contract).
            *v = unsafe { _mm512_loadu_ps(m.add(p * stride + c0 - first)) };
        }
        let mut t = [[_mm512_setzero_ps(); 4]; 6];
        for (b, col) in t.iter_mut().enumerate() {
            *col = output_1d([d[b], d[6 + b], d[12 + b], d[18 + b], d[24 + b], d[30 + b]]);
        }
        let (mut sum, mut squares) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..rows {
            let o = output_1d([t[0][i], t[1][i], t[2][i], t[3][i], t[4][i], t[5][i]]);
            for (j, v) in o.into_iter().take(cols).enumerate() {
                // Pixel (y0 + i, x0 + j) is inside the image (rows and cols above), block c0
                // inside the pixel; this thread owns the window (contract): `f` may write there.
                let at = ((win.y0 as usize + i) * win.w + win.x0 as usize + j) * win.c + c0;
                let y = f(at, c0, v);
                if sums.is_some() {
                    sum = _mm512_add_ps(sum, y);
                    squares = _mm512_fmadd_ps(y, y, squares);
                }
            }
        }
        if let Some(sums) = sums {
            // SAFETY: channels c0..c0 + 16 of both halves of `sums` (contract).
            unsafe {
                let (s, q) = (sums.add(c0 - first), sums.add(len + c0 - first));
                _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), sum));
                _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), squares));
            }
        }
    }
}

/// `A m` along one axis: the adjoint of [`output_1d`], four vectors to six.
#[target_feature(enable = "avx512f")]
#[inline]
fn output_adjoint_1d(o: [__m512; 4]) -> [__m512; 6] {
    let (two, four, eight) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(8.0));
    let e = _mm512_add_ps(o[0], _mm512_mul_ps(four, o[2]));
    let f = _mm512_fmadd_ps(eight, o[3], _mm512_mul_ps(two, o[1]));
    let s02 = _mm512_add_ps(o[0], o[2]);
    let s13 = _mm512_add_ps(o[1], o[3]);
    [o[0], _mm512_add_ps(s02, s13), _mm512_sub_ps(s02, s13), _mm512_add_ps(e, f), _mm512_sub_ps(e, f), o[3]]
}

/// `G^T u` along one axis: the adjoint of [`filter_1d`], six vectors to three.
#[target_feature(enable = "avx512f")]
#[inline]
fn filter_adjoint_1d(u: [__m512; 6]) -> [__m512; 3] {
    let s12 = _mm512_add_ps(u[1], u[2]);
    let s34 = _mm512_add_ps(u[3], u[4]);
    let sixth = _mm512_set1_ps(1.0 / 6.0);
    [
        _mm512_fmadd_ps(
            _mm512_set1_ps(0.25),
            u[0],
            _mm512_fmadd_ps(_mm512_set1_ps(1.0 / 24.0), s34, _mm512_mul_ps(_mm512_set1_ps(-1.0 / 6.0), s12)),
        ),
        _mm512_fmadd_ps(
            sixth,
            _mm512_sub_ps(u[2], u[1]),
            _mm512_mul_ps(_mm512_set1_ps(1.0 / 12.0), _mm512_sub_ps(u[3], u[4])),
        ),
        _mm512_add_ps(_mm512_mul_ps(sixth, _mm512_sub_ps(s34, s12)), u[5]),
    ]
}

/// Reads the 4x4 output-gradient window `win` of the image at `img` (zero outside the image)
/// and stores `A dy A^T` of every 16-channel block `c0`, position `p`, at `v + p * stride + c0`:
/// the gradient of the tile's 36 products.
///
/// # Safety
/// - The CPU supports AVX-512F; `win.c` is a multiple of 16.
/// - `img` holds the `win.h * win.w * win.c` floats of the gradient image.
/// - `v + p * stride + c0 .. + 16` is writable for every `p < 36` and block `c0 < win.c`.
#[target_feature(enable = "avx512f")]
pub unsafe fn output_grad_tile(img: *const f32, win: &TileWindow, v: *mut f32, stride: usize) {
    let zero = _mm512_setzero_ps();
    let rows = (win.h as isize - win.y0).clamp(0, 4) as usize;
    let cols = (win.w as isize - win.x0).clamp(0, 4) as usize;
    // The next tile's output-gradient pixels.
    let (next_rows, next_cols) = next_tile_pixels(win, 4);
    prefetch_pixels::<false, f32>(img, win, next_rows, next_cols, 0..win.c);
    for c0 in (0..win.c).step_by(16) {
        let mut d = [[zero; 4]; 4];
        for (i, row) in d.iter_mut().enumerate().take(rows) {
            for (j, v) in row.iter_mut().enumerate().take(cols) {
                let px = (win.y0 as usize + i) * win.w + win.x0 as usize + j;
                // SAFETY: pixel (y0 + i, x0 + j) is inside the image (rows and cols above).
                *v = unsafe { _mm512_loadu_ps(img.add(px * win.c + c0)) };
            }
        }
        let mut cols = [[zero; 6]; 4];
        for (j, col) in cols.iter_mut().enumerate() {
            *col = output_adjoint_1d([d[0][j], d[1][j], d[2][j], d[3][j]]);
        }
        for a in 0..6 {
            let row = output_adjoint_1d([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
            for (b, x) in row.into_iter().enumerate() {
                // SAFETY: position 6a + b < 36, block c0 (contract).
                unsafe { _mm512_storeu_ps(v.add((6 * a + b) * stride + c0), x) };
            }
        }
    }
}

/// The weight gradient from the gradient of the transformed filter: `dw (+)= G^T du G` for every
/// (input, output) channel pair, `du` as [`transform_filter`] writes `u` (`[36, cin, cout]`),
/// `dw` as `[3, 3, cin, cout]`.
///
/// # Safety
/// - The CPU supports AVX-512F; `cout` is a multiple of 16.
/// - `du` holds `36 * cin * cout` readable floats and `dw` `9 * cin * cout` writable ones.
#[target_feature(enable = "avx512f")]
pub unsafe fn filter_gradient(du: *const f32, cin: usize, cout: usize, dw: *mut f32, accumulate: bool) {
    debug_assert!(cout.is_multiple_of(16));
    let plane = cin * cout;
    for ci in 0..cin {
        for co in (0..cout).step_by(16) {
            let at = ci * cout + co;
            let mut d = [_mm512_setzero_ps(); 36];
            for (p, v) in d.iter_mut().enumerate() {
                // SAFETY: position p < 36 of pair (ci, co..co + 16) lies in `du` (contract).
                *v = unsafe { _mm512_loadu_ps(du.add(p * plane + at)) };
            }
            let mut rows = [[_mm512_setzero_ps(); 3]; 6];
            for (a, row) in rows.iter_mut().enumerate() {
                *row =
                    filter_adjoint_1d([d[6 * a], d[6 * a + 1], d[6 * a + 2], d[6 * a + 3], d[6 * a + 4], d[6 * a + 5]]);
            }
            for kx in 0..3 {
                let col =
                    filter_adjoint_1d([rows[0][kx], rows[1][kx], rows[2][kx], rows[3][kx], rows[4][kx], rows[5][kx]]);
                for (ky, v) in col.into_iter().enumerate() {
                    // SAFETY: tap (ky, kx) of pair (ci, co..co + 16) lies in `dw` (contract).
                    unsafe {
                        let p = dw.add((3 * ky + kx) * plane + at);
                        let v = if accumulate { _mm512_add_ps(_mm512_loadu_ps(p), v) } else { v };
                        _mm512_storeu_ps(p, v);
                    }
                }
            }
        }
    }
}

/// The middle step for `R` tiles at one position, with the input channel count known when
/// compiling: `m[r * m_stride + 16 j ..] = sum_{ci < CIN} v[r * 36 * CIN + ci] * u[ci * u_stride + 16 j ..]`
/// for `j < NB`, where `v` points at the position's first input channel in the first tile's
/// `[36, CIN]` block. With the tile stride a constant, each step's `R` broadcasts address `v` by
/// immediate offsets instead of ones computed at run time, as the general micro-kernel does
/// (docs/tuning.md, `PRODUCT_16`).
///
/// # Safety
/// - The CPU supports AVX-512F.
/// - `v + r * 36 * CIN + ci` is readable for `r < R`, `ci < CIN`; `u + ci * u_stride + 16 * j`
///   for 16 floats, `ci < CIN`, `j < NB`; `m + r * m_stride + 16 * j` writable for 16 floats,
///   overlapping neither input.
#[target_feature(enable = "avx512f")]
pub unsafe fn product_tile<const R: usize, const NB: usize, const CIN: usize>(
    v: *const f32,
    u: *const f32,
    u_stride: usize,
    m: *mut f32,
    m_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    for ci in 0..CIN {
        let mut w = [_mm512_setzero_ps(); NB];
        for (j, w) in w.iter_mut().enumerate() {
            // SAFETY: row ci of `u`, vector j (contract).
            *w = unsafe { _mm512_loadu_ps(u.add(ci * u_stride + 16 * j)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: channel ci of tile r (contract).
            let b = _mm512_set1_ps(unsafe { *v.add(r * 36 * CIN + ci) });
            for (a, w) in row.iter_mut().zip(&w) {
                *a = _mm512_fmadd_ps(b, *w, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // SAFETY: vector j of output row r (contract).
            unsafe { _mm512_storeu_ps(m.add(r * m_stride + 16 * j), *a) };
        }
    }
}

/// [`product_tile`] on bf16 channel pairs with `vdpbf16ps` (two multiply-adds per lane per
/// instruction, summed in f32): `m[r * m_stride + 16 j ..] = sum_{p < PAIRS} v[r * 36 * PAIRS + p]
/// . u[p * u_stride + 16 j ..]`, where each `u32` of `v` holds channels `2p` (low half) and
/// `2p + 1` of a tile and each of `u` the same two channels' weights for one output channel.
/// [`product_tile`]'s loop with the other instruction; apart from it because it needs the
/// AVX512_BF16 target feature, which the f32 kernel must not.
///
/// # Safety
/// - The CPU supports AVX-512F and AVX512_BF16.
/// - `v + r * 36 * PAIRS + p` is readable for `r < R`, `p < PAIRS`; `u + p * u_stride + 16 * j`
///   for 16 `u32`, `p < PAIRS`, `j < NB`; `m + r * m_stride + 16 * j` writable for 16 floats,
///   overlapping neither input.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn product_tile_bf16<const R: usize, const NB: usize, const PAIRS: usize>(
    v: *const u32,
    u: *const u32,
    u_stride: usize,
    m: *mut f32,
    m_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    for p in 0..PAIRS {
        let mut w = [_mm512_setzero_si512(); NB];
        for (j, w) in w.iter_mut().enumerate() {
            // SAFETY: row p of `u`, vector j (contract).
            *w = unsafe { _mm512_loadu_si512(u.add(p * u_stride + 16 * j) as *const __m512i) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: pair p of tile r (contract).
            let b = _mm512_castsi512_ps(_mm512_set1_epi32(unsafe { *v.add(r * 36 * PAIRS + p) } as i32));
            for (a, w) in row.iter_mut().zip(&w) {
                *a = _mm512_dpbf16_ps(*a, b.into_bh(), _mm512_castsi512_ps(*w).into_bh());
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // SAFETY: vector j of output row r (contract).
            unsafe { _mm512_storeu_ps(m.add(r * m_stride + 16 * j), *a) };
        }
    }
}

/// The weight gradient's middle step for `R` input and `16 NB` output channels at one position of
/// a layer with `CIN` channels in and out, known when compiling: `du[r * du_stride + 16 j ..] +=
/// sum_{t < tiles} v[t * 36 * CIN + r] * g[t * 36 * CIN + 16 j ..]` for `j < NB`, where `v` and
/// `g` point at the block's first channels in the first tile. The tile stride as a constant gives
/// immediate offsets, as in [`product_tile`]. The two products keep separate kernels because
/// one shared kernel, with the strides and the step count as parameters, was slower
/// (docs/tuning.md, `PRODUCT_16`).
///
/// # Safety
/// - The CPU supports AVX-512F.
/// - `v + t * 36 * CIN + r` is readable for `t < tiles`, `r < R`; `g + t * 36 * CIN + 16 * j`
///   for 16 floats, `t < tiles`, `j < NB`; `du + r * du_stride + 16 * j` readable and writable for
///   16 floats, overlapping neither input.
#[target_feature(enable = "avx512f")]
pub unsafe fn gradient_product_tile<const R: usize, const NB: usize, const CIN: usize>(
    v: *const f32,
    g: *const f32,
    tiles: usize,
    du: *mut f32,
    du_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        for (j, a) in row.iter_mut().enumerate() {
            // SAFETY: vector j of row r of `du` (contract).
            *a = unsafe { _mm512_loadu_ps(du.add(r * du_stride + 16 * j)) };
        }
    }
    for t in 0..tiles {
        let mut w = [_mm512_setzero_ps(); NB];
        for (j, w) in w.iter_mut().enumerate() {
            // SAFETY: vector j of tile t's output gradient (contract).
            *w = unsafe { _mm512_loadu_ps(g.add(t * 36 * CIN + 16 * j)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: channel r of tile t's transformed input (contract).
            let b = _mm512_set1_ps(unsafe { *v.add(t * 36 * CIN + r) });
            for (a, w) in row.iter_mut().zip(&w) {
                *a = _mm512_fmadd_ps(b, *w, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // SAFETY: vector j of row r of `du` (contract).
            unsafe { _mm512_storeu_ps(du.add(r * du_stride + 16 * j), *a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector rounding is the scalar one bit for bit, on ties, subnormals, infinities and
    /// NaNs too.
    #[test]
    fn vector_rounding_to_bf16_is_the_scalar_rounding() {
        if crate::simd::isa() < crate::simd::Isa::Avx512 {
            crate::skip::skip("the AVX-512 rounding: no AVX-512 on this CPU");
            return;
        }
        let mut values: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 4099) as f32 / 61.0 - 33.0).collect();
        let special = [
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -(1.0 + 1.0 / 256.0),
            f32::from_bits(1),
            f32::from_bits(0x0000_8000),
            f32::from_bits(0x007F_FFFF),
            -f32::from_bits(0x0001_8000),
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7F80_0001),
            0.0,
            -0.0,
        ];
        values[..special.len()].copy_from_slice(&special);
        for chunk in values.chunks_exact(16) {
            let (mut bits, mut stored) = ([0u16; 16], [0f32; 16]);
            // SAFETY: AVX-512 was checked above; both arrays hold 16 values.
            unsafe {
                let (b, v) = round_to_bf16(_mm512_loadu_ps(chunk.as_ptr()));
                _mm256_storeu_si256(bits.as_mut_ptr().cast(), b);
                _mm512_storeu_ps(stored.as_mut_ptr(), v);
            }
            for ((&x, &b), &v) in chunk.iter().zip(&bits).zip(&stored) {
                let want = crate::activations::bf16_bits(x);
                assert_eq!(u32::from(b), want, "{x:e} ({:#010x})", x.to_bits());
                assert_eq!(v.to_bits(), want << 16, "{x:e} widened");
            }
        }
    }
}
