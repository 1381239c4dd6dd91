//! Rectified linear unit.

use crate::Tensor;
use resnet_kernels::elementwise;

/// `y = max(x, 0)`.
pub fn relu_forward(x: &Tensor, y: &mut Tensor) {
    y.reshape_for(x.shape());
    elementwise::relu_forward(x.data(), y.data_mut());
}

/// In the forward pass: `y = max(x, 0)`. Writes (or adds) `dx = dy * [y > 0]`; the mask is
/// read from the output, so the input need not be kept.
pub fn relu_backward(y: &Tensor, dy: &[f32], dx: &mut [f32], accumulate: bool) {
    elementwise::relu_backward(y.data(), dy, dx, accumulate);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, randomize_away_from_zero, weighted_sum, Tolerance};

    #[test]
    fn gradient_matches_finite_differences() {
        let mut x = Tensor::zeros([2, 3, 3, 2]);
        randomize_away_from_zero(x.data_mut(), 1, 0.05);
        let mut y = Tensor::default();
        relu_forward(&x, &mut y);
        let r = probe(y.len(), 2);
        let mut dx = vec![0.0; x.len()];
        relu_backward(&y, &r, &mut dx, false);
        check_gradient("relu dx", x.data(), &dx, Tolerance::default(), |xv| {
            let mut y = Tensor::default();
            relu_forward(&Tensor::from_vec(x.shape(), xv.to_vec()), &mut y);
            weighted_sum(y.data(), &r)
        });
    }
}
