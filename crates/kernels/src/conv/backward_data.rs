use crate::conv::algorithm::ConvAlgorithm;
use crate::conv::epilogue::Epilogue;
use crate::conv::forward::forward_with;
use crate::conv::im2col::col2im_add;
use crate::conv::shape::{check_lens, ConvShape};
use crate::gemm::{matmul, MatMut, MatRef, Parallelism};
use crate::scratch::with_tile;
use crate::threads;
use crate::workspace::take;
use crate::Workspace;
use rayon::prelude::*;

/// Gradient of the input: `dx (+)= conv2d_forward` adjoint applied to `dy`.
///
/// # Shapes
/// `dy: [n, oh, ow, cout]`, `w: [kh, kw, cin, cout]`, `dx: [n, h, w, cin]`.
///
/// # Panics
/// If a slice length disagrees with `s`.
pub fn conv2d_backward_data(
    s: &ConvShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    conv2d_backward_data_with(ConvAlgorithm::for_shape(s), s, dy, w, dx, accumulate, ws);
}

/// [`conv2d_backward_data`] with a chosen algorithm for its stride-1 cases.
///
/// # Panics
/// If a slice length disagrees with `s`, or the CPU cannot run `algo`.
pub fn conv2d_backward_data_with(
    algo: ConvAlgorithm,
    s: &ConvShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    check_lens(s, dx.len(), w.len(), dy.len());
    let (k, co, ci) = (s.patch(), s.cout, s.cin);
    if s.is_pointwise() {
        // dx[m, ci] = sum_co dy[m, co] * w[ci, co]: a forward 1x1 convolution with w transposed.
        let mut wt = std::mem::take(&mut ws.weights);
        transpose(w, ci, co, take(&mut wt, ci * co));
        let t = ConvShape { cin: co, cout: ci, ..*s };
        forward_with(algo, &t, dy, None, &wt[..ci * co], None, dx, accumulate, Epilogue::None, ws);
        ws.weights = wt;
        return;
    }
    if s.stride == 1 && s.pad < s.kh && s.pad < s.kw && s.kh == s.kw {
        // In the forward pass: y[oy] = sum_ky x[oy + ky - p] w[ky]. Hence
        // dx[iy] = sum_ky' dy[iy - (k-1-p) + ky'] w[k-1-ky']: a stride-1 convolution of dy with
        // the flipped, in/out-transposed weight and padding k-1-p.
        let mut flipped = std::mem::take(&mut ws.weights);
        {
            let f = take(&mut flipped, s.weight_len());
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let src = ((s.kh - 1 - ky) * s.kw + (s.kw - 1 - kx)) * ci * co;
                    let dst = (ky * s.kw + kx) * co * ci;
                    transpose(&w[src..src + ci * co], ci, co, &mut f[dst..dst + co * ci]);
                }
            }
        }
        let t = ConvShape {
            n: s.n,
            h: s.out_h(),
            w: s.out_w(),
            cin: co,
            cout: ci,
            kh: s.kh,
            kw: s.kw,
            stride: 1,
            pad: s.kh - 1 - s.pad,
        };
        debug_assert_eq!((t.out_h(), t.out_w()), (s.h, s.w));
        forward_with(algo, &t, dy, None, &flipped[..s.weight_len()], None, dx, accumulate, Epilogue::None, ws);
        ws.weights = flipped;
        return;
    }
    // Strided: dcols = dy * w^T per tile of one image, scattered back into that image.
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
