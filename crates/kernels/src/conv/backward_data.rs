//! The input gradient: a forward convolution of the output gradient where the geometry allows
//! (1x1, and stride 1 with the flipped weight), column tiles scattered back (col2im) otherwise.

use crate::activations::Activations;
use crate::conv::algorithm::{amx_supported, ConvAlgorithm};
#[cfg(target_arch = "x86_64")]
use crate::conv::bf16::pack_transposed_bf16;
#[cfg(target_arch = "x86_64")]
use crate::conv::direct::forward_direct;
use crate::conv::epilogue::Epilogue;
#[cfg(target_arch = "x86_64")]
use crate::conv::forward::Bf16Weight;
use crate::conv::forward::{forward_with, reads_bf16, ForwardPass};
use crate::conv::im2col::col2im_add;
use crate::conv::input::{readable, ConvInput};
use crate::conv::params::{ConvParams, ConvWeight};
use crate::conv::shape::{check_lens, ConvShape};
use crate::gemm::{matmul, MatMut, MatRef, Parallelism};
use crate::scratch::{with_filter, with_tile};
use crate::threads;
use crate::workspace::{put_shared, shared, take, take_shared};
use crate::Workspace;
use rayon::prelude::*;

/// Gradient of the input: `dx (+)= conv^T(dy, w)`, the adjoint of [`crate::conv::forward`]
/// (without its input transform: this is the gradient of the transformed input). `p.algorithm`
/// runs the 1x1 and stride-1 cases, which are forward convolutions.
///
/// A bf16 `dy` is read as it is where the pass is a forward convolution on kernels that read
/// bf16 (see also [`backward_data_reads_bf16`]), from a widened copy otherwise.
///
/// # Shapes
/// `dy: [n, oh, ow, cout]`, `p.weight: [kh, kw, cin, cout]`, `dx: [n, h, w, cin]`.
///
/// # Panics
/// If a slice length disagrees with `p.shape`, or the CPU cannot run `p.algorithm`.
pub fn backward_data<'g>(
    p: &ConvParams<'_>,
    dy: impl Into<Activations<'g>>,
    dx: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    let (s, w, dy) = (&p.shape, p.weight.values, dy.into());
    check_lens(s, dx.len(), w.len(), dy.len());
    readable(dy, reads_bf16_gradient(p.algorithm, s), |dy| input_gradient(p, dy, dx, accumulate, ws));
}

/// Whether [`backward_data`] by `algo` on `s` takes a bf16 output gradient at no cost: it is
/// a forward convolution of it with bf16 products, which round an `f32` one to bf16 as they read
/// it, so its result is the same either way.
pub fn backward_data_reads_bf16(algo: ConvAlgorithm, s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    return bf16_direct(algo).is_some() && (s.is_one_by_one() || s.stride > 1 || flips_to_forward(s));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (algo, s);
        false
    }
}

/// Whether the path of `algo` on `s` reads a bf16 output gradient as it is (else it reads a
/// widened copy): the forward convolutions of it on kernels that read bf16.
fn reads_bf16_gradient(algo: ConvAlgorithm, s: &ConvShape) -> bool {
    backward_data_reads_bf16(algo, s) || ((s.is_pointwise() || flips_to_forward(s)) && reads_bf16(algo))
}

/// Whether a stride-1 layer's input gradient is a forward convolution with the flipped weight.
fn flips_to_forward(s: &ConvShape) -> bool {
    s.stride == 1 && s.pad < s.kh && s.pad < s.kw && s.kh == s.kw
}

/// [`backward_data`] of an output gradient as the path `p` takes reads it.
fn input_gradient(p: &ConvParams<'_>, dy: Activations<'_>, dx: &mut [f32], accumulate: bool, ws: &mut Workspace) {
    let (s, w) = (&p.shape, p.weight.values);
    let (co, ci) = (s.cout, s.cin);
    // The adjoint as a forward pass of `dy` of shape `t` with the rearranged weight `wt`.
    let mut forward_of_dy = |t: ConvShape, wt: &[f32], ws: &mut Workspace| {
        let input = ConvInput { shape: t, x: dy, transform: None };
        let pass = ForwardPass { input, weight: ConvWeight::new(wt), accumulate };
        forward_with(p.algorithm, &pass, dx, Epilogue::None, ws);
    };
    #[cfg(target_arch = "x86_64")]
    if s.is_one_by_one() || s.stride > 1 {
        if let Some(amx) = bf16_direct(p.algorithm) {
            backward_data_bf16(s, dy, w, dx, accumulate, amx, ws);
            return;
        }
    }
    if s.is_pointwise() {
        // dx[m, ci] = sum_co dy[m, co] * w[ci, co]: a forward 1x1 convolution with w transposed.
        let mut wt = take_shared(&shared::WEIGHTS);
        transpose(w, ci, co, take(&mut wt, ci * co));
        forward_of_dy(ConvShape { cin: co, cout: ci, ..*s }, &wt[..ci * co], ws);
        put_shared(&shared::WEIGHTS, wt);
    } else if flips_to_forward(s) {
        // In the forward pass: y[oy] = sum_ky x[oy + ky - p] w[ky]. Hence
        // dx[iy] = sum_ky' dy[iy - (k-1-p) + ky'] w[k-1-ky']: a stride-1 convolution of dy with
        // the flipped, in/out-transposed weight and padding k-1-p.
        let mut flipped = take_shared(&shared::WEIGHTS);
        flip_transposed(s, w, take(&mut flipped, s.weight_len()));
        let t = ConvShape { h: s.out_h(), w: s.out_w(), cin: co, cout: ci, stride: 1, pad: s.kh - 1 - s.pad, ..*s };
        debug_assert_eq!((t.out_h(), t.out_w()), (s.h, s.w));
        forward_of_dy(t, &flipped[..s.weight_len()], ws);
        put_shared(&shared::WEIGHTS, flipped);
    } else {
        scatter_columns(s, dy.as_f32().expect("the scattered columns read an f32 gradient"), w, dx, accumulate);
    }
}

/// The weight `w` (`[kh, kw, cin, cout]`) flipped in both spatial axes with input and output
/// channels swapped, into `f` (`[kh, kw, cout, cin]`).
fn flip_transposed(s: &ConvShape, w: &[f32], f: &mut [f32]) {
    let (co, ci) = (s.cout, s.cin);
    for ky in 0..s.kh {
        for kx in 0..s.kw {
            let src = ((s.kh - 1 - ky) * s.kw + (s.kw - 1 - kx)) * ci * co;
            let dst = (ky * s.kw + kx) * co * ci;
            transpose(&w[src..src + ci * co], ci, co, &mut f[dst..dst + co * ci]);
        }
    }
}

/// Floats of output-gradient columns (`dy * w^T`) computed in one multiplication before they
/// are scattered back: enough rows that packing the weight, which the GEMM does once per call,
/// costs little beside the product, while the columns of a large layer stay a few megabytes.
const COLUMN_FLOATS: usize = 1 << 21;

/// The strided input gradient: `dcols = dy * w^T` for a block of output pixels at a time (one
/// multiplication over the whole pool), scattered back into their images (col2im) in parallel.
fn scatter_columns(s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32], accumulate: bool) {
    let (k, co, ci) = (s.patch(), s.cout, s.cin);
    let wt = MatRef::row_major(w, k, co).t();
    let pixels = s.out_h() * s.out_w();
    let total = s.n * pixels;
    let block = (COLUMN_FLOATS / k).max(s.tile_rows()).min(total);
    let img_len = s.h * s.w * ci;
    threads::install(|| {
        if !accumulate {
            clear(dx, img_len);
        }
        with_tile(block * k, |cols| {
            let mut r0 = 0;
            while r0 < total {
                let rows = block.min(total - r0);
                let dyt = MatRef::row_major(&dy[r0 * co..(r0 + rows) * co], rows, co);
                matmul(MatMut::row_major(&mut cols[..rows * k], rows, k), dyt, wt, false, Parallelism::Pool);
                // Each image the block touches takes its own rows, so images scatter in parallel.
                let (first, last) = (r0 / pixels, (r0 + rows - 1) / pixels);
                let cols = &cols[..rows * k];
                dx[first * img_len..(last + 1) * img_len].par_chunks_mut(img_len).enumerate().for_each(
                    |(i, dx_img)| {
                        let img = first + i;
                        let lo = (img * pixels).max(r0);
                        let hi = ((img + 1) * pixels).min(r0 + rows);
                        col2im_add(s, &cols[(lo - r0) * k..(hi - r0) * k], lo - img * pixels, hi - lo, dx_img);
                    },
                );
                r0 += rows;
            }
        });
    });
}

/// Zeroes `dx` an image (`img_len` floats) per task, before columns are scattered into it.
fn clear(dx: &mut [f32], img_len: usize) {
    dx.par_chunks_mut(img_len).for_each(|d| d.fill(0.0));
}

/// Whether `algo` runs the bf16 direct kernels (`Some`), and on the AMX tiles (`Some(true)`).
#[cfg(target_arch = "x86_64")]
fn bf16_direct(algo: ConvAlgorithm) -> Option<bool> {
    match algo {
        ConvAlgorithm::DirectBf16 => Some(false),
        ConvAlgorithm::AmxBf16 => Some(amx_supported()),
        _ => None,
    }
}

/// The input gradient of a 1x1 or strided layer on the bf16 direct kernels: `dy * w^T` as a
/// 1x1 forward pass of `dy` with `w^T` packed once into bf16 pairs, written straight into `dx`
/// for a pointwise layer, else into columns of a few images at a time scattered back (col2im).
#[cfg(target_arch = "x86_64")]
fn backward_data_bf16<'a>(
    s: &ConvShape,
    dy: Activations<'a>,
    w: &'a [f32],
    dx: &mut [f32],
    accumulate: bool,
    amx: bool,
    ws: &mut Workspace,
) {
    let (k, co) = (s.patch(), s.cout);
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut packed = take_shared(&shared::BF16_WEIGHTS);
    let pairs = take(&mut packed, co.div_ceil(2) * k);
    pack_transposed_bf16(w, k, co, pairs);
    let weight = Some(Bf16Weight { pairs, amx });
    // A 1x1 stride-1 pass over the images of `dy`, of k output channels (the bf16 pass reads
    // only the packed pairs of the weight).
    let columns_of = |dy: Activations<'a>, accumulate| {
        let n = dy.len() / (oh * ow * co);
        let shape = ConvShape { n, h: oh, w: ow, cin: co, cout: k, kh: 1, kw: 1, stride: 1, pad: 0 };
        ForwardPass { input: ConvInput { shape, x: dy, transform: None }, weight: ConvWeight::new(w), accumulate }
    };
    if s.is_pointwise() {
        forward_direct(&columns_of(dy, accumulate), weight, dx, Epilogue::None, ws);
    } else {
        let pixels = oh * ow;
        let img_len = s.h * s.w * s.cin;
        let images = (COLUMN_FLOATS / (pixels * k)).clamp(1, s.n);
        if !accumulate {
            threads::install(|| clear(dx, img_len));
        }
        // One buffer for all layers (the columns of a block are used up before the next).
        with_filter(images * pixels * k, |cols| {
            let part_len = images * pixels * co;
            for (i, at) in (0..dy.len()).step_by(part_len).enumerate() {
                let dy_part = dy.slice(at..(at + part_len).min(dy.len()));
                let n = dy_part.len() / (pixels * co);
                let cols = &mut cols[..n * pixels * k];
                forward_direct(&columns_of(dy_part, false), weight, cols, Epilogue::None, ws);
                let dx_part = &mut dx[i * images * img_len..(i * images + n) * img_len];
                threads::install(|| {
                    dx_part
                        .par_chunks_mut(img_len)
                        .zip(cols.par_chunks(pixels * k))
                        .for_each(|(dx_img, cols)| col2im_add(s, cols, 0, pixels, dx_img))
                });
            }
        });
    }
    put_shared(&shared::BF16_WEIGHTS, packed);
}

/// Side of the square blocks the transposes here and in `bf16.rs` move at a time, so that reads
/// and writes both stay within a few cache lines.
pub(super) const TRANSPOSE_BLOCK: usize = 32;

/// `dst[j, i] = src[i, j]` for a row-major `rows x cols` source.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_into(src, rows, cols, dst, false);
}

/// `dst[j, i] = src[i, j]`, or `+=` when `accumulate`, for a row-major `rows x cols` source, in
/// square blocks so that reads and writes both stay within a few cache lines (a megabyte-sized
/// weight transposed row by row took a quarter of a 1x1 layer's backward-data pass).
pub(super) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], accumulate: bool) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose of {rows} x {cols}");
    if rows == 0 {
        return;
    }
    // Each thread writes its own blocks of rows of `dst` (columns of `src`).
    threads::install(|| {
        dst[..rows * cols].par_chunks_mut(TRANSPOSE_BLOCK * rows).enumerate().for_each(|(b, dst)| {
            let j0 = b * TRANSPOSE_BLOCK;
            let width = dst.len() / rows;
            for i0 in (0..rows).step_by(TRANSPOSE_BLOCK) {
                for j in 0..width {
                    for i in i0..(i0 + TRANSPOSE_BLOCK).min(rows) {
                        let v = src[i * cols + j0 + j];
                        let d = &mut dst[j * rows + i];
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
        })
    });
}
