//! Trainable parameters.

/// What a parameter is, which decides its layout, its initialisation and whether weight decay
/// applies by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Convolution kernel, stored `[kh, kw, cin, cout]` (torchvision stores `[cout, cin, kh, kw]`).
    ConvWeight,
    /// Fully connected weight, `[out, in]` as torchvision.
    LinearWeight,
    /// Fully connected bias, `[out]`.
    LinearBias,
    /// Batch-norm scale (gamma), `[c]`.
    BnWeight,
    /// Batch-norm shift (beta), `[c]`.
    BnBias,
}

impl ParamKind {
    /// True for the weights of convolutions and fully connected layers.
    pub fn is_weight(self) -> bool {
        matches!(self, ParamKind::ConvWeight | ParamKind::LinearWeight)
    }
}

/// A trainable tensor with its gradient. `name` is the torchvision state-dict key
/// (`layer1.0.conv1.weight`), so checkpoints and imports line up by name.
#[derive(Clone, Debug)]
pub struct Param {
    /// torchvision-compatible key.
    pub name: String,
    /// What it is.
    pub kind: ParamKind,
    /// Shape in this crate's layout (see [`ParamKind`]).
    pub shape: Vec<usize>,
    /// Values.
    pub value: Vec<f32>,
    /// Gradient, accumulated by backward passes.
    pub grad: Vec<f32>,
}

impl Param {
    /// A zero-valued parameter.
    pub fn zeros(name: impl Into<String>, kind: ParamKind, shape: &[usize]) -> Self {
        let len = shape.iter().product();
        Self { name: name.into(), kind, shape: shape.to_vec(), value: vec![0.0; len], grad: vec![0.0; len] }
    }

    /// A parameter filled with `v`.
    pub fn filled(name: impl Into<String>, kind: ParamKind, shape: &[usize], v: f32) -> Self {
        let mut p = Self::zeros(name, kind, shape);
        p.value.fill(v);
        p
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for an empty parameter.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}
