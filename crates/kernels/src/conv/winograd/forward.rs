//! The forward pass: by runs of tiles, or by blocks of output channels when tiles are few.

use super::product::{bits_mut, multiply, product, product_bf16};
use super::tiles::{tile_corners, transform_inputs, transform_inputs_to, window};
use super::{
    fits, fits_bf16, holds_filter, tile_count, tiles_per_task, BLOCK_FILTER_FLOATS, FEW_TILES, FEW_TILES_WIDE,
    POSITIONS,
};
use crate::conv::epilogue::Epilogue;
use crate::conv::forward::ForwardPass;
use crate::conv::input::ConvInput;
use crate::conv::shape::ConvShape;
use crate::conv::shared_output::SharedOutput;
use crate::scratch::{with_filter, with_tile};
use crate::simd::avx512::ConvTileArgs;
use crate::simd::winograd::{output_tile, transform_filter, transform_filter_block, TileWrite};
use crate::threads::{self};
use rayon::prelude::*;

/// `y (+)= conv(t(x), w)` for a shape that [`fits`], with the epilogue applied in the Winograd
/// output transform: the output transform (an eval-mode batch norm, residual and ReLU), or the
/// statistics (per task in f32, at most a few hundred pixels, then added in task order in f64,
/// reproducible for a given thread count). With `bf16` (a shape that [`fits_bf16`]), the transformed
/// input and filter are rounded to bf16 and multiplied with `vdpbf16ps`, summed in f32; the
/// transforms stay f32.
///
/// # Panics
/// If the shape does not fit or a slice length disagrees with `s`.
pub(in crate::conv) fn forward(pass: &ForwardPass<'_>, y: &mut [f32], mut epilogue: Epilogue<'_>, bf16: bool) {
    let (input, w, accumulate) = (&pass.input, pass.weight.values, pass.accumulate);
    let (s, x) = (&input.shape, input.x);
    assert!(fits(s), "Winograd F(4x4, 3x3) does not run {s:?}");
    assert!(!bf16 || fits_bf16(s), "Winograd with bf16 products does not run {s:?}");
    assert_eq!((x.len(), w.len()), (s.input_len(), s.weight_len()));
    // The epilogue's buffers are checked against the output here. A bf16 output needs no f32
    // one: the tiles are rounded in registers.
    let write = epilogue.tile_write(accumulate, s.output_len(), s.cout);
    let bf16_only = matches!(write, TileWrite::StoreBf16(_));
    assert!(y.len() == s.output_len() || (bf16_only && y.is_empty()), "output of {} floats", y.len());
    let stats = match epilogue {
        Epilogue::Stats(total) | Epilogue::StatsStoringBf16 { sums: total, .. } => Some(total),
        _ => None,
    };
    let out = Destination { y, write, stats };
    if !bf16 && runs_by_channels(s) {
        return forward_by_channels(input, w, out);
    }
    let plane = POSITIONS * s.cin * s.cout;
    // The bf16 filter, as pairs of input channels, follows the f32 one (as f32 bit patterns).
    with_filter(if bf16 { plane + plane / 2 } else { plane }, |u| forward_into(input, w, out, u, bf16));
}

/// Where the forward pass's output goes: the output, how its tiles are written, and where the
/// output's per-channel sums and sums of squares (`[2 * cout]`) go, if anywhere.
pub(super) struct Destination<'a> {
    /// The output, `[n, oh, ow, cout]`.
    y: &'a mut [f32],
    /// How each tile is written.
    write: TileWrite,
    /// The statistics.
    stats: Option<&'a mut [f64]>,
}

/// The output behind a pointer that the tasks share, and how its tiles are written.
#[derive(Clone, Copy)]
pub(super) struct SharedTiles {
    /// The output, `[n, oh, ow, cout]`.
    y: SharedOutput,
    /// How each tile is written.
    write: TileWrite,
}

/// [`forward`] with `u` (`[36, cin, cout]`, then with `bf16` its `[36, cin / 2, cout]` pairs)
/// for the transformed filter, into `out` (whose tile writes' buffers fit its output).
pub(super) fn forward_into(input: &ConvInput<'_>, w: &[f32], out: Destination<'_>, u: &mut [f32], bf16: bool) {
    let s = &input.shape;
    let Destination { y, write, stats } = out;
    let (ci, co) = (s.cin, s.cout);
    let plane = POSITIONS * ci * co;
    let (u, u_pairs) = u.split_at_mut(plane);
    // SAFETY: AVX-512 was checked by `fits`, co is a multiple of 16 and the lengths match.
    unsafe { transform_filter(w.as_ptr(), ci, co, u.as_mut_ptr()) };
    if bf16 {
        // Rows `2p` and `2p + 1` of each position's `[ci, co]` block as bf16 pairs: the rows as
        // pixels of `co` channels (ci is even), paired as the bf16 weight gradient pairs pixels
        // (vectorised, so far faster than the per-element packing of the direct kernels'
        // weights; docs/tuning.md).
        crate::conv::bf16::pixel_pairs_bf16(u, co, bits_mut(u_pairs));
    }
    let (u, u_pairs) = (&*u, &*u_pairs);
    let tiles = tile_count(s);
    let per = tiles_per_task(s, tiles);
    let out = SharedTiles { y: SharedOutput(y.as_mut_ptr()), write };
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
                transform_inputs(input, first, count, v, true);
                for p in 0..POSITIONS {
                    let up = &u_pairs[p * ci / 2 * co..(p + 1) * ci / 2 * co];
                    product_bf16(count, ci, co, &v[p * ci / 2..], up, &mut m[p * co..]);
                }
            } else {
                transform_inputs(input, first, count, v, false);
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
            unsafe { output_tiles(s, m, co, first..first + count, out, sums_at, 0..co) };
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
pub(super) fn run_tasks<T: Copy + Default + Send>(
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
/// docs/tuning.md, `FEW_TILES`).
pub(super) fn runs_by_channels(s: &ConvShape) -> bool {
    let limit = if holds_filter(s) { FEW_TILES } else { FEW_TILES_WIDE };
    tile_count(s) <= limit && s.cout >= 64
}

/// Output channels of a block of [`forward_by_channels`]: one vector where there are enough tiles
/// to fill the micro-kernel's rows, up to four for fewer, so that a block keeps about 16
/// accumulators.
pub(super) fn channel_block(tiles: usize, co: usize) -> usize {
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
/// block's channels are its task's (in f32 over at most `16 * FEW_TILES_WIDE` pixels).
pub(super) fn forward_by_channels(input: &ConvInput<'_>, w: &[f32], out: Destination<'_>) {
    let s = &input.shape;
    let Destination { y, write, stats } = out;
    let (ci, co) = (s.cin, s.cout);
    let tiles = tile_count(s);
    let block = channel_block(tiles, co);
    let chunk = (BLOCK_FILTER_FLOATS / (POSITIONS * block) / 16 * 16).clamp(16, ci);
    let out = SharedTiles { y: SharedOutput(y.as_mut_ptr()), write };
    with_filter(tiles * POSITIONS * ci, |v| {
        // Position-major (`[36, tiles, cin]`): a position's tiles `cin` floats apart. Tile-major,
        // they lie `36 * cin` apart, 9 pages at 256 channels: every tile's row in one L1 set.
        // In parallel runs of tiles, each writing its tiles' rows of every position, as one
        // thread alone takes longer (docs/tuning.md).
        let runs: Vec<_> = threads::split_even(tiles, threads::num_threads()).filter(|r| !r.is_empty()).collect();
        assert!(v.len() >= tiles * POSITIONS * ci);
        let v_at = SharedOutput(v.as_mut_ptr());
        threads::install(|| {
            runs.par_iter().for_each(|r| {
                // SAFETY: tile k of the run goes to positions `(r.start + k) * ci + p * tiles *
                // ci`, inside `v` (asserted); the runs are disjoint, so no two threads write the
                // same values.
                unsafe { transform_inputs_to(input, r.start, r.len(), v_at.at(r.start * ci), false, [ci, tiles * ci]) }
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
                unsafe { output_tiles(s, m, block, 0..tiles, out, sums_at, c_first..c_first + block) };
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

/// Takes the products `m` of the tiles `tiles` (tile `k` of them has its position `p` at `(36 * k
/// + p) * stride` floats, the first of the channels `channels`) back through the output
/// transform into those channels of the output behind `out`, written as it says, adding the
/// written values' per-channel sums and sums of squares into `sums` if given.
///
/// # Safety
/// - AVX-512; the shape [`fits`]; `channels` starts and ends at multiples of 16 within `cout`.
/// - `y` points to an output of `s.output_len()` floats, whose pixels of these tiles in these
///   channels no other thread touches meanwhile (where tiles are stored in bf16 alone it is not
///   used); the epilogue's images are as long.
/// - `sums`, if given, holds `2 * channels.len()` writable floats no other thread touches.
pub(super) unsafe fn output_tiles(
    s: &ConvShape,
    m: &[f32],
    stride: usize,
    tiles: std::ops::Range<usize>,
    out: SharedTiles,
    sums: Option<*mut f32>,
    channels: std::ops::Range<usize>,
) {
    let (first, count) = (tiles.start, tiles.len());
    let SharedTiles { y, write } = out;
    let (oh, ow, co) = (s.out_h(), s.out_w(), s.cout);
    assert!(m.len() >= count * POSITIONS * stride && channels.len() <= stride, "products too short");
    for (k, (img, oy, ox)) in tile_corners(s, first, count).enumerate() {
        let win = window(oh, ow, co, 0, oy, ox);
        let at = img * oh * ow * co;
        // A tile stored in bf16 alone writes no f32 output, which may then be empty.
        let y_img = match write {
            TileWrite::StoreBf16(_) => std::ptr::null_mut(),
            // SAFETY: image `img` of the output (contract).
            _ => unsafe { y.at(at) },
        };
        // SAFETY: AVX-512, whole vectors and the channels (contract); tile k of `m` holds its 36
        // positions of these channels (length asserted); image `img` of the output and of the
        // epilogue's images, whose window pixels in these channels this thread alone writes
        // (contract).
        unsafe {
            output_tile(
                m[k * POSITIONS * stride..].as_ptr(),
                stride,
                y_img,
                &win,
                write.offset(at),
                sums,
                channels.clone(),
            )
        };
    }
}
