use crate::conv::algorithm::ConvAlgorithm;
use crate::conv::direct::{backward_weight_direct, backward_weight_pairs, pairs_weight_gradient_fits};
use crate::conv::epilogue::InputTransform;
use crate::conv::im2col::backward_weight_gemm;
use crate::conv::shape::{check_lens, ConvShape};
#[cfg(target_arch = "x86_64")]
use crate::conv::winograd;
use crate::threads;
use crate::workspace::take;
use crate::Workspace;

/// Gradient of the weight: `dw (+)= im2col(t(x))^T * dy`, where `t` is the input transform the
/// forward pass applied (if any).
///
/// # Shapes
/// `x: [n, h, w, cin]`, `dy: [n, oh, ow, cout]`, `dw: [kh, kw, cin, cout]`.
///
/// # Panics
/// If a slice length disagrees with `s`.
pub fn conv2d_backward_weight(
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    conv2d_backward_weight_with(ConvAlgorithm::for_shape(s), s, x, t, dy, dw, accumulate, ws);
}

/// [`conv2d_backward_weight`] with a chosen algorithm.
///
/// # Panics
/// If a slice length disagrees with `s`, or the CPU cannot run `algo`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_with(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    if let Some(t) = &t {
        assert_eq!((t.scale.len(), t.shift.len()), (s.cin, s.cin), "input transform of the wrong length");
    }
    let t = t.as_ref();
    check_lens(s, x.len(), dw.len(), dy.len());
    #[cfg(target_arch = "x86_64")]
    if matches!(algo, ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16) && winograd::fits_weight_gradient(s) {
        winograd::backward_weight(s, x, t, dy, dw, accumulate);
        return;
    }
    let algo = algo.without_winograd();
    let (k, co) = (s.patch(), s.cout);
    let rows = s.n * s.out_h();
    let parts = threads::num_threads().min(rows).max(1);
    let mut partials = std::mem::take(&mut ws.partials);
    {
        let bf16 = matches!(algo, ConvAlgorithm::AmxBf16 | ConvAlgorithm::DirectBf16);
        let pairs = bf16 && pairs_weight_gradient_fits(s);
        // The pixel-pair paths keep each part's gradient transposed beside it.
        let partials = take(&mut partials, if pairs { 2 } else { 1 } * parts * k * co);
        let (partials, transposed) = partials.split_at_mut(parts * k * co);
        match algo {
            #[cfg(target_arch = "x86_64")]
            _ if pairs => {
                let amx = algo == ConvAlgorithm::AmxBf16;
                backward_weight_pairs(s, x, t, dy, partials, transposed, parts, amx)
            }
            #[cfg(target_arch = "x86_64")]
            // Other shapes keep an f32 weight gradient in bf16 mode.
            ConvAlgorithm::Direct | ConvAlgorithm::DirectBf16 | ConvAlgorithm::AmxBf16 => {
                backward_weight_direct(s, x, t, dy, partials, parts)
            }
            _ => backward_weight_gemm(s, x, t, dy, partials, parts),
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
    ws.partials = partials;
}
