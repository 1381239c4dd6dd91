//! 3x3 stride-1 convolutions by Winograd's F(4x4, 3x3): each 4x4 block of output pixels costs
//! 36 multiply-adds per (input, output) channel pair instead of 144, for a few adds per pixel
//! in the transforms ([`crate::simd::winograd`]).
//!
//! The output is cut into 4x4 tiles, numbered over the whole batch; each task takes a run of
//! tiles and
//! 1. transforms their 6x6 input tiles into `v = [tiles, 36, cin]` (applying the fused batch
//!    norm and ReLU of the input as it reads it; the padding stays zero);
//! 2. multiplies, for each of the 36 positions, `v[:, p]` (`tiles x cin`) by the transformed filter
//!    `u[p]` (`cin x cout`) into `m[:, p]` (`m = [tiles, 36, cout]`), with the direct
//!    convolution's register-blocked micro-kernel seen as a 1x1 convolution;
//! 3. transforms `m` back into 4x4 output tiles, cut at the image's edge (gathering a
//!    training-mode batch norm's sums of the output as it writes it).
//!
//! With few tiles (ResNet-50's deep layers at small batches) the forward pass runs by blocks
//! of output channels instead ([`forward_by_channels`]): all tiles transformed once, then each
//! task transforms its block's part of the filter and runs steps 2 and 3 for its channels.
//!
//! The weight gradient runs the adjoint: the same transformed inputs, the output gradient's 4x4
//! tiles through `A dy A^T`, their products summed over the tiles per position, then `G^T du G`.
//!
//! Both buffers of a task live in the per-thread scratch tile, sized to stay in L2. The
//! transformed filter is computed once per call. The rounding error is several times the
//! direct sum's (measured about 8x in the tests below: the transforms' constants reach 8), still
//! around 1e-5 of the largest output.

use super::epilogue::{Epilogue, InputTransform};
use super::shape::ConvShape;
use super::shared_output::SharedOutput;
use crate::scratch::{with_filter, with_tile};
use crate::simd::avx512::ConvTileArgs;
use crate::simd::winograd::{
    filter_gradient, gradient_product_tile, input_tile, input_tile_bf16, output_grad_tile, output_tile, product_tile,
    product_tile_bf16, transform_filter, transform_filter_block, TileOutput, TileWindow,
};
use crate::simd::{self, Isa};
use crate::threads;
use rayon::prelude::*;

/// Output pixels per tile side, and positions (input pixels) per tile.
const M: usize = 4;
const POSITIONS: usize = 36;

/// Floats of per-task scratch (transformed input and products): 128 KiB, so that narrow layers
/// keep their tiles close to L1 (measured with ResNet-20: 16-channel layers ran faster with
/// about 28 tiles a task than with 64)...
const TASK_FLOATS: usize = 32 * 1024;
/// ...but at least this many tiles, over which wide layers spread the reading of their
/// transformed filter (64-channel layers ran faster with 28 tiles than with 7).
const MIN_TILES: usize = 16;

/// Most floats of a whole transformed filter: up to 256 channels in and out (ResNet-50's third
/// stage, 9.4 MB; a thread's buffer for it, and for the weight gradient's per-thread partials, is
/// shared by all layers). Wider layers run here only by channel blocks ([`runs_by_channels`]),
/// which never hold the whole transformed filter (ResNet-50's 512-channel 7x7 layers at batch 16
/// 1.9x faster than the direct kernels so).
const FILTER_FLOATS: usize = 36 * 256 * 256;

/// Fewest tiles for which transforming the filter on every call pays, run by runs of tiles:
/// measured on ResNet-50 at batch 1, its 56x56 layers (196 tiles) ran twice as fast as the
/// direct kernels; with 16 tiles (a 16-channel CIFAR layer at batch 1) 0.65x.
const MIN_TILES_TO_PAY: usize = 32;

/// The same run by channel blocks: 16 tiles (ResNet-50's 14x14 layers at batch 1, 256
/// channels) ran 1.65-1.75x faster than the direct kernels; 4 tiles (its 7x7 layers, 512
/// channels, whose 9.4 MB weight both read from memory) 1.0-1.1x, and 0.6-0.8x at 64 channels.
const MIN_TILES_BY_CHANNELS: usize = 16;

/// Most output tiles for which [`forward`] runs by blocks of output channels
/// ([`forward_by_channels`]) rather than by runs of tiles: up to 64 tiles the channel blocks
/// ran 1.2-1.5x faster (128 and 256 channels); at 98 and 196 tiles the two were even.
const FEW_TILES: usize = 64;

/// Floats of a channel block's transformed filter chunk (256 KiB: it stays in L2 with the
/// transformed inputs it meets).
const BLOCK_FILTER_FLOATS: usize = 64 * 1024;

/// Whether a layer's shape runs here: 3x3, stride 1, padding up to 2, channel counts in whole
/// vectors, transformed filter small enough (or never held whole), and an AVX-512 CPU.
pub(super) fn fits(s: &ConvShape) -> bool {
    s.kh == 3
        && s.kw == 3
        && s.stride == 1
        && s.pad <= 2
        && s.cin.is_multiple_of(16)
        && s.cout.is_multiple_of(16)
        && (POSITIONS * s.cin * s.cout <= FILTER_FLOATS || runs_by_channels(s))
        && simd::isa() >= Isa::Avx512
}

/// Whether the weight gradient of a shape runs here: it [`fits`] and its transformed filter is
/// small enough to hold whole (one per thread, summed).
pub(super) fn fits_weight_gradient(s: &ConvShape) -> bool {
    fits(s) && POSITIONS * s.cin * s.cout <= FILTER_FLOATS
}

/// Whether a shape that [`fits`] runs with bf16 products ([`forward`] with `bf16`): square
/// layers of 16, 32 or 64 channels (their products have kernels), on a CPU with AVX512_BF16.
pub(super) fn fits_bf16(s: &ConvShape) -> bool {
    fits(s) && s.cin == s.cout && matches!(s.cin, 16 | 32 | 64) && super::bf16_supported()
}

/// Whether Winograd is worth choosing for a shape that [`fits`]: enough output tiles to repay
/// the filter transform.
pub(super) fn pays_off(s: &ConvShape) -> bool {
    let tiles = tile_count(s);
    tiles >= if runs_by_channels(s) { MIN_TILES_BY_CHANNELS } else { MIN_TILES_TO_PAY }
}

/// Output tiles of a layer, over the whole batch.
fn tile_count(s: &ConvShape) -> usize {
    s.n * s.out_h().div_ceil(M) * s.out_w().div_ceil(M)
}

/// Tiles per task: as many as the scratch budget holds (at least [`MIN_TILES`]), but at least
/// four tasks per thread.
fn tiles_per_task(s: &ConvShape, tiles: usize) -> usize {
    let fit = (TASK_FLOATS / (POSITIONS * (s.cin + s.cout))).max(MIN_TILES);
    let spread = tiles.div_ceil(4 * threads::num_threads());
    fit.min(spread).max(1)
}

/// `y (+)= conv(t(x), w)` for a shape that [`fits`], with the epilogue applied in the Winograd
/// output transform: the output transform (an eval-mode batch norm, residual and ReLU), or the
/// statistics (per task in f32, at most a few hundred pixels, then added in task order in f64,
/// reproducible for a given thread count). With `bf16` (a shape that [`fits_bf16`]), the transformed
/// input and filter are rounded to bf16 and multiplied with `vdpbf16ps`, summed in f32; the
/// transforms stay f32.
///
/// # Panics
/// If the shape does not fit or a slice length disagrees with `s`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    w: &[f32],
    y: &mut [f32],
    accumulate: bool,
    epilogue: Epilogue<'_, '_>,
    bf16: bool,
) {
    assert!(fits(s), "Winograd F(4x4, 3x3) does not run {s:?}");
    assert!(!bf16 || fits_bf16(s), "Winograd with bf16 products does not run {s:?}");
    assert_eq!((x.len(), w.len(), y.len()), (s.input_len(), s.weight_len(), s.output_len()));
    // The epilogue's buffers are checked against `y` here.
    let out = epilogue.tile_output(accumulate, y.len(), s.cout);
    let stats = match epilogue {
        Epilogue::Stats(total) => Some(total),
        _ => None,
    };
    if !bf16 && runs_by_channels(s) {
        return forward_by_channels(s, x, t, w, y, out, stats);
    }
    let plane = POSITIONS * s.cin * s.cout;
    // The bf16 filter, as pairs of input channels, follows the f32 one (as f32 bit patterns).
    with_filter(if bf16 { plane + plane / 2 } else { plane }, |u| forward_into(s, x, t, w, y, out, stats, u, bf16));
}

/// [`forward`] with `u` (`[36, cin, cout]`, then with `bf16` its `[36, cin / 2, cout]` pairs)
/// for the transformed filter, the tile epilogue `epilogue`, whose buffers fit `y`, and the
/// output's sums and sums of squares (`[2 * cout]`) written to `stats` if given.
#[allow(clippy::too_many_arguments)]
fn forward_into(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    w: &[f32],
    y: &mut [f32],
    epilogue: TileOutput,
    stats: Option<&mut [f64]>,
    u: &mut [f32],
    bf16: bool,
) {
    let (ci, co) = (s.cin, s.cout);
    let plane = POSITIONS * ci * co;
    let (u, u_pairs) = u.split_at_mut(plane);
    // SAFETY: AVX-512 was checked by `fits`, co is a multiple of 16 and the lengths match.
    unsafe { transform_filter(w.as_ptr(), ci, co, u.as_mut_ptr()) };
    if bf16 {
        // Rows `2p` and `2p + 1` of each position's `[ci, co]` block as bf16 pairs: the rows as
        // pixels of `co` channels (ci is even), paired as the bf16 weight gradient pairs pixels
        // (vectorised: 8x the per-element packing of the direct kernels' weights here).
        super::bf16::pixel_pairs_bf16(u, co, bits_mut(u_pairs));
    }
    let (u, u_pairs) = (&*u, &*u_pairs);
    let tiles = tile_count(s);
    let per = tiles_per_task(s, tiles);
    let out = SharedOutput(y.as_mut_ptr());
    let gemm = ConvTileArgs {
        a_pixel_stride: POSITIONS * ci,
        a_row_stride: 0,
        cin: ci,
        kh: 1,
        kw: 1,
        w_row_stride: co,
        y_pixel_stride: POSITIONS * co,
    };
    // Task `task`, its output's per-channel sums (and sums of squares) into `total` if given.
    let run_task = |task: usize, total: Option<&mut [f64]>| {
        let first = task * per;
        let count = per.min(tiles - first);
        let sums_len = if total.is_some() { 2 * co } else { 0 };
        with_tile(POSITIONS * count * (ci + co) + sums_len, |scratch| {
            let (scratch, sums) = scratch.split_at_mut(POSITIONS * count * (ci + co));
            sums.fill(0.0);
            let (v, m) = scratch.split_at_mut(POSITIONS * count * ci);
            if bf16 {
                // `v` holds bf16 values, two to an f32 slot: [count, 36, ci] of them.
                transform_inputs(s, x, t, first, count, v, true);
                for p in 0..POSITIONS {
                    let up = &u_pairs[p * ci / 2 * co..(p + 1) * ci / 2 * co];
                    product_bf16(count, ci, &v[p * ci / 2..], up, &mut m[p * co..]);
                }
            } else {
                transform_inputs(s, x, t, first, count, v, false);
                // m[:, p] (count x co) = v[:, p] (count x ci) u[p] (ci x co): a 1x1
                // convolution whose pixels (tiles) lie 36 * ci apart in `v` and 36 * co
                // apart in `m`.
                for p in 0..POSITIONS {
                    let (vp, up) = (&v[p * ci..], &u[p * ci * co..(p + 1) * ci * co]);
                    product(count, ci, co, &gemm, vp, up, &mut m[p * co..]);
                }
            }
            let sums_at = (!sums.is_empty()).then_some(sums.as_mut_ptr());
            // SAFETY: `m` holds the tiles' products, `co` floats a position; `y` (behind `out`)
            // has the shape's length (checked), and no other task writes these tiles' pixels
            // (each pixel lies in one tile); `sums_at`, if any, is this task's `2 * co` floats.
            unsafe { output_tiles(s, m, co, first, count, out, epilogue, sums_at, 0..co) };
            if let Some(total) = total {
                total.iter_mut().zip(sums.iter()).for_each(|(t, &part)| *t = f64::from(part));
            }
        });
    };
    // One slot of sums per task, added in task order.
    let task_sums = run_tasks(tiles.div_ceil(per), stats.is_some().then_some(2 * co), run_task);
    if let Some(stats) = stats {
        crate::batch_norm::sum_parts_in_order(&task_sums, stats);
    }
}

/// Runs `run(task, slot)` for tasks `0..tasks` in parallel; with `slot_len`, each task gets a
/// zeroed slot of that many values of its own, and the slots come back in task order (empty
/// without).
fn run_tasks<T: Copy + Default + Send>(
    tasks: usize,
    slot_len: Option<usize>,
    run: impl Fn(usize, Option<&mut [T]>) + Sync,
) -> Vec<T> {
    threads::install(|| match slot_len {
        Some(len) => {
            let mut slots = vec![T::default(); tasks * len];
            slots.par_chunks_mut(len).enumerate().for_each(|(task, slot)| run(task, Some(slot)));
            slots
        }
        None => {
            (0..tasks).into_par_iter().for_each(|task| run(task, None));
            Vec::new()
        }
    })
}

/// Whether [`forward`] runs `s` by blocks of output channels: few tiles (ResNet-50's 14x14 and
/// 7x7 layers at small batches), where each run of tiles would read the whole transformed filter
/// for a handful of tiles, and at least 64 output channels (four blocks or more to share out;
/// narrower layers ran 0.7-0.9x as fast so).
fn runs_by_channels(s: &ConvShape) -> bool {
    tile_count(s) <= FEW_TILES && s.cout >= 64
}

/// Output channels of a block of [`forward_by_channels`]: one vector where there are enough tiles
/// to fill the micro-kernel's rows, up to four for fewer, so that a block keeps about 16
/// accumulators.
fn channel_block(tiles: usize, co: usize) -> usize {
    let vectors = match tiles {
        12.. => 1,
        6.. => 2,
        _ => 4,
    };
    (1..=vectors).rev().map(|v| 16 * v).find(|b| co.is_multiple_of(*b)).unwrap_or(16)
}

/// [`forward`] by blocks of output channels: all tiles' inputs transformed once into a shared
/// `v = [36, tiles, cin]`; then each task takes a block of output channels, transforms its part
/// of the filter a chunk of input channels at a time (in L2), multiplies all tiles by it, and
/// takes its channels of every tile back through the output transform. The filter is
/// transformed once in all, in parallel, and never written out whole; the statistics of a
/// block's channels are its task's (in f32 over at most `16 * FEW_TILES` pixels).
fn forward_by_channels(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    w: &[f32],
    y: &mut [f32],
    epilogue: TileOutput,
    stats: Option<&mut [f64]>,
) {
    let (ci, co) = (s.cin, s.cout);
    let tiles = tile_count(s);
    let block = channel_block(tiles, co);
    let chunk = (BLOCK_FILTER_FLOATS / (POSITIONS * block) / 16 * 16).clamp(16, ci);
    let out = SharedOutput(y.as_mut_ptr());
    with_filter(tiles * POSITIONS * ci, |v| {
        // Position-major (`[36, tiles, cin]`): a position's tiles `cin` floats apart. Tile-major,
        // they lie `36 * cin` apart, 9 pages at 256 channels: every tile's row in one L1 set.
        // In parallel runs of tiles, each writing its tiles' rows of every position (on one
        // thread, the other idle, ResNet-50's 28x28 and 14x14 layers at batch 1 took 1.15-1.30x
        // and 1.11-1.18x as long on two threads).
        let runs: Vec<_> = threads::split_even(tiles, threads::num_threads()).filter(|r| !r.is_empty()).collect();
        assert!(v.len() >= tiles * POSITIONS * ci);
        let v_at = SharedOutput(v.as_mut_ptr());
        threads::install(|| {
            runs.par_iter().for_each(|r| {
                // SAFETY: tile k of the run goes to positions `(r.start + k) * ci + p * tiles *
                // ci`, inside `v` (asserted); the runs are disjoint, so no two threads write the
                // same values.
                unsafe {
                    transform_inputs_to(s, x, t, r.start, r.len(), v_at.at(r.start * ci), false, [ci, tiles * ci])
                }
            })
        });
        let v = &*v;
        // Block `b`'s channels of every tile, their sums and sums of squares added into `sums`
        // (`2 * block` zeroed floats) if given.
        let run_block = |b: usize, sums: Option<&mut [f32]>| {
            let c_first = b * block;
            with_tile(POSITIONS * (chunk * block + tiles * block), |scratch| {
                let (u, m) = scratch.split_at_mut(POSITIONS * chunk * block);
                for c0 in (0..ci).step_by(chunk) {
                    let k = chunk.min(ci - c0);
                    // SAFETY: AVX-512 (fits); input channels c0..c0 + k and output channels
                    // c_first..c_first + block (a multiple of 16 dividing co) of the [9, ci, co]
                    // weight (length checked by `forward`); `u` holds 36 * chunk * block floats.
                    unsafe {
                        let at = w[c0 * co + c_first..].as_ptr();
                        transform_filter_block(at, co, ci * co, k, block, u.as_mut_ptr(), [POSITIONS * block, block])
                    };
                    // m[:, p] (tiles x block) (+)= v[p, :, c0..c0 + k] u[p] (k x block).
                    let args = ConvTileArgs {
                        a_pixel_stride: ci,
                        a_row_stride: 0,
                        cin: k,
                        kh: 1,
                        kw: 1,
                        w_row_stride: POSITIONS * block,
                        y_pixel_stride: POSITIONS * block,
                    };
                    for p in 0..POSITIONS {
                        let up = &u[p * block..];
                        multiply(tiles, block, &args, &v[p * tiles * ci + c0..], up, &mut m[p * block..], c0 > 0);
                    }
                }
                let sums_at = sums.map(|sums| sums.as_mut_ptr());
                // SAFETY: `m` holds every tile's products of this block, `block` floats a
                // position; `y` (behind `out`) has the shape's length (checked by `forward`),
                // and no other task writes this block's channels; `sums_at`, if any, is this
                // block's `2 * block` floats.
                unsafe { output_tiles(s, m, block, 0, tiles, out, epilogue, sums_at, c_first..c_first + block) };
            });
        };
        let block_sums = run_tasks::<f32>(co / block, stats.is_some().then_some(2 * block), run_block);
        if let Some(stats) = stats {
            for (b, sums) in block_sums.chunks_exact(2 * block).enumerate() {
                let (sum, squares) = sums.split_at(block);
                let at = b * block;
                stats[at..at + block].iter_mut().zip(sum).for_each(|(t, &v)| *t = f64::from(v));
                stats[co + at..co + at + block].iter_mut().zip(squares).for_each(|(t, &v)| *t = f64::from(v));
            }
        }
    });
}

/// Takes the products `m` of tiles `first..first + count` (tile `k`'s position `p` at `(36 * k +
/// p) * stride` floats, the first of the channels `channels`) back through the output transform
/// into those channels of the output behind `y`, through `epilogue`, adding the written values'
/// per-channel sums and sums of squares into `sums` if given.
///
/// # Safety
/// - AVX-512; the shape [`fits`]; `channels` starts and ends at multiples of 16 within `cout`.
/// - `y` points to an output of `s.output_len()` floats, whose pixels of these tiles in these
///   channels no other thread touches meanwhile; the epilogue's images are as long.
/// - `sums`, if given, holds `2 * channels.len()` writable floats no other thread touches.
#[allow(clippy::too_many_arguments)]
unsafe fn output_tiles(
    s: &ConvShape,
    m: &[f32],
    stride: usize,
    first: usize,
    count: usize,
    y: SharedOutput,
    epilogue: TileOutput,
    sums: Option<*mut f32>,
    channels: std::ops::Range<usize>,
) {
    let (oh, ow, co) = (s.out_h(), s.out_w(), s.cout);
    assert!(m.len() >= count * POSITIONS * stride && channels.len() <= stride, "products too short");
    for (k, (img, oy, ox)) in tile_corners(s, first, count).enumerate() {
        let win = window(oh, ow, co, 0, oy, ox);
        let at = img * oh * ow * co;
        // SAFETY: AVX-512, whole vectors and the channels (contract); tile k of `m` holds its 36
        // positions of these channels (length asserted); image `img` of the output and of the
        // epilogue's images, whose window pixels in these channels this thread alone writes
        // (contract).
        unsafe {
            output_tile(
                m[k * POSITIONS * stride..].as_ptr(),
                stride,
                y.at(at),
                &win,
                epilogue.offset(at),
                sums,
                channels.clone(),
            )
        };
    }
}

/// `dw (+)= im2col(t(x))^T dy` for a shape that [`fits`]: per position, the product of the
/// transformed inputs and the transformed output gradients summed over the tiles, then taken
/// back through the filter transform. Each thread sums a fixed run of tiles into its own
/// partial, and the partials are added in order (reproducible for a given thread count).
///
/// # Panics
/// If the shape does not fit or a slice length disagrees with `s`.
pub(super) fn backward_weight(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    assert!(fits_weight_gradient(s), "Winograd F(4x4, 3x3) does not run the weight gradient of {s:?}");
    assert_eq!((x.len(), dw.len(), dy.len()), (s.input_len(), s.weight_len(), s.output_len()));
    let tiles = tile_count(s);
    let parts = threads::num_threads().min(tiles).max(1);
    with_filter(parts * POSITIONS * s.cin * s.cout, |partials| {
        backward_weight_into(s, x, t, dy, dw, accumulate, parts, partials)
    });
}

/// [`backward_weight`] summing `parts` partial transformed-filter gradients in `partials`.
#[allow(clippy::too_many_arguments)]
fn backward_weight_into(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    parts: usize,
    partials: &mut [f32],
) {
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
                        transform_inputs(s, x, t, first, count, v, false);
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

/// [`product_tile`] (`T = f32`) or [`product_tile_bf16`] (`T = u32`, bf16 pairs) for some tile
/// count, input channels and output vectors.
type ProductTile<T> = unsafe fn(*const T, *const T, usize, *mut f32, usize);

/// A product kernel for 1 to `N` tiles (entry `r - 1` takes `r`).
macro_rules! product_tiles {
    ($kernel:ident, $t:ty, $nb:literal, $cin:literal, [$($r:literal)*]) => {
        [$($kernel::<$r, $nb, $cin> as ProductTile<$t>),*]
    };
}
/// 16 channels in and out: one vector of outputs, up to 16 tiles (16 accumulators).
const PRODUCT_16: [ProductTile<f32>; 16] =
    product_tiles!(product_tile, f32, 1, 16, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16]);
/// 32 channels in and out: two vectors of outputs, up to 12 tiles (24 accumulators).
const PRODUCT_32: [ProductTile<f32>; 12] = product_tiles!(product_tile, f32, 2, 32, [1 2 3 4 5 6 7 8 9 10 11 12]);
/// The same in bf16 pairs (8 and 16 of them), and 64 channels (32 pairs, four vectors of outputs,
/// up to 6 tiles: 24 accumulators).
const PRODUCT_BF16_16: [ProductTile<u32>; 16] =
    product_tiles!(product_tile_bf16, u32, 1, 8, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16]);
const PRODUCT_BF16_32: [ProductTile<u32>; 12] =
    product_tiles!(product_tile_bf16, u32, 2, 16, [1 2 3 4 5 6 7 8 9 10 11 12]);
const PRODUCT_BF16_64: [ProductTile<u32>; 6] = product_tiles!(product_tile_bf16, u32, 4, 32, [1 2 3 4 5 6]);

/// `m = v u` at one position for `rows` tiles (`m`, `v` and `u` as [`multiply`] takes them
/// with `g`): on [`product_tile`] where the layer is square with 16 or 32 channels (CIFAR
/// ResNets' first two stages; 1.5x and 1.16x faster there in isolation), else on [`multiply`].
fn product(rows: usize, ci: usize, co: usize, g: &ConvTileArgs, v: &[f32], u: &[f32], m: &mut [f32]) {
    let kernels: &[ProductTile<f32>] = match (ci, co) {
        (16, 16) => &PRODUCT_16,
        (32, 32) => &PRODUCT_32,
        _ => return multiply(rows, co, g, v, u, m, false),
    };
    assert!(simd::isa() >= Isa::Avx512, "Winograd products need AVX-512");
    // SAFETY: AVX-512 (asserted) runs these tables.
    unsafe { product_blocks(kernels, rows, ci, ci, v, u, m) };
}

/// `m = v u` at one position for `rows` tiles of a square layer of `c` = 16, 32 or 64 channels
/// in bf16: `v` from the position's first channel pair in the first tile (`36 * c / 2` pairs a
/// tile), `u` its `[c / 2, c]` filter pairs, both as the bits of f32 slots; `m` as for
/// [`product`].
fn product_bf16(rows: usize, c: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    let kernels: &[ProductTile<u32>] = match c {
        16 => &PRODUCT_BF16_16,
        32 => &PRODUCT_BF16_32,
        64 => &PRODUCT_BF16_64,
        _ => panic!("no bf16 Winograd product for {c} channels"),
    };
    assert!(super::bf16_supported(), "bf16 Winograd products need AVX512_BF16");
    // SAFETY: AVX-512 and AVX512_BF16 (asserted and checked by `fits_bf16`) run these tables.
    unsafe { product_blocks(kernels, rows, c / 2, c, bits(v), bits(u), m) };
}

/// The bit patterns of `v`'s floats (slots that hold bf16 pairs).
fn bits(v: &[f32]) -> &[u32] {
    // SAFETY: u32 and f32 have the same size and alignment, and every bit pattern is a valid
    // value of both.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u32, v.len()) }
}

/// [`bits`], writable.
fn bits_mut(v: &mut [f32]) -> &mut [u32] {
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
unsafe fn product_blocks<T>(
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
type GradientProductTile = unsafe fn(*const f32, *const f32, usize, *mut f32, usize);

/// `du[p] += v[:, p]^T g[:, p]` at one position over `tiles` tiles (the operands as
/// [`multiply`] takes them with `args`): on [`gradient_product_tile`] where the layer is square
/// with 16, 32 or 64 channels, in blocks of 16 accumulators (input x output channels: 16 x 16,
/// 8 x 32, 4 x 64), else on [`multiply`]. Each call's broadcasts of `v` meet all the output
/// channels, whose 1 to 4 vectors stay in registers.
fn gradient_product(tiles: usize, ci: usize, co: usize, args: &ConvTileArgs, v: &[f32], g: &[f32], du: &mut [f32]) {
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
fn multiply(rows: usize, co: usize, g: &ConvTileArgs, a: &[f32], w: &[f32], y: &mut [f32], accumulate: bool) {
    assert!(simd::isa() >= Isa::Avx512 && g.kw == 1 && rows > 0 && co > 0, "product of {rows} x {co}, {g:?}");
    assert!(a.len() >= (rows - 1) * g.a_pixel_stride + (g.kh - 1) * g.a_row_stride + g.cin, "left operand too short");
    assert!(w.len() >= (g.kh * g.cin - 1) * g.w_row_stride + co, "right operand too short");
    assert!(y.len() >= (rows - 1) * g.y_pixel_stride + co, "output too short");
    for c0 in (0..co).step_by(64) {
        let channels = (co - c0).min(64);
        let block = super::direct::conv_pixels(channels.div_ceil(16));
        for r0 in (0..rows).step_by(block) {
            let r = block.min(rows - r0);
            // SAFETY: AVX-512 (asserted). Rows r0..r0 + r of `a` with all their taps, rows of
            // `w` with lanes c0..c0 + channels, and rows r0..r0 + r of `y` with those lanes lie
            // in their slices (lengths asserted above); `y` overlaps neither input.
            unsafe {
                super::direct::conv_tile(
                    r,
                    channels,
                    g,
                    a[r0 * g.a_pixel_stride..].as_ptr(),
                    w[c0..].as_ptr(),
                    y[r0 * g.y_pixel_stride + c0..].as_mut_ptr(),
                    accumulate,
                    None,
                )
            };
        }
    }
}

/// The transformed input tiles of tiles `first..first + count` into `v` (`[count, 36, cin]`:
/// each tile's 36 positions written together; position-major `[36, count, cin]`, whose stores
/// land a position's whole row of tiles apart, was 1.05x slower for a ResNet-20 training step,
/// and as much again with the products and output gradients kept that way too).
fn transform_inputs(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    first: usize,
    count: usize,
    v: &mut [f32],
    bf16: bool,
) {
    let ci = s.cin;
    // In bf16, two values to an f32 slot.
    let slots = if bf16 { POSITIONS * count * ci / 2 } else { POSITIONS * count * ci };
    assert!(v.len() >= slots, "transformed-input buffer too short");
    // SAFETY: the places written lie within `v` (asserted above), which nothing else uses.
    unsafe { transform_inputs_to(s, x, t, first, count, v.as_mut_ptr(), bf16, [POSITIONS * ci, ci]) }
}

/// [`transform_inputs`] into the buffer at `v`, tile `k`'s position `p` at `k * stride[0] + p *
/// stride[1]` values (f32, or bf16 two to a slot), both strides multiples of `cin`.
///
/// # Safety
/// The places written (`(count - 1) * tile_stride + 35 * position_stride + cin` values from `v`,
/// two to a slot in bf16, at the strides' multiples) are writable and no other thread touches
/// them meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn transform_inputs_to(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    first: usize,
    count: usize,
    v: *mut f32,
    bf16: bool,
    [tile_stride, position_stride]: [usize; 2],
) {
    let ci = s.cin;
    assert!(tile_stride.is_multiple_of(ci) && position_stride.is_multiple_of(ci));
    assert!(!bf16 || super::bf16_supported(), "bf16 transforms need AVX512_BF16");
    let (v32, v16) = (v, v as *mut u16);
    for (k, (img, oy, ox)) in tile_corners(s, first, count).enumerate() {
        let win = window(s.h, s.w, ci, s.pad, oy, ox);
        let (img, t) = (x[img * s.h * s.w * ci..].as_ptr(), t.map(|t| (t.scale.as_ptr(), t.shift.as_ptr())));
        // SAFETY: AVX-512 (and AVX512_BF16 for bf16, asserted) and whole vectors of channels
        // (the callers run only shapes that fit); image `img` of `x` (length checked by the
        // callers) and the transform's `ci` floats; positions p < 36 of tile k < count at
        // `k * tile_stride + p * position_stride` values into `v` (f32, or bf16 two to a
        // slot), their `ci` values writable (contract).
        unsafe {
            if bf16 {
                input_tile_bf16(img, &win, t, v16.add(k * tile_stride), position_stride)
            } else {
                input_tile(img, &win, t, v32.add(k * tile_stride), position_stride)
            }
        };
    }
}

/// Tiles `first..first + count` in order (numbered image by image, row by row over the output
/// of `s`): for each, its image and the top-left output pixel, without a division per tile.
fn tile_corners(s: &ConvShape, first: usize, count: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (th, tw) = (s.out_h().div_ceil(M), s.out_w().div_ceil(M));
    let (mut img, mut ty, mut tx) = (first / (th * tw), first / tw % th, first % tw);
    (0..count).map(move |_| {
        let at = (img, M * ty, M * tx);
        tx += 1;
        if tx == tw {
            tx = 0;
            ty += 1;
            if ty == th {
                ty = 0;
                img += 1;
            }
        }
        at
    })
}

/// The window of an image of `h x w` pixels of `c` channels starting `pad` pixels before
/// output pixel (oy, ox).
fn window(h: usize, w: usize, c: usize, pad: usize, oy: usize, ox: usize) -> TileWindow {
    TileWindow { h, w, c, y0: oy as isize - pad as isize, x0: ox as isize - pad as isize }
}

#[cfg(test)]
mod tests {
    use super::super::ConvAlgorithm;
    use super::*;
    use crate::rng::Rng;

    /// The largest error of `y` against a double-precision sum of the convolution of `x` and `w`
    /// (3x3, stride 1, padding 1), relative to the largest output.
    fn relative_error(s: &ConvShape, x: &[f32], w: &[f32], y: &[f32]) -> f64 {
        let (cin, cout) = (s.cin, s.cout);
        let (mut err, mut top) = (0.0f64, 0.0f64);
        for (p, row) in y.chunks_exact(cout).enumerate() {
            let (img, oy, ox) = (p / (s.h * s.w), p / s.w % s.h, p % s.w);
            for (o, &got) in row.iter().enumerate() {
                let mut want = 0.0f64;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                        if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                            continue;
                        }
                        let xi = ((img * s.h + iy as usize) * s.w + ix as usize) * cin;
                        for c in 0..cin {
                            want += f64::from(x[xi + c]) * f64::from(w[((ky * 3 + kx) * cin + c) * cout + o]);
                        }
                    }
                }
                err = err.max((f64::from(got) - want).abs());
                top = top.max(want.abs());
            }
        }
        err / top
    }

    /// Normal inputs and He-initialised weights for a 14x14 layer of `cin -> cout` channels.
    fn layer(cin: usize, cout: usize) -> (ConvShape, Vec<f32>, Vec<f32>) {
        let s = ConvShape { n: 2, h: 14, w: 14, cin, cout, kh: 3, kw: 3, stride: 1, pad: 1 };
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..s.input_len()).map(|_| rng.normal() as f32).collect();
        let w: Vec<f32> = (0..s.weight_len()).map(|_| rng.normal() as f32 * (2.0 / (9 * cin) as f32).sqrt()).collect();
        (s, x, w)
    }

    /// The error against a double-precision sum, relative to the output's largest value, for
    /// layers of the sizes the networks have (up to 1152 terms per output). F(4x4, 3x3) adds
    /// rounding in its transforms: measured 3e-6 to 1e-5 here, against 4e-7 to 1.2e-6 for the
    /// direct kernels on the same data (about 50 to 90 f32 ulps of the largest output).
    #[test]
    fn error_stays_near_f32_rounding() {
        if simd::isa() < Isa::Avx512 {
            crate::skip::skip("no AVX-512 on this CPU");
            return;
        }
        for (cin, cout) in [(64, 64), (128, 128), (16, 32)] {
            let (s, x, w) = layer(cin, cout);
            let mut y = vec![f32::NAN; s.output_len()];
            forward(&s, &x, None, &w, &mut y, false, Epilogue::None, false);
            let err = relative_error(&s, &x, &w, &y);
            eprintln!("{cin}->{cout}: error {err:e} of the largest output");
            assert!(err < 2e-5, "{cin}->{cout}: error {err:e}");
        }
    }

    /// With bf16 products the error is the rounding of the transformed input and filter to
    /// bf16 (8 significant bits), grown by the output transform: measured 5.7e-2 to 7.4e-2 of
    /// the largest output here, 21 to 31 times the direct bf16 kernels' on the same data (2.1e-3
    /// to 2.6e-3; in RMS over the outputs, 2.3% of their RMS against 0.23%, ten times).
    #[test]
    fn bf16_products_error_against_the_direct_bf16_kernels() {
        if !super::super::bf16_supported() {
            crate::skip::skip("this CPU lacks AVX512_BF16");
            return;
        }
        for c in [16, 32, 64] {
            let (s, x, w) = layer(c, c);
            let mut y = vec![f32::NAN; s.output_len()];
            forward(&s, &x, None, &w, &mut y, false, Epilogue::None, true);
            let err = relative_error(&s, &x, &w, &y);
            let mut direct = vec![f32::NAN; s.output_len()];
            let mut ws = crate::Workspace::new();
            super::super::conv2d_forward_with(ConvAlgorithm::DirectBf16, &s, &x, None, &w, &mut direct, None, &mut ws);
            let direct_err = relative_error(&s, &x, &w, &direct);
            eprintln!(
                "{c} channels: bf16 Winograd error {err:e}, direct bf16 {direct_err:e} ({:.1}x)",
                err / direct_err
            );
            assert!(err < 0.1, "{c} channels: error {err:e} (direct bf16 {direct_err:e})");
        }
    }

    /// The products on kernels with the strides built in, forward and weight gradient (which
    /// accumulates into existing values), for every tile count of their tables and several
    /// blocks, equal the general micro-kernel's bit for bit (the same sums in the same order).
    #[test]
    fn square_products_equal_the_general_kernel() {
        if simd::isa() < Isa::Avx512 {
            crate::skip::skip("no AVX-512 on this CPU");
            return;
        }
        let mut rng = Rng::new(11);
        for c in [16, 32, 64] {
            for tiles in 1..=40 {
                let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
                let (v, u, g, du) = (r(tiles * POSITIONS * c), r(c * c), r(tiles * POSITIONS * c), r(c * c));
                let (row, at) = (POSITIONS * c, 5 * c);
                let forward = ConvTileArgs {
                    a_pixel_stride: row,
                    a_row_stride: 0,
                    cin: c,
                    kh: 1,
                    kw: 1,
                    w_row_stride: c,
                    y_pixel_stride: row,
                };
                let gradient = ConvTileArgs {
                    a_pixel_stride: 1,
                    a_row_stride: row,
                    cin: 1,
                    kh: tiles,
                    kw: 1,
                    w_row_stride: row,
                    y_pixel_stride: c,
                };
                // Position 5 of each tile: the forward products touch only its c floats a tile.
                let (mut want, mut got) = (vec![f32::NAN; tiles * row], vec![f32::NAN; tiles * row]);
                multiply(tiles, c, &forward, &v[at..], &u, &mut want[at..], false);
                product(tiles, c, c, &forward, &v[at..], &u, &mut got[at..]);
                let (mut want_du, mut got_du) = (du.clone(), du);
                multiply(c, c, &gradient, &v[at..], &g[at..], &mut want_du, true);
                gradient_product(tiles, c, c, &gradient, &v[at..], &g[at..], &mut got_du);
                for (pass, want, got) in [("forward", want, got), ("weight gradient", want_du, got_du)] {
                    for (i, (w, x)) in want.iter().zip(&got).enumerate() {
                        assert!(w.to_bits() == x.to_bits(), "{pass}, {c} channels, {tiles} tiles, [{i}]: {x} vs {w}");
                    }
                }
            }
        }
    }

    /// All three passes, element by element against the GEMM path, with the fused input
    /// transform, the output statistics and accumulation into existing values: by runs of tiles
    /// (shapes with many tasks and several runs per thread) and by channel blocks (blocks of one,
    /// two and four vectors, several chunks of input channels, and a layer too wide to hold its
    /// transformed filter, whose weight gradient runs on the direct kernels).
    #[test]
    fn every_pass_matches_gemm_element_by_element() {
        if simd::isa() < Isa::Avx512 {
            crate::skip::skip("no AVX-512 on this CPU");
            return;
        }
        use super::super::{
            conv2d_backward_data_with as data, conv2d_backward_weight_with as weight, conv2d_forward_with as fwd,
            ConvAlgorithm,
        };
        let shape = |n, h, w, cin, cout| ConvShape { n, h, w, cin, cout, kh: 3, kw: 3, stride: 1, pad: 1 };
        for (s, by_channels) in [
            (shape(8, 8, 8, 32, 32), false),
            (shape(4, 16, 13, 16, 16), false),
            (shape(8, 15, 17, 16, 48), false),
            (shape(3, 18, 18, 64, 64), false),
            // 12 tiles: blocks of 16 channels.
            (shape(2, 9, 8, 64, 64), true),
            // 6 tiles: blocks of 32 channels, input channels in chunks of 48 (128 -> 64 here, the
            // other way round in the data gradient).
            (shape(1, 12, 8, 128, 64), true),
            // 4 tiles: blocks of 64 channels, chunks of 16.
            (shape(1, 5, 7, 64, 128), true),
            // 512 channels: no whole transformed filter.
            (shape(1, 4, 4, 512, 512), true),
        ] {
            assert_eq!(runs_by_channels(&s), by_channels, "{s:?}");
            assert_eq!(fits_weight_gradient(&s), s.cin < 512, "{s:?}");
            let mut rng = Rng::new(3);
            let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
            let (w, g, x, scale, shift) = (r(s.weight_len()), r(s.output_len()), r(s.input_len()), r(s.cin), r(s.cin));
            let t = InputTransform { scale: &scale, shift: &shift };
            let mut ws = crate::Workspace::new();
            for pass in ["forward", "backward data", "backward weight"] {
                let len = match pass {
                    "forward" => s.output_len(),
                    "backward data" => s.input_len(),
                    _ => s.weight_len(),
                };
                let base = r(len);
                let mut out = [base.clone(), base];
                let mut stats = [vec![0.0f64; 2 * s.cout], vec![0.0f64; 2 * s.cout]];
                for (k, algo) in [ConvAlgorithm::Im2colGemm, ConvAlgorithm::Winograd].into_iter().enumerate() {
                    let (o, st) = (&mut out[k], &mut stats[k]);
                    match pass {
                        "forward" => fwd(algo, &s, &x, Some(t), &w, o, Some(st), &mut ws),
                        "backward data" => data(algo, &s, &g, &w, o, true, &mut ws),
                        _ => weight(algo, &s, &x, Some(t), &g, o, true, &mut ws),
                    }
                }
                let top = out[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (i, (want, got)) in out[0].iter().zip(&out[1]).enumerate() {
                    assert!((want - got).abs() <= 2e-5 * top, "{pass} {s:?} [{i}]: {got} vs {want} (largest {top})");
                }
                if pass == "forward" {
                    // The fused statistics against those of the output written (the output
                    // itself checked above), up to f32 summing: per channel, relative to the sum
                    // of magnitudes.
                    let co = s.cout;
                    let mut want = vec![[0.0f64; 3]; co];
                    for (i, &y) in out[1].iter().enumerate() {
                        let (y, c) = (f64::from(y), &mut want[i % co]);
                        *c = [c[0] + y, c[1] + y.abs(), c[2] + y * y];
                    }
                    for (c, [sum, magnitude, squares]) in want.into_iter().enumerate() {
                        let (got_sum, got_squares) = (stats[1][c], stats[1][co + c]);
                        assert!(
                            (got_sum - sum).abs() <= 1e-5 * (1.0 + magnitude),
                            "{s:?} sum [{c}]: {got_sum} vs {sum}"
                        );
                        assert!(
                            (got_squares - squares).abs() <= 1e-5 * (1.0 + squares),
                            "{s:?} sum of squares [{c}]: {got_squares} vs {squares}"
                        );
                    }
                }
            }
        }
    }
}
