//! Stochastic gradient descent with momentum and weight decay (He et al. 2015, Section 3.4:
//! "a weight decay of 0.0001 and a momentum of 0.9").
//!
//! Momentum follows PyTorch's convention, which differs from the paper-era Caffe one only in
//! where the learning rate enters:
//! `g = grad + wd * w;  v = momentum * v + g;  w -= lr * v` (Nesterov: `w -= lr * (g + momentum * v)`).
//! With a constant learning rate the two are identical; after a learning-rate drop Caffe's
//! velocity (`v = momentum * v + lr * g`) still carries the old rate for a few steps.

use crate::Param;
use rayon::prelude::*;
use resnet_kernels::threads;

/// Elements of a parameter per parallel task of the update: parameters up to this size (every
/// CIFAR network's) are updated on the calling thread.
pub(crate) const PARALLEL_ELEMENTS: usize = 1 << 16;

/// SGD hyper-parameters (the learning rate is given per step, by the schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum coefficient (0.9 in the paper).
    pub momentum: f32,
    /// L2 weight decay (1e-4 in the paper).
    pub weight_decay: f32,
    /// Apply weight decay to batch-norm parameters and biases too (the paper and PyTorch's
    /// default do).
    pub decay_bn_and_bias: bool,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { momentum: 0.9, weight_decay: 1e-4, decay_bn_and_bias: true, nesterov: false }
    }
}

/// SGD with one velocity buffer per parameter, in the order parameters are visited.
#[derive(Clone, Debug, Default)]
pub struct Sgd {
    /// Hyper-parameters.
    pub config: SgdConfig,
    /// Velocity per parameter (empty until the first step, and for frozen parameters).
    pub velocity: Vec<Vec<f32>>,
    /// Learning-rate multiplier per parameter, in visiting order (PyTorch's parameter groups
    /// with their own `lr`); a parameter past its end has 1.
    pub lr_scale: Vec<f32>,
}

impl Sgd {
    /// An optimiser with zero velocity.
    pub fn new(config: SgdConfig) -> Self {
        Self { config, velocity: Vec::new(), lr_scale: Vec::new() }
    }

    /// Updates one parameter (the `index`-th visited) with the step's learning rate `lr` times
    /// its multiplier. A frozen parameter is left as it is, without decay or momentum state.
    pub fn update(&mut self, index: usize, p: &mut Param, lr: f32) {
        if p.frozen {
            return;
        }
        let lr = lr * self.lr_scale.get(index).copied().unwrap_or(1.0);
        if self.velocity.len() <= index {
            self.velocity.resize_with(index + 1, Vec::new);
        }
        let v = &mut self.velocity[index];
        if v.len() != p.len() {
            v.clear();
            v.resize(p.len(), 0.0);
        }
        let c = self.config;
        let wd = if p.kind.is_weight() || c.decay_bn_and_bias { c.weight_decay } else { 0.0 };
        let (value, grad) = p.value_mut_and_grad();
        let step = |value: &mut [f32], grad: &[f32], v: &mut [f32]| {
            for ((w, g), v) in value.iter_mut().zip(grad).zip(v.iter_mut()) {
                let g = g + wd * *w;
                *v = c.momentum * *v + g;
                let step = if c.nesterov { g + c.momentum * *v } else { *v };
                *w -= lr * step;
            }
        };
        // Element by element, so the same values on any number of threads.
        if value.len() <= PARALLEL_ELEMENTS {
            step(value, grad, v);
        } else {
            threads::install(|| {
                (value.par_chunks_mut(PARALLEL_ELEMENTS).zip(grad.par_chunks(PARALLEL_ELEMENTS)))
                    .zip(v.par_chunks_mut(PARALLEL_ELEMENTS))
                    .for_each(|((value, grad), v)| step(value, grad, v));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamKind;

    #[test]
    fn matches_pytorch_sgd_by_hand() {
        // torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01), grad 1.0 twice, w0 = 1.
        let mut p = Param::filled("w", ParamKind::ConvWeight, &[1], 1.0);
        let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, weight_decay: 0.01, ..SgdConfig::default() });
        p.grad[0] = 1.0;
        sgd.update(0, &mut p, 0.1);
        // g = 1.01, v = 1.01, w = 1 - 0.101 = 0.899
        assert!((p.value()[0] - 0.899).abs() < 1e-6);
        sgd.update(0, &mut p, 0.1);
        // g = 1 + 0.00899, v = 0.9 * 1.01 + 1.00899 = 1.91799, w = 0.899 - 0.191799
        assert!((p.value()[0] - (0.899 - 0.191_799)).abs() < 1e-6);
    }

    /// A parameter large enough to be updated in parallel chunks gets, element for element, the
    /// formula's values; its gradient zeroes in parallel too.
    #[test]
    fn large_parameters_update_element_by_element_in_parallel() {
        let n = 3 * PARALLEL_ELEMENTS + 5;
        let config = SgdConfig { momentum: 0.9, weight_decay: 1e-4, nesterov: true, ..SgdConfig::default() };
        let mut p = Param::filled("w", ParamKind::ConvWeight, &[n], 0.0);
        p.value_mut().iter_mut().enumerate().for_each(|(i, w)| *w = (i % 97) as f32 * 0.01 - 0.4);
        let (mut w, mut v) = (p.value().to_vec(), vec![0.0f32; n]);
        let mut sgd = Sgd::new(config);
        for step in 0..2 {
            p.grad.iter_mut().enumerate().for_each(|(i, g)| *g = ((i * 31 + step) % 89) as f32 * 0.02 - 0.8);
            for ((w, v), g) in w.iter_mut().zip(&mut v).zip(&p.grad) {
                let g = g + 1e-4 * *w;
                *v = 0.9 * *v + g;
                *w -= 0.05 * (g + 0.9 * *v);
            }
            sgd.update(0, &mut p, 0.05);
            assert_eq!(p.value(), &w[..], "step {step}");
            assert_eq!(sgd.velocity[0], v, "step {step}");
        }
        p.zero_grad();
        assert!(p.grad.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn frozen_parameters_keep_their_values_and_get_no_state() {
        let mut a = Param::filled("a", ParamKind::ConvWeight, &[2], 1.0);
        let mut b = Param::filled("b", ParamKind::ConvWeight, &[2], 1.0);
        a.frozen = true;
        a.grad.fill(1.0);
        b.grad.fill(1.0);
        let mut sgd = Sgd::new(SgdConfig::default());
        sgd.update(0, &mut a, 0.1);
        sgd.update(1, &mut b, 0.1);
        assert_eq!(a.value(), [1.0, 1.0]);
        assert!(sgd.velocity[0].is_empty());
        assert_eq!(sgd.velocity[1].len(), 2);
        assert!(b.value()[0] < 1.0);
    }

    #[test]
    fn each_parameter_steps_with_its_own_learning_rate_multiplier() {
        let config = SgdConfig { momentum: 0.0, weight_decay: 0.0, ..SgdConfig::default() };
        let mut sgd = Sgd::new(config);
        sgd.lr_scale = vec![0.1, 1.0];
        let mut ps: Vec<Param> =
            (0..3).map(|i| Param::filled(format!("p{i}"), ParamKind::ConvWeight, &[1], 1.0)).collect();
        for (i, p) in ps.iter_mut().enumerate() {
            p.grad[0] = 1.0;
            sgd.update(i, p, 0.5);
        }
        // 1 - 0.5 * 0.1, 1 - 0.5, and 1 - 0.5 for the parameter past the multipliers' end.
        assert!((ps[0].value()[0] - 0.95).abs() < 1e-7);
        assert_eq!(ps[1].value()[0], 0.5);
        assert_eq!(ps[2].value()[0], 0.5);
    }

    #[test]
    fn bn_parameters_can_skip_decay() {
        let mut p = Param::filled("bn.weight", ParamKind::BnWeight, &[1], 1.0);
        let mut sgd =
            Sgd::new(SgdConfig { momentum: 0.0, weight_decay: 0.5, decay_bn_and_bias: false, nesterov: false });
        sgd.update(0, &mut p, 1.0);
        assert_eq!(p.value()[0], 1.0);
    }
}
