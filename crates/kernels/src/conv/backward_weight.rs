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
use crate::conv::shape::check_lens;
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
/// A bf16 `x` ([`Activations`]) is read widened to `f32`.
///
/// # Shapes
/// `x: [n, h, w, cin]`, `dy: [n, oh, ow, cout]`, `dw: [kh, kw, cin, cout]`.
///
/// # Panics
/// If a slice length disagrees with `p.shape`, or the CPU cannot run `p.algorithm`.
pub fn backward_weight<'x>(
    p: &ConvParams<'_>,
    x: impl Into<Activations<'x>>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    _ws: &mut Workspace,
) {
    let s = &p.shape;
    if let Some(t) = &p.input_transform {
        assert_eq!((t.scale.len(), t.shift.len()), (s.cin, s.cin), "input transform of the wrong length");
    }
    let x = x.into();
    check_lens(s, x.len(), dw.len(), dy.len());
    readable(x, false, |x| {
        weight_gradient(p, &ConvInput { shape: *s, x, transform: p.input_transform }, dy, dw, accumulate)
    });
}

/// [`backward_weight`] of an input as its passes read it.
fn weight_gradient(p: &ConvParams<'_>, input: &ConvInput<'_>, dy: &[f32], dw: &mut [f32], accumulate: bool) {
    let (s, input) = (&p.shape, *input);
    let algo = p.algorithm;
    #[cfg(target_arch = "x86_64")]
    if matches!(algo, ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16) && winograd::fits_weight_gradient(s) {
        winograd::backward_weight(&input, dy, dw, accumulate);
        return;
    }
    let algo = algo.without_winograd();
    let bf16 = matches!(algo, ConvAlgorithm::AmxBf16 | ConvAlgorithm::DirectBf16);
    #[cfg(target_arch = "x86_64")]
    if bf16 && gathered_weight_gradient_fits(s) {
        let mut partials = take_shared(&shared::PARTIALS);
        backward_weight_gathered(&input, dy, dw, accumulate, &mut partials);
        put_shared(&shared::PARTIALS, partials);
        return;
    }
    let (k, co) = (s.patch(), s.cout);
    let rows = s.n * s.out_h();
    let parts = threads::num_threads().min(rows).max(1);
    let mut partials = take_shared(&shared::PARTIALS);
    {
        let pairs = bf16 && pairs_weight_gradient_fits(s);
        // The pixel-pair paths keep each part's gradient transposed beside it.
        let partials = take(&mut partials, if pairs { 2 } else { 1 } * parts * k * co);
        let (partials, transposed) = partials.split_at_mut(parts * k * co);
        match algo {
            #[cfg(target_arch = "x86_64")]
            _ if pairs => {
                let amx = algo == ConvAlgorithm::AmxBf16;
                backward_weight_pairs(&input, dy, partials, transposed, parts, amx)
            }
            #[cfg(target_arch = "x86_64")]
            // Other shapes keep an f32 weight gradient in bf16 mode, on the direct kernels where
            // they beat the GEMM: wider than 1x1, weights in cache (docs/tuning.md).
            ConvAlgorithm::Direct | ConvAlgorithm::DirectBf16 | ConvAlgorithm::AmxBf16
                if !s.is_one_by_one() && 4 * s.weight_len() <= DIRECT_WEIGHT_LIMIT =>
            {
                backward_weight_direct(&input, dy, partials, parts)
            }
            _ => backward_weight_gemm(&input, dy, partials, parts),
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
    put_shared(&shared::PARTIALS, partials);
}
