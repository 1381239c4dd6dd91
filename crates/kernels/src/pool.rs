//! Pooling over NHWC batches: the 3x3/2 max pooling after the ImageNet stem and the global average
//! pooling before the classifier (He et al. 2015, Table 1 and Section 4.2).

use crate::activations::Activations;
use crate::conv::{load_pixels, InputTransform};
use crate::threads;
use rayon::prelude::*;

/// Geometry of a max pooling window applied to an NHWC batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Window size (both axes).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding (padded positions never win the max, as in PyTorch).
    pub pad: usize,
}

impl PoolShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        crate::conv::output_size(self.h, self.k, self.stride, self.pad)
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        crate::conv::output_size(self.w, self.k, self.stride, self.pad)
    }
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    /// The pixels (`iy * w + ix`, within an image) of output position `(oy, ox)`'s window that
    /// lie inside the image, row by row.
    pub fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = usize> + '_ {
        let inside = |start: usize, size: usize| {
            let lo = start.saturating_sub(self.pad);
            let hi = (start + self.k).saturating_sub(self.pad).min(size);
            lo..hi.max(lo)
        };
        let (rows, cols) = (inside(oy * self.stride, self.h), inside(ox * self.stride, self.w));
        rows.flat_map(move |iy| cols.clone().map(move |ix| iy * self.w + ix))
    }
    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.n * self.out_h() * self.out_w() * self.c
    }
}

crate::multiversion! {
    /// `best = max(best, v)` per channel, remembering in `idx` the pixel `p` that won; ties keep
    /// the earlier pixel (as PyTorch) and a NaN wins (it propagates, as in PyTorch).
    fn max_into / max_into_on(v: &[f32], p: u32, best: &mut [f32], idx: &mut [u32]) {
        for ((b, i), &x) in best.iter_mut().zip(idx.iter_mut()).zip(v) {
            let take = x > *b || x.is_nan();
            *b = if take { x } else { *b };
            *i = if take { p } else { *i };
        }
    }
}

/// Max pooling forward. `argmax` receives, per output element, the index of the winning pixel
/// within its image (`iy * w + ix`), which is all the backward pass needs.
///
/// # Shapes
/// `x: [n, h, w, c]`, `y, argmax: [n, oh, ow, c]`.
///
/// # Panics
/// If the lengths disagree, or the window is no larger than the padding (a window could then
/// hold no pixel).
pub fn max_pool_forward(s: &PoolShape, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    max_pool_forward_transformed(s, Activations::F32(x), None, y, argmax);
}

/// [`max_pool_forward`] of `t(x)`, the batch norm and ReLU of the layer before applied to each
/// pixel as it is read (`t` as a convolution's [`InputTransform`]), so that their output need
/// not be stored: the values and winners of pooling a stored `t(x)`. `x` may be bf16-stored.
///
/// # Panics
/// As [`max_pool_forward`], or if the transform does not have `c` channels.
pub fn max_pool_forward_transformed(
    s: &PoolShape,
    x: Activations<'_>,
    t: Option<&InputTransform<'_>>,
    y: &mut [f32],
    argmax: &mut [u32],
) {
    if let Some(t) = t {
        assert_eq!((t.scale.len(), t.shift.len()), (s.c, s.c), "max pool input transform of the wrong length");
    }
    assert_eq!(x.len(), s.input_len(), "max pool input length");
    assert_eq!(y.len(), s.output_len(), "max pool output length");
    assert_eq!(argmax.len(), s.output_len(), "max pool argmax length");
    assert!(s.pad < s.k && s.h + 2 * s.pad >= s.k && s.w + 2 * s.pad >= s.k, "bad pooling window {s:?}");
    let (oh, ow, c) = (s.out_h(), s.out_w(), s.c);
    let in_img = s.h * s.w * c;
    let row = ow * c;
    threads::install(|| {
        // One task per output row: rows of all images, so small batches still use every thread.
        // Its window rows are read (widened and transformed where need be) once, not per window.
        y.par_chunks_mut(row).zip(argmax.par_chunks_mut(row)).enumerate().for_each(|(r, (yr, ar))| {
            let (img, oy) = (r / oh, r % oh);
            let lo = (oy * s.stride).saturating_sub(s.pad);
            let hi = (oy * s.stride + s.k).saturating_sub(s.pad).min(s.h);
            yr.fill(f32::NEG_INFINITY);
            ar.fill(0);
            let span = img * in_img + lo * s.w * c..img * in_img + hi * s.w * c;
            let mut transformed = vec![0.0; if t.is_some() { span.len() } else { 0 }];
            x.with_f32(span, |v| {
                let v = match t {
                    Some(t) => {
                        load_pixels(v, &mut transformed, Some(t));
                        &transformed[..]
                    }
                    None => v,
                };
                for ox in 0..ow {
                    let o = ox * c;
                    for p in s.window(oy, ox) {
                        let q = p - lo * s.w;
                        max_into(&v[q * c..(q + 1) * c], p as u32, &mut yr[o..o + c], &mut ar[o..o + c]);
                    }
                }
            });
        });
    });
}

/// Max pooling backward: `dx (+)=` `dy` routed to each window's winning pixel.
pub fn max_pool_backward(s: &PoolShape, dy: &[f32], argmax: &[u32], dx: &mut [f32], accumulate: bool) {
    assert_eq!(dx.len(), s.input_len());
    assert_eq!(dy.len(), s.output_len());
    assert_eq!(argmax.len(), s.output_len());
    let c = s.c;
    let out_img = s.out_h() * s.out_w() * c;
    let in_img = s.h * s.w * c;
    threads::install(|| {
        dx.par_chunks_mut(in_img).enumerate().for_each(|(img, dxi)| {
            if !accumulate {
                dxi.fill(0.0);
            }
            let dyi = &dy[img * out_img..(img + 1) * out_img];
            let ai = &argmax[img * out_img..(img + 1) * out_img];
            for (o, (&g, &p)) in dyi.iter().zip(ai).enumerate() {
                dxi[p as usize * c + o % c] += g;
            }
        });
    });
}

/// Global average pooling: `y[n, c] = mean over h, w of x[n, h, w, c]`.
///
/// # Shapes
/// `x: [n, hw, c]` (any spatial size flattened), `y: [n, c]`.
pub fn global_avg_pool_forward(x: &[f32], n: usize, c: usize, y: &mut [f32]) {
    assert!(
        n > 0 && c > 0 && x.len().is_multiple_of(n * c),
        "global pool input of {} floats is not [{n}, hw, {c}]",
        x.len()
    );
    assert_eq!(y.len(), n * c);
    let hw = x.len() / (n * c);
    let inv = 1.0 / hw as f32;
    threads::install(|| {
        y.par_chunks_mut(c).enumerate().for_each(|(img, yr)| {
            yr.fill(0.0);
            for px in x[img * hw * c..(img + 1) * hw * c].chunks_exact(c) {
                for (a, b) in yr.iter_mut().zip(px) {
                    *a += *b;
                }
            }
            yr.iter_mut().for_each(|v| *v *= inv);
        });
    });
}

/// Global average pooling backward: `dx[n, p, c] (+)= dy[n, c] / hw`.
pub fn global_avg_pool_backward(dy: &[f32], n: usize, c: usize, dx: &mut [f32], accumulate: bool) {
    assert_eq!(dy.len(), n * c);
    assert!(dx.len().is_multiple_of(n * c));
    let hw = dx.len() / (n * c);
    let inv = 1.0 / hw as f32;
    threads::install(|| {
        dx.par_chunks_mut(hw * c).enumerate().for_each(|(img, dxi)| {
            let g = &dy[img * c..(img + 1) * c];
            for px in dxi.chunks_exact_mut(c) {
                for (a, b) in px.iter_mut().zip(g) {
                    *a = if accumulate { *a + b * inv } else { b * inv };
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_picks_window_maximum_and_routes_gradient() {
        // One 4x4 single-channel image, 3x3/2 pad 1 -> 2x2.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let s = PoolShape { n: 1, h: 4, w: 4, c: 1, k: 3, stride: 2, pad: 1 };
        let mut y = vec![0.0; 4];
        let mut a = vec![0; 4];
        max_pool_forward(&s, &x, &mut y, &mut a);
        assert_eq!(y, vec![5.0, 7.0, 13.0, 15.0]);
        let mut dx = vec![0.0; 16];
        max_pool_backward(&s, &[1.0, 2.0, 3.0, 4.0], &a, &mut dx, false);
        assert_eq!(dx[5], 1.0);
        assert_eq!(dx[7], 2.0);
        assert_eq!(dx[13], 3.0);
        assert_eq!(dx[15], 4.0);
        assert_eq!(dx.iter().sum::<f32>(), 10.0);
    }

    /// Pooling through a batch norm and ReLU gives the values and winners of pooling their
    /// stored output, ties included (the ReLU makes many).
    #[test]
    fn a_transformed_max_pool_equals_pooling_the_stored_transform() {
        let s = PoolShape { n: 2, h: 9, w: 7, c: 5, k: 3, stride: 2, pad: 1 };
        let x: Vec<f32> = (0..s.input_len()).map(|i| ((i * 7919) % 61) as f32 / 9.0 - 3.0).collect();
        let (scale, shift) = ([0.5, -1.25, 2.0, 0.0, -0.75], [0.25, 0.5, -1.0, 0.125, 0.0]);
        let t = InputTransform { scale: &scale, shift: &shift };
        let mut stored = vec![0.0; x.len()];
        load_pixels(&x, &mut stored, Some(&t));
        let (mut want, mut want_at) = (vec![0.0; s.output_len()], vec![0; s.output_len()]);
        max_pool_forward(&s, &stored, &mut want, &mut want_at);
        let (mut got, mut got_at) = (vec![1.0; s.output_len()], vec![7; s.output_len()]);
        max_pool_forward_transformed(&s, Activations::F32(&x), Some(&t), &mut got, &mut got_at);
        assert_eq!((&got, &got_at), (&want, &want_at));

        // A bf16-stored input pools as its widened values do, with and without the transform.
        let x16: Vec<u16> = x.iter().map(|&v| crate::activations::bf16_bits(v) as u16).collect();
        let mut wide = vec![0.0; x.len()];
        Activations::Bf16(&x16).widen_into(&mut wide);
        for t in [None, Some(&t)] {
            let (mut want, mut want_at) = (vec![0.0; s.output_len()], vec![0; s.output_len()]);
            max_pool_forward_transformed(&s, Activations::F32(&wide), t, &mut want, &mut want_at);
            let (mut got, mut got_at) = (vec![1.0; s.output_len()], vec![7; s.output_len()]);
            max_pool_forward_transformed(&s, Activations::Bf16(&x16), t, &mut got, &mut got_at);
            assert_eq!((got, got_at), (want, want_at), "bf16, transform {}", t.is_some());
        }
    }

    #[test]
    fn every_isa_version_of_the_max_agrees() {
        let v: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        for isa in crate::simd::available() {
            let (mut b0, mut i0) = (vec![0.0f32; 37], vec![9u32; 37]);
            let (mut b1, mut i1) = (b0.clone(), i0.clone());
            max_into_on(crate::simd::Isa::Scalar, &v, 3, &mut b0, &mut i0);
            max_into_on(isa, &v, 3, &mut b1, &mut i1);
            assert_eq!((b0, i0), (b1, i1), "{isa:?}");
        }
    }

    #[test]
    fn global_pool_averages_per_channel() {
        let x = [1.0, 10.0, 3.0, 30.0];
        let mut y = [0.0; 2];
        global_avg_pool_forward(&x, 1, 2, &mut y);
        assert_eq!(y, [2.0, 20.0]);
        let mut dx = [0.0; 4];
        global_avg_pool_backward(&[2.0, 4.0], 1, 2, &mut dx, false);
        assert_eq!(dx, [1.0, 2.0, 1.0, 2.0]);
    }
}
