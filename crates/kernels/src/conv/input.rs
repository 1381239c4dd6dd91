//! The input side of a convolution: the batch it reads and the batch norm and ReLU of the layer
//! before, applied as it is read.

use crate::activations::Activations;
use crate::conv::shape::ConvShape;
use crate::workspace::{put_shared, shared, take, take_shared};

/// `x' = max(x * scale + shift, 0)` per input channel. The zero padding stays zero, as it pads
/// the activated input. Fusing them here means the activated tensor is never written to memory.
#[derive(Clone, Copy, Debug)]
pub struct InputTransform<'a> {
    /// Per-channel multiplier.
    pub scale: &'a [f32],
    /// Per-channel offset.
    pub shift: &'a [f32],
}

/// A convolution's input as its kernels read it: the batch `[n, h, w, cin]` of `shape`, and the
/// input transform, if any, to apply to it on the way.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvInput<'a> {
    /// The convolution's geometry.
    pub(super) shape: ConvShape,
    /// The batch, `[n, h, w, cin]`.
    pub(super) x: Activations<'a>,
    /// The fused batch norm and ReLU of the layer before.
    pub(super) transform: Option<InputTransform<'a>>,
}

/// Runs `f` with `x` as a pass reads it: as it is where the pass reads bf16 (`reads_bf16`),
/// otherwise, for a bf16 `x`, widened to `f32` in this thread's shared buffer.
pub(super) fn readable<R>(x: Activations<'_>, reads_bf16: bool, f: impl FnOnce(Activations<'_>) -> R) -> R {
    match x {
        Activations::Bf16(_) if !reads_bf16 => {
            let mut wide = take_shared(&shared::WIDENED);
            let result = {
                let buf = take(&mut wide, x.len());
                x.widen_into(buf);
                f(Activations::F32(buf))
            };
            put_shared(&shared::WIDENED, wide);
            result
        }
        x => f(x),
    }
}

impl<'a> ConvInput<'a> {
    /// The batch as `f32`, for the passes that read no bf16 input: the passes' entry points
    /// widen a bf16 input for them first ([`reads_bf16`]).
    pub(super) fn f32(&self) -> &'a [f32] {
        self.x.as_f32().expect("a bf16 input reaches only the passes that read bf16")
    }
}

crate::multiversion! {
    /// `dst = max(src * scale + shift, 0)` over whole pixels.
    pub(in crate::conv) fn bn_relu_copy / bn_relu_copy_on(src: &[f32], scale: &[f32], shift: &[f32], dst: &mut [f32]) {
        let c = scale.len();
        for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for (((o, &v), &a), &b) in d.iter_mut().zip(s).zip(scale).zip(shift) {
                *o = (v * a + b).max(0.0);
            }
        }
    }
}

/// Copies whole pixels, applying the input transform when there is one.
pub(crate) fn load_pixels(src: &[f32], dst: &mut [f32], t: Option<&InputTransform<'_>>) {
    match t {
        Some(t) => bn_relu_copy(src, t.scale, t.shift, dst),
        None => dst.copy_from_slice(src),
    }
}
