use super::kernels::{self, NextReads};
use super::strip::fill_strip;
use crate::activations::{bf16_in_slots, Activations};
use crate::conv::algorithm::{amx_supported, bf16_supported};
use crate::conv::backward_data::transpose;
use crate::conv::bf16::{activation_pixel_pairs, transpose_bf16};
use crate::conv::input::ConvInput;
use crate::conv::shape::ConvShape;
use crate::scratch::with_tile;
use crate::simd::{self, Isa};
use crate::threads::{self, split_even};
use rayon::prelude::*;

/// The bands of output rows `(image, oy0, rows)` covering the flat rows `range` (`image * oh +
/// oy`), at most `band` rows each and never crossing an image.
#[cfg(target_arch = "x86_64")]
pub(in crate::conv) fn row_bands(
    range: std::ops::Range<usize>,
    oh: usize,
    band: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut row = range.start;
    std::iter::from_fn(move || {
        (row < range.end).then(|| {
            let (img, oy0) = (row / oh, row % oh);
            let nrows = band.min(oh - oy0).min(range.end - row);
            row += nrows;
            (img, oy0, nrows)
        })
    })
}

/// Per-part weight gradients with the AVX-512 micro-kernel. Parts split the output rows
/// `(image, oy)`; within a part, bands of rows small enough to stay in cache get their padded
/// input strip built once and are then swept once per kernel tap and channel block.
#[cfg(target_arch = "x86_64")]
pub(in crate::conv) fn backward_weight_direct(input: &ConvInput<'_>, dy: &[f32], partials: &mut [f32], parts: usize) {
    let s = &input.shape;
    use crate::simd::avx512::WgradTileArgs;
    assert!(simd::isa() >= Isa::Avx512, "direct convolution needs AVX-512");
    let (oh, ow, co, ci) = (s.out_h(), s.out_w(), s.cout, s.cin);
    let wp = s.w + 2 * s.pad;
    let (k, rows) = (s.patch(), s.n * oh);
    // Rows per band: keep the band's dy and input strip within ~128 KiB.
    let band = ((32 * 1024) / (ow * co + s.stride * wp * ci).max(1)).clamp(1, oh);
    let ranges: Vec<_> = split_even(rows, parts).collect();
    threads::install(|| {
        partials.par_chunks_mut(k * co).zip(ranges).for_each(|(acc, range)| {
            acc.fill(0.0);
            for (img, oy0, nrows) in row_bands(range, oh, band) {
                let strip_rows = (nrows - 1) * s.stride + s.kh;
                let args = WgradTileArgs {
                    rows: nrows,
                    pixels: ow,
                    x_pixel_stride: s.stride * ci,
                    x_row_stride: s.stride * wp * ci,
                    dy_pixel_stride: co,
                    dy_row_stride: ow * co,
                    acc_stride: co,
                };
                let dy_band = (img * oh + oy0) * ow * co;
                with_tile(strip_rows * wp * ci, |strip| {
                    let iy0 = (oy0 * s.stride) as isize - s.pad as isize;
                    fill_strip(input, img, iy0, strip_rows, strip, false, &mut []);
                    // The 3-wide kernel keeps three taps of accumulators plus a window of three
                    // dy vectors per channel vector: it fits the registers up to 48 channels.
                    if s.stride == 1 && s.kw == 3 && co <= 48 {
                        for ky in 0..s.kh {
                            let x_row = ky * wp * ci;
                            let acc_row = ky * 3 * ci * co;
                            for co0 in (0..co).step_by(64) {
                                let channels = (co - co0).min(64);
                                let rc_max = kernels::wgrad_s1k3_channels(channels.div_ceil(16));
                                let mut c0 = 0;
                                while c0 < ci {
                                    let rc = rc_max.min(ci - c0);
                                    debug_assert!(
                                        x_row
                                            + (nrows - 1) * args.x_row_stride
                                            + (ow + 1) * args.x_pixel_stride
                                            + c0
                                            + rc
                                            <= strip.len()
                                    );
                                    debug_assert!(
                                        acc_row + 2 * ci * co + (c0 + rc - 1) * co + co0 + channels <= acc.len()
                                    );
                                    // SAFETY: AVX-512 was checked above. With stride 1 and a
                                    // 3-wide kernel the strip rows are ow + 2 columns wide (pad 1)
                                    // or wider, so columns q < ow + 2 of rows r + ky exist; dy reads
                                    // stay in this band, accumulator writes in taps (ky, 0..3),
                                    // channels c0..c0 + rc, lanes co0..co0 + channels of this
                                    // part's own buffer.
                                    unsafe {
                                        kernels::wgrad_tile_s1k3(
                                            rc,
                                            channels,
                                            &args,
                                            ci * co,
                                            strip.as_ptr().add(x_row + c0),
                                            dy.as_ptr().add(dy_band + co0),
                                            acc.as_mut_ptr().add(acc_row + c0 * co + co0),
                                        );
                                    }
                                    c0 += rc;
                                }
                            }
                        }
                        return;
                    }
                    for ky in 0..s.kh {
                        for kx in 0..s.kw {
                            let x_tap = (ky * wp + kx) * ci;
                            let acc_tap = (ky * s.kw + kx) * ci * co;
                            for co0 in (0..co).step_by(64) {
                                let channels = (co - co0).min(64);
                                let rc_max = kernels::wgrad_channels(channels.div_ceil(16));
                                let mut c0 = 0;
                                while c0 < ci {
                                    let rc = rc_max.min(ci - c0);
                                    debug_assert!(
                                        x_tap
                                            + (nrows - 1) * args.x_row_stride
                                            + (ow - 1) * args.x_pixel_stride
                                            + c0
                                            + rc
                                            <= strip.len()
                                    );
                                    debug_assert!(dy_band + nrows * ow * co <= dy.len());
                                    debug_assert!(acc_tap + (c0 + rc - 1) * co + co0 + channels <= acc.len());
                                    // SAFETY: AVX-512 was checked above. Input reads stay in the
                                    // strip (strip row r * stride + ky <= strip_rows - 1, column
                                    // ox * stride + kx <= wp - 1), dy reads in this band's rows, and
                                    // accumulator writes in tap (ky, kx), channels c0..c0 + rc,
                                    // lanes co0..co0 + channels of this part's own buffer.
                                    unsafe {
                                        kernels::wgrad_tile(
                                            rc,
                                            channels,
                                            &args,
                                            strip.as_ptr().add(x_tap + c0),
                                            dy.as_ptr().add(dy_band + co0),
                                            acc.as_mut_ptr().add(acc_tap + c0 * co + co0),
                                        );
                                    }
                                    c0 += rc;
                                }
                            }
                        }
                    }
                });
            }
        });
    });
}

/// Whether the bf16 pixel-pair weight-gradient path (AMX or `vdpbf16ps`) takes a layer: stride
/// 1, channels in blocks of 16, and an even output width (pixel pairs never straddle two rows).
pub(in crate::conv) fn pairs_weight_gradient_fits(s: &ConvShape) -> bool {
    s.stride == 1 && s.cin.is_multiple_of(16) && s.cout.is_multiple_of(16) && s.out_w().is_multiple_of(2)
}

/// Per-part weight gradients in bf16 (bf16 products, f32 sums) on AMX tiles or with
/// `vdpbf16ps`, computed transposed: `dw[tap]^T (cout x cin) += dy^T (cout x pixels) * x_tap
/// (pixels x cin)`, the pixels of a band of output rows being the reduction, taken in pairs.
/// Per band, dy is converted to bf16 once (pixel pairs, or transposed for AMX), the input strip
/// is built in bf16 once, and for each kernel column `kx` the strip is repacked as pixel pairs
/// in rows of the output width, so that every kernel row `ky` is a fixed offset into it.
#[cfg(target_arch = "x86_64")]
pub(in crate::conv) fn backward_weight_pairs(
    input: &ConvInput<'_>,
    dy: Activations<'_>,
    partials: &mut [f32],
    transposed: &mut [f32],
    parts: usize,
    amx: bool,
) {
    let s = &input.shape;
    use crate::scratch::with_bf16;
    assert!(bf16_supported() && pairs_weight_gradient_fits(s), "bf16 weight gradient on {s:?}");
    assert!(!amx || amx_supported(), "AMX weight gradient without AMX");
    let (oh, ow, co, ci) = (s.out_h(), s.out_w(), s.cout, s.cin);
    let wp = s.w + 2 * s.pad;
    let (k, rows, taps) = (s.patch(), s.n * oh, s.kh * s.kw);
    // About 512 pixels per band: 16 tile steps per accumulator load.
    let band = (512 / ow).clamp(1, oh);
    let ranges: Vec<_> = split_even(rows, parts).collect();
    threads::install(|| {
        partials.par_chunks_mut(k * co).zip(transposed.par_chunks_mut(k * co)).zip(ranges).for_each(
            |((acc, acc_t), range)| {
                acc_t.fill(0.0);
                let mut bands = row_bands(range, oh, band).peekable();
                while let Some((img, oy0, nrows)) = bands.next() {
                    // The AMX tiles do not prefetch.
                    let next = match bands.peek() {
                        Some(&b) if !amx => band_reads(input, dy, b),
                        _ => NextReads::default(),
                    };
                    let strip_rows = nrows - 1 + s.kh;
                    let pixels = nrows * ow;
                    let padded = pixels.next_multiple_of(32);
                    // Pixel pairs of one kx layout: every ky offset plus a whole padded band.
                    let pairs = (s.kh - 1) * ow / 2 + padded / 2;
                    let dy_band = dy_rows(s, dy, (img, oy0, nrows));
                    // AMX reads dy transposed (channels x padded pixels); the vector kernel as
                    // pixel pairs, the layout of x, which needs no transpose.
                    let (dy_t_len, dy_pairs_len) = if amx { (co * padded, 0) } else { (0, pixels / 2 * co) };
                    // The strip in bf16 (channel pairs, the transform applied and rounded as the
                    // products would round it), then a row scratch for an f32 input's transform.
                    let strip_len = strip_rows * wp * ci;
                    with_tile(strip_len / 2 + s.w * ci, |tile| {
                        let (strip, row) = tile.split_at_mut(strip_len / 2);
                        let iy0 = oy0 as isize - s.pad as isize;
                        fill_strip(input, img, iy0, strip_rows, strip, true, row);
                        let strip = Activations::Bf16(bf16_in_slots(strip, strip_len));
                        with_bf16(dy_t_len, pairs * ci + dy_pairs_len, |dy_t, pairs_buf| {
                            let (xp, dy_pairs) = pairs_buf.split_at_mut(pairs * ci);
                            if amx {
                                let dy_band = dy_band.as_f32().expect("AMX reads an f32 output gradient");
                                transpose_bf16(dy_band, pixels, co, dy_t, padded);
                                for dst in dy_t.chunks_exact_mut(padded) {
                                    dst[pixels..].fill(0);
                                }
                            } else {
                                activation_pixel_pairs(dy_band, co, dy_pairs);
                            }
                            for kx in 0..s.kw {
                                // Pair m holds pixels 2m and 2m + 1 of rows of width ow, shifted by kx.
                                let (rows_part, rest) = xp.split_at_mut(strip_rows * ow / 2 * ci);
                                for (r, dst) in rows_part.chunks_exact_mut(ow / 2 * ci).enumerate() {
                                    let at = (r * wp + kx) * ci;
                                    activation_pixel_pairs(strip.slice(at..at + ow * ci), ci, dst);
                                }
                                rest.fill(0);
                                if !amx {
                                    let g = crate::simd::avx512::WgradPairsArgs {
                                        pairs: pixels / 2,
                                        dy_stride: 2,
                                        dy_pair_stride: 2 * co,
                                        x_pair_stride: ci,
                                        x_tap_stride: ow / 2 * ci,
                                        acc_row_stride: ci,
                                        acc_tap_stride: s.kw * co * ci,
                                        prefetch: std::ptr::null(),
                                        prefetch_lines: 0,
                                    };
                                    let acc_kx = &mut acc_t[kx * co * ci..];
                                    debug_assert!(acc_kx.len() >= (s.kh - 1) * s.kw * co * ci + co * ci);
                                    debug_assert!(xp.len() >= (s.kh - 1) * ow / 2 * ci + pixels / 2 * ci);
                                    // SAFETY: bf16 support was checked above; dy_pairs holds
                                    // pixels / 2 pairs of co channels; xp holds the pairs of every
                                    // ky offset plus a band (`pairs` counts them), ci channels
                                    // each; acc_kx holds the taps (ky, kx) of this part's own
                                    // buffer.
                                    unsafe {
                                        kernels::wgrad_pairs(
                                            &g,
                                            s.kh,
                                            co,
                                            ci,
                                            dy_pairs.as_ptr().cast(),
                                            xp.as_ptr(),
                                            acc_kx.as_mut_ptr(),
                                            &next.part(kx, s.kw),
                                        )
                                    };
                                    continue;
                                }
                                amx_column(s, kx, padded, dy_t, xp, acc_t);
                            }
                        });
                    });
                }
                for tap in 0..taps {
                    transpose(&acc_t[tap * co * ci..][..co * ci], co, ci, &mut acc[tap * ci * co..][..ci * co]);
                }
            },
        );
    });
}

/// What the pixel-pair path reads for the band `(image, oy0, rows)` of a stride-1 layer, in
/// order: its input rows (the strip), then its output gradient.
#[cfg(target_arch = "x86_64")]
fn band_reads<'a>(
    input: &ConvInput<'a>,
    dy: Activations<'a>,
    (img, oy0, nrows): (usize, usize, usize),
) -> NextReads<'a> {
    let s = &input.shape;
    let (h, row) = (s.h as isize, s.w * s.cin);
    let first = oy0 as isize - s.pad as isize;
    let (lo, hi) = (first.clamp(0, h) as usize, (first + (nrows - 1 + s.kh) as isize).clamp(0, h) as usize);
    let x = input.x.slice((img * s.h + lo) * row..(img * s.h + hi) * row);
    NextReads { ranges: [x.as_bytes(), dy_rows(s, dy, (img, oy0, nrows)).as_bytes()] }
}

/// The output gradient of the band `(image, oy0, rows)`.
#[cfg(target_arch = "x86_64")]
fn dy_rows<'a>(s: &ConvShape, dy: Activations<'a>, (img, oy0, nrows): (usize, usize, usize)) -> Activations<'a> {
    let out_row = s.out_w() * s.cout;
    let at = (img * s.out_h() + oy0) * out_row;
    dy.slice(at..at + nrows * out_row)
}

/// The AMX weight gradient of kernel column `kx` for one band: every kernel row's tap
/// `dw[tap]^T += dy^T x_tap`, `dy_t` holding `cout` rows of `padded` bf16 pixels and `xp` the
/// band's pixel pairs for this column (see [`backward_weight_pairs`]).
#[cfg(target_arch = "x86_64")]
fn amx_column(s: &ConvShape, kx: usize, padded: usize, dy_t: &[u16], xp: &[u32], acc_t: &mut [f32]) {
    assert!(amx_supported(), "AMX weight gradient without AMX");
    let (ow, co, ci) = (s.out_w(), s.cout, s.cin);
    for ky in 0..s.kh {
        let tap = ky * s.kw + kx;
        let b0 = ky * ow / 2 * ci;
        // Blocks of 32 x 32 (two by two tiles), else 16 x 64.
        let (pb, nb_max) = if co >= 32 { (2, 2) } else { (1, 4) };
        for o0 in (0..co).step_by(16 * pb) {
            let pb = pb.min((co - o0) / 16);
            let mut c0 = 0;
            while c0 < ci {
                let nb = nb_max.min((ci - c0) / 16);
                let c_at = (tap * co + o0) * ci + c0;
                debug_assert!(b0 + (padded / 2 - 1) * ci + c0 + 16 * nb <= xp.len());
                debug_assert!(c_at + (16 * pb - 1) * ci + 16 * nb <= acc_t.len());
                // SAFETY: AMX was checked above. dy_t rows o0..o0 + 16 * pb
                // hold `padded` values; xp pair rows ky * ow / 2 ..
                // + padded / 2 exist (pairs counts them) with channels
                // c0..c0 + 16 * nb <= ci; the accumulator block is
                // rows o0..o0 + 16 * pb of tap `tap`, channels c0.. of
                // this part's own buffer (bounds asserted above).
                unsafe {
                    crate::simd::amx::gemm_tile(
                        padded / 32,
                        pb,
                        nb,
                        dy_t[o0 * padded..].as_ptr(),
                        padded,
                        xp[b0 + c0..].as_ptr(),
                        ci,
                        acc_t[c_at..].as_mut_ptr(),
                        ci,
                    );
                }
                c0 += 16 * nb;
            }
        }
    }
}
