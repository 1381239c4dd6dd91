//! Global average pooling before the classifier (He et al. 2015, Section 3.4 and 4.2).

use crate::Tensor;
use resnet_kernels::pool;

/// `y[n, c] = mean over h, w of x[n, h, w, c]`.
///
/// # Shapes
/// `x: [n, h, w, c]` -> `y: [n, 1, 1, c]`.
pub fn global_avg_pool_forward(x: &Tensor, y: &mut Tensor) {
    y.reshape_for([x.n(), 1, 1, x.c()]);
    pool::global_avg_pool_forward(x.data(), x.n(), x.c(), y.data_mut());
}

/// In the forward pass: `y = mean_hw(x)`. Writes (or adds) `dx[n, h, w, c] = dy[n, c] / (h w)`.
pub fn global_avg_pool_backward(x_shape: [usize; 4], dy: &[f32], dx: &mut [f32], accumulate: bool) {
    pool::global_avg_pool_backward(dy, x_shape[0], x_shape[3], dx, accumulate);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, random_tensor, weighted_sum, Tolerance};

    #[test]
    fn gradient_matches_finite_differences() {
        let x = random_tensor([2, 3, 3, 4], 1);
        let r = probe(8, 2);
        let mut dx = vec![0.0; x.len()];
        global_avg_pool_backward(x.shape(), &r, &mut dx, false);
        check_gradient("avg pool dx", x.data(), &dx, Tolerance::default(), |v| {
            let mut y = Tensor::default();
            global_avg_pool_forward(&Tensor::from_vec(x.shape(), v.to_vec()), &mut y);
            weighted_sum(y.data(), &r)
        });
    }
}
