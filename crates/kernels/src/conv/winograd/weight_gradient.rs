//! The weight gradient: the forward pass's adjoint, summed per thread over fixed runs of tiles.

use super::product::gradient_product;
use super::tiles::{tile_corners, transform_inputs, window};
use super::{fits_weight_gradient, tile_count, tiles_per_task, POSITIONS};
use crate::conv::input::ConvInput;
use crate::scratch::{with_filter, with_tile};
use crate::simd::avx512::ConvTileArgs;
use crate::simd::winograd::{filter_gradient, output_grad_tile};
use crate::threads::{self};
use rayon::prelude::*;

/// `dw (+)= im2col(t(x))^T dy` for a shape that [`fits`]: per position, the product of the
/// transformed inputs and the transformed output gradients summed over the tiles, then taken
/// back through the filter transform. Each thread sums a fixed run of tiles into its own
/// partial, and the partials are added in order (reproducible for a given thread count).
///
/// # Panics
/// If the shape does not fit or a slice length disagrees with `s`.
pub(in crate::conv) fn backward_weight(input: &ConvInput<'_>, dy: &[f32], dw: &mut [f32], accumulate: bool) {
    let (s, x) = (&input.shape, input.x);
    assert!(fits_weight_gradient(s), "Winograd F(4x4, 3x3) does not run the weight gradient of {s:?}");
    assert_eq!((x.len(), dw.len(), dy.len()), (s.input_len(), s.weight_len(), s.output_len()));
    let tiles = tile_count(s);
    let parts = threads::num_threads().min(tiles).max(1);
    with_filter(parts * POSITIONS * s.cin * s.cout, |partials| {
        backward_weight_into(input, dy, dw, accumulate, parts, partials)
    });
}

/// [`backward_weight`] summing `parts` partial transformed-filter gradients in `partials`.
pub(super) fn backward_weight_into(
    input: &ConvInput<'_>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    parts: usize,
    partials: &mut [f32],
) {
    let s = &input.shape;
    let (ci, co) = (s.cin, s.cout);
    let (oh, ow) = (s.out_h(), s.out_w());
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
                        for (k, (img, oy, ox)) in tile_corners(s, first, count).enumerate() {
                            let win = window(oh, ow, co, 0, oy, ox);
                            // SAFETY: AVX-512 and whole vectors (fits); image `img` of `dy`
                            // (length checked); positions of row k of `g` as for `v`.
                            unsafe {
                                output_grad_tile(
                                    dy[img * oh * ow * co..].as_ptr(),
                                    &win,
                                    g[k * POSITIONS * co..].as_mut_ptr(),
                                    co,
                                )
                            };
                        }
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
