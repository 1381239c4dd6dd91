use crate::conv::input::{load_pixels, ConvInput};
use crate::conv::shape::ConvShape;
use crate::gemm::{matmul, MatMut, MatRef, Parallelism};
use crate::scratch::with_tile;
use crate::threads::{self, split_even};
use rayon::prelude::*;

/// Packs im2col rows `m0..m0+rows` into `buf` (`[rows, patch]`), zeros where the window
/// overlaps the padding. A bf16 input is widened a window row at a time.
pub(super) fn im2col(input: &ConvInput<'_>, m0: usize, rows: usize, buf: &mut [f32]) {
    let (s, x, t) = (&input.shape, input.x, input.transform.as_ref());
    let (oh, ow) = (s.out_h(), s.out_w());
    let k = s.patch();
    let row_len = s.kw * s.cin;
    for r in 0..rows {
        let m = m0 + r;
        let img = m / (oh * ow);
        let oy = (m / ow) % oh;
        let ox = m % ow;
        let dst = &mut buf[r * k..(r + 1) * k];
        let ix0 = (ox * s.stride) as isize - s.pad as isize;
        // Columns of the window that fall inside the image, as kernel offsets.
        let kx_lo = (-ix0).max(0) as usize;
        let kx_hi = ((s.w as isize - ix0).min(s.kw as isize)).max(0) as usize;
        for ky in 0..s.kh {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            let seg = &mut dst[ky * row_len..(ky + 1) * row_len];
            if iy < 0 || iy >= s.h as isize || kx_lo >= kx_hi {
                seg.fill(0.0);
                continue;
            }
            seg[..kx_lo * s.cin].fill(0.0);
            seg[kx_hi * s.cin..].fill(0.0);
            let src = ((img * s.h + iy as usize) * s.w) as isize + ix0 + kx_lo as isize;
            let src = src as usize * s.cin;
            let to = &mut seg[kx_lo * s.cin..kx_hi * s.cin];
            x.with_f32(src..src + to.len(), |from| load_pixels(from, to, t));
        }
    }
}

/// Adds column tile rows back into one image of `dx` (`[h, w, cin]`): the adjoint of [`im2col`].
pub(super) fn col2im_add(s: &ConvShape, cols: &[f32], first_pixel: usize, rows: usize, dx_img: &mut [f32]) {
    let ow = s.out_w();
    let k = s.patch();
    for r in 0..rows {
        let p = first_pixel + r;
        let (oy, ox) = (p / ow, p % ow);
        let src = &cols[r * k..(r + 1) * k];
        for ky in 0..s.kh {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            if iy < 0 || iy >= s.h as isize {
                continue;
            }
            for kx in 0..s.kw {
                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                if ix < 0 || ix >= s.w as isize {
                    continue;
                }
                let d = (iy as usize * s.w + ix as usize) * s.cin;
                let c = (ky * s.kw + kx) * s.cin;
                for (a, b) in dx_img[d..d + s.cin].iter_mut().zip(&src[c..c + s.cin]) {
                    *a += *b;
                }
            }
        }
    }
}

/// `y = conv(t(x), w)`, or `y += ...` when `accumulate`, by im2col + GEMM.
pub(super) fn forward_gemm(input: &ConvInput<'_>, w: &[f32], y: &mut [f32], accumulate: bool) {
    let (s, x, t) = (&input.shape, input.f32(), input.transform.as_ref());
    let (m, k, co) = (s.rows(), s.patch(), s.cout);
    let wmat = MatRef::row_major(w, k, co);
    let tile = s.tile_rows();
    // A 1x1 stride-1 convolution multiplies the input itself, unless it must be transformed first.
    let direct_input = s.is_pointwise() && t.is_none();
    if m <= tile || direct_input {
        // Too few rows to split, or nothing to pack: one multiplication over the pool, which
        // packs the weight once (per-tile calls each packed all of it again).
        if direct_input {
            matmul(MatMut::row_major(y, m, co), MatRef::row_major(x, m, k), wmat, accumulate, Parallelism::Pool);
        } else {
            with_tile(m * k, |buf| {
                im2col(input, 0, m, buf);
                matmul(MatMut::row_major(y, m, co), MatRef::row_major(buf, m, k), wmat, accumulate, Parallelism::Pool);
            });
        }
        return;
    }
    threads::install(|| {
        y.par_chunks_mut(tile * co).enumerate().for_each(|(i, ytile)| {
            let m0 = i * tile;
            let rows = ytile.len() / co;
            let out = MatMut::row_major(ytile, rows, co);
            if direct_input {
                let a = MatRef::row_major(&x[m0 * k..(m0 + rows) * k], rows, k);
                matmul(out, a, wmat, accumulate, Parallelism::Sequential);
            } else {
                with_tile(rows * k, |buf| {
                    im2col(input, m0, rows, buf);
                    matmul(out, MatRef::row_major(buf, rows, k), wmat, accumulate, Parallelism::Sequential);
                });
            }
        });
    });
}

/// Output pixels the weight gradient multiplies at once, at least: each multiplication reads and
/// writes the part's whole gradient (`patch x cout`), so a few rows per call (the forward pass's
/// L2-sized tiles: 16 for ResNet-50's widest layers) would make it memory-bound.
const WEIGHT_GRADIENT_ROWS: usize = 256;

/// Per-part weight gradients by im2col + GEMM over a split of the output pixels.
pub(super) fn backward_weight_gemm(input: &ConvInput<'_>, dy: &[f32], partials: &mut [f32], parts: usize) {
    let (s, x, t) = (&input.shape, input.f32(), input.transform.as_ref());
    let (m, k, co) = (s.rows(), s.patch(), s.cout);
    let tile = s.tile_rows().max(WEIGHT_GRADIENT_ROWS);
    let ranges: Vec<_> = split_even(m, parts).collect();
    threads::install(|| {
        partials.par_chunks_mut(k * co).zip(ranges).for_each(|(acc, range)| {
            let mut first = true;
            let mut m0 = range.start;
            while m0 < range.end {
                let rows = tile.min(range.end - m0);
                let g = MatRef::row_major(&dy[m0 * co..(m0 + rows) * co], rows, co);
                let out = MatMut::row_major(acc, k, co);
                if s.is_pointwise() && t.is_none() {
                    let a = MatRef::row_major(&x[m0 * k..(m0 + rows) * k], rows, k).t();
                    matmul(out, a, g, !first, Parallelism::Sequential);
                } else {
                    with_tile(rows * k, |buf| {
                        im2col(input, m0, rows, buf);
                        matmul(out, MatRef::row_major(buf, rows, k).t(), g, !first, Parallelism::Sequential);
                    });
                }
                first = false;
                m0 += rows;
            }
            if first {
                acc.fill(0.0);
            }
        });
    });
}
