//! Elementwise passes: ReLU, residual addition, the option-A shortcut (He et al. 2015,
//! Section 3.3: "identity mapping, with extra zero entries padded for increasing dimensions").

use crate::threads;
use rayon::prelude::*;

/// Elements per parallel task of the elementwise passes.
const CHUNK: usize = 32 * 1024;

crate::multiversion! {
    fn relu_chunk / relu_chunk_on(x: &[f32], y: &mut [f32]) {
        for (a, b) in y.iter_mut().zip(x) {
            *a = b.max(0.0);
        }
    }
}

crate::multiversion! {
    fn relu_backward_chunk / relu_backward_chunk_on(y: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
        if accumulate {
            for ((d, g), v) in dx.iter_mut().zip(dy).zip(y) {
                *d += if *v > 0.0 { *g } else { 0.0 };
            }
        } else {
            for ((d, g), v) in dx.iter_mut().zip(dy).zip(y) {
                *d = if *v > 0.0 { *g } else { 0.0 };
            }
        }
    }
}

crate::multiversion! {
    fn mask_chunk / mask_chunk_on(y: &[f32], g: &mut [f32]) {
        for (d, v) in g.iter_mut().zip(y) {
            if *v <= 0.0 {
                *d = 0.0;
            }
        }
    }
}

crate::multiversion! {
    fn add_chunk / add_chunk_on(a: &[f32], b: &[f32], y: &mut [f32]) {
        for ((o, p), q) in y.iter_mut().zip(a).zip(b) {
            *o = p + q;
        }
    }
}

crate::multiversion! {
    fn add_assign_chunk / add_assign_chunk_on(y: &mut [f32], x: &[f32]) {
        for (o, p) in y.iter_mut().zip(x) {
            *o += p;
        }
    }
}

crate::multiversion! {
    fn add_assign_masked_chunk / add_assign_masked_chunk_on(y: &mut [f32], x: &[f32], r: &[f32]) {
        for ((o, p), v) in y.iter_mut().zip(x).zip(r) {
            *o = if *v > 0.0 { *o + p } else { 0.0 };
        }
    }
}

/// `y = max(x, 0)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    threads::install(|| y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| relu_chunk(xc, yc)));
}

/// `dx (+)= dy * [y > 0]`, with `y` the forward output.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
    assert_eq!(y.len(), dy.len());
    assert_eq!(y.len(), dx.len());
    threads::install(|| {
        dx.par_chunks_mut(CHUNK)
            .zip(dy.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(|(dc, (gc, yc))| relu_backward_chunk(yc, gc, dc, accumulate));
    });
}

/// `g *= [y > 0]` in place: the ReLU backward pass when the gradient buffer may be overwritten.
pub fn relu_mask_in_place(y: &[f32], g: &mut [f32]) {
    assert_eq!(y.len(), g.len());
    threads::install(|| g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(gc, yc)| mask_chunk(yc, gc)));
}

/// `y = a + b`.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    assert_eq!(a.len(), y.len());
    assert_eq!(b.len(), y.len());
    threads::install(|| {
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(yc, (ac, bc))| add_chunk(ac, bc, yc));
    });
}

/// `y += x`.
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(x.len(), y.len());
    threads::install(|| y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| add_assign_chunk(yc, xc)));
}

/// `y = (y + x) * [r > 0]`: a residual block's input gradient (branch plus identity shortcut)
/// with the ReLU mask of that input, `r`, applied in the same sweep.
pub fn add_assign_relu_mask(y: &mut [f32], x: &[f32], r: &[f32]) {
    assert_eq!(x.len(), y.len());
    assert_eq!(r.len(), y.len());
    threads::install(|| {
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(r.par_chunks(CHUNK)))
            .for_each(|(yc, (xc, rc))| add_assign_masked_chunk(yc, xc, rc));
    });
}

/// Geometry of an option-A shortcut: subsample by `stride`, then zero-pad channels from `cin` to
/// `cout`, `(cout - cin) / 2` before and the rest after (the symmetric padding of the widely used
/// CIFAR reference implementation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadShortcutShape {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels (`>= cin`).
    pub cout: usize,
    /// Subsampling stride.
    pub stride: usize,
}

impl PadShortcutShape {
    /// Output height (`ceil(h / stride)`, as `x[:, :, ::s, ::s]`).
    pub fn out_h(&self) -> usize {
        self.h.div_ceil(self.stride)
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        self.w.div_ceil(self.stride)
    }
    /// Zero channels placed before the copied ones.
    pub fn pad_before(&self) -> usize {
        (self.cout - self.cin) / 2
    }
    fn check(&self, x: usize, y: usize) {
        assert!(self.cout >= self.cin && self.stride > 0, "option-A shortcut cannot shrink channels: {self:?}");
        assert_eq!(x, self.n * self.h * self.w * self.cin, "shortcut input length");
        assert_eq!(y, self.n * self.out_h() * self.out_w() * self.cout, "shortcut output length");
    }
}

/// Option-A shortcut forward.
///
/// # Shapes
/// `x: [n, h, w, cin]`, `y: [n, ceil(h/s), ceil(w/s), cout]`.
/// Any element type: 8-bit activations (zero point 0) take the same pass.
pub fn pad_shortcut_forward<T: Copy + Default + Send + Sync>(s: &PadShortcutShape, x: &[T], y: &mut [T]) {
    s.check(x.len(), y.len());
    let (oh, ow, before) = (s.out_h(), s.out_w(), s.pad_before());
    threads::install(|| {
        y.par_chunks_mut(oh * ow * s.cout).enumerate().for_each(|(img, yi)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let dst = &mut yi[(oy * ow + ox) * s.cout..(oy * ow + ox + 1) * s.cout];
                    let src = ((img * s.h + oy * s.stride) * s.w + ox * s.stride) * s.cin;
                    dst[..before].fill(T::default());
                    dst[before..before + s.cin].copy_from_slice(&x[src..src + s.cin]);
                    dst[before + s.cin..].fill(T::default());
                }
            }
        });
    });
}

/// Option-A shortcut backward: `dx (+)=` the copied channels of `dy`, at the sampled pixels.
pub fn pad_shortcut_backward(s: &PadShortcutShape, dy: &[f32], dx: &mut [f32], accumulate: bool) {
    s.check(dx.len(), dy.len());
    let (oh, ow, before) = (s.out_h(), s.out_w(), s.pad_before());
    threads::install(|| {
        dx.par_chunks_mut(s.h * s.w * s.cin).enumerate().for_each(|(img, dxi)| {
            if !accumulate {
                dxi.fill(0.0);
            }
            for oy in 0..oh {
                for ox in 0..ow {
                    let src = ((img * oh + oy) * ow + ox) * s.cout + before;
                    let dst = (oy * s.stride * s.w + ox * s.stride) * s.cin;
                    for (d, g) in dxi[dst..dst + s.cin].iter_mut().zip(&dy[src..src + s.cin]) {
                        *d += g;
                    }
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_and_add() {
        let x = [-1.0, 2.0];
        let mut y = [0.0; 2];
        relu_forward(&x, &mut y);
        assert_eq!(y, [0.0, 2.0]);
        let mut dx = [1.0; 2];
        relu_backward(&y, &[5.0, 6.0], &mut dx, true);
        assert_eq!(dx, [1.0, 7.0]);
        add(&x, &y, &mut dx);
        assert_eq!(dx, [-1.0, 4.0]);
        add_assign(&mut dx, &[1.0, 1.0]);
        assert_eq!(dx, [0.0, 5.0]);
        add_assign_relu_mask(&mut dx, &[1.0, 1.0], &[0.5, 0.0]);
        assert_eq!(dx, [1.0, 0.0]);
    }

    #[test]
    fn every_isa_version_agrees() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        let g: Vec<f32> = (0..1000).map(|i| ((i * 11) % 23) as f32 - 11.0).collect();
        for isa in crate::simd::available() {
            let (mut a, mut b) = (vec![0.0; 1000], vec![0.0; 1000]);
            relu_chunk_on(crate::simd::Isa::Scalar, &x, &mut a);
            relu_chunk_on(isa, &x, &mut b);
            assert_eq!(a, b);
            for acc in [false, true] {
                let (mut a, mut b) = (g.clone(), g.clone());
                relu_backward_chunk_on(crate::simd::Isa::Scalar, &x, &g, &mut a, acc);
                relu_backward_chunk_on(isa, &x, &g, &mut b, acc);
                assert_eq!(a, b);
            }
            let (mut a, mut b) = (g.clone(), g.clone());
            mask_chunk_on(crate::simd::Isa::Scalar, &x, &mut a);
            mask_chunk_on(isa, &x, &mut b);
            assert_eq!(a, b);
            let (mut c, mut d) = (g.clone(), g.clone());
            add_assign_masked_chunk_on(crate::simd::Isa::Scalar, &mut c, &x, &g);
            add_assign_masked_chunk_on(isa, &mut d, &x, &g);
            assert_eq!(c, d);
            add_chunk_on(isa, &x, &g, &mut a);
            add_assign_chunk_on(isa, &mut b, &x);
            let want: Vec<f32> = x.iter().zip(&g).map(|(p, q)| p + q).collect();
            assert_eq!(a, want);
        }
    }

    #[test]
    fn pad_shortcut_subsamples_and_pads_symmetrically() {
        // 1 image, 3x3, 2 channels -> 2x2, 6 channels (2 zeros before, 2 after).
        let s = PadShortcutShape { n: 1, h: 3, w: 3, cin: 2, cout: 6, stride: 2 };
        let x: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let mut y = vec![f32::NAN; 24];
        pad_shortcut_forward(&s, &x, &mut y);
        assert_eq!(&y[..6], &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(&y[6..12], &[0.0, 0.0, 4.0, 5.0, 0.0, 0.0]);
        assert_eq!(&y[18..24], &[0.0, 0.0, 16.0, 17.0, 0.0, 0.0]);
        let mut dx = vec![0.0; 18];
        pad_shortcut_backward(&s, &y, &mut dx, false);
        let mut want = vec![0.0; 18];
        for p in [0usize, 2, 6, 8] {
            want[p * 2] = x[p * 2];
            want[p * 2 + 1] = x[p * 2 + 1];
        }
        assert_eq!(dx, want);
    }
}
