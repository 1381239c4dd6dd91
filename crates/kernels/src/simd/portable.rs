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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::simd::avx512::{self, lane_mask, ConvTileArgs, WgradTileArgs};
    use crate::simd::{isa, Isa};

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn close(got: &[f32], want: &[f32]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "[{i}]: {g} vs {w}");
        }
    }

    /// The AVX-512 forward tile (6 pixels, two channel vectors of which 20 channels are live,
    /// a 3x3 window over 5 input channels) equals its twin, writing and adding.
    #[test]
    fn forward_tile_matches_its_portable_twin() {
        if isa() < Isa::Avx512 {
            crate::skip::skip("no AVX-512 on this CPU");
            return;
        }
        let (pixels, channels, cin, cout, k) = (6, 20, 5, 32, 3);
        let (a_pixel_stride, a_row_stride) = (cin, (pixels + k) * cin);
        let mut rng = Rng::new(3);
        let a = random(k * a_row_stride, &mut rng);
        let w = random(k * k * cin * cout, &mut rng);
        let g =
            ConvTileArgs { a_pixel_stride, a_row_stride, cin, kh: k, kw: k, w_row_stride: cout, y_pixel_stride: cout };
        let masks = [lane_mask(16), lane_mask(channels - 16)];
        for accumulate in [false, true] {
            let start = random(pixels * cout, &mut rng);
            let (mut got, mut want) = (start.clone(), start);
            // SAFETY: AVX-512 checked above; the window of every pixel, the weight rows and the
            // output rows lie in their vectors (sizes above), which do not overlap.
            unsafe {
                avx512::conv_tile::<6, 2>(&g, a.as_ptr(), w.as_ptr(), got.as_mut_ptr(), &masks, accumulate, None)
            };
            conv_tile(pixels, channels, &a, a_pixel_stride, a_row_stride, cin, k, k, cout, &w, &mut want, accumulate);
            close(&got, &want);
        }
    }

    /// The AVX-512 weight-gradient tile (4 input channels, one partial channel vector of 12,
    /// 2 rows of 5 pixels) equals its twin.
    #[test]
    fn weight_gradient_tile_matches_its_portable_twin() {
        if isa() < Isa::Avx512 {
            crate::skip::skip("no AVX-512 on this CPU");
            return;
        }
        let (rc, channels, rows, pixels, cin, cout) = (4, 12, 2, 5, 8, 16);
        let mut rng = Rng::new(4);
        let x = random(rows * pixels * cin, &mut rng);
        let dy = random(rows * pixels * cout, &mut rng);
        let g = WgradTileArgs {
            rows,
            pixels,
            x_pixel_stride: cin,
            x_row_stride: pixels * cin,
            dy_pixel_stride: cout,
            dy_row_stride: pixels * cout,
            acc_stride: cout,
        };
        let start = random(cin * cout, &mut rng);
        let (mut got, mut want) = (start.clone(), start);
        // SAFETY: AVX-512 checked above; inputs, output gradient and accumulator lie in their
        // vectors (sizes above), which do not overlap.
        unsafe { avx512::wgrad_tile::<4, 1>(&g, x.as_ptr(), dy.as_ptr(), got.as_mut_ptr(), &[lane_mask(channels)]) };
        wgrad_tile(rc, channels, rows, pixels, &x, cin, pixels * cin, &dy, cout, pixels * cout, &mut want, cout);
        close(&got, &want);
    }
}
