//! Which algorithm computes a convolution: a pure function of its shape, the caller's
//! configuration and the CPU.

use crate::config::{CpuFeatures, KernelConfig};
use crate::conv::direct::TASK_WEIGHT_BYTES;
use crate::conv::shape::ConvShape;
#[cfg(target_arch = "x86_64")]
use crate::conv::winograd;
use crate::simd::Isa;
use shape_support::{amx_fits, winograd_bf16_fits, winograd_fits, winograd_takes_gradient};

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Register-blocked AVX-512 micro-kernels on the padded input (needs AVX-512).
    Direct,
    /// The direct kernels on bf16 inputs and weights with f32 accumulation (`vdpbf16ps`; needs
    /// AVX512_BF16). Outputs stay f32.
    DirectBf16,
    /// The direct convolution on AMX bf16 tiles (`tdpbf16ps`, f32 accumulation) where the
    /// layer's channels fit the tiles, else as [`ConvAlgorithm::DirectBf16`]. Needs AMX-BF16
    /// and the operating system's permission ([`amx_supported`]).
    AmxBf16,
    /// Tiled im2col and the GEMM backend (any CPU).
    Im2colGemm,
    /// Winograd F(4x4, 3x3) for all three passes of 3x3 stride-1 layers whose channels come in
    /// multiples of 16 (f32, needs AVX-512); other shapes run [`ConvAlgorithm::Direct`]. A configuration with `winograd: false` keeps
    /// it from being chosen (to compare paths).
    Winograd,
    /// [`ConvAlgorithm::Winograd`] with bf16 products (`vdpbf16ps`, f32 sums; needs
    /// AVX512_BF16) in the forward and backward-data passes of 3x3 stride-1 layers: square ones
    /// of 16, 32 or 64 channels, and the others Winograd runs by runs of tiles (enough of them)
    /// with the transformed filter held whole. The transforms stay f32, the transformed input and filter are
    /// rounded to bf16. The weight gradient runs f32 Winograd. Other shapes run
    /// [`ConvAlgorithm::DirectBf16`].
    WinogradBf16,
}

/// Arithmetic of the convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 throughout.
    F32,
    /// bf16 inputs and weights in the convolutions' dot products, f32 accumulation and f32
    /// everywhere else (outputs, batch norm, loss, master weights).
    Bf16,
}

/// Whether this CPU runs the bf16 kernels (AVX-512 and AVX512_BF16).
pub fn bf16_supported() -> bool {
    CpuFeatures::current().bf16
}

/// Whether this CPU runs the AMX bf16 tiles (AMX-TILE, AMX-BF16, permitted by the kernel).
pub fn amx_supported() -> bool {
    CpuFeatures::current().amx
}

/// The pass an algorithm is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// The forward pass.
    Forward,
    /// The backward passes: the input gradient, and the weight gradient where the caller
    /// chooses both at once.
    Backward,
    /// The weight gradient alone, for callers that choose it apart from the input gradient (the
    /// rules choose it as [`ConvPass::Backward`] now: Winograd's weight gradient beats the
    /// pixel pairs on every layer Winograd takes, docs/tuning.md).
    WeightGradient,
}

/// Weight bytes up to which strided and bf16 layers take the direct kernels (and the AMX tiles):
/// beyond it the weights leave the cache, and strided layers run slower there than on the GEMM
/// (docs/tuning.md).
pub(super) const DIRECT_WEIGHT_LIMIT: usize = 2 << 20;

impl ConvAlgorithm {
    /// The algorithm for one pass of a layer of shape `s`: a pure function of the shape, the
    /// caller's configuration and the CPU's features, chosen from the kernel benchmarks (the
    /// measurements are in `docs/tuning.md`, "ConvAlgorithm::choose").
    ///
    /// In f32, Winograd takes the 3x3 stride-1 layers with channels in multiples of 16 and
    /// enough output tiles; the direct kernels the other layers but 1x1 ones, strided ones
    /// only while their weights stay in cache; the GEMM the rest. The forward pass also sends
    /// 1x1 and large strided layers with few output pixels to the direct kernels (their
    /// backward passes stay on the GEMM). In bf16, the AMX tiles take every layer whose
    /// channels fit them and whose bf16 weights stay in cache; bf16 Winograd the square 3x3
    /// stride-1 layers of 16, 32 and 64 channels and the others it runs by runs of tiles with
    /// the filter held whole; f32 Winograd the other 3x3 layers it takes (few tiles: by
    /// channel blocks); the direct bf16 kernels all the rest, 1x1 and large strided layers
    /// included.
    pub fn choose(s: &ConvShape, pass: ConvPass, config: &KernelConfig, cpu: &CpuFeatures) -> Self {
        match Self::for_layer(s, config, cpu) {
            ConvAlgorithm::Im2colGemm
                if pass == ConvPass::Forward
                    && config.precision == Precision::F32
                    && cpu.isa >= Isa::Avx512
                    && s.rows() <= FEW_PIXELS
                    && (s.is_pointwise() || gathers_windows(s)) =>
            {
                ConvAlgorithm::Direct
            }
            algo => algo,
        }
    }

    /// [`Self::choose`] for the backward passes, which the forward pass shares unless it has
    /// few pixels.
    fn for_layer(s: &ConvShape, config: &KernelConfig, cpu: &CpuFeatures) -> Self {
        let avx512 = cpu.isa >= Isa::Avx512;
        let direct = avx512 && !s.is_pointwise();
        let cached = 4 * s.weight_len() <= DIRECT_WEIGHT_LIMIT;
        let winograd = config.winograd && avx512 && winograd_fits(s);
        let bf16 = config.precision == Precision::Bf16 && avx512 && cpu.bf16;
        match config.precision {
            Precision::Bf16 if config.amx && cpu.amx && amx_fits(s) && 2 * s.weight_len() <= DIRECT_WEIGHT_LIMIT => {
                ConvAlgorithm::AmxBf16
            }
            Precision::Bf16 if winograd && cpu.bf16 && winograd_bf16_fits(s) => ConvAlgorithm::WinogradBf16,
            // Layers Winograd runs by channel blocks (few tiles): f32 Winograd's four-fold saving
            // beats bf16's two-fold in all three passes, where it also takes the weight gradient
            // (else that would fall to the f32 GEMM).
            _ if winograd && (!bf16 || winograd_takes_gradient(s)) => ConvAlgorithm::Winograd,
            // The bf16 kernels beat the f32 GEMM on every other layer, 1x1 and large ones too.
            _ if bf16 => ConvAlgorithm::DirectBf16,
            Precision::F32 if direct && (cached || s.stride == 1) => ConvAlgorithm::Direct,
            _ => ConvAlgorithm::Im2colGemm,
        }
    }

    /// The direct algorithm of the same arithmetic for a Winograd one (the path of shapes
    /// Winograd does not run); any other algorithm as it is.
    pub(in crate::conv) fn without_winograd(self) -> Self {
        match self {
            ConvAlgorithm::Winograd => ConvAlgorithm::Direct,
            ConvAlgorithm::WinogradBf16 => ConvAlgorithm::DirectBf16,
            other => other,
        }
    }

    /// Whether this Winograd algorithm runs `s` (f32 Winograd what [`winograd::fits`], the bf16
    /// products what [`winograd::fits_bf16`]).
    #[cfg(target_arch = "x86_64")]
    pub(in crate::conv) fn winograd_runs(self, s: &ConvShape) -> bool {
        match self {
            ConvAlgorithm::Winograd => winograd::fits(s),
            ConvAlgorithm::WinogradBf16 => winograd::fits_bf16(s),
            _ => false,
        }
    }
}

/// Output pixels in a batch up to which the forward pass prefers the direct kernels for 1x1 and
/// large-weight strided layers the GEMM otherwise takes, which pays only at small batches
/// (docs/tuning.md).
pub(super) const FEW_PIXELS: usize = 4096;

/// Most floats of gathered windows (4 MB): every strided layer of ResNet-50 at batch 1, without
/// the memory larger batches would take for no gain (docs/tuning.md).
pub(super) const WINDOW_FLOATS: usize = 1 << 20;

/// Whether the direct forward pass gathers a strided layer's input windows into rows first and
/// runs a 1x1 stride-1 pass over them as long rows: for layers (1x1 or wider) with weights well
/// beyond the cache, when the windows are few enough. Gathering keeps the micro-kernel's pixel
/// blocks whole, which short strided rows read in place would cut, where the weights are large
/// (docs/tuning.md).
pub(super) fn gathers_windows(s: &ConvShape) -> bool {
    s.stride > 1
        && s.rows() <= FEW_PIXELS
        && s.rows() * s.patch() <= WINDOW_FLOATS
        && 4 * s.weight_len() > 2 * TASK_WEIGHT_BYTES
}

/// What the x86-only paths take, as pure functions of the shape (none elsewhere).
#[cfg(target_arch = "x86_64")]
mod shape_support {
    use crate::conv::shape::ConvShape;
    use crate::conv::winograd;

    /// Whether the Winograd path runs this shape (on an AVX-512 CPU) and is worth it.
    pub(super) fn winograd_fits(s: &ConvShape) -> bool {
        winograd::shape_fits(s) && winograd::pays_off(s)
    }

    /// Whether the Winograd path has bf16 products for this shape.
    pub(super) fn winograd_bf16_fits(s: &ConvShape) -> bool {
        winograd::shape_fits(s) && winograd::has_bf16_products(s)
    }

    /// Whether Winograd's weight gradient takes a layer Winograd runs (its transformed filter
    /// gradient within [`winograd::GRADIENT_FLOATS`]).
    pub(super) fn winograd_takes_gradient(s: &ConvShape) -> bool {
        winograd::fits_gradient_size(s)
    }

    /// Whether the AMX tiles fit a layer's forward pass (its backward-data pass swaps the
    /// channel counts; where that does not fit, it runs on `vdpbf16ps`).
    pub(super) fn amx_fits(s: &ConvShape) -> bool {
        crate::simd::amx::pairs_per_step(s.cin.div_ceil(2), s.cout).is_some()
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod shape_support {
    use crate::conv::shape::ConvShape;

    pub(super) fn winograd_fits(_: &ConvShape) -> bool {
        false
    }

    pub(super) fn winograd_bf16_fits(_: &ConvShape) -> bool {
        false
    }

    pub(super) fn amx_fits(_: &ConvShape) -> bool {
        false
    }

    pub(super) fn winograd_takes_gradient(_: &ConvShape) -> bool {
        false
    }
}
