//! What the three passes of a convolution take besides their tensors.

use crate::conv::algorithm::ConvAlgorithm;
use crate::conv::input::InputTransform;
use crate::conv::shape::ConvShape;

/// A convolution's weight, `[kh, kw, cin, cout]`, with the version its owner gives it.
#[derive(Clone, Copy, Debug)]
pub struct ConvWeight<'a> {
    /// The values, `[kh, kw, cin, cout]`.
    pub values: &'a [f32],
    /// Calls with the same version promise the same values (as `resnet_nn::Param` keeps it), so
    /// the forward pass may keep what it derives from them in its workspace (the panels of large
    /// layers) and reuse it; `None` derives it anew on every call.
    pub version: Option<u64>,
}

impl<'a> ConvWeight<'a> {
    /// A weight without a version.
    pub fn new(values: &'a [f32]) -> Self {
        Self { values, version: None }
    }

    /// A weight whose values stay the same for as long as `version` does.
    pub fn versioned(values: &'a [f32], version: u64) -> Self {
        Self { values, version: Some(version) }
    }
}

/// One convolution as its passes ([`crate::conv::forward`], [`crate::conv::backward_data`],
/// [`crate::conv::backward_weight`]) take it.
#[derive(Clone, Copy, Debug)]
pub struct ConvParams<'a> {
    /// The geometry.
    pub shape: ConvShape,
    /// How to compute it (see [`ConvAlgorithm::choose`]); the backward passes run their
    /// strided and 1x1 cases as the algorithm allows.
    pub algorithm: ConvAlgorithm,
    /// The weight.
    pub weight: ConvWeight<'a>,
    /// The batch norm and ReLU of the layer before, applied to the input as it is read (by the
    /// forward pass and the weight gradient; the input gradient is that of the transformed
    /// input).
    pub input_transform: Option<InputTransform<'a>>,
}

impl<'a> ConvParams<'a> {
    /// A convolution of `shape` with `weight` by `algorithm`, without an input transform.
    pub fn new(shape: ConvShape, algorithm: ConvAlgorithm, weight: ConvWeight<'a>) -> Self {
        Self { shape, algorithm, weight, input_transform: None }
    }

    /// The same with the input transform `t`.
    pub fn with_input_transform(self, t: Option<InputTransform<'a>>) -> Self {
        Self { input_transform: t, ..self }
    }
}
