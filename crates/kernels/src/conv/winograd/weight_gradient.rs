//! The weight gradient: the forward pass's adjoint. Per position, the product of the transformed
//! inputs and the transformed output gradients summed over the tiles, then taken back through the
//! filter transform. Narrow layers sum fixed runs of tiles into a transformed-filter gradient per
//! thread ([`by_tiles`]); wider ones, whose gradient per thread would leave the cache, transform a
//! chunk of tiles at a time position by position and give each position to one thread
//! ([`by_positions`]).

use super::product::{gradient_product, multiply};
use super::tiles::{tile_corners, transform_inputs, transform_inputs_to, window};
use super::{fits_weight_gradient, tile_count, tiles_per_task, MIN_TILES, POSITIONS};
use crate::conv::input::ConvInput;
use crate::conv::shape::ConvShape;
use crate::conv::shared_output::SharedOutput;
use crate::scratch::{with_filter, with_tile};
use crate::simd::avx512::ConvTileArgs;
use crate::simd::winograd::{filter_gradient, output_grad_tile};
use crate::threads::{self};
use crate::workspace::{put_shared, shared, take, take_shared};
use rayon::prelude::*;

/// Bytes of a thread's transformed-filter gradient ([`by_tiles`]) beyond which the weight
/// gradient runs [`by_positions`]: past about half of L2, each run of tiles reads and writes
/// the whole gradient from memory (docs/tuning.md).
pub(super) const PARTIAL_GRADIENT_BYTES: usize = 1 << 20;

/// Bytes of one position's transformed inputs and output gradients in a chunk of tiles of
/// [`by_positions`], so that they stay in L2 with the position's filter gradient while it sums
/// over them (docs/tuning.md).
pub(super) const CHUNK_POSITION_BYTES: usize = 512 << 10;

/// Whether the weight gradient of `s` runs [`by_positions`].
pub(super) fn runs_by_positions(s: &ConvShape) -> bool {
    4 * POSITIONS * s.cin * s.cout > PARTIAL_GRADIENT_BYTES
}

/// Tiles of a chunk of [`by_positions`] ([`CHUNK_POSITION_BYTES`] a position, at least
/// [`MIN_TILES`]).
fn chunk_tiles(s: &ConvShape) -> usize {
    (CHUNK_POSITION_BYTES / (4 * (s.cin + s.cout))).max(MIN_TILES)
}

/// `dw (+)= im2col(t(x))^T dy` for a shape that [`fits_weight_gradient`]: [`by_positions`] where
/// it [`runs_by_positions`], else [`by_tiles`].
///
/// # Panics
/// If the shape does not fit or a slice length disagrees with `s`.
pub(in crate::conv) fn backward_weight(input: &ConvInput<'_>, dy: &[f32], dw: &mut [f32], accumulate: bool) {
    let (s, x) = (&input.shape, input.x);
    assert!(fits_weight_gradient(s), "Winograd F(4x4, 3x3) does not run the weight gradient of {s:?}");
    assert_eq!((x.len(), dw.len(), dy.len()), (s.input_len(), s.weight_len(), s.output_len()));
    if runs_by_positions(s) {
        let mut chunks = take_shared(&shared::PARTIALS);
        with_filter(POSITIONS * s.cin * s.cout, |du| {
            by_positions(input, dy, du, chunk_tiles(s), &mut chunks);
            // SAFETY: AVX-512 (fits), co a multiple of 16, `du` is [36, ci, co] and `dw` [9, ci, co].
            unsafe { filter_gradient(du.as_ptr(), s.cin, s.cout, dw.as_mut_ptr(), accumulate) };
        });
        put_shared(&shared::PARTIALS, chunks);
        return;
    }
    let tiles = tile_count(s);
    let parts = threads::num_threads().min(tiles).max(1);
    with_filter(parts * POSITIONS * s.cin * s.cout, |partials| by_tiles(input, dy, dw, accumulate, parts, partials));
}

/// The transformed-filter gradient `du` (`[36, cin, cout]`) of a layer, summed chunk of
/// `chunk` tiles after chunk: the threads transform a chunk's input and output-gradient tiles
/// position-major into `buf`, then each position's product over the chunk is added into its
/// plane of `du` by one thread. The sums run in the same order for any thread count.
pub(super) fn by_positions(input: &ConvInput<'_>, dy: &[f32], du: &mut [f32], chunk: usize, buf: &mut Vec<f32>) {
    let s = &input.shape;
    let (ci, co) = (s.cin, s.cout);
    let tiles = tile_count(s);
    assert_eq!(du.len(), POSITIONS * ci * co, "transformed filter gradient of the wrong length");
    assert_eq!(
        (input.x.len(), dy.len()),
        (s.input_len(), s.output_len()),
        "input or output gradient of the wrong length"
    );
    if tiles == 0 {
        du.fill(0.0);
        return;
    }
    let chunk = chunk.clamp(1, tiles);
    let (v, g) = take(buf, POSITIONS * chunk * (ci + co)).split_at_mut(POSITIONS * chunk * ci);
    for (index, first) in (0..tiles).step_by(chunk).enumerate() {
        let count = chunk.min(tiles - first);
        let (vs, gs) = (SharedOutput(v.as_mut_ptr()), SharedOutput(g.as_mut_ptr()));
        let runs: Vec<_> = threads::split_even(count, threads::num_threads().min(count)).collect();
        threads::install(|| {
            runs.into_par_iter().for_each(|run| {
                // SAFETY: tile k < count of the chunk writes its 36 positions at `k * ci + p * count
                // * ci` of `v` (`36 * chunk * ci` floats, taken above), and each run its own tiles.
                unsafe {
                    transform_inputs_to(
                        input,
                        first + run.start,
                        run.len(),
                        vs.at(run.start * ci),
                        false,
                        [ci, count * ci],
                    )
                };
                // SAFETY: as above, for `g` (`36 * chunk * co` floats) and `co`.
                unsafe {
                    output_grads_to(s, dy, first + run.start, run.len(), gs.at(run.start * co), [co, count * co])
                };
            });
        });
        // du[p] (ci x co) (+)= v[p]^T (ci x count) g[p] (count x co): the tiles as taps, `ci`
        // apart in `v[p]` and `co` in `g[p]`, one input channel per row.
        let args = ConvTileArgs {
            a_pixel_stride: 1,
            a_row_stride: ci,
            cin: 1,
            kh: count,
            kw: 1,
            w_row_stride: co,
            y_pixel_stride: co,
        };
        let (v, g) = (&*v, &*g);
        threads::install(|| {
            du.par_chunks_mut(ci * co).enumerate().for_each(|(p, du)| {
                let (v, g) = (&v[p * count * ci..(p + 1) * count * ci], &g[p * count * co..(p + 1) * count * co]);
                multiply(ci, co, &args, v, g, du, index > 0);
            });
        });
    }
}

/// `dw (+)=` the weight gradient, each of `parts` threads summing a fixed run of tiles into its
/// own transformed-filter gradient in `partials`, added in order (reproducible for a given
/// thread count).
pub(super) fn by_tiles(
    input: &ConvInput<'_>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    parts: usize,
    partials: &mut [f32],
) {
    let s = &input.shape;
    let (ci, co) = (s.cin, s.cout);
    let tiles = tile_count(s);
    let per = tiles_per_task(s, tiles);
    let plane = POSITIONS * ci * co;
    threads::install(|| {
        partials.par_chunks_mut(plane).zip(threads::split_even(tiles, parts).collect::<Vec<_>>()).for_each(
            |(du, range)| {
                du.fill(0.0);
                let mut first = range.start;
                while first < range.end {
                    let count = per.min(range.end - first);
                    with_tile(POSITIONS * count * (ci + co), |scratch| {
                        let (v, g) = scratch.split_at_mut(POSITIONS * count * ci);
                        transform_inputs(input, first, count, v, false);
                        // SAFETY: tile k's positions at `k * 36 * co + p * co` lie in `g` (`36 *
                        // count * co` floats), a buffer of this task alone.
                        unsafe { output_grads_to(s, dy, first, count, g.as_mut_ptr(), [POSITIONS * co, co]) };
                        // du[p] (ci x co) += v[:, p]^T (ci x count) g[:, p] (count x co): the tiles
                        // as taps (`kh = count`, 36 * ci apart in `v`, 36 * co in `g`), one input
                        // channel per row.
                        let args = ConvTileArgs {
                            a_pixel_stride: 1,
                            a_row_stride: POSITIONS * ci,
                            cin: 1,
                            kh: count,
                            kw: 1,
                            w_row_stride: POSITIONS * co,
                            y_pixel_stride: co,
                        };
                        for p in 0..POSITIONS {
                            let du = &mut du[p * ci * co..(p + 1) * ci * co];
                            gradient_product(count, ci, co, &args, &v[p * ci..], &g[p * co..], du);
                        }
                    });
                    first += count;
                }
            },
        );
    });
    let (total, rest) = partials.split_at_mut(plane);
    for part in rest.chunks_exact(plane) {
        total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    // SAFETY: AVX-512 (fits), co a multiple of 16, `total` is [36, ci, co] and `dw` [9, ci, co].
    unsafe { filter_gradient(total.as_ptr(), ci, co, dw.as_mut_ptr(), accumulate) };
}

/// The output gradient's tiles `first..first + count` through `A dy A^T` into the buffer at `g`,
/// tile `k`'s position `p` at `k * stride[0] + p * stride[1]` floats (`cout` of them).
///
/// # Safety
/// The places written are writable and no other thread touches them meanwhile; `dy` is the
/// layer's whole output gradient (`s.output_len()` floats) and the CPU has AVX-512.
unsafe fn output_grads_to(
    s: &ConvShape,
    dy: &[f32],
    first: usize,
    count: usize,
    g: *mut f32,
    [tile_stride, position_stride]: [usize; 2],
) {
    let (oh, ow, co) = (s.out_h(), s.out_w(), s.cout);
    for (k, (img, oy, ox)) in tile_corners(s, first, count).enumerate() {
        let win = window(oh, ow, co, 0, oy, ox);
        // SAFETY: AVX-512 and whole vectors (contract, and shapes that fit); image `img` of `dy`;
        // tile k's 36 positions at the strides (contract).
        unsafe { output_grad_tile(dy[img * oh * ow * co..].as_ptr(), &win, g.add(k * tile_stride), position_stride) };
    }
}
