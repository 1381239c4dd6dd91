//! The option-A shortcut of He et al. 2015 (Section 3.3 and 4.2): "the shortcut still performs
//! identity mapping, with extra zero entries padded for increasing dimensions", and the stride-2
//! subsampling when the feature map halves. It has no parameters.

use crate::Tensor;
use resnet_kernels::elementwise::{self, PadShortcutShape};
use resnet_kernels::profile;

/// Subsample by `stride`, zero-pad channels to `cout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadShortcut {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Subsampling stride.
    pub stride: usize,
}

impl PadShortcut {
    fn geometry(&self, input: [usize; 4]) -> PadShortcutShape {
        let [n, h, w, c] = input;
        assert_eq!(c, self.cin, "option-A shortcut: input has {c} channels, expected {}", self.cin);
        PadShortcutShape { n, h, w, cin: self.cin, cout: self.cout, stride: self.stride }
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> [usize; 4] {
        let s = self.geometry(input);
        [s.n, s.out_h(), s.out_w(), s.cout]
    }

    /// `y = pad_channels(x[:, ::s, ::s, :])`.
    ///
    /// # Shapes
    /// `x: [n, h, w, cin]` -> `y: [n, ceil(h/s), ceil(w/s), cout]`.
    pub fn forward(&self, x: &Tensor, y: &mut Tensor) {
        let s = self.geometry(x.shape());
        y.reshape_for(self.output_shape(x.shape()));
        let _p = profile::scope("shortcut A");
        elementwise::pad_shortcut_forward(&s, x.data(), y.data_mut());
    }

    /// In the forward pass: `y = pad(x[::s, ::s])`. Writes (or adds) into `dx` the copied channels
    /// of `dy` at the sampled pixels, zeros elsewhere.
    pub fn backward(&self, x_shape: [usize; 4], dy: &[f32], dx: &mut [f32], accumulate: bool) {
        let _p = profile::scope("shortcut A");
        let s = self.geometry(x_shape);
        elementwise::pad_shortcut_backward(&s, dy, dx, accumulate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, random_tensor, weighted_sum, Tolerance};

    #[test]
    fn gradient_matches_finite_differences() {
        for (h, stride, cin, cout) in [(4, 2, 2, 4), (5, 2, 3, 8), (3, 1, 4, 4)] {
            let op = PadShortcut { cin, cout, stride };
            let x = random_tensor([2, h, h, cin], 1);
            let mut y = Tensor::default();
            op.forward(&x, &mut y);
            let r = probe(y.len(), 2);
            let mut dx = vec![0.0; x.len()];
            op.backward(x.shape(), &r, &mut dx, false);
            check_gradient("pad shortcut dx", x.data(), &dx, Tolerance::default(), |v| {
                let mut y = Tensor::default();
                op.forward(&Tensor::from_vec(x.shape(), v.to_vec()), &mut y);
                weighted_sum(y.data(), &r)
            });
        }
    }
}
