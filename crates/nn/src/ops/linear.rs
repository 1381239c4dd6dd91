//! Fully connected layer (the 1000-way or 10-way classifier of He et al. 2015).

use crate::{Param, ParamKind, Tensor};
use resnet_kernels::gemm::{matmul, MatMut, MatRef, Parallelism};
use resnet_kernels::profile;

/// `y = x W^T + b` with `W: [out, in]` (torchvision's layout).
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Param,
    /// `[out]`.
    pub bias: Param,
}

impl Linear {
    /// A zero-initialised layer named `name`.
    pub fn new(name: &str, inputs: usize, outputs: usize) -> Self {
        Self {
            weight: Param::zeros(format!("{name}.weight"), ParamKind::LinearWeight, &[outputs, inputs]),
            bias: Param::zeros(format!("{name}.bias"), ParamKind::LinearBias, &[outputs]),
        }
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.weight.shape[1]
    }
    /// Output features.
    pub fn outputs(&self) -> usize {
        self.weight.shape[0]
    }

    /// # Shapes
    /// `x: [n, 1, 1, in]` (or any `[n, .., in]` flattened to `in` per sample) -> `y: [n, 1, 1, out]`.
    pub fn forward(&self, x: &Tensor, y: &mut Tensor) {
        let _p = profile::layer_scope("fc forward", &self.weight.name);
        let (n, i, o) = (x.n(), self.inputs(), self.outputs());
        assert_eq!(x.len(), n * i, "{}: input is not [{n}, {i}]", self.weight.name);
        y.reshape_for([n, 1, 1, o]);
        for row in y.data_mut().chunks_exact_mut(o) {
            row.copy_from_slice(self.bias.value());
        }
        let w = MatRef::row_major(self.weight.value(), o, i).t();
        matmul(MatMut::row_major(y.data_mut(), n, o), MatRef::row_major(x.data(), n, i), w, true, Parallelism::Pool);
    }

    /// In the forward pass: `y = x W^T + b`. Adds `dW = dy^T x` and `db = sum_n dy` into the
    /// gradients and writes (or adds) `dx = dy W`.
    pub fn backward(&mut self, x: &Tensor, dy: &[f32], dx: Option<&mut [f32]>, accumulate: bool) {
        let _p = profile::layer_scope("fc backward", &self.weight.name);
        let (n, i, o) = (x.n(), self.inputs(), self.outputs());
        let g = MatRef::row_major(dy, n, o);
        if !self.weight.frozen {
            matmul(
                MatMut::row_major(&mut self.weight.grad, o, i),
                g.t(),
                MatRef::row_major(x.data(), n, i),
                true,
                Parallelism::Pool,
            );
        }
        if !self.bias.frozen {
            for row in dy.chunks_exact(o) {
                self.bias.grad.iter_mut().zip(row).for_each(|(b, d)| *b += d);
            }
        }
        if let Some(dx) = dx {
            matmul(
                MatMut::row_major(dx, n, i),
                g,
                MatRef::row_major(self.weight.value(), o, i),
                accumulate,
                Parallelism::Pool,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, random_tensor, randomize, weighted_sum, Tolerance};

    fn run(l: &Linear, x: &Tensor) -> Tensor {
        let mut y = Tensor::default();
        l.forward(x, &mut y);
        y
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut l = Linear::new("fc", 5, 3);
        randomize(l.weight.value_mut(), 1);
        randomize(l.bias.value_mut(), 2);
        let x = random_tensor([4, 1, 1, 5], 3);
        let r = probe(12, 4);
        let mut g = l.clone();
        let mut dx = vec![0.0; x.len()];
        g.backward(&x, &r, Some(&mut dx), false);
        let tol = Tolerance::default();
        check_gradient("fc dx", x.data(), &dx, tol, |v| {
            weighted_sum(run(&l, &Tensor::from_vec(x.shape(), v.to_vec())).data(), &r)
        });
        check_gradient("fc dw", l.weight.value(), &g.weight.grad, tol, |v| {
            let mut m = l.clone();
            m.weight.value_mut().copy_from_slice(v);
            weighted_sum(run(&m, &x).data(), &r)
        });
        check_gradient("fc db", l.bias.value(), &g.bias.grad, tol, |v| {
            let mut m = l.clone();
            m.bias.value_mut().copy_from_slice(v);
            weighted_sum(run(&m, &x).data(), &r)
        });
    }
}
