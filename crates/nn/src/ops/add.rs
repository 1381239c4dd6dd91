//! Residual addition, `y = F(x) + x` (He et al. 2015, Eq. 1).

use crate::Tensor;
use resnet_kernels::elementwise;

/// `y = a + b`.
///
/// # Panics
/// If the shapes differ.
pub fn add_forward(a: &Tensor, b: &Tensor, y: &mut Tensor) {
    assert_eq!(a.shape(), b.shape(), "residual addition of different shapes");
    y.reshape_for(a.shape());
    elementwise::add(a.data(), b.data(), y.data_mut());
}

/// In the forward pass: `y = a + b`. Both inputs receive `dy`: adds it into `da` and `db`.
pub fn add_backward(dy: &[f32], da: &mut [f32], db: &mut [f32]) {
    elementwise::add_assign(da, dy);
    elementwise::add_assign(db, dy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, random_tensor, weighted_sum, Tolerance};

    #[test]
    fn gradient_matches_finite_differences() {
        let (a, b) = (random_tensor([1, 2, 2, 3], 1), random_tensor([1, 2, 2, 3], 2));
        let r = probe(a.len(), 3);
        let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
        add_backward(&r, &mut da, &mut db);
        let f = |a: &Tensor, b: &Tensor| {
            let mut y = Tensor::default();
            add_forward(a, b, &mut y);
            weighted_sum(y.data(), &r)
        };
        check_gradient("add da", a.data(), &da, Tolerance::default(), |v| {
            f(&Tensor::from_vec(a.shape(), v.to_vec()), &b)
        });
        check_gradient("add db", b.data(), &db, Tolerance::default(), |v| {
            f(&a, &Tensor::from_vec(b.shape(), v.to_vec()))
        });
    }
}
