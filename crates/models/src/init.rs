//! Initialisation as in the paper (Section 3.4: "We initialize the weights as in [13]"), i.e. He
//! et al. 2015, "Delving Deep into Rectifiers": zero-mean Gaussian with standard deviation
//! `sqrt(2 / n)`, `n = k * k * c_in` (the forward-propagation case). Batch norm starts at
//! gamma = 1, beta = 0.

use crate::block::ShortcutPath;
use crate::ResNet;
use resnet_kernels::rng::Rng;
use resnet_nn::ParamKind;

/// Which fan the He initialisation divides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fan {
    /// `k * k * c_in`, as [13]'s forward case (and PyTorch's `kaiming_normal_` default).
    #[default]
    In,
    /// `k * k * c_out`, as torchvision's ResNet.
    Out,
}

/// How to initialise a network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Which fan to use.
    pub fan: Fan,
    /// Start the last batch norm of each residual branch at gamma = 0, so every block begins as
    /// the identity (Goyal et al. 2017; torchvision's `zero_init_residual`).
    pub zero_init_residual: bool,
}

impl ResNet {
    /// Draws fresh weights: He-normal convolutions and classifier weight, classifier bias uniform
    /// in `±1/sqrt(in)` (PyTorch's default), batch norm at identity with fresh running estimates.
    pub fn init(&mut self, cfg: &InitConfig) {
        let mut index = 0u64;
        self.for_each_param(|p| {
            let mut rng = Rng::derive(cfg.seed, &[index]);
            index += 1;
            match p.kind {
                ParamKind::ConvWeight | ParamKind::LinearWeight => {
                    let fan = match (p.kind, cfg.fan) {
                        (ParamKind::ConvWeight, Fan::In) => p.shape[0] * p.shape[1] * p.shape[2],
                        (ParamKind::ConvWeight, Fan::Out) => p.shape[0] * p.shape[1] * p.shape[3],
                        _ => p.shape[1],
                    };
                    let std = (2.0 / fan as f64).sqrt();
                    p.value_mut().iter_mut().for_each(|v| *v = (rng.normal() * std) as f32);
                }
                // Drawn below, where the classifier's fan-in is known.
                ParamKind::LinearBias => {}
                ParamKind::BnWeight => p.value_mut().fill(1.0),
                ParamKind::BnBias => p.value_mut().fill(0.0),
            }
            p.zero_grad();
        });
        let bound = 1.0 / (self.fc.inputs() as f32).sqrt();
        let mut rng = Rng::derive(cfg.seed, &[u64::MAX]);
        self.fc.bias.value_mut().iter_mut().for_each(|v| *v = rng.uniform(-bound, bound));
        self.for_each_batch_norm(|bn| {
            bn.running_mean.fill(0.0);
            bn.running_var.fill(1.0);
            bn.num_batches_tracked = 0;
        });
        if cfg.zero_init_residual {
            for b in &mut self.blocks {
                if !matches!(b.shortcut, ShortcutPath::None) {
                    b.units.last_mut().expect("units").bn.weight.value_mut().fill(0.0);
                }
            }
        }
    }
}
