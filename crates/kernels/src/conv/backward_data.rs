//! The input gradient: a forward convolution of the output gradient where the geometry allows
//! (1x1, and stride 1 with the flipped weight), column tiles scattered back (col2im) otherwise.

use crate::conv::epilogue::Epilogue;
use crate::conv::forward::{forward_with, ForwardPass};
use crate::conv::im2col::col2im_add;
use crate::conv::input::ConvInput;
use crate::conv::params::{ConvParams, ConvWeight};
use crate::conv::shape::{check_lens, ConvShape};
use crate::gemm::{matmul, MatMut, MatRef, Parallelism};
use crate::scratch::with_tile;
use crate::threads;
use crate::workspace::take;
use crate::Workspace;
use rayon::prelude::*;

/// Gradient of the input: `dx (+)= conv^T(dy, w)`, the adjoint of [`crate::conv::forward`]
/// (without its input transform: this is the gradient of the transformed input). `p.algorithm`
/// runs the 1x1 and stride-1 cases, which are forward convolutions.
///
/// # Shapes
/// `dy: [n, oh, ow, cout]`, `p.weight: [kh, kw, cin, cout]`, `dx: [n, h, w, cin]`.
///
/// # Panics
/// If a slice length disagrees with `p.shape`, or the CPU cannot run `p.algorithm`.
pub fn backward_data(p: &ConvParams<'_>, dy: &[f32], dx: &mut [f32], accumulate: bool, ws: &mut Workspace) {
    let (s, w) = (&p.shape, p.weight.values);
    check_lens(s, dx.len(), w.len(), dy.len());
    let (co, ci) = (s.cout, s.cin);
    // The adjoint as a forward pass of `dy` of shape `t` with the rearranged weight `wt`.
    let mut forward_of_dy = |t: ConvShape, wt: &[f32], ws: &mut Workspace| {
        let input = ConvInput { shape: t, x: dy, transform: None };
        let pass = ForwardPass { input, weight: ConvWeight::new(wt), accumulate };
        forward_with(p.algorithm, &pass, dx, Epilogue::None, ws);
    };
    if s.is_pointwise() {
        // dx[m, ci] = sum_co dy[m, co] * w[ci, co]: a forward 1x1 convolution with w transposed.
        let mut wt = std::mem::take(&mut ws.weights);
        transpose(w, ci, co, take(&mut wt, ci * co));
        forward_of_dy(ConvShape { cin: co, cout: ci, ..*s }, &wt[..ci * co], ws);
        ws.weights = wt;
    } else if s.stride == 1 && s.pad < s.kh && s.pad < s.kw && s.kh == s.kw {
        // In the forward pass: y[oy] = sum_ky x[oy + ky - p] w[ky]. Hence
        // dx[iy] = sum_ky' dy[iy - (k-1-p) + ky'] w[k-1-ky']: a stride-1 convolution of dy with
        // the flipped, in/out-transposed weight and padding k-1-p.
        let mut flipped = std::mem::take(&mut ws.weights);
        flip_transposed(s, w, take(&mut flipped, s.weight_len()));
        let t = ConvShape { h: s.out_h(), w: s.out_w(), cin: co, cout: ci, stride: 1, pad: s.kh - 1 - s.pad, ..*s };
        debug_assert_eq!((t.out_h(), t.out_w()), (s.h, s.w));
        forward_of_dy(t, &flipped[..s.weight_len()], ws);
        ws.weights = flipped;
    } else {
        scatter_columns(s, dy, w, dx, accumulate);
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

/// The strided input gradient: `dcols = dy * w^T` per tile of one image's output pixels,
/// scattered back into that image (col2im).
fn scatter_columns(s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32], accumulate: bool) {
    let (k, co, ci) = (s.patch(), s.cout, s.cin);
    let wt = MatRef::row_major(w, k, co).t();
    let pixels = s.out_h() * s.out_w();
    let tile = s.tile_rows().min(pixels);
    let img_len = s.h * s.w * ci;
    threads::install(|| {
        dx.par_chunks_mut(img_len).enumerate().for_each(|(img, dx_img)| {
            if !accumulate {
                dx_img.fill(0.0);
            }
            with_tile(tile * k, |buf| {
                let mut p0 = 0;
                while p0 < pixels {
                    let rows = tile.min(pixels - p0);
                    let start = (img * pixels + p0) * co;
                    let dyt = MatRef::row_major(&dy[start..start + rows * co], rows, co);
                    matmul(MatMut::row_major(&mut buf[..rows * k], rows, k), dyt, wt, false, Parallelism::Sequential);
                    col2im_add(s, buf, p0, rows, dx_img);
                    p0 += rows;
                }
            });
        });
    });
}

/// `dst[j, i] = src[i, j]` for a row-major `rows x cols` source.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for i in 0..rows {
        for j in 0..cols {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
}
