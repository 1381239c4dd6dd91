//! Max pooling (3x3, stride 2, padding 1 after the ImageNet stem; He et al. 2015, Table 1).

use crate::Tensor;
use resnet_kernels::conv::InputTransform;
use resnet_kernels::pool::{self, PoolShape};
use resnet_kernels::profile;

/// A max pooling layer; it remembers the winning pixels of its last forward pass.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    /// Window size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
    argmax: Vec<u32>,
}

impl MaxPool2d {
    /// A `k x k` pooling with the given stride and padding.
    pub fn new(k: usize, stride: usize, pad: usize) -> Self {
        Self { k, stride, pad, argmax: Vec::new() }
    }

    fn geometry(&self, input: [usize; 4]) -> PoolShape {
        let [n, h, w, c] = input;
        PoolShape { n, h, w, c, k: self.k, stride: self.stride, pad: self.pad }
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> [usize; 4] {
        let s = self.geometry(input);
        [s.n, s.out_h(), s.out_w(), s.c]
    }

    /// `y[p] = max of x over the window of p`.
    ///
    /// # Shapes
    /// `x: [n, h, w, c]` -> `y: [n, oh, ow, c]`.
    pub fn forward(&mut self, x: &Tensor, y: &mut Tensor) {
        self.forward_transformed(x, None, y);
    }

    /// [`Self::forward`] of `t(x)`: the batch norm and ReLU of the layer before applied to each
    /// pixel as it is read, so that their output need not exist.
    pub fn forward_transformed(&mut self, x: &Tensor, t: Option<InputTransform<'_>>, y: &mut Tensor) {
        let s = self.geometry(x.shape());
        y.reshape_for(self.output_shape(x.shape()));
        self.argmax.resize(s.output_len(), 0);
        let _p = profile::scope("max pool forward");
        pool::max_pool_forward_transformed(&s, x.activations(), t.as_ref(), y.data_mut(), &mut self.argmax);
    }

    /// In the forward pass: `y[p] = max over window(p) of x`. Routes each `dy[p]` to the pixel that
    /// won window `p`, writing (or adding) into `dx`.
    pub fn backward(&self, x_shape: [usize; 4], dy: &[f32], dx: &mut [f32], accumulate: bool) {
        let _p = profile::scope("max pool backward");
        let s = self.geometry(x_shape);
        pool::max_pool_backward(&s, dy, &self.argmax, dx, accumulate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, weighted_sum, Tolerance};
    use resnet_kernels::rng::Rng;

    #[test]
    fn gradient_matches_finite_differences() {
        let mut x = Tensor::zeros([2, 5, 5, 2]);
        // Distinct values at least 0.01 apart, so a 1e-3 step never changes a window's winner.
        let mut order: Vec<usize> = (0..x.len()).collect();
        Rng::new(4).shuffle(&mut order);
        for (i, &o) in order.iter().enumerate() {
            x.data_mut()[o] = i as f32 * 0.01 - 0.5;
        }
        let mut op = MaxPool2d::new(3, 2, 1);
        let mut y = Tensor::default();
        op.forward(&x, &mut y);
        let r = probe(y.len(), 2);
        let mut dx = vec![0.0; x.len()];
        op.backward(x.shape(), &r, &mut dx, false);
        let tol = Tolerance { eps: 1e-3, ..Tolerance::default() };
        check_gradient("max pool dx", x.data(), &dx, tol, |v| {
            let mut y = Tensor::default();
            MaxPool2d::new(3, 2, 1).forward(&Tensor::from_vec(x.shape(), v.to_vec()), &mut y);
            weighted_sum(y.data(), &r)
        });
    }
}
