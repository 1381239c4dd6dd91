use crate::conv::direct::TASK_WEIGHT_BYTES;
use crate::conv::shape::ConvShape;
#[cfg(target_arch = "x86_64")]
use crate::conv::winograd;
use crate::simd::{self, Isa};

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
    /// multiples of 16 (f32, needs AVX-512); other shapes run [`ConvAlgorithm::Direct`]. `RESNET_WINOGRAD=0` keeps it from being
    /// chosen (to compare paths).
    Winograd,
    /// [`ConvAlgorithm::Winograd`] with bf16 products (`vdpbf16ps`, f32 sums; needs
    /// AVX512_BF16) in the forward and backward-data passes of square 3x3 stride-1 layers of
    /// 16, 32 or 64 channels: the transforms stay f32, the transformed input and filter are
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

pub(super) static PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether this CPU runs the bf16 kernels (AVX-512 and AVX512_BF16).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd::isa() >= Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AMX bf16 tiles (AMX-TILE, AMX-BF16, permitted by the kernel).
pub fn amx_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bf16_supported() && simd::amx::supported()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Chooses the arithmetic of every convolution from now on.
///
/// # Errors
/// A message naming the missing CPU feature when bf16 is asked for and not supported.
pub fn set_precision(p: Precision) -> Result<(), String> {
    if p == Precision::Bf16 && !bf16_supported() {
        return Err("bf16 convolutions need a CPU with AVX-512 and AVX512_BF16 (e.g. Intel Cooper Lake or later, \
                    AMD Zen 4 or later); this one lacks them: use --precision fp32"
            .into());
    }
    PRECISION.store(u8::from(p == Precision::Bf16), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The arithmetic set by [`set_precision`] (f32 by default).
pub fn precision() -> Precision {
    if PRECISION.load(std::sync::atomic::Ordering::Relaxed) == 1 {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

impl ConvAlgorithm {
    /// The fastest algorithm this CPU runs, in general.
    pub fn preferred() -> Self {
        if simd::isa() >= Isa::Avx512 {
            ConvAlgorithm::Direct
        } else {
            ConvAlgorithm::Im2colGemm
        }
    }

    /// The faster algorithm for one layer (every pass), from the kernel benchmarks
    /// (`cargo bench -p resnet-kernels --bench conv`). In f32: Winograd takes the 3x3 stride-1
    /// layers with channels in multiples of 16 and enough output (32 tiles of 4x4 pixels or
    /// more), whatever their width; the direct kernels the other layers but stride-1 1x1 ones
    /// (strided 1x1 layers included), strided ones only while their weights stay in cache (the forward pass cuts larger weights into
    /// runs of channels: 1.1-1.2x faster than the GEMM on ResNet-50's stride-1 7x7 and 14x14
    /// layers at batch 1, its backward passes too at batch 16, but 1.1x slower at stride 2);
    /// the GEMM backend, which packs its operands, the rest. In bf16 mode, where the CPU has
    /// AMX its tiles take every layer whose channels fit them and whose bf16 weights stay in
    /// cache, 1x1 layers included (a tile step is 16 times a `vdpbf16ps`); Winograd with bf16
    /// products the square 3x3 stride-1 layers of 16, 32 and 64 channels (1.2-1.7x the f32
    /// Winograd's forward and backward-data passes on a Zen 4); the direct kernels the other
    /// layers but 1x1 ones whose weights stay in cache.
    pub fn for_shape(s: &ConvShape) -> Self {
        Self::for_precision(s, precision())
    }

    /// [`Self::for_shape`] for the forward pass alone: the same, but stride-1 1x1 layers and
    /// strided layers with weights well beyond the cache go to the direct kernels in f32 when
    /// they have few output pixels (up to 4096 in the batch: ResNet-50 at batch 1), the strided
    /// ones through gathered windows (see [`gathers_windows`]): measured 1.1-1.3x faster than
    /// the GEMM there. Their backward passes are not (the weight gradient up to 2.7x slower),
    /// so [`Self::for_shape`] keeps them on the GEMM.
    pub fn for_forward(s: &ConvShape) -> Self {
        match Self::for_shape(s) {
            ConvAlgorithm::Im2colGemm
                if precision() == Precision::F32
                    && Self::preferred() == ConvAlgorithm::Direct
                    && s.rows() <= FEW_PIXELS
                    && (s.is_pointwise() || gathers_windows(s)) =>
            {
                ConvAlgorithm::Direct
            }
            algo => algo,
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

    /// [`Self::for_shape`] for a given arithmetic.
    pub fn for_precision(s: &ConvShape, p: Precision) -> Self {
        const DIRECT_WEIGHT_LIMIT: usize = 2 << 20;
        let direct = Self::preferred() == ConvAlgorithm::Direct && !s.is_pointwise();
        let cached = 4 * s.weight_len() <= DIRECT_WEIGHT_LIMIT;
        match p {
            Precision::Bf16 if amx_supported() && amx_fits(s) && 2 * s.weight_len() <= DIRECT_WEIGHT_LIMIT => {
                ConvAlgorithm::AmxBf16
            }
            Precision::Bf16 if winograd_enabled() && winograd_fits(s) && winograd_bf16_fits(s) => {
                ConvAlgorithm::WinogradBf16
            }
            Precision::Bf16 if direct && cached => ConvAlgorithm::DirectBf16,
            Precision::F32 if winograd_enabled() && winograd_fits(s) => ConvAlgorithm::Winograd,
            Precision::F32 if direct && (cached || s.stride == 1) => ConvAlgorithm::Direct,
            _ => ConvAlgorithm::Im2colGemm,
        }
    }
}

/// Output pixels in a batch up to which [`ConvAlgorithm::for_forward`] may prefer the direct
/// kernels for layers the GEMM otherwise takes.
pub(super) const FEW_PIXELS: usize = 4096;

/// Most floats of gathered windows (4 MB: every strided layer of ResNet-50 at batch 1; at batch
/// 16 its two widest ones would take 43 MB more memory for no measured gain).
pub(super) const WINDOW_FLOATS: usize = 1 << 20;

/// Whether the direct forward pass gathers a strided layer's input windows into rows first and
/// runs a 1x1 stride-1 pass over them as long rows: for layers (1x1 or wider) with weights well
/// beyond the cache, when the windows are few enough. Read in place, their short strided rows cut the micro-kernel's pixel blocks (ResNet-50's 7x7
/// stride-2 layers at batch 1 ran 1.1x slower on them than on the GEMM; gathered, 1.05-1.1x
/// faster than the GEMM in the kernel benchmark; its 28x28 layer, with 590 KB of weights,
/// 1.1x slower gathered than the GEMM).
pub(super) fn gathers_windows(s: &ConvShape) -> bool {
    s.stride > 1
        && s.rows() <= FEW_PIXELS
        && s.rows() * s.patch() <= WINDOW_FLOATS
        && 4 * s.weight_len() > 2 * TASK_WEIGHT_BYTES
}

/// Whether the Winograd path runs this shape (on this CPU) and is worth it.
pub(super) fn winograd_fits(s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        winograd::fits(s) && winograd::pays_off(s)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = s;
        false
    }
}

/// Whether the Winograd path runs this shape with bf16 products (on this CPU).
pub(super) fn winograd_bf16_fits(s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        winograd::fits_bf16(s)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = s;
        false
    }
}

/// Whether [`ConvAlgorithm::for_shape`] may choose Winograd (`RESNET_WINOGRAD=0` says no).
pub(super) fn winograd_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("RESNET_WINOGRAD").as_deref() != Ok("0"))
}

/// Whether the AMX tiles fit a layer's forward pass (its backward-data pass swaps the channel
/// counts; where that does not fit, it runs on `vdpbf16ps`).
pub(super) fn amx_fits(s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd::amx::pairs_per_step(s.cin.div_ceil(2), s.cout).is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = s;
        false
    }
}
