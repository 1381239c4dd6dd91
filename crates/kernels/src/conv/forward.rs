//! The forward pass: checks, then the chosen algorithm, then whatever of the epilogue the
//! algorithm did not apply as it wrote.

use crate::activations::Activations;
use crate::conv::algorithm::{amx_supported, gathers_windows, ConvAlgorithm};
use crate::conv::bf16::pack_weights_bf16;
use crate::conv::direct::{forward_direct, input_run, ConvKernel, DirectPlan};
use crate::conv::epilogue::Epilogue;
use crate::conv::im2col::{forward_gemm, im2col};
use crate::conv::input::{readable, ConvInput};
use crate::conv::params::{ConvParams, ConvWeight};
use crate::conv::shape::{check_lens, ConvShape};
#[cfg(target_arch = "x86_64")]
use crate::conv::winograd;
use crate::simd::{self, Isa};
use crate::threads;
use crate::workspace::{put_shared, shared, take, take_shared};
use crate::Workspace;
use rayon::prelude::*;

/// Forward convolution, `y = conv(t(x), w)` with `t` the input transform of `p` (if any), and
/// the `epilogue` applied to the output as it is written: the statistics a following batch norm
/// needs, or the eval-mode batch norm, residual and ReLU that follow the layer.
///
/// `x` is `f32` or bf16 ([`Activations`]); the direct passes read bf16 rows as they build their
/// strips and Winograd its input tiles, the others get a widened copy.
///
/// With [`Epilogue::StatsStoringBf16`], `y` may be empty: the bf16 output is then all there is,
/// and the passes that write `f32` before rounding it (the GEMM, direct tasks in runs of output
/// channels) write a staging buffer of this thread's.
///
/// # Shapes
/// `x: [n, h, w, cin]`, `p.weight: [kh, kw, cin, cout]`, `y: [n, oh, ow, cout]`.
///
/// # Panics
/// If a slice length disagrees with `p.shape`, the CPU cannot run `p.algorithm`, or the
/// epilogue adds onto the residual where [`adds_residual_in_place`] says it cannot.
pub fn forward<'x>(
    p: &ConvParams<'_>,
    x: impl Into<Activations<'x>>,
    epilogue: Epilogue<'_>,
    y: &mut [f32],
    ws: &mut Workspace,
) {
    let (s, x) = (&p.shape, x.into());
    let bf16_only = y.is_empty() && matches!(epilogue, Epilogue::StatsStoringBf16 { .. });
    check_lens(s, x.len(), p.weight.values.len(), if bf16_only { s.output_len() } else { y.len() });
    epilogue.check(s.cout, s.output_len());
    if matches!(epilogue, Epilogue::TransformOntoResidual(_)) {
        assert!(adds_residual_in_place(p.algorithm, s), "{:?} does not add a residual in place for {s:?}", p.algorithm);
    }
    readable(x, reads_bf16(p.algorithm), |x| {
        let pass = ForwardPass {
            input: ConvInput { shape: *s, x, transform: p.input_transform },
            weight: p.weight,
            accumulate: false,
        };
        forward_with(p.algorithm, &pass, y, epilogue, ws);
    });
}

/// Whether the forward pass of `algo` on `s` reads a bf16 input itself: Winograd's input
/// tiles, and the direct passes as they build strips of the input or gather its windows.
pub(super) fn reads_bf16(algo: ConvAlgorithm) -> bool {
    cfg!(target_arch = "x86_64") && algo != ConvAlgorithm::Im2colGemm
}

/// A forward pass as the algorithms take it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ForwardPass<'a> {
    /// The input and its transform.
    pub(super) input: ConvInput<'a>,
    /// The weight.
    pub(super) weight: ConvWeight<'a>,
    /// Add into the output rather than write it (the backward-data pass summing into a gradient).
    pub(super) accumulate: bool,
}

/// Forward pass with a chosen algorithm (writes, or adds into, `y`), then the epilogue.
pub(super) fn forward_with(
    algo: ConvAlgorithm,
    pass: &ForwardPass<'_>,
    y: &mut [f32],
    epilogue: Epilogue<'_>,
    ws: &mut Workspace,
) {
    let s = &pass.input.shape;
    if let Some(t) = &pass.input.transform {
        assert_eq!((t.scale.len(), t.shift.len()), (s.cin, s.cin), "input transform of the wrong length");
    }
    match algo {
        #[cfg(target_arch = "x86_64")]
        ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16 if algo.winograd_runs(s) => {
            winograd::forward(pass, y, epilogue, algo == ConvAlgorithm::WinogradBf16);
        }
        ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16 => {
            forward_with(algo.without_winograd(), pass, y, epilogue, ws)
        }
        #[cfg(target_arch = "x86_64")]
        ConvAlgorithm::Direct if gathers_windows(s) => {
            // Rows of the im2col matrix [n * oh * ow, kh * kw * cin] are the pixels of a 1x1
            // layer with kh * kw * cin input channels and the same weight matrix.
            let mut windows = take_shared(&shared::WINDOWS);
            let cols = take(&mut windows, s.rows() * s.patch());
            let k = s.patch();
            let per = s.rows().div_ceil(4 * threads::num_threads());
            threads::install(|| {
                cols.par_chunks_mut(per * k).enumerate().for_each(|(i, part)| {
                    im2col(&pass.input, i * per, part.len() / k, part);
                });
            });
            let input = ConvInput { shape: s.gathered(), x: Activations::F32(cols), transform: None };
            let gathered = ForwardPass { input, ..*pass };
            forward_direct(&gathered, None, y, epilogue, ws);
            put_shared(&shared::WINDOWS, windows);
        }
        #[cfg(target_arch = "x86_64")]
        ConvAlgorithm::Direct | ConvAlgorithm::DirectBf16 | ConvAlgorithm::AmxBf16 => {
            let bf16 = algo != ConvAlgorithm::Direct;
            let amx = algo == ConvAlgorithm::AmxBf16;
            assert!(!amx || amx_supported(), "AMX convolution needs AMX-BF16 tiles");
            let pairs_len = s.kh * s.kw * s.cin.div_ceil(2) * s.cout;
            let mut packed = take_shared(&shared::BF16_WEIGHTS);
            if bf16 {
                pack_weights_bf16(s, pass.weight.values, take(&mut packed, pairs_len));
            }
            let bf16_weight = bf16.then(|| Bf16Weight { pairs: &packed[..pairs_len], amx });
            forward_direct(pass, bf16_weight, y, epilogue, ws);
            put_shared(&shared::BF16_WEIGHTS, packed);
        }
        _ => f32_output(y, s.output_len(), |y| {
            forward_gemm(&pass.input, pass.weight.values, y, pass.accumulate);
            epilogue.run_after(y, s.cout, ws);
        }),
    }
}

/// Runs `f` on the `f32` output `y`, or, where `y` is empty (an output stored in bf16 alone),
/// on this thread's staging buffer of `len` floats: for a pass that writes `f32` before its
/// epilogue rounds it.
pub(super) fn f32_output<R>(y: &mut [f32], len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if !y.is_empty() {
        return f(y);
    }
    let mut staging = take_shared(&shared::STAGING);
    let result = f(take(&mut staging, len));
    put_shared(&shared::STAGING, staging);
    result
}

/// The weight of a bf16 direct pass: bf16 pairs of input channels, `[kh, kw, ceil(cin/2),
/// cout]`, and whether the AMX tiles multiply them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bf16Weight<'a> {
    /// The packed pairs.
    pub(super) pairs: &'a [u32],
    /// On AMX tiles where the channels fit them.
    pub(super) amx: bool,
}

/// Whether [`forward`] with [`Epilogue::TransformOntoResidual`] runs `s` with `algo`: the
/// direct pass whose general micro-kernel applies the output transform in registers, in one
/// pass over the input channels (on AVX-512: strided and 1x1 layers among others, e.g. the 1x1
/// layers that end ResNet-50's bottleneck blocks at batch 1).
pub fn adds_residual_in_place(algo: ConvAlgorithm, s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if algo != ConvAlgorithm::Direct || simd::isa() < Isa::Avx512 {
            return false;
        }
        let s = if gathers_windows(s) { s.gathered() } else { *s };
        let kernel = ConvKernel::choose(&s);
        let band = DirectPlan::new(&s, kernel.channel_block(s.cout), 4).band;
        kernel.fuses_transform() && (!s.is_pointwise() || input_run(s.cin, band * s.out_w()) == s.cin)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (algo, s);
        false
    }
}
