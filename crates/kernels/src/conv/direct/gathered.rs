//! The bf16 weight gradient of layers the pixel-pair path does not take as they stand (strided,
//! of odd output width, or of small images): their input windows gathered into the input of a
//! 1x1 layer with the same weight matrix, whose gradient runs on the pixel-pair kernel.

use super::kernels;
use super::weight_gradient::pairs_weight_gradient_fits;
use crate::activations::Activations;
use crate::conv::algorithm::bf16_supported;
use crate::conv::backward_data::transpose_into;
use crate::conv::bf16::{activation_pixel_pairs, pair_rows_bf16};
use crate::conv::im2col::im2col;
use crate::conv::input::ConvInput;
use crate::conv::shape::ConvShape;
use crate::conv::shared_output::SharedOutput;
use crate::scratch::{with_bf16, with_filter, with_held_pairs};
use crate::threads;
use crate::workspace::take;
use rayon::prelude::*;

/// Output pixels gathered at a time. A task's pairs (256 bytes each for its 64 channels) stay
/// in L2 while each block of output channels sweeps them, and its accumulators stay in registers
/// over all of them rather than being reloaded per band of a few hundred pixels, which is what
/// made wide layers' gradients memory-bound on the pixel-pair path.
const GATHERED_PIXELS: usize = 2048;

/// Window elements (input channels of the gathered layer) per task: four vectors, the widest
/// block of the pair kernel.
const TASK_CHANNELS: usize = 64;

/// Fewest weights for which [`backward_weight_gathered`] pays: the small strided layers of the
/// CIFAR networks (4.6k and 18k weights) ran ResNet-20's bf16 training 3-5% slower on it than on
/// the f32 direct kernels (docs/tuning.md).
const GATHERED_MIN_WEIGHTS: usize = 64 * 1024;

/// Output pixels per image below which the pixel-pair path's bands, which never cross an image,
/// are too short to repay loading and storing the whole gradient once each: ResNet-18's 2x2
/// layer4 at 64 px took 70-75 ms there against 25-28 on the f32 direct kernels (docs/tuning.md).
const PAIR_BAND_MIN_PIXELS: usize = 128;

/// Whether the pixel-pair path takes a layer's bf16 weight gradient as it stands: it fits, with
/// bands of enough pixels.
fn pixel_pairs_pay(s: &ConvShape) -> bool {
    pairs_weight_gradient_fits(s) && s.out_h() * s.out_w() >= PAIR_BAND_MIN_PIXELS
}

/// Whether [`backward_weight_gathered`] takes a layer: the pixel-pair path does not, or only
/// with bands of a few pixels; its windows and output channels come in whole vectors, and its
/// weight is large enough.
pub(in crate::conv) fn gathered_weight_gradient_fits(s: &ConvShape) -> bool {
    !pixel_pairs_pay(s)
        && s.patch().is_multiple_of(16)
        && s.cout.is_multiple_of(16)
        && s.weight_len() >= GATHERED_MIN_WEIGHTS
}

/// `dw (+)= im2col(t(x))^T dy` with bf16 products and f32 sums, `GATHERED_PIXELS` output pixels
/// at a time: their windows (the input transform applied) and output gradient as bf16 pixel
/// pairs, then one task per block of [`TASK_CHANNELS`] window elements accumulating its columns
/// of `dw^T` (in `scratch`) over all of them. Tasks own disjoint columns, so nothing is summed
/// across threads and the result does not depend on the thread count.
pub(in crate::conv) fn backward_weight_gathered(
    input: &ConvInput<'_>,
    dy: Activations<'_>,
    dw: &mut [f32],
    accumulate: bool,
    scratch: &mut Vec<f32>,
) {
    let s = &input.shape;
    assert!(bf16_supported() && gathered_weight_gradient_fits(s), "gathered bf16 weight gradient on {s:?}");
    let (k, co, total) = (s.patch(), s.cout, s.rows());
    let acc_t = take(scratch, co * k);
    acc_t.fill(0.0);
    let acc = SharedOutput(acc_t.as_mut_ptr());
    for m0 in (0..total).step_by(GATHERED_PIXELS) {
        let rows = GATHERED_PIXELS.min(total - m0);
        let even = rows.next_multiple_of(2);
        let pairs = even / 2;
        with_filter(even * k, |x| {
            let per = rows.div_ceil(4 * threads::num_threads());
            threads::install(|| {
                x[..rows * k].par_chunks_mut(per * k).enumerate().for_each(|(i, part)| {
                    im2col(input, m0 + i * per, part.len() / k, part);
                });
            });
            x[rows * k..].fill(0.0);
            with_held_pairs(pairs * co, |dy_pairs| {
                output_gradient_pairs(dy.slice(m0 * co..(m0 + rows) * co), co, dy_pairs);
                let (dy_pairs, x) = (&*dy_pairs, &*x);
                threads::install(|| {
                    (0..k).into_par_iter().step_by(TASK_CHANNELS).for_each(|c0| {
                        let width = TASK_CHANNELS.min(k - c0);
                        // The task's channels of every pixel pair, contiguous: read with the
                        // rows' own stride (a power of two for wide layers), the pairs would
                        // fall into a few cache sets and leave L2.
                        with_bf16(0, pairs * width, |_, xp| {
                            for (m, dst) in xp.chunks_exact_mut(width).enumerate() {
                                let (lo, hi) = (&x[2 * m * k + c0..][..width], &x[(2 * m + 1) * k + c0..][..width]);
                                pair_rows_bf16(lo, hi, dst);
                            }
                            let g = crate::simd::avx512::WgradPairsArgs {
                                pairs,
                                dy_stride: 2,
                                dy_pair_stride: 2 * co,
                                x_pair_stride: width,
                                x_tap_stride: 0,
                                acc_row_stride: k,
                                acc_tap_stride: 0,
                                prefetch: std::ptr::null(),
                                prefetch_lines: 0,
                            };
                            // SAFETY: bf16 support was checked above; dy_pairs holds `pairs`
                            // pairs of co channels; xp holds `pairs` pairs of `width` channels;
                            // the accumulator columns c0..c0 + width of the co rows of k are this
                            // task's alone (the tasks' c0 differ by TASK_CHANNELS >= width).
                            unsafe {
                                kernels::wgrad_pairs(
                                    &g,
                                    1,
                                    co,
                                    width,
                                    dy_pairs.as_ptr().cast(),
                                    xp.as_ptr(),
                                    acc.at(c0),
                                    &Default::default(),
                                )
                            };
                        });
                    });
                });
            });
        });
    }
    transpose_into(acc_t, co, k, dw, accumulate);
}

/// The output gradient's rows (`co` channels each) as bf16 pixel pairs, `ceil(rows / 2)` pairs
/// of `co`, the odd last row paired with zeros; blocks of pairs shared among the threads.
fn output_gradient_pairs(dy: Activations<'_>, co: usize, out: &mut [u32]) {
    let rows = dy.len() / co;
    let (paired, pairs) = (rows / 2 * 2, rows.div_ceil(2));
    let block = (pairs / (4 * threads::num_threads())).max(1);
    threads::install(|| {
        out[..paired / 2 * co].par_chunks_mut(block * co).enumerate().for_each(|(b, dst)| {
            let at = 2 * b * block * co;
            activation_pixel_pairs(dy.slice(at..at + 2 * dst.len()), co, dst)
        });
    });
    if pairs * 2 > rows {
        let mut last = vec![0.0; co];
        dy.slice(paired * co..rows * co).widen_into(&mut last);
        pair_rows_bf16(&last, &vec![0.0; co], &mut out[paired / 2 * co..pairs * co]);
    }
}
