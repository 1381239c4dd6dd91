//! Portable twins of the [`super::avx512`] micro-kernels, with the same arguments and meaning,
//! written as plain loops over slices. They are the oracle the SIMD kernels are tested against.

/// Scalar twin of `avx512::conv_tile`: `y[r, j] (+)= sum a[r, ky, kx, ci] * w[ky, kx, ci, j]`
/// for `pixels` output pixels and `channels` output channels.
#[allow(clippy::too_many_arguments)]
pub fn conv_tile(
    pixels: usize,
    channels: usize,
    a: &[f32],
    a_pixel_stride: usize,
    a_row_stride: usize,
    cin: usize,
    kh: usize,
    kw: usize,
    cout: usize,
    w: &[f32],
    y: &mut [f32],
    accumulate: bool,
) {
    for r in 0..pixels {
        for j in 0..channels {
            let mut acc = if accumulate { y[r * cout + j] } else { 0.0 };
            for ky in 0..kh {
                for kx in 0..kw {
                    for ci in 0..cin {
                        let av = a[r * a_pixel_stride + ky * a_row_stride + kx * cin + ci];
                        acc += av * w[((ky * kw + kx) * cin + ci) * cout + j];
                    }
                }
            }
            y[r * cout + j] = acc;
        }
    }
}

/// Scalar twin of `avx512::wgrad_tile`: `acc[c, j] += sum_p x[p, c] * dy[p, j]`.
#[allow(clippy::too_many_arguments)]
pub fn wgrad_tile(
    in_channels: usize,
    out_channels: usize,
    rows: usize,
    pixels: usize,
    x: &[f32],
    x_pixel_stride: usize,
    x_row_stride: usize,
    dy: &[f32],
    dy_pixel_stride: usize,
    dy_row_stride: usize,
    acc: &mut [f32],
    acc_stride: usize,
) {
    for c in 0..in_channels {
        for j in 0..out_channels {
            let mut s = 0.0;
            for row in 0..rows {
                for p in 0..pixels {
                    s += x[row * x_row_stride + p * x_pixel_stride + c]
                        * dy[row * dy_row_stride + p * dy_pixel_stride + j];
                }
            }
            acc[c * acc_stride + j] += s;
        }
    }
}
