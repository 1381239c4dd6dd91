//! One optimisation step: forward in training mode, softmax cross-entropy, backward, SGD.

use resnet_kernels::{profile, threads};
use resnet_models::{BatchNormMode, ResNet};
use resnet_nn::ops::{softmax_cross_entropy, CrossEntropy};
use resnet_nn::optim::Sgd;
use resnet_nn::Tensor;

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

/// [`train_step`] with `before_update` called on the network, on the calling thread, between
/// the backward pass and the SGD update (data-parallel training averages the gradients over
/// the ranks there).
#[allow(clippy::too_many_arguments)]
pub fn train_step_with(
    net: &mut ResNet,
    sgd: &mut Sgd,
    x: &Tensor,
    labels: &[u32],
    lr: f32,
    label_smoothing: f32,
    buffers: &mut StepBuffers,
    before_update: &mut dyn FnMut(&mut ResNet),
) -> CrossEntropy {
    let ce = threads::install_awake(|| forward_backward(net, x, labels, label_smoothing, buffers));
    before_update(net);
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
    let logits = net.forward(x, BatchNormMode::Train);
    buffers.dlogits.resize(logits.len(), 0.0);
    let ce = {
        let _p = profile::scope("loss");
        softmax_cross_entropy(logits, labels, label_smoothing, Some(&mut buffers.dlogits))
    };
    net.zero_grad();
    net.backward(x, &buffers.dlogits);
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
