//! Int8 convolution for inference: unsigned 8-bit activations (a scale and a zero point per
//! tensor), signed 8-bit weights (a scale per output channel, symmetric), 32-bit integer sums,
//! and a requantizing epilogue that applies the scales, the folded batch norm's shift, the
//! residual and the ReLU in f32 registers before it writes 8-bit outputs (unsigned after a ReLU,
//! signed otherwise).
//!
//! Layouts: the input is NHWC `u8`; the weight is packed in quads (`pack_weights`), four
//! consecutive input channels of one output channel in a `u32` (the lowest byte the lowest
//! channel), which is what `vpdpbusd` multiplies against a broadcast quad of input channels,
//! as `[kh, kw, ceil(cin / 4), 64]` blocks of 64 output channels, each contiguous. A zero-padded border reads the input's zero point, so
//! padding stands for a real zero whatever the zero point.
//!
//! CPUs without VNNI run an AVX2 kernel on `vpmaddwd` instead, over the same blocks with pairs
//! of 16-bit values in place of quads (`Int8Weights::pairs`, and an input strip widened to
//! match); its results are the same bit for bit.
//!
//! Files: `pack.rs` (weights and the per-channel arrays), `forward.rs` (the direct pass over
//! the AVX512-VNNI or AVX2 micro-kernel), `reference.rs` (the portable pass: the oracle of the
//! tests and the path of CPUs without AVX2).

mod forward;
mod pack;
mod reference;
#[cfg(test)]
mod tests;

pub use forward::{forward_int8, forward_int8_on};
pub use pack::{pack_pairs, pack_weights, quantize_weights, requant_arrays, Int8Weights, BLOCK};
pub use reference::forward_int8_reference;

/// The input of an int8 convolution.
#[derive(Clone, Copy, Debug)]
pub struct Int8Input<'a> {
    /// `[n, h, w, cin]` 8-bit values.
    pub x: &'a [u8],
    /// The value standing for a real zero (and read at the padding).
    pub zero_point: u8,
}

/// The residual the epilogue adds, laid out as the output.
#[derive(Clone, Copy, Debug)]
pub enum Int8Residual<'a> {
    /// None.
    None,
    /// 8-bit values standing for `q * scale` (zero point 0: an activation after a ReLU).
    U8 {
        /// The values.
        x: &'a [u8],
        /// Real value of one step.
        scale: f32,
    },
    /// Signed 8-bit values standing for `q * scale` (zero point 0: a projection's output).
    I8 {
        /// The values.
        x: &'a [i8],
        /// Real value of one step.
        scale: f32,
    },
}

/// The output of an int8 convolution.
#[derive(Debug)]
pub enum Int8Output<'a> {
    /// `clamp(round(v / scale), 0, 255)`: a ReLU then 8-bit values with zero point 0.
    U8 {
        /// `[n, oh, ow, cout]` values.
        y: &'a mut [u8],
        /// Real value of one step.
        scale: f32,
    },
    /// `clamp(round(v / scale), -128, 127)`: signed 8-bit values, no activation.
    I8 {
        /// `[n, oh, ow, cout]` values.
        y: &'a mut [i8],
        /// Real value of one step.
        scale: f32,
    },
}

impl Int8Output<'_> {
    /// Elements of the output buffer.
    pub fn len(&self) -> usize {
        match self {
            Int8Output::U8 { y, .. } => y.len(),
            Int8Output::I8 { y, .. } => y.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The per-output-channel part of the epilogue: `v = sum * mult + offset (+ residual)`, where the
/// integer `sum` counts the input zero point in (see [`requant_arrays`]).
#[derive(Clone, Copy, Debug)]
pub struct Requant<'a> {
    /// `[cout]` multipliers: input scale times the channel's weight scale.
    pub mult: &'a [f32],
    /// `[cout]` offsets: the bias less the zero point's share of the sum.
    pub offset: &'a [f32],
    /// The residual.
    pub residual: Int8Residual<'a>,
}

/// The requantization of one real value `v` to an output of step `1 / inv_scale`, as the kernel
/// computes it: a multiply, a clamp to `[0, 255]` (NaN to 0, as `vmaxps` with zero second does)
/// and rounding half to even.
pub fn requantize(v: f32, inv_scale: f32) -> u8 {
    let q = v * inv_scale;
    let q = if q > 0.0 { q } else { 0.0 };
    let q = if q < 255.0 { q } else { 255.0 };
    q.round_ties_even() as u8
}

/// [`requantize`] to a signed output: clamped to `[-128, 127]` (NaN to -128, as `vmaxps` with
/// the bound second does), rounded half to even.
pub fn requantize_i8(v: f32, inv_scale: f32) -> i8 {
    let q = v * inv_scale;
    let q = if q > -128.0 { q } else { -128.0 };
    let q = if q < 127.0 { q } else { 127.0 };
    q.round_ties_even() as i8
}

/// The int8 convolution kernels, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX512-VNNI `vpdpbusd` on quads of bytes.
    Vnni,
    /// AVX2 `vpmaddwd` on pairs of 16-bit values.
    Avx2,
    /// Plain loops.
    Portable,
}

impl Int8Kernel {
    /// The best kernel this CPU runs (within the instruction-set cap of `simd::cap_isa`).
    pub fn detect() -> Self {
        if vnni_supported() {
            Int8Kernel::Vnni
        } else if cfg!(target_arch = "x86_64") && crate::simd::isa() >= crate::simd::Isa::Avx2 {
            Int8Kernel::Avx2
        } else {
            Int8Kernel::Portable
        }
    }
}

/// Whether this CPU runs the AVX512-VNNI kernels.
pub fn vnni_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::isa() >= crate::simd::Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Checks that the buffers fit the shape and the weights; panics with the mismatch otherwise
/// (the callers size them from the same shape).
fn check_buffers(
    s: &crate::conv::ConvShape,
    x: &Int8Input<'_>,
    w: &Int8Weights,
    rq: &Requant<'_>,
    out: &Int8Output<'_>,
) {
    assert_eq!(x.x.len(), s.input_len(), "int8 convolution input");
    assert_eq!(out.len(), s.output_len(), "int8 convolution output");
    assert_eq!((w.kh, w.kw, w.cin, w.cout), (s.kh, s.kw, s.cin, s.cout), "int8 convolution weights");
    assert!(rq.mult.len() == s.cout && rq.offset.len() == s.cout, "int8 requantization arrays");
    match rq.residual {
        Int8Residual::None => {}
        Int8Residual::U8 { x, .. } => assert_eq!(x.len(), s.output_len(), "int8 residual"),
        Int8Residual::I8 { x, .. } => assert_eq!(x.len(), s.output_len(), "int8 residual"),
    }
}
