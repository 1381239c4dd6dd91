use crate::conv::algorithm::{amx_supported, gathers_windows, ConvAlgorithm};
use crate::conv::bf16::pack_weights_bf16;
use crate::conv::direct::{forward_direct, input_run, ConvKernel, DirectPlan};
use crate::conv::epilogue::{Epilogue, InputTransform, OutputTransform};
use crate::conv::im2col::{forward_gemm, im2col};
use crate::conv::shape::{check_lens, ConvShape};
#[cfg(target_arch = "x86_64")]
use crate::conv::winograd;
use crate::simd::{self, Isa};
use crate::threads;
use crate::workspace::take;
use crate::Workspace;
use rayon::prelude::*;

/// Forward pass with a chosen algorithm (writes, or adds into, `y`), then the epilogue.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_with(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    w: &[f32],
    version: Option<u64>,
    y: &mut [f32],
    accumulate: bool,
    epilogue: Epilogue<'_, '_>,
    ws: &mut Workspace,
) {
    if let Some(t) = t {
        assert_eq!((t.scale.len(), t.shift.len()), (s.cin, s.cin), "input transform of the wrong length");
    }
    match algo {
        #[cfg(target_arch = "x86_64")]
        ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16 if algo.winograd_runs(s) => {
            winograd::forward(s, x, t, w, y, accumulate, epilogue, algo == ConvAlgorithm::WinogradBf16);
        }
        ConvAlgorithm::Winograd | ConvAlgorithm::WinogradBf16 => {
            forward_with(algo.without_winograd(), s, x, t, w, version, y, accumulate, epilogue, ws)
        }
        #[cfg(target_arch = "x86_64")]
        ConvAlgorithm::Direct if gathers_windows(s) => {
            // Rows of the im2col matrix [n * oh * ow, kh * kw * cin] are the pixels of a 1x1
            // layer with kh * kw * cin input channels and the same weight matrix.
            let mut windows = std::mem::take(&mut ws.windows);
            let cols = take(&mut windows, s.rows() * s.patch());
            let k = s.patch();
            let per = s.rows().div_ceil(4 * threads::num_threads());
            threads::install(|| {
                cols.par_chunks_mut(per * k).enumerate().for_each(|(i, part)| {
                    im2col(s, x, t, i * per, part.len() / k, part);
                });
            });
            forward_direct(&s.gathered(), cols, None, w, version, None, false, y, accumulate, epilogue, ws);
            ws.windows = windows;
        }
        #[cfg(target_arch = "x86_64")]
        ConvAlgorithm::Direct | ConvAlgorithm::DirectBf16 | ConvAlgorithm::AmxBf16 => {
            let co = s.cout;
            let (bf16, amx) = (algo != ConvAlgorithm::Direct, algo == ConvAlgorithm::AmxBf16);
            assert!(!amx || amx_supported(), "AMX convolution needs AMX-BF16 tiles");
            let pairs_len = s.kh * s.kw * s.cin.div_ceil(2) * co;
            let mut packed = std::mem::take(&mut ws.bf16);
            if bf16 {
                pack_weights_bf16(s, w, take(&mut packed, pairs_len));
            }
            let wb = bf16.then(|| &packed[..pairs_len]);
            forward_direct(s, x, t, w, version, wb, amx, y, accumulate, epilogue, ws);
            ws.bf16 = packed;
        }
        _ => {
            forward_gemm(s, x, t, w, y, accumulate);
            epilogue.run_after(y, s.cout, ws);
        }
    }
}

/// Forward convolution: `y = conv(x, w)`.
///
/// # Shapes
/// `x: [n, h, w, cin]`, `w: [kh, kw, cin, cout]`, `y: [n, oh, ow, cout]`.
///
/// # Panics
/// If a slice length disagrees with `s`.
pub fn conv2d_forward(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32], ws: &mut Workspace) {
    conv2d_forward_with(ConvAlgorithm::for_forward(s), s, x, None, w, y, None, ws);
}

/// Forward convolution of the transformed input, `y = conv(t(x), w)` (see [`InputTransform`]),
/// that also sums the output per channel into `stats` (`[2 * cout]`: sums, then sums of
/// squares) when given: the statistics a following batch norm needs, without another pass.
///
/// # Panics
/// If a slice length disagrees with `s`, or the CPU cannot run `algo`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_with(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    w: &[f32],
    y: &mut [f32],
    stats: Option<&mut [f64]>,
    ws: &mut Workspace,
) {
    forward_checked(algo, s, x, t, w, None, y, stats.map_or(Epilogue::None, Epilogue::Stats), ws);
}

/// [`conv2d_forward_with`] for a weight that carries a version (as `resnet_nn::Param` does):
/// calls with the same version promise the same weight values, so the forward pass may keep
/// what it derives from the weight in `ws` (the panels of ResNet-50's large layers, see
/// `pack_panels`) and reuse it rather than derive it again.
///
/// # Panics
/// As [`conv2d_forward_with`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_versioned(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    w: &[f32],
    version: u64,
    y: &mut [f32],
    stats: Option<&mut [f64]>,
    ws: &mut Workspace,
) {
    let epilogue = stats.map_or(Epilogue::None, Epilogue::Stats);
    forward_checked(algo, s, x, t, w, Some(version), y, epilogue, ws);
}

/// Forward convolution with what follows it in an eval-mode network applied to the output as
/// it is written: `y = act(conv(t(x), w) * scale + shift (+ residual))` (see
/// [`OutputTransform`]). `version`, when given, is the weight's (see
/// [`conv2d_forward_versioned`]).
///
/// # Panics
/// As [`conv2d_forward_with`], and if the transform's lengths disagree with the output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_transformed(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    w: &[f32],
    version: Option<u64>,
    out: OutputTransform<'_>,
    y: &mut [f32],
    ws: &mut Workspace,
) {
    forward_checked(algo, s, x, t, w, version, y, Epilogue::Output(&out), ws);
}

/// Whether [`conv2d_forward_onto_residual`] runs `s` with `algo`: the direct pass whose general
/// micro-kernel applies the output transform in registers, in one pass over the input channels
/// (on AVX-512: strided and 1x1 layers among others, e.g. the 1x1 layers that end ResNet-50's
/// bottleneck blocks at batch 1, whose forward pass the direct kernels run; at batch 16 the
/// GEMM runs them).
pub fn adds_residual_in_place(algo: ConvAlgorithm, s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if algo != ConvAlgorithm::Direct || simd::isa() < Isa::Avx512 {
            return false;
        }
        let s = if gathers_windows(s) { s.gathered() } else { *s };
        let kernel = ConvKernel::choose(&s);
        let band = DirectPlan::new(&s, kernel.channel_block(s.cout), 4).band;
        kernel.fuses_affine() && (!s.is_pointwise() || input_run(s.cin, band * s.out_w()) == s.cin)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (algo, s);
        false
    }
}

/// `y = act(y + bn(conv(t(x), w)))`: [`conv2d_forward_transformed`] whose residual is the
/// output buffer's own content, each value read just before the output is stored over it. A
/// bottleneck block's last layer at inference, whose shortcut is dead after the addition, so
/// writes no second buffer of the output's size (whose lines the CPU would first fetch).
///
/// # Panics
/// If [`adds_residual_in_place`] is false for `algo` and `s`, `out` has a residual of its own,
/// or a slice length disagrees with `s`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_onto_residual(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    w: &[f32],
    version: Option<u64>,
    out: OutputTransform<'_>,
    y: &mut [f32],
    ws: &mut Workspace,
) {
    assert!(adds_residual_in_place(algo, s), "{algo:?} does not add a residual in place for {s:?}");
    forward_checked(algo, s, x, t, w, version, y, Epilogue::OntoResidual(&out), ws);
}

/// The public forward passes, after checking their arguments.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_checked(
    algo: ConvAlgorithm,
    s: &ConvShape,
    x: &[f32],
    t: Option<InputTransform<'_>>,
    w: &[f32],
    version: Option<u64>,
    y: &mut [f32],
    epilogue: Epilogue<'_, '_>,
    ws: &mut Workspace,
) {
    check_lens(s, x.len(), w.len(), y.len());
    epilogue.check(s.cout, y.len());
    forward_with(algo, s, x, t.as_ref(), w, version, y, false, epilogue, ws);
}
