//! Stochastic gradient descent with momentum and weight decay (He et al. 2015, Section 3.4:
//! "a weight decay of 0.0001 and a momentum of 0.9").
//!
//! Momentum follows PyTorch's convention, which differs from the paper-era Caffe one only in
//! where the learning rate enters:
//! `g = grad + wd * w;  v = momentum * v + g;  w -= lr * v` (Nesterov: `w -= lr * (g + momentum * v)`).
//! With a constant learning rate the two are identical; after a learning-rate drop Caffe's
//! velocity (`v = momentum * v + lr * g`) still carries the old rate for a few steps.

use crate::Param;

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
    /// Velocity per parameter (empty until the first step).
    pub velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// An optimiser with zero velocity.
    pub fn new(config: SgdConfig) -> Self {
        Self { config, velocity: Vec::new() }
    }

    /// Updates one parameter (the `index`-th visited) with learning rate `lr`.
    pub fn update(&mut self, index: usize, p: &mut Param, lr: f32) {
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
        for ((w, g), v) in value.iter_mut().zip(grad).zip(v.iter_mut()) {
            let g = g + wd * *w;
            *v = c.momentum * *v + g;
            let step = if c.nesterov { g + c.momentum * *v } else { *v };
            *w -= lr * step;
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

    #[test]
    fn bn_parameters_can_skip_decay() {
        let mut p = Param::filled("bn.weight", ParamKind::BnWeight, &[1], 1.0);
        let mut sgd =
            Sgd::new(SgdConfig { momentum: 0.0, weight_decay: 0.5, decay_bn_and_bias: false, nesterov: false });
        sgd.update(0, &mut p, 1.0);
        assert_eq!(p.value()[0], 1.0);
    }
}
