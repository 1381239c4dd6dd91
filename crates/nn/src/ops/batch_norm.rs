//! Batch normalisation (Ioffe & Szegedy 2015) after every convolution (He et al. 2015, Section
//! 3.4), with PyTorch's conventions: momentum 0.1, eps 1e-5, biased variance to normalise and
//! unbiased variance in the running estimate.
//!
//! The forward pass can add a residual and apply ReLU in the same sweep, `y = relu(bn(x) + r)`,
//! which is exactly the end of a residual block (Fig. 2 of the paper).

use crate::{Param, ParamKind, Tensor};
pub use resnet_kernels::batch_norm::InputGradient;
use resnet_kernels::batch_norm::{self as kernel, ReluMask};
use resnet_kernels::conv::{InputTransform, OutputTransform};
use resnet_kernels::{profile, Workspace};
use std::sync::Arc;

/// Sums batch statistics over the processes that share a batch: synchronised batch norm,
/// whose statistics are those of the whole batch rather than of each process's share.
pub trait StatisticsSync: Send + Sync + std::fmt::Debug {
    /// Replaces `values` on every process by their element-wise sum over the processes. Every
    /// process calls it at the same point of the same pass.
    fn all_reduce_sum(&self, values: &mut [f64]);
}

/// Which statistics normalise the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchNormMode {
    /// Batch statistics; running estimates are updated.
    Train,
    /// Running estimates; nothing is updated.
    Eval,
}

/// The ReLU that followed a batch norm in the forward pass, as its backward pass needs to know.
#[derive(Clone, Copy, Debug)]
pub enum BnReluMask<'a> {
    /// No ReLU.
    None,
    /// A ReLU whose output (the layer's output) is this tensor.
    Output(&'a [f32]),
    /// A ReLU of this layer's own normalised output, which was never stored (the next
    /// convolution applied both as an input transform).
    OwnAffine,
}

/// A batch-norm layer over the channel axis.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// Scale gamma, `[c]`.
    pub weight: Param,
    /// Shift beta, `[c]`.
    pub bias: Param,
    /// Running mean, `[c]`.
    pub running_mean: Vec<f32>,
    /// Running (unbiased) variance, `[c]`.
    pub running_var: Vec<f32>,
    /// Training batches seen (torchvision's `num_batches_tracked`).
    pub num_batches_tracked: u64,
    /// Weight of the new batch in the running estimates.
    pub momentum: f32,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Normalise with the running estimates in training too, leaving them unchanged (the batch
    /// norms of a frozen layer, or every one with `--freeze-bn`); gamma and beta still train
    /// unless they are frozen themselves.
    pub frozen_statistics: bool,
    /// Batch statistics summed over the processes of a data-parallel group (synchronised batch
    /// norm, `--sync-bn`): the mean and variance in the forward pass, and the sums of the
    /// gradient's terms that reach the input in the backward pass, are the whole batch's. The
    /// parameter gradients stay this process's share, for the group to average with the rest.
    pub sync: Option<Arc<dyn StatisticsSync>>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    sum_g: Vec<f32>,
    sum_g_xhat: Vec<f32>,
    ws: Workspace,
}

impl BatchNorm2d {
    /// gamma = 1, beta = 0, running mean 0 and variance 1 (as PyTorch and the paper).
    pub fn new(name: &str, c: usize) -> Self {
        Self {
            weight: Param::filled(format!("{name}.weight"), ParamKind::BnWeight, &[c], 1.0),
            bias: Param::zeros(format!("{name}.bias"), ParamKind::BnBias, &[c]),
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            num_batches_tracked: 0,
            momentum: 0.1,
            eps: 1e-5,
            frozen_statistics: false,
            sync: None,
            mean: vec![0.0; c],
            rstd: vec![0.0; c],
            scale: vec![0.0; c],
            shift: vec![0.0; c],
            sum_g: vec![0.0; c],
            sum_g_xhat: vec![0.0; c],
            ws: Workspace::new(),
        }
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.weight.len()
    }

    /// The statistics that normalise in `mode`: the running estimates (eval mode) when the
    /// layer's statistics are frozen.
    pub fn mode_in(&self, mode: BatchNormMode) -> BatchNormMode {
        if self.frozen_statistics {
            BatchNormMode::Eval
        } else {
            mode
        }
    }

    /// Per-channel `(scale, shift)` such that the normalisation in `mode` is `x * scale + shift`.
    /// In training mode this uses the statistics of the last forward pass.
    pub fn affine(&self, mode: BatchNormMode) -> (Vec<f32>, Vec<f32>) {
        let mut scale = vec![0.0; self.channels()];
        let mut shift = vec![0.0; self.channels()];
        self.affine_into(mode, &mut scale, &mut shift);
        (scale, shift)
    }

    fn affine_into(&self, mode: BatchNormMode, scale: &mut [f32], shift: &mut [f32]) {
        for ch in 0..self.channels() {
            let (mean, rstd) = match mode {
                BatchNormMode::Train => (self.mean[ch], self.rstd[ch]),
                BatchNormMode::Eval => (self.running_mean[ch], 1.0 / (self.running_var[ch] + self.eps).sqrt()),
            };
            scale[ch] = self.weight.value()[ch] * rstd;
            shift[ch] = self.bias.value()[ch] - mean * scale[ch];
        }
    }

    /// `y = bn(x) (+ residual)`, then ReLU if `relu`. In [`BatchNormMode::Train`] the batch
    /// statistics normalise and the running estimates move towards them.
    ///
    /// # Shapes
    /// `x, residual: [n, h, w, c]` -> `y: [n, h, w, c]`.
    ///
    /// # Panics
    /// If the channel count is wrong, or training on a single value per channel.
    pub fn forward(&mut self, x: &Tensor, mode: BatchNormMode, residual: Option<&[f32]>, relu: bool, y: &mut Tensor) {
        let mode = self.mode_in(mode);
        let c = self.channels();
        assert_eq!(x.c(), c, "{}: input has {} channels, layer has {c}", self.weight.name, x.c());
        if mode == BatchNormMode::Train {
            let _p = profile::layer_scope("batch norm statistics", &self.weight.name);
            let mut var = std::mem::take(&mut self.scale);
            kernel::channel_mean_var(x.data(), c, &mut self.mean, &mut var, &mut self.ws);
            let mut rows = x.len() / c;
            if self.sync.is_some() {
                // Back to sums, summed over the group, and the group's statistics from them.
                let n = rows as f64;
                let mut sums: Vec<f64> = self.mean.iter().map(|&m| f64::from(m) * n).collect();
                sums.extend(self.mean.iter().zip(&var).map(|(&m, &v)| (f64::from(v) + f64::from(m).powi(2)) * n));
                rows = self.sum_over_group(&mut sums, rows);
                kernel::mean_var_from_sums(&sums, rows, &mut self.mean, &mut var);
            }
            self.use_batch_statistics(&var, rows);
            self.scale = var;
        }
        self.prepare(mode, None);
        self.apply(x, residual, relu, y);
    }

    /// Fixes the normalisation for the next [`BatchNorm2d::apply`] (and for [`Self::transform`]).
    /// In [`BatchNormMode::Train`], `batch` gives the per-channel sums of the batch
    /// (`[2 * c]`, as a convolution's forward pass returns them) and its row count, and the
    /// running estimates are updated; without it, the last batch's statistics are reused. In
    /// [`BatchNormMode::Eval`] the running estimates are used.
    ///
    /// # Panics
    /// If training on a single value per channel.
    pub fn prepare(&mut self, mode: BatchNormMode, batch: Option<(&[f64], usize)>) {
        let mode = self.mode_in(mode);
        if let (BatchNormMode::Train, Some((sums, rows))) = (mode, batch) {
            let mut var = std::mem::take(&mut self.scale);
            if self.sync.is_some() {
                let mut group = sums.to_vec();
                let rows = self.sum_over_group(&mut group, rows);
                kernel::mean_var_from_sums(&group, rows, &mut self.mean, &mut var);
                self.use_batch_statistics(&var, rows);
            } else {
                kernel::mean_var_from_sums(sums, rows, &mut self.mean, &mut var);
                self.use_batch_statistics(&var, rows);
            }
            self.scale = var;
        }
        let (mut scale, mut shift) = (std::mem::take(&mut self.scale), std::mem::take(&mut self.shift));
        self.affine_into(mode, &mut scale, &mut shift);
        self.scale = scale;
        self.shift = shift;
    }

    /// Sums `sums` and the row count `rows` over the group of [`Self::sync`]; returns the
    /// group's rows.
    fn sum_over_group(&self, sums: &mut Vec<f64>, rows: usize) -> usize {
        let sync = self.sync.as_ref().expect("a synchronised batch norm");
        sums.push(rows as f64);
        sync.all_reduce_sum(sums);
        sums.pop().map_or(rows, |r| r as usize)
    }

    /// Takes `self.mean` and `var` as the batch statistics of `rows` rows: sets `rstd` and moves
    /// the running estimates (unbiased variance, momentum `self.momentum`).
    fn use_batch_statistics(&mut self, var: &[f32], rows: usize) {
        assert!(rows > 1, "{}: batch norm needs more than one value per channel to train", self.weight.name);
        let unbias = rows as f32 / (rows - 1) as f32;
        let m = self.momentum;
        for ch in 0..self.channels() {
            self.rstd[ch] = 1.0 / (var[ch] + self.eps).sqrt();
            self.running_mean[ch] = (1.0 - m) * self.running_mean[ch] + m * self.mean[ch];
            self.running_var[ch] = (1.0 - m) * self.running_var[ch] + m * var[ch] * unbias;
        }
        self.num_batches_tracked += 1;
    }

    /// `y = x * scale + shift (+ residual)`, then ReLU if `relu`, with the normalisation fixed
    /// by the last [`Self::prepare`] or [`Self::forward`].
    pub fn apply(&self, x: &Tensor, residual: Option<&[f32]>, relu: bool, y: &mut Tensor) {
        let _p = profile::layer_scope("batch norm apply", &self.weight.name);
        y.reshape_for(x.shape());
        kernel::scale_shift_act(
            x.activations(),
            self.channels(),
            &self.scale,
            &self.shift,
            residual,
            relu,
            y.data_mut(),
        );
    }

    /// [`Self::apply`] whose residual is `r` through the normalisation of `r_norm` (fixed by
    /// its last [`Self::prepare`]): `y = act(x * scale + shift + r_norm(r))`, the values of
    /// applying `r_norm` to `r` first and adding its output, which then is never stored (a
    /// projection shortcut's batch norm).
    pub fn apply_with_normalized_residual(
        &self,
        x: &Tensor,
        r: &Tensor,
        r_norm: &BatchNorm2d,
        relu: bool,
        y: &mut Tensor,
    ) {
        let _p = profile::layer_scope("batch norm apply", &self.weight.name);
        assert_eq!(r.shape(), x.shape(), "{}: residual of another shape", self.weight.name);
        y.reshape_for(x.shape());
        let own = kernel::ChannelAffine { scale: &self.scale, shift: &self.shift };
        let other = kernel::ChannelAffine { scale: &r_norm.scale, shift: &r_norm.shift };
        kernel::scale_shift_act_affine_residual(x.activations(), own, r.activations(), other, relu, y.data_mut());
    }

    /// The normalisation fixed by the last [`Self::prepare`] or [`Self::forward`], followed by a
    /// ReLU, as a transform the next convolution applies to its input.
    pub fn transform(&self) -> InputTransform<'_> {
        InputTransform { scale: &self.scale, shift: &self.shift }
    }

    /// The normalisation fixed by the last [`Self::prepare`] or [`Self::forward`], then the
    /// `residual` and a ReLU if `relu`, as a transform the convolution before applies to its
    /// output: [`Self::apply`] done by the convolution as it writes.
    pub fn output_transform<'a>(&'a self, residual: Option<&'a [f32]>, relu: bool) -> OutputTransform<'a> {
        OutputTransform { scale: &self.scale, shift: &self.shift, residual, relu }
    }

    /// Backward of a training-mode forward pass on `x`. In the forward pass:
    /// `y = act(gamma * xhat + beta (+ r))` with `xhat = (x - mean) * rstd` over the batch.
    /// With `g = dy` masked by the ReLU (see [`ReluMask`]; [`ReluMask::Affine`] means this
    /// layer's own normalisation, when its output was never stored): adds `sum(g)` to
    /// `bias.grad` and `sum(g * xhat)` to `weight.grad`, and puts into `dx` (see
    /// [`InputGradient`]: written or added in `f32`, or written in bf16)
    /// `gamma * rstd * (g - mean(g) - xhat * mean(g * xhat))`. The residual's gradient is `g`
    /// itself, which the caller takes from [`crate::ops::relu_backward`].
    ///
    /// With [`Self::frozen_statistics`] the forward pass normalised with the running estimates,
    /// constants: `dx = gamma * rstd * g`, and the parameter gradients (unless frozen) use that
    /// `xhat`.
    ///
    /// # Shapes
    /// `x, dy, dx, the mask's output: [n, h, w, c]`.
    pub fn backward(&mut self, x: &Tensor, dy: &[f32], mask: BnReluMask<'_>, dx: InputGradient<'_>) {
        let _p = profile::layer_scope("batch norm backward", &self.weight.name);
        let c = self.channels();
        let mask = match mask {
            BnReluMask::None => ReluMask::None,
            BnReluMask::Output(z) => ReluMask::Output(z),
            BnReluMask::OwnAffine => ReluMask::Affine { scale: &self.scale, shift: &self.shift },
        };
        if self.frozen_statistics {
            self.mean.copy_from_slice(&self.running_mean);
            for (r, v) in self.rstd.iter_mut().zip(&self.running_var) {
                *r = 1.0 / (v + self.eps).sqrt();
            }
        }
        let (gamma_frozen, beta_frozen) = (self.weight.frozen, self.bias.frozen);
        if !(gamma_frozen && beta_frozen && self.frozen_statistics) {
            kernel::backward_sums(
                x.activations(),
                c,
                &self.mean,
                &self.rstd,
                dy,
                mask,
                &mut self.sum_g,
                &mut self.sum_g_xhat,
                &mut self.ws,
            );
        }
        for ch in 0..c {
            if !beta_frozen {
                self.bias.grad[ch] += self.sum_g[ch];
            }
            if !gamma_frozen {
                self.weight.grad[ch] += self.sum_g_xhat[ch];
            }
        }
        if self.frozen_statistics {
            // Constant statistics: the gradient passes through the affine map alone.
            self.sum_g.fill(0.0);
            self.sum_g_xhat.fill(0.0);
        } else if self.sync.is_some() {
            // The input gradient divides the group's sums by the group's rows; the kernel divides
            // by this share's rows, so the group's sums are scaled to this share.
            let rows = x.len() / c;
            let mut sums: Vec<f64> = self.sum_g.iter().chain(&self.sum_g_xhat).map(|&v| f64::from(v)).collect();
            let group_rows = self.sum_over_group(&mut sums, rows);
            let share = rows as f64 / group_rows as f64;
            for (dst, &v) in self.sum_g.iter_mut().chain(self.sum_g_xhat.iter_mut()).zip(&sums) {
                *dst = (v * share) as f32;
            }
        }
        kernel::backward_input(
            x.activations(),
            c,
            &self.mean,
            &self.rstd,
            self.weight.value(),
            dy,
            mask,
            &self.sum_g,
            &self.sum_g_xhat,
            dx,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, random_tensor, randomize, weighted_sum, Tolerance};
    use crate::ops::relu_backward;

    fn layer() -> BatchNorm2d {
        let mut bn = BatchNorm2d::new("bn", 3);
        randomize(bn.weight.value_mut(), 11);
        randomize(bn.bias.value_mut(), 12);
        bn
    }

    fn run(bn: &BatchNorm2d, x: &Tensor, res: Option<&[f32]>, relu: bool) -> Tensor {
        let mut y = Tensor::default();
        bn.clone().forward(x, BatchNormMode::Train, res, relu, &mut y);
        y
    }

    #[test]
    fn training_gradients_match_finite_differences() {
        let mut x = random_tensor([2, 3, 3, 3], 13);
        x.data_mut().iter_mut().enumerate().for_each(|(i, v)| *v = *v * (1.0 + (i % 3) as f32) + 0.5);
        let mut res = vec![0.0; x.len()];
        randomize(&mut res, 14);
        for (residual, relu) in [(false, false), (false, true), (true, true)] {
            let bn = layer();
            let res = residual.then_some(res.as_slice());
            let y = run(&bn, &x, res, relu);
            let r = probe(y.len(), 15);
            let mut trained = bn.clone();
            let mut tmp = Tensor::default();
            trained.forward(&x, BatchNormMode::Train, res, relu, &mut tmp);
            let mut dx = vec![0.0; x.len()];
            let mask = if relu { BnReluMask::Output(y.data()) } else { BnReluMask::None };
            trained.backward(&x, &r, mask, InputGradient::F32 { dx: &mut dx, accumulate: false });
            let tol = Tolerance { eps: 1e-3, rel: 5e-3, abs: 5e-4, ..Tolerance::default() };
            check_gradient("bn dx", x.data(), &dx, tol, |xv| {
                weighted_sum(run(&bn, &Tensor::from_vec(x.shape(), xv.to_vec()), res, relu).data(), &r)
            });
            check_gradient("bn dgamma", bn.weight.value(), &trained.weight.grad, tol, |g| {
                let mut b = bn.clone();
                b.weight.value_mut().copy_from_slice(g);
                weighted_sum(run(&b, &x, res, relu).data(), &r)
            });
            check_gradient("bn dbeta", bn.bias.value(), &trained.bias.grad, tol, |g| {
                let mut b = bn.clone();
                b.bias.value_mut().copy_from_slice(g);
                weighted_sum(run(&b, &x, res, relu).data(), &r)
            });
            if let Some(res) = res {
                let mut dres = vec![0.0; x.len()];
                relu_backward(&y, &r, &mut dres, false);
                check_gradient("bn dresidual", res, &dres, tol, |rv| {
                    weighted_sum(run(&bn, &x, Some(rv), relu).data(), &r)
                });
            }
        }
    }

    /// The fused path (statistics from the convolution's sums, ReLU mask from the layer's own
    /// affine) gives what the unfused path gives.
    #[test]
    fn fused_statistics_and_own_affine_mask_match_the_plain_path() {
        let x = random_tensor([2, 3, 3, 3], 21);
        let c = 3;
        let mut sums = vec![0.0f64; 2 * c];
        for (i, v) in x.data().iter().enumerate() {
            sums[i % c] += f64::from(*v);
            sums[c + i % c] += f64::from(*v) * f64::from(*v);
        }
        let (mut a, mut b) = (layer(), layer());
        let (mut ya, mut yb) = (Tensor::default(), Tensor::default());
        a.forward(&x, BatchNormMode::Train, None, true, &mut ya);
        b.prepare(BatchNormMode::Train, Some((&sums, x.len() / c)));
        b.apply(&x, None, true, &mut yb);
        for (p, q) in ya.data().iter().zip(yb.data()) {
            assert!((p - q).abs() < 1e-5);
        }
        for (p, q) in a.running_var.iter().zip(&b.running_var) {
            assert!((p - q).abs() < 1e-6);
        }
        let r = probe(x.len(), 22);
        let (mut da, mut db) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        a.backward(&x, &r, BnReluMask::Output(ya.data()), InputGradient::F32 { dx: &mut da, accumulate: false });
        b.backward(&x, &r, BnReluMask::OwnAffine, InputGradient::F32 { dx: &mut db, accumulate: false });
        for (p, q) in da.iter().zip(&db) {
            assert!((p - q).abs() < 1e-5);
        }
    }

    /// With frozen statistics the layer is the fixed affine map of its running estimates in
    /// training too: outputs, input and parameter gradients match finite differences of that
    /// map, and the running estimates do not move.
    #[test]
    fn frozen_statistics_train_as_a_fixed_affine_map() {
        let x = random_tensor([2, 3, 3, 3], 31);
        let mut bn = layer();
        bn.running_mean = vec![0.2, -0.1, 0.3];
        bn.running_var = vec![1.5, 0.5, 2.0];
        bn.frozen_statistics = true;
        let run = |b: &BatchNorm2d, x: &Tensor| {
            let mut y = Tensor::default();
            b.clone().forward(x, BatchNormMode::Train, None, true, &mut y);
            y
        };
        let y = run(&bn, &x);
        let mut eval = Tensor::default();
        bn.clone().forward(&x, BatchNormMode::Eval, None, true, &mut eval);
        assert_eq!(y, eval);
        let r = probe(y.len(), 32);
        let mut trained = bn.clone();
        let mut tmp = Tensor::default();
        trained.forward(&x, BatchNormMode::Train, None, true, &mut tmp);
        assert_eq!((&trained.running_mean, &trained.running_var), (&bn.running_mean, &bn.running_var));
        assert_eq!(trained.num_batches_tracked, bn.num_batches_tracked);
        let mut dx = vec![0.0; x.len()];
        trained.backward(&x, &r, BnReluMask::Output(y.data()), InputGradient::F32 { dx: &mut dx, accumulate: false });
        let tol = Tolerance { eps: 1e-3, rel: 5e-3, abs: 5e-4, ..Tolerance::default() };
        check_gradient("frozen bn dx", x.data(), &dx, tol, |xv| {
            weighted_sum(run(&bn, &Tensor::from_vec(x.shape(), xv.to_vec())).data(), &r)
        });
        check_gradient("frozen bn dgamma", bn.weight.value(), &trained.weight.grad, tol, |g| {
            let mut b = bn.clone();
            b.weight.value_mut().copy_from_slice(g);
            weighted_sum(run(&b, &x).data(), &r)
        });
        // Frozen parameters get no gradient; the input gradient is the same.
        let mut frozen = bn.clone();
        frozen.weight.frozen = true;
        frozen.bias.frozen = true;
        frozen.forward(&x, BatchNormMode::Train, None, true, &mut tmp);
        let mut dx2 = vec![0.0; x.len()];
        frozen.backward(&x, &r, BnReluMask::Output(y.data()), InputGradient::F32 { dx: &mut dx2, accumulate: false });
        assert_eq!(dx2, dx);
        assert!(frozen.weight.grad.iter().chain(&frozen.bias.grad).all(|g| *g == 0.0));
    }

    #[test]
    fn running_statistics_follow_pytorch_conventions() {
        let mut bn = BatchNorm2d::new("bn", 1);
        let x = Tensor::from_vec([4, 1, 1, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let mut y = Tensor::default();
        bn.forward(&x, BatchNormMode::Train, None, false, &mut y);
        // mean 2.5, biased var 1.25, unbiased 5/3.
        assert!((bn.running_mean[0] - 0.25).abs() < 1e-6);
        assert!((bn.running_var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
        let expect = (1.0 - 2.5) / (1.25f32 + 1e-5).sqrt();
        assert!((y.data()[0] - expect).abs() < 1e-5);
        assert_eq!(bn.num_batches_tracked, 1);
        // Eval uses the running estimates.
        bn.forward(&x, BatchNormMode::Eval, None, false, &mut y);
        let expect = (1.0 - 0.25) / (bn.running_var[0] + 1e-5).sqrt();
        assert!((y.data()[0] - expect).abs() < 1e-5);
        assert_eq!(bn.num_batches_tracked, 1);
    }
}
