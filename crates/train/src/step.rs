//! One optimisation step: forward in training mode, softmax cross-entropy, backward, SGD.

use resnet_kernels::{profile, threads};
use resnet_models::{BatchNormMode, GradientsReady, ResNet};
use resnet_nn::ops::{softmax_cross_entropy, CrossEntropy};
use resnet_nn::optim::Sgd;
use resnet_nn::{Param, Tensor};

/// Reusable buffers of the training step (the logit gradient).
#[derive(Clone, Debug, Default)]
pub struct StepBuffers {
    dlogits: Vec<f32>,
}

/// Runs one SGD step on `(x, labels)` with learning rate `lr`; returns the batch's loss and
/// errors (measured on the forward pass before the update, as every training log does).
pub fn train_step(
    net: &mut ResNet,
    sgd: &mut Sgd,
    x: &Tensor,
    labels: &[u32],
    lr: f32,
    label_smoothing: f32,
    buffers: &mut StepBuffers,
) -> CrossEntropy {
    // The whole step on a worker of the compute pool, the others kept awake (see
    // `ResNet::forward`): the loss, the zeroing of gradients and the update between the passes
    // then start their parallel parts there too.
    threads::install_awake(|| {
        let ce = forward_backward(net, x, labels, label_smoothing, buffers);
        update(net, sgd, lr);
        ce
    })
}

/// What data-parallel training does with a step's gradients: takes each group of parameters
/// as the backward pass finishes it (and may start sending it), then completes the exchange
/// before the update.
pub trait GradientExchange: Send {
    /// Takes `params`' final gradients; called on the compute pool's threads during the
    /// backward pass, so it must not wait for other ranks.
    fn ready(&mut self, params: &[&Param]);
    /// Completes the exchange, leaving the gradients the update uses; on the calling thread.
    fn finish(&mut self, net: &mut ResNet);
}

/// [`train_step`] with the gradients exchanged by `exchange`: handed over group by group as the
/// backward pass finishes them, so that communication overlaps the rest of the pass.
#[allow(clippy::too_many_arguments)]
pub fn train_step_exchanging(
    net: &mut ResNet,
    sgd: &mut Sgd,
    x: &Tensor,
    labels: &[u32],
    lr: f32,
    label_smoothing: f32,
    buffers: &mut StepBuffers,
    exchange: &mut dyn GradientExchange,
) -> CrossEntropy {
    let ce = threads::install_awake(|| {
        let mut ready = |params: &[&Param]| exchange.ready(params);
        forward_backward_with(net, x, labels, label_smoothing, buffers, Some(&mut ready))
    });
    exchange.finish(net);
    threads::install_awake(|| update(net, sgd, lr));
    ce
}

/// The forward pass in training mode, the loss and the backward pass: every trainable
/// parameter's gradient of the batch's mean loss.
fn forward_backward(
    net: &mut ResNet,
    x: &Tensor,
    labels: &[u32],
    label_smoothing: f32,
    buffers: &mut StepBuffers,
) -> CrossEntropy {
    forward_backward_with(net, x, labels, label_smoothing, buffers, None)
}

/// [`forward_backward`] calling `ready` with each group of final gradients (see
/// `ResNet::backward_with`).
fn forward_backward_with(
    net: &mut ResNet,
    x: &Tensor,
    labels: &[u32],
    label_smoothing: f32,
    buffers: &mut StepBuffers,
    ready: Option<GradientsReady<'_>>,
) -> CrossEntropy {
    let logits = net.forward(x, BatchNormMode::Train);
    buffers.dlogits.resize(logits.len(), 0.0);
    let ce = {
        let _p = profile::scope("loss");
        softmax_cross_entropy(logits, labels, label_smoothing, Some(&mut buffers.dlogits))
    };
    net.zero_grad();
    net.backward_with(x, &buffers.dlogits, ready);
    ce
}

/// The SGD update of every parameter at rate `lr`.
fn update(net: &mut ResNet, sgd: &mut Sgd, lr: f32) {
    let _p = profile::scope("sgd update");
    let mut index = 0;
    net.for_each_param(|p| {
        sgd.update(index, p, lr);
        index += 1;
    });
}
