//! The products of transformed inputs and filters at each of the 36 positions.

use super::POSITIONS;
use crate::conv::algorithm::bf16_supported;
use crate::conv::direct::{conv_pixels, ConvKernel, Tile};
use crate::simd::avx512::ConvTileArgs;
use crate::simd::winograd::{gradient_product_tile, product_tile, product_tile_bf16};
use crate::simd::{self, Isa};

/// [`product_tile`] (`T = f32`) or [`product_tile_bf16`] (`T = u32`, bf16 pairs) for some tile
/// count, input channels and output vectors.
pub(super) type ProductTile<T> = unsafe fn(*const T, *const T, usize, *mut f32, usize);

/// A product kernel for 1 to `N` tiles (entry `r - 1` takes `r`).
macro_rules! product_tiles {
    ($kernel:ident, $t:ty, $nb:literal, $cin:literal, [$($r:literal)*]) => {
        [$($kernel::<$r, $nb, $cin> as ProductTile<$t>),*]
    };
}
/// 16 channels in and out: one vector of outputs, up to 16 tiles (16 accumulators).
pub(super) const PRODUCT_16: [ProductTile<f32>; 16] =
    product_tiles!(product_tile, f32, 1, 16, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16]);
/// 32 channels in and out: two vectors of outputs, up to 12 tiles (24 accumulators).
pub(super) const PRODUCT_32: [ProductTile<f32>; 12] =
    product_tiles!(product_tile, f32, 2, 32, [1 2 3 4 5 6 7 8 9 10 11 12]);
/// The same in bf16 pairs (8 and 16 of them), and 64 channels (32 pairs, four vectors of outputs,
/// up to 6 tiles: 24 accumulators).
pub(super) const PRODUCT_BF16_16: [ProductTile<u32>; 16] =
    product_tiles!(product_tile_bf16, u32, 1, 8, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16]);
pub(super) const PRODUCT_BF16_32: [ProductTile<u32>; 12] =
    product_tiles!(product_tile_bf16, u32, 2, 16, [1 2 3 4 5 6 7 8 9 10 11 12]);
pub(super) const PRODUCT_BF16_64: [ProductTile<u32>; 6] = product_tiles!(product_tile_bf16, u32, 4, 32, [1 2 3 4 5 6]);

/// `m = v u` at one position for `rows` tiles (`m`, `v` and `u` as [`multiply`] takes them
/// with `g`): on [`product_tile`] where the layer is square with 16 or 32 channels (CIFAR
/// ResNets' first two stages), whose constant strides make the addresses immediates
/// (docs/tuning.md), else on [`multiply`].
pub(super) fn product(rows: usize, ci: usize, co: usize, g: &ConvTileArgs, v: &[f32], u: &[f32], m: &mut [f32]) {
    let kernels: &[ProductTile<f32>] = match (ci, co) {
        (16, 16) => &PRODUCT_16,
        (32, 32) => &PRODUCT_32,
        _ => return multiply(rows, co, g, v, u, m, false),
    };
    assert!(simd::isa() >= Isa::Avx512, "Winograd products need AVX-512");
    // SAFETY: AVX-512 (asserted) runs these tables.
    unsafe { product_blocks(kernels, rows, ci, ci, v, u, m) };
}

/// `m = v u` at one position for `rows` tiles in bf16 (`ci` even): `v` from the position's first
/// channel pair in the first tile (`36 * ci / 2` pairs a tile), `u` its `[ci / 2, co]` filter
/// pairs, both as the bits of f32 slots; `m` as for [`product`]. Square layers of 16, 32 or 64
/// channels run the tables of constant strides, others the direct bf16 micro-kernel as a 1x1
/// convolution over the tiles.
pub(super) fn product_bf16(rows: usize, ci: usize, co: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    assert!(bf16_supported(), "bf16 Winograd products need AVX512_BF16");
    let kernels: &[ProductTile<u32>] = match (ci, co) {
        (16, 16) => &PRODUCT_BF16_16,
        (32, 32) => &PRODUCT_BF16_32,
        (64, 64) => &PRODUCT_BF16_64,
        _ => return multiply_bf16(rows, ci, co, bits(v), bits(u), m),
    };
    // SAFETY: AVX-512 and AVX512_BF16 (asserted and checked by `fits_bf16`) run these tables.
    unsafe { product_blocks(kernels, rows, ci / 2, co, bits(v), bits(u), m) };
}

/// [`product_bf16`] on the direct bf16 micro-kernel: blocks of up to 64 output channels times
/// as many tiles as its accumulators allow.
///
/// # Panics
/// If a slice is too short for `rows` tiles, `ci` is odd, or the CPU lacks AVX512_BF16.
fn multiply_bf16(rows: usize, ci: usize, co: usize, v: &[u32], u: &[u32], m: &mut [f32]) {
    let pairs = ci / 2;
    assert!(bf16_supported(), "bf16 Winograd products need AVX512_BF16");
    assert!(ci.is_multiple_of(2) && rows > 0 && co > 0, "bf16 product of {rows} x {ci} x {co}");
    assert!(v.len() >= (rows - 1) * POSITIONS * pairs + pairs, "transformed inputs too short");
    assert!(u.len() >= pairs * co, "transformed filter too short");
    assert!(m.len() >= (rows - 1) * POSITIONS * co + co, "products too short");
    let g = crate::simd::avx512::ConvTileArgsBf16 {
        a_pixel_stride: POSITIONS * pairs,
        a_row_stride: 0,
        pairs,
        kh: 1,
        kw: 1,
        cout: co,
        y_pixel_stride: POSITIONS * co,
    };
    tile_blocks(rows, co, false, |tile, r0, c0| {
        // SAFETY: AVX512_BF16 (asserted above). Tiles r0.. of `v` with their `pairs` pairs,
        // filter rows of the tile's lanes from c0, and tiles r0.. of `m` with those lanes lie in
        // their slices (lengths asserted above); `m` overlaps neither input.
        unsafe {
            ConvKernel::General.run_bf16(
                tile,
                &g,
                v[r0 * POSITIONS * pairs..].as_ptr(),
                u[c0..].as_ptr(),
                m[r0 * POSITIONS * co + c0..].as_mut_ptr(),
            )
        };
    });
}

/// The blocks in which the direct micro-kernel computes a product of `rows` rows and `co`
/// output channels: up to 64 channels from `c0` times as many rows from `r0` as its
/// accumulators allow, each handed to `each` as a [`Tile`].
fn tile_blocks(rows: usize, co: usize, accumulate: bool, mut each: impl FnMut(Tile, usize, usize)) {
    for c0 in (0..co).step_by(64) {
        let channels = (co - c0).min(64);
        let block = conv_pixels(channels.div_ceil(16));
        for r0 in (0..rows).step_by(block) {
            each(Tile { pixels: block.min(rows - r0), channels, accumulate }, r0, c0);
        }
    }
}

/// The bit patterns of `v`'s floats (slots that hold bf16 pairs).
pub(super) fn bits(v: &[f32]) -> &[u32] {
    // SAFETY: u32 and f32 have the same size and alignment, and every bit pattern is a valid
    // value of both.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u32, v.len()) }
}

/// [`bits`], writable.
pub(super) fn bits_mut(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: as in `bits`; the borrow of `v` is handed on whole.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u32, v.len()) }
}

/// Runs a table of product kernels for a square layer of `c` channels (entry `r - 1` takes `r`
/// tiles of `k` values a position: `c` floats, or `c / 2` bf16 pairs) over `rows` tiles, in
/// blocks of as many tiles as the table's longest kernel takes: tile `r` of `v` at `r * 36 * k`,
/// of `m` at `r * 36 * c`, the filter `[k, c]`.
///
/// # Safety
/// The CPU runs the table's kernels (AVX-512, and AVX512_BF16 for the bf16 ones).
///
/// # Panics
/// If a slice is too short for `rows` tiles.
pub(super) unsafe fn product_blocks<T>(
    kernels: &[ProductTile<T>],
    rows: usize,
    k: usize,
    c: usize,
    v: &[T],
    u: &[T],
    m: &mut [f32],
) {
    assert!(rows > 0, "no tiles");
    assert!(v.len() >= (rows - 1) * POSITIONS * k + k, "transformed inputs too short");
    assert!(u.len() >= k * c, "transformed filter too short");
    assert!(m.len() >= (rows - 1) * POSITIONS * c + c, "products too short");
    let block = kernels.len();
    for r0 in (0..rows).step_by(block) {
        let r = block.min(rows - r0);
        // SAFETY: the CPU runs the table (contract); `kernels[r - 1]` takes r tiles
        // (the tables above), whose tiles r0..r0 + r of `v` (36 * k values apart) and `m` (36 *
        // c floats apart), the last one's k values and c floats included, and k x c filter lie
        // in their slices (lengths asserted); `m` is a buffer apart from `v` and `u`.
        unsafe {
            kernels[r - 1](
                v[r0 * POSITIONS * k..].as_ptr(),
                u.as_ptr(),
                c,
                m[r0 * POSITIONS * c..].as_mut_ptr(),
                POSITIONS * c,
            )
        };
    }
}

/// [`gradient_product_tile`] for some block of channels of a square layer.
pub(super) type GradientProductTile = unsafe fn(*const f32, *const f32, usize, *mut f32, usize);

/// `du[p] += v[:, p]^T g[:, p]` at one position over `tiles` tiles (the operands as
/// [`multiply`] takes them with `args`): on [`gradient_product_tile`] where the layer is square
/// with 16, 32 or 64 channels, in blocks of 16 accumulators (input x output channels: 16 x 16,
/// 8 x 32, 4 x 64), else on [`multiply`]. Each call's broadcasts of `v` meet all the output
/// channels, whose 1 to 4 vectors stay in registers.
pub(super) fn gradient_product(
    tiles: usize,
    ci: usize,
    co: usize,
    args: &ConvTileArgs,
    v: &[f32],
    g: &[f32],
    du: &mut [f32],
) {
    let (kernel, rows): (GradientProductTile, usize) = match (ci, co) {
        (16, 16) => (gradient_product_tile::<16, 1, 16>, 16),
        (32, 32) => (gradient_product_tile::<8, 2, 32>, 8),
        (64, 64) => (gradient_product_tile::<4, 4, 64>, 4),
        _ => return multiply(ci, co, args, v, g, du, true),
    };
    let c = ci;
    assert!(simd::isa() >= Isa::Avx512 && tiles > 0, "{tiles} tiles of {c} channels");
    assert!(v.len() >= (tiles - 1) * POSITIONS * c + c, "transformed inputs too short");
    assert!(g.len() >= (tiles - 1) * POSITIONS * c + c, "transformed output gradients too short");
    assert!(du.len() >= c * c, "filter gradient too short");
    for r0 in (0..c).step_by(rows) {
        // SAFETY: AVX-512 (asserted); `kernel` takes input channels r0..r0 + rows (`rows`
        // divides c) and all c output channels of every tile of `v` and `g` (36 * c floats
        // apart, lengths asserted) and those rows of the c x c `du`, a buffer apart from both.
        unsafe { kernel(v[r0..].as_ptr(), g.as_ptr(), tiles, du[r0 * c..].as_mut_ptr(), c) };
    }
}

/// `y (+)= a w` on the direct convolution's micro-kernel, for `rows` output rows of `co`
/// channels (`g.y_pixel_stride` apart): row `r` of `a` starts at `r * g.a_pixel_stride`, and its
/// `g.kh` taps (of `g.cin` values, `g.a_row_stride` apart) meet rows `tap * g.cin ..` of `w`
/// (`g.kh * g.cin` rows of `co` values, `g.w_row_stride` apart). The forward pass uses it as a
/// 1x1 convolution over the tiles; the weight gradient with the tiles as taps and the input
/// channels as rows.
///
/// # Panics
/// If a slice is too short for that geometry (`g.kw` must be 1), or without AVX-512.
pub(super) fn multiply(
    rows: usize,
    co: usize,
    g: &ConvTileArgs,
    a: &[f32],
    w: &[f32],
    y: &mut [f32],
    accumulate: bool,
) {
    assert!(simd::isa() >= Isa::Avx512 && g.kw == 1 && rows > 0 && co > 0, "product of {rows} x {co}, {g:?}");
    assert!(a.len() >= (rows - 1) * g.a_pixel_stride + (g.kh - 1) * g.a_row_stride + g.cin, "left operand too short");
    assert!(w.len() >= (g.kh * g.cin - 1) * g.w_row_stride + co, "right operand too short");
    assert!(y.len() >= (rows - 1) * g.y_pixel_stride + co, "output too short");
    tile_blocks(rows, co, accumulate, |tile, r0, c0| {
        // SAFETY: AVX-512 (asserted). Rows r0.. of `a` with all their taps, rows of `w` with the
        // tile's lanes from c0, and rows r0.. of `y` with those lanes lie in their slices
        // (lengths asserted above); `y` overlaps neither input.
        unsafe {
            ConvKernel::General.run(
                tile,
                g,
                a[r0 * g.a_pixel_stride..].as_ptr(),
                w[c0..].as_ptr(),
                y[r0 * g.y_pixel_stride + c0..].as_mut_ptr(),
                None,
            )
        };
    });
}
