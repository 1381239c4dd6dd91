//! The network a checkpoint runs for inference: the float network, or for a quantized
//! checkpoint the int8 one, behind one interface that evaluation and prediction take.

use crate::checkpoint::{Checkpoint, CheckpointError};
use resnet_models::{ResNet, ResNetSpec};
use resnet_nn::Tensor;
use resnet_quant::QuantizedResNet;
use std::path::Path;

/// Anything that maps a batch of normalised NHWC images to logits.
pub trait Classifier {
    /// The network's structure.
    fn spec(&self) -> &ResNetSpec;

    /// The logits `[n, 1, 1, classes]` of `x`.
    ///
    /// # Panics
    /// If the input does not fit (see [`ResNetSpec::check_input`]).
    fn infer(&mut self, x: &Tensor) -> &Tensor;
}

impl Classifier for ResNet {
    fn spec(&self) -> &ResNetSpec {
        ResNet::spec(self)
    }
    fn infer(&mut self, x: &Tensor) -> &Tensor {
        ResNet::infer(self, x)
    }
}

impl Classifier for QuantizedResNet {
    fn spec(&self) -> &ResNetSpec {
        QuantizedResNet::spec(self)
    }
    fn infer(&mut self, x: &Tensor) -> &Tensor {
        QuantizedResNet::infer(self, x)
    }
}

/// A checkpoint's network as it runs for inference.
#[derive(Clone, Debug)]
pub enum InferenceNet {
    /// The float network (fp32, or bf16 by its kernel configuration).
    Float(Box<ResNet>),
    /// The int8 network of a quantized checkpoint.
    Int8(Box<QuantizedResNet>),
}

impl InferenceNet {
    /// Whether this is the int8 network.
    pub fn is_int8(&self) -> bool {
        matches!(self, InferenceNet::Int8(_))
    }
}

impl Classifier for InferenceNet {
    fn spec(&self) -> &ResNetSpec {
        match self {
            InferenceNet::Float(n) => n.spec(),
            InferenceNet::Int8(n) => n.spec(),
        }
    }
    fn infer(&mut self, x: &Tensor) -> &Tensor {
        match self {
            InferenceNet::Float(n) => n.infer(x),
            InferenceNet::Int8(n) => n.infer(x),
        }
    }
}

impl Checkpoint {
    /// The network to run this checkpoint with: int8 when it is quantized, else float.
    ///
    /// # Errors
    /// If the weights or the quantization record do not fit the spec (a damaged file).
    pub fn inference_network(&self, path: &Path) -> Result<InferenceNet, CheckpointError> {
        let net = self.network(path)?;
        Ok(match &self.quantization {
            None => InferenceNet::Float(Box::new(net)),
            Some(record) => InferenceNet::Int8(Box::new(
                QuantizedResNet::new(&net, record)
                    .map_err(|e| CheckpointError::Mismatch { path: path.to_path_buf(), reason: e.to_string() })?,
            )),
        })
    }
}
