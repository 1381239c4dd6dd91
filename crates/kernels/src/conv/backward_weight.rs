//! The weight gradient: Winograd's adjoint where it runs, else per-part partial gradients by the
//! direct kernels (f32, or bf16 pixel pairs) or im2col + GEMM, summed in order.

use crate::activations::Activations;
use crate::conv::algorithm::{ConvAlgorithm, DIRECT_WEIGHT_LIMIT};
use crate::conv::direct::{
    backward_weight_direct, backward_weight_gathered, backward_weight_pairs, gathered_weight_gradient_fits,
    pairs_weight_gradient_fits,
};
use crate::conv::im2col::backward_weight_gemm;
use crate::conv::input::{readable, ConvInput};
use crate::conv::params::ConvParams;
use crate::conv::shape::{check_lens, ConvShape};
#[cfg(target_arch = "x86_64")]
use crate::conv::winograd;
use crate::threads;
use crate::workspace::{put_shared, shared, take, take_shared};
use crate::Workspace;

/// Gradient of the weight: `dw (+)= im2col(t(x))^T * dy`, where `t` is the input transform of
/// `p` (the one the forward pass applied), if any. `p.weight` is not read. It takes the
/// layer's workspace as the other passes do, though its buffers are all the thread's shared
/// ones.
///
/// A bf16 `x` ([`Activations`]) is read as it is by Winograd's adjoint and the bf16 paths, from a
/// widened copy by the f32 direct and GEMM paths; a bf16 `dy` as it is by the bf16 vector paths
/// (see [`backward_weight_reads_bf16`]), from a widened copy by the others.
///
/// # Shapes
/// `x: [n, h, w, cin]`, `dy: [n, oh, ow, cout]`, `dw: [kh, kw, cin, cout]`.
///
/// # Panics
/// If a slice length disagrees with `p.shape`, or the CPU cannot run `p.algorithm`.
pub fn backward_weight<'x, 'g>(
    p: &ConvParams<'_>,
    x: impl Into<Activations<'x>>,
    dy: impl Into<Activations<'g>>,
    dw: &mut [f32],
    accumulate: bool,
    _ws: &mut Workspace,
) {
    let s = &p.shape;
    if let Some(t) = &p.input_transform {
        assert_eq!((t.scale.len(), t.shift.len()), (s.cin, s.cin), "input transform of the wrong length");
    }
    let (x, dy) = (x.into(), dy.into());
    check_lens(s, x.len(), dw.len(), dy.len());
    let path = WeightGradientPath::choose(p.algorithm, s);
    readable(x, path.reads_bf16(), |x| {
        readable(dy, path.reads_bf16_output_gradient(), |dy| {
            weight_gradient(path, &ConvInput { shape: *s, x, transform: p.input_transform }, dy, dw, accumulate)
        })
    });
}

/// Whether [`backward_weight`] by `algo` on `s` reads a bf16 output gradient as it is.
pub fn backward_weight_reads_bf16(algo: ConvAlgorithm, s: &ConvShape) -> bool {
    WeightGradientPath::choose(algo, s).reads_bf16_output_gradient()
}

/// How a layer's weight gradient is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightGradientPath {
    /// Winograd's adjoint.
    Winograd,
    /// bf16 products over gathered windows.
    Gathered,
    /// bf16 pixel pairs (on AMX tiles with `amx`).
    Pairs { amx: bool },
    /// The f32 direct kernels.
    Direct,
    /// im2col + GEMM.
    Gemm,
}

impl WeightGradientPath {
    /// Whether the path reads a bf16 input itself (the others read a widened copy).
    fn reads_bf16(self) -> bool {
        matches!(self, Self::Winograd | Self::Gathered | Self::Pairs { .. })
    }

    /// Whether the path reads a bf16 output gradient itself: the vector kernels that pair its
    /// pixels (AMX transposes an f32 one).
    fn reads_bf16_output_gradient(self) -> bool {
        matches!(self, Self::Gathered | Self::Pairs { amx: false })
    }

    /// The path of `algo` on `s`.
    fn choose(algo: ConvAlgorithm, s: &ConvShape) -> Self {
        if !cfg!(target_arch = "x86_64") {
            return Self::Gemm;
        }
        if matches!(algo, ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16) && winograd_gradient_fits(s) {
            return Self::Winograd;
        }
        let algo = algo.without_winograd();
        let bf16 = matches!(algo, ConvAlgorithm::AmxBf16 | ConvAlgorithm::DirectBf16);
        match algo {
            _ if bf16 && gathered_weight_gradient_fits(s) => Self::Gathered,
            _ if bf16 && pairs_weight_gradient_fits(s) => Self::Pairs { amx: algo == ConvAlgorithm::AmxBf16 },
            // Other shapes keep an f32 weight gradient in bf16 mode, on the direct kernels where
            // they beat the GEMM: wider than 1x1, weights in cache (docs/tuning.md).
            ConvAlgorithm::Direct | ConvAlgorithm::DirectBf16 | ConvAlgorithm::AmxBf16
                if !s.is_one_by_one() && 4 * s.weight_len() <= DIRECT_WEIGHT_LIMIT =>
            {
                Self::Direct
            }
            _ => Self::Gemm,
        }
    }
}

/// Whether Winograd's adjoint takes the weight gradient of `s`.
fn winograd_gradient_fits(s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    return winograd::fits_weight_gradient(s);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = s;
        false
    }
}

/// [`backward_weight`] of an input as its passes read it, by `path`.
fn weight_gradient(
    path: WeightGradientPath,
    input: &ConvInput<'_>,
    dy: Activations<'_>,
    dw: &mut [f32],
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if path == WeightGradientPath::Winograd {
        return winograd::backward_weight(input, f32_gradient(dy), dw, accumulate);
    }
    let mut partials = take_shared(&shared::PARTIALS);
    match path {
        #[cfg(target_arch = "x86_64")]
        WeightGradientPath::Gathered => backward_weight_gathered(input, dy, dw, accumulate, &mut partials),
        _ => summed_parts(path, input, dy, dw, accumulate, &mut partials),
    }
    put_shared(&shared::PARTIALS, partials);
}

/// The paths that compute a partial gradient per part of the output rows, then sum them in order
/// into `dw` (`buf` holds the parts).
fn summed_parts(
    path: WeightGradientPath,
    input: &ConvInput<'_>,
    dy: Activations<'_>,
    dw: &mut [f32],
    accumulate: bool,
    buf: &mut Vec<f32>,
) {
    let s = &input.shape;
    let (k, co) = (s.patch(), s.cout);
    let parts = threads::num_threads().min(s.n * s.out_h()).max(1);
    // The pixel-pair paths keep each part's gradient transposed beside it.
    let pairs = matches!(path, WeightGradientPath::Pairs { .. });
    let partials = take(buf, if pairs { 2 } else { 1 } * parts * k * co);
    let (partials, transposed) = partials.split_at_mut(parts * k * co);
    match path {
        #[cfg(target_arch = "x86_64")]
        WeightGradientPath::Pairs { amx } => backward_weight_pairs(input, dy, partials, transposed, parts, amx),
        #[cfg(target_arch = "x86_64")]
        WeightGradientPath::Direct => backward_weight_direct(input, f32_gradient(dy), partials, parts),
        _ => backward_weight_gemm(input, f32_gradient(dy), partials, parts),
    }
    let (head, rest) = partials.split_at(k * co);
    if accumulate {
        dw.iter_mut().zip(head).for_each(|(d, p)| *d += p);
    } else {
        dw.copy_from_slice(head);
    }
    for part in rest.chunks(k * co) {
        dw.iter_mut().zip(part).for_each(|(d, p)| *d += p);
    }
}

/// The output gradient as `f32`, for the paths that read no bf16 one: [`backward_weight`] widens
/// a bf16 one for them first.
fn f32_gradient(dy: Activations<'_>) -> &[f32] {
    dy.as_f32().expect("a bf16 output gradient reaches only the paths that read bf16")
}
