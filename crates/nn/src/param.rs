//! Trainable parameters.

use std::sync::atomic::{AtomicU64, Ordering};

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
///
/// The values change only through [`Param::value_mut`] and its kin, each of which gives them a
/// new [`Param::version`]: layers may keep a rearranged copy of a weight for as long as its
/// version stays the same.
#[derive(Clone, Debug)]
pub struct Param {
    /// torchvision-compatible key.
    pub name: String,
    /// What it is.
    pub kind: ParamKind,
    /// Shape in this crate's layout (see [`ParamKind`]).
    pub shape: Vec<usize>,
    /// Values.
    value: Vec<f32>,
    /// Unique to these values (see [`Param::version`]).
    version: u64,
    /// Gradient, accumulated by backward passes.
    pub grad: Vec<f32>,
    /// Held fixed (fine-tuning): backward passes compute no gradient for it and the optimiser
    /// neither changes it nor keeps state for it. PyTorch's `requires_grad = False`.
    pub frozen: bool,
}

/// A version no parameter has had before in this process.
fn next_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Param {
    /// A zero-valued parameter.
    pub fn zeros(name: impl Into<String>, kind: ParamKind, shape: &[usize]) -> Self {
        let len = shape.iter().product();
        Self {
            name: name.into(),
            kind,
            shape: shape.to_vec(),
            value: vec![0.0; len],
            version: next_version(),
            grad: vec![0.0; len],
            frozen: false,
        }
    }

    /// A parameter filled with `v`.
    pub fn filled(name: impl Into<String>, kind: ParamKind, shape: &[usize], v: f32) -> Self {
        let mut p = Self::zeros(name, kind, shape);
        p.value.fill(v);
        p
    }

    /// The values.
    pub fn value(&self) -> &[f32] {
        &self.value
    }

    /// The values, to change (which gives the parameter a new version).
    pub fn value_mut(&mut self) -> &mut [f32] {
        self.version = next_version();
        &mut self.value
    }

    /// The values to change and the gradient beside them (an optimizer step).
    pub fn value_mut_and_grad(&mut self) -> (&mut [f32], &[f32]) {
        self.version = next_version();
        (&mut self.value, &self.grad)
    }

    /// Replaces the values.
    ///
    /// # Panics
    /// If `value` has another length than the parameter.
    pub fn set_value(&mut self, value: Vec<f32>) {
        assert_eq!(value.len(), self.value.len(), "{}: {} values for {} elements", self.name, value.len(), self.len());
        self.version = next_version();
        self.value = value;
    }

    /// Identifies the current values: a process-wide unique number, changed by every call that
    /// may change them, and shared only with clones that hold the same values.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for an empty parameter.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero (a large one on every thread).
    pub fn zero_grad(&mut self) {
        use rayon::prelude::*;
        const CHUNK: usize = crate::optim::PARALLEL_ELEMENTS;
        if self.grad.len() <= CHUNK {
            self.grad.fill(0.0);
        } else {
            resnet_kernels::threads::install(|| self.grad.par_chunks_mut(CHUNK).for_each(|g| g.fill(0.0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of changing the values gives a version no parameter had; a clone (same values)
    /// shares it; reading does not change it.
    #[test]
    fn every_change_gives_a_new_version() {
        let mut p = Param::zeros("w", ParamKind::ConvWeight, &[3, 3, 2, 4]);
        let q = Param::zeros("w", ParamKind::ConvWeight, &[3, 3, 2, 4]);
        assert_ne!(p.version(), q.version(), "two parameters, equal values, still two versions");
        let mut seen = vec![q.version(), p.version()];
        let _ = p.value();
        assert_eq!(p.version(), seen[1]);
        p.value_mut()[0] = 1.0;
        seen.push(p.version());
        p.value_mut_and_grad().0[1] = 2.0;
        seen.push(p.version());
        p.set_value(vec![0.5; 72]);
        seen.push(p.version());
        let mut distinct = seen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), seen.len(), "{seen:?}");
        let c = p.clone();
        assert_eq!((c.version(), c.value()), (p.version(), p.value()));
    }

    #[test]
    #[should_panic(expected = "w: 3 values for 72 elements")]
    fn set_value_refuses_another_length() {
        Param::zeros("w", ParamKind::ConvWeight, &[3, 3, 2, 4]).set_value(vec![0.0; 3]);
    }
}
