//! 2-D convolution over NHWC batches, forward and both backward passes.
//!
//! Layouts: input `x` is `[n, h, w, cin]`, output `y` is `[n, oh, ow, cout]`, and the weight is
//! `[kh, kw, cin, cout]` ("HWIO"), so that a convolution is the product of the im2col matrix
//! `[n*oh*ow, kh*kw*cin]` with the weight matrix `[kh*kw*cin, cout]`.
//!
//! Three algorithms ([`ConvAlgorithm`]; the direct and Winograd ones also with bf16 products):
//! - **direct** (AVX-512): the input is zero-padded once, then register-blocked micro-kernels
//!   ([`crate::simd::avx512`]) read it in place: no im2col matrix at all;
//! - **im2col + GEMM** (portable): the im2col matrix is packed one tile of output rows at a time
//!   into a per-thread buffer small enough to stay in cache, then multiplied by the GEMM backend;
//! - **Winograd F(4x4, 3x3)** (AVX-512, f32, 3x3 stride-1 layers): a quarter of the direct
//!   multiply-adds, in all three passes ([`winograd`]).
//!
//! Passes:
//! - forward: either algorithm;
//! - backward data, stride 1: a forward convolution of `dy` with the spatially flipped,
//!   transposed weight (no scatter, same fast path as forward);
//! - backward data, strided: GEMM into column tiles, scattered back per image (col2im);
//! - backward weight: either algorithm, accumulated per thread over a fixed split of the rows,
//!   then summed in order (reproducible for a given thread count).

#[cfg(target_arch = "x86_64")]
mod winograd;

use crate::gemm::{matmul, MatMut, MatRef, Parallelism};
use crate::scratch::{with_filter, with_tile};
use crate::simd::{self, Isa};
use crate::threads::{self, split_even};
use crate::workspace::{take, PanelCache};
use crate::Workspace;
use rayon::prelude::*;

/// Geometry of one convolution applied to an NHWC batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both sides of both axes).
    pub pad: usize,
}

/// Floats of im2col tile each thread packs at a time (256 KiB: fits the per-core L2 with room
/// for the weight and output tiles).
const TILE_FLOATS: usize = 64 * 1024;

impl ConvShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Rows of the im2col matrix: output pixels in the batch.
    pub fn rows(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }
    /// Columns of the im2col matrix: one receptive field.
    pub fn patch(&self) -> usize {
        self.kh * self.kw * self.cin
    }
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.cin
    }
    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.rows() * self.cout
    }
    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.patch() * self.cout
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> u64 {
        self.output_len() as u64 * self.patch() as u64
    }

    /// Checks the shape is usable.
    ///
    /// # Panics
    /// If the kernel does not fit the padded input or a size is zero.
    pub fn validate(&self) {
        assert!(
            self.kh > 0 && self.kw > 0 && self.stride > 0 && self.cin > 0 && self.cout > 0,
            "degenerate convolution {self:?}"
        );
        assert!(
            self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw,
            "kernel {}x{} does not fit input {}x{} with padding {}",
            self.kh,
            self.kw,
            self.h,
            self.w,
            self.pad
        );
    }

    /// A 1x1 stride-1 layer without padding, whose input is its own im2col matrix (a strided
    /// 1x1 layer is not).
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.pad == 0 && self.stride == 1
    }

    /// The 1x1 stride-1 layer over this layer's gathered input windows (its im2col rows as
    /// pixels of `patch()` channels), with the same weight matrix and output.
    fn gathered(&self) -> ConvShape {
        ConvShape { h: self.out_h(), w: self.out_w(), cin: self.patch(), kh: 1, kw: 1, stride: 1, pad: 0, ..*self }
    }

    /// Output rows per im2col tile.
    fn tile_rows(&self) -> usize {
        (TILE_FLOATS / self.patch()).clamp(16, 2048)
    }
}

/// A batch norm and ReLU that precede the convolution, applied to its input as it is read:
/// `x' = max(x * scale + shift, 0)` per input channel. The zero padding stays zero, as it pads
/// the activated input. Fusing them here means the activated tensor is never written to memory.
#[derive(Clone, Copy, Debug)]
pub struct InputTransform<'a> {
    /// Per-channel multiplier.
    pub scale: &'a [f32],
    /// Per-channel offset.
    pub shift: &'a [f32],
}

/// What follows a convolution in an eval-mode network, applied to its output as it is written:
/// `y = act(conv * scale + shift (+ residual))` per output channel, with `act` a ReLU or nothing.
/// That is a batch norm with fixed statistics, the residual addition of a block and its ReLU, so
/// the convolution's raw output is never stored and read again. The arithmetic is the batch
/// norm pass's ([`crate::batch_norm::scale_shift_act`]), so the values are the same.
#[derive(Clone, Copy, Debug)]
pub struct OutputTransform<'a> {
    /// Per-channel multiplier.
    pub scale: &'a [f32],
    /// Per-channel offset.
    pub shift: &'a [f32],
    /// Added after the affine, same shape as the output.
    pub residual: Option<&'a [f32]>,
    /// ReLU last.
    pub relu: bool,
}

impl OutputTransform<'_> {
    /// The transform as the kernels take it, for output channels from `c0` on and the output
    /// element `at` (whose residual element it points to).
    #[cfg(target_arch = "x86_64")]
    fn tile_affine(&self, c0: usize, at: usize) -> crate::simd::avx512::TileAffine {
        crate::simd::avx512::TileAffine {
            scale: self.scale[c0..].as_ptr(),
            shift: self.shift[c0..].as_ptr(),
            residual: self.residual.map(|r| r[at..].as_ptr()),
            relu: self.relu,
        }
    }

    /// Transforms `y`, rows of output channels `c0..c0 + width` whose first element is element
    /// `at` of the output: either whole pixels (`c0 = 0`, `width = cout`) or one pixel's run.
    fn apply(&self, y: &mut [f32], at: usize, c0: usize, width: usize) {
        let residual = self.residual.map(|r| &r[at..at + y.len()]);
        let (scale, shift) = (&self.scale[c0..c0 + width], &self.shift[c0..c0 + width]);
        crate::batch_norm::scale_shift_rows_in_place(y, scale, shift, residual, self.relu);
    }
}

/// What the forward pass does to its output besides writing it.
enum Epilogue<'s, 'a> {
    /// Nothing.
    None,
    /// Sums it per channel into `[2 * cout]` (sums, then sums of squares): a training-mode
    /// batch norm's statistics.
    Stats(&'s mut [f64]),
    /// Transforms it (an eval-mode batch norm, residual and ReLU).
    Output(&'s OutputTransform<'a>),
    /// Transforms it, adding the residual the output buffer holds on entry, each value read
    /// before the sum is stored over it (the transform has no residual of its own). Only the
    /// direct pass's general micro-kernel does this (see [`adds_residual_in_place`]).
    OntoResidual(&'s OutputTransform<'a>),
}

impl Epilogue<'_, '_> {
    /// Checks that its buffers fit an output of `len` floats and `cout` channels.
    ///
    /// # Panics
    /// If they do not.
    fn check(&self, cout: usize, len: usize) {
        let image = |what: &str, v: &[f32]| {
            assert_eq!(v.len(), len, "{what} of {} floats for an output of {len}", v.len());
        };
        match self {
            Epilogue::None => {}
            Epilogue::Stats(st) => {
                assert_eq!(st.len(), 2 * cout, "stats hold a sum and a sum of squares per output channel")
            }
            Epilogue::Output(o) | Epilogue::OntoResidual(o) => {
                assert_eq!((o.scale.len(), o.shift.len()), (cout, cout), "output transform of the wrong length");
                match o.residual {
                    Some(r) if matches!(self, Epilogue::OntoResidual(_)) => {
                        panic!("a residual of {} floats besides the one in the output", r.len())
                    }
                    Some(r) => image("residual", r),
                    None => {}
                }
            }
        }
    }

    /// The epilogue as a pass of its own over a finished output `y` of `cout` channels.
    fn run_after(self, y: &mut [f32], cout: usize, ws: &mut Workspace) {
        match self {
            Epilogue::None => {}
            Epilogue::Stats(out) => crate::batch_norm::channel_sums(y, cout, out, ws),
            Epilogue::Output(o) => {
                crate::batch_norm::scale_shift_act_in_place(y, cout, o.scale, o.shift, o.residual, o.relu)
            }
            Epilogue::OntoResidual(_) => unreachable!("the residual in the output is overwritten by the pass"),
        }
    }

    /// The Winograd output transform's form of the output transform (for an output of `len`
    /// floats, `cout` channels), or of none: writing, or adding when `accumulate`. The
    /// statistics are gathered beside it.
    ///
    /// # Panics
    /// If the transform's buffers do not fit, or it would follow an accumulating pass.
    #[cfg(target_arch = "x86_64")]
    fn tile_output(&self, accumulate: bool, len: usize, cout: usize) -> crate::simd::winograd::TileOutput {
        use crate::simd::winograd::TileOutput;
        assert!(!(accumulate && matches!(self, Epilogue::Output(_))), "an output transform after an accumulating pass");
        self.check(cout, len);
        match self {
            Epilogue::Output(o) => TileOutput::Affine(o.tile_affine(0, 0)),
            Epilogue::OntoResidual(_) => unreachable!("Winograd takes no residual from its output"),
            _ if accumulate => TileOutput::Accumulate,
            _ => TileOutput::Store,
        }
    }
}

crate::multiversion! {
    /// `dst = max(src * scale + shift, 0)` over whole pixels.
    fn bn_relu_copy / bn_relu_copy_on(src: &[f32], scale: &[f32], shift: &[f32], dst: &mut [f32]) {
        let c = scale.len();
        for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for (((o, &v), &a), &b) in d.iter_mut().zip(s).zip(scale).zip(shift) {
                *o = (v * a + b).max(0.0);
            }
        }
    }
}

/// Copies whole pixels, applying the input transform when there is one.
fn load_pixels(src: &[f32], dst: &mut [f32], t: Option<&InputTransform<'_>>) {
    match t {
        Some(t) => bn_relu_copy(src, t.scale, t.shift, dst),
        None => dst.copy_from_slice(src),
    }
}

/// `v` rounded to bf16 (nearest, ties to even), as the 16 high bits of its f32 pattern.
#[inline(always)]
fn bf16_bits(v: f32) -> u32 {
    let b = v.to_bits();
    if v.is_nan() {
        (b >> 16) | 0x40
    } else {
        (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    }
}

crate::multiversion! {
    /// Packs pixels of `c` channels into bf16 channel pairs (`ceil(c / 2)` per pixel), applying
    /// the input transform when there is one. `dst` holds the pairs as `f32` bit patterns.
    fn pack_pairs / pack_pairs_on(src: &[f32], c: usize, scale: &[f32], shift: &[f32], transform: bool, dst: &mut [f32]) {
        let pairs = c.div_ceil(2);
        for (d, s) in dst.chunks_exact_mut(pairs).zip(src.chunks_exact(c)) {
            for (p, o) in d.iter_mut().enumerate() {
                let get = |i: usize| {
                    if i >= c {
                        0.0
                    } else if transform {
                        (s[i] * scale[i] + shift[i]).max(0.0)
                    } else {
                        s[i]
                    }
                };
                *o = f32::from_bits(bf16_bits(get(2 * p)) | (bf16_bits(get(2 * p + 1)) << 16));
            }
        }
    }
}

crate::multiversion! {
    /// A row of pixels (`c` channels each, an even count of pixels) as bf16 pixel pairs:
    /// `dst[m * c + j] = (bf16(src[2m][j]), bf16(src[2m + 1][j]))`.
    fn pixel_pairs_bf16 / pixel_pairs_bf16_on(src: &[f32], c: usize, dst: &mut [u32]) {
        for (d, two) in dst.chunks_exact_mut(c).zip(src.chunks_exact(2 * c)) {
            let (lo, hi) = two.split_at(c);
            for ((d, &lo), &hi) in d.iter_mut().zip(lo).zip(hi) {
                *d = bf16_bits(lo) | (bf16_bits(hi) << 16);
            }
        }
    }
}

/// `src` (`[rows, cols]` f32, `cols` a multiple of 16) transposed into `dst` (`[cols, stride]`
/// bf16, `rows <= stride`): 16 x 16 blocks with AVX-512, leftover rows one by one.
#[cfg(target_arch = "x86_64")]
fn transpose_bf16(src: &[f32], rows: usize, cols: usize, dst: &mut [u16], stride: usize) {
    assert!(bf16_supported() && cols.is_multiple_of(16) && rows <= stride);
    assert!(src.len() >= rows * cols && dst.len() >= cols * stride);
    let full = rows / 16 * 16;
    for r0 in (0..full).step_by(16) {
        for c0 in (0..cols).step_by(16) {
            // SAFETY: AVX-512 with BF16 was checked above; the block reads rows r0..r0 + 16 <= rows
            // and columns c0..c0 + 16 <= cols of src, and writes rows c0..c0 + 16 <= cols,
            // columns r0..r0 + 16 <= stride of dst (lengths asserted above).
            unsafe {
                crate::simd::avx512::transpose16_bf16(
                    src[r0 * cols + c0..].as_ptr(),
                    cols,
                    dst[c0 * stride + r0..].as_mut_ptr(),
                    stride,
                )
            };
        }
    }
    for r in full..rows {
        for c in 0..cols {
            dst[c * stride + r] = bf16_bits(src[r * cols + c]) as u16;
        }
    }
}

/// Weights `[kh, kw, cin, cout]` as bf16 pairs of input channels, `[kh, kw, ceil(cin/2), cout]`.
fn pack_weights_bf16(s: &ConvShape, w: &[f32], out: &mut [u32]) {
    let (taps, ci, co) = (s.kh * s.kw, s.cin, s.cout);
    let pairs = ci.div_ceil(2);
    for tap in 0..taps {
        for p in 0..pairs {
            for o in 0..co {
                let at = |i: usize| if i < ci { w[(tap * ci + i) * co + o] } else { 0.0 };
                out[(tap * pairs + p) * co + o] = bf16_bits(at(2 * p)) | (bf16_bits(at(2 * p + 1)) << 16);
            }
        }
    }
}

fn check_lens(s: &ConvShape, x: usize, w: usize, y: usize) {
    s.validate();
    assert_eq!(x, s.input_len(), "conv input length for {s:?}");
    assert_eq!(w, s.weight_len(), "conv weight length for {s:?}");
    assert_eq!(y, s.output_len(), "conv output length for {s:?}");
}

/// Packs im2col rows `m0..m0+rows` into `buf` (`[rows, patch]`), zeros where the window
/// overlaps the padding.
fn im2col(s: &ConvShape, x: &[f32], t: Option<&InputTransform<'_>>, m0: usize, rows: usize, buf: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let k = s.patch();
    let row_len = s.kw * s.cin;
    for r in 0..rows {
        let m = m0 + r;
        let img = m / (oh * ow);
        let oy = (m / ow) % oh;
        let ox = m % ow;
        let dst = &mut buf[r * k..(r + 1) * k];
        let ix0 = (ox * s.stride) as isize - s.pad as isize;
        // Columns of the window that fall inside the image, as kernel offsets.
        let kx_lo = (-ix0).max(0) as usize;
        let kx_hi = ((s.w as isize - ix0).min(s.kw as isize)).max(0) as usize;
        for ky in 0..s.kh {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            let seg = &mut dst[ky * row_len..(ky + 1) * row_len];
            if iy < 0 || iy >= s.h as isize || kx_lo >= kx_hi {
                seg.fill(0.0);
                continue;
            }
            seg[..kx_lo * s.cin].fill(0.0);
            seg[kx_hi * s.cin..].fill(0.0);
            let src = ((img * s.h + iy as usize) * s.w) as isize + ix0 + kx_lo as isize;
            let src = src as usize * s.cin;
            load_pixels(&x[src..src + (kx_hi - kx_lo) * s.cin], &mut seg[kx_lo * s.cin..kx_hi * s.cin], t);
        }
    }
}

/// Adds column tile rows back into one image of `dx` (`[h, w, cin]`): the adjoint of [`im2col`].
fn col2im_add(s: &ConvShape, cols: &[f32], first_pixel: usize, rows: usize, dx_img: &mut [f32]) {
    let ow = s.out_w();
    let k = s.patch();
    for r in 0..rows {
        let p = first_pixel + r;
        let (oy, ox) = (p / ow, p % ow);
        let src = &cols[r * k..(r + 1) * k];
        for ky in 0..s.kh {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            if iy < 0 || iy >= s.h as isize {
                continue;
            }
            for kx in 0..s.kw {
                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                if ix < 0 || ix >= s.w as isize {
                    continue;
                }
                let d = (iy as usize * s.w + ix as usize) * s.cin;
                let c = (ky * s.kw + kx) * s.cin;
                for (a, b) in dx_img[d..d + s.cin].iter_mut().zip(&src[c..c + s.cin]) {
                    *a += *b;
                }
            }
        }
    }
}

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

static PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

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
    fn without_winograd(self) -> Self {
        match self {
            ConvAlgorithm::Winograd => ConvAlgorithm::Direct,
            ConvAlgorithm::WinogradBf16 => ConvAlgorithm::DirectBf16,
            other => other,
        }
    }

    /// Whether this Winograd algorithm runs `s` (f32 Winograd what [`winograd::fits`], the bf16
    /// products what [`winograd::fits_bf16`]).
    #[cfg(target_arch = "x86_64")]
    fn winograd_runs(self, s: &ConvShape) -> bool {
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
const FEW_PIXELS: usize = 4096;

/// Most floats of gathered windows (4 MB: every strided layer of ResNet-50 at batch 1; at batch
/// 16 its two widest ones would take 43 MB more memory for no measured gain).
const WINDOW_FLOATS: usize = 1 << 20;

/// Whether the direct forward pass gathers a strided layer's input windows into rows first and
/// runs a 1x1 stride-1 pass over them as long rows: for layers (1x1 or wider) with weights well
/// beyond the cache, when the windows are few enough. Read in place, their short strided rows cut the micro-kernel's pixel blocks (ResNet-50's 7x7
/// stride-2 layers at batch 1 ran 1.1x slower on them than on the GEMM; gathered, 1.05-1.1x
/// faster than the GEMM in the kernel benchmark; its 28x28 layer, with 590 KB of weights,
/// 1.1x slower gathered than the GEMM).
fn gathers_windows(s: &ConvShape) -> bool {
    s.stride > 1
        && s.rows() <= FEW_PIXELS
        && s.rows() * s.patch() <= WINDOW_FLOATS
        && 4 * s.weight_len() > 2 * TASK_WEIGHT_BYTES
}

/// Whether the Winograd path runs this shape (on this CPU) and is worth it.
fn winograd_fits(s: &ConvShape) -> bool {
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
fn winograd_bf16_fits(s: &ConvShape) -> bool {
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
fn winograd_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("RESNET_WINOGRAD").as_deref() != Ok("0"))
}

/// Whether the AMX tiles fit a layer's forward pass (its backward-data pass swaps the channel
/// counts; where that does not fit, it runs on `vdpbf16ps`).
fn amx_fits(s: &ConvShape) -> bool {
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

/// `y = conv(t(x), w)`, or `y += ...` when `accumulate`, by im2col + GEMM.
fn forward_gemm(s: &ConvShape, x: &[f32], t: Option<&InputTransform<'_>>, w: &[f32], y: &mut [f32], accumulate: bool) {
    let (m, k, co) = (s.rows(), s.patch(), s.cout);
    let wmat = MatRef::row_major(w, k, co);
    let tile = s.tile_rows();
    // A 1x1 stride-1 convolution multiplies the input itself, unless it must be transformed first.
    let direct_input = s.is_pointwise() && t.is_none();
    if m <= tile {
        // Too few rows to split: one tile, and let the GEMM itself use all threads.
        if direct_input {
            matmul(MatMut::row_major(y, m, co), MatRef::row_major(x, m, k), wmat, accumulate, Parallelism::Pool);
        } else {
            with_tile(m * k, |buf| {
                im2col(s, x, t, 0, m, buf);
                matmul(MatMut::row_major(y, m, co), MatRef::row_major(buf, m, k), wmat, accumulate, Parallelism::Pool);
            });
        }
        return;
    }
    threads::install(|| {
        y.par_chunks_mut(tile * co).enumerate().for_each(|(i, ytile)| {
            let m0 = i * tile;
            let rows = ytile.len() / co;
            let out = MatMut::row_major(ytile, rows, co);
            if direct_input {
                let a = MatRef::row_major(&x[m0 * k..(m0 + rows) * k], rows, k);
                matmul(out, a, wmat, accumulate, Parallelism::Sequential);
            } else {
                with_tile(rows * k, |buf| {
                    im2col(s, x, t, m0, rows, buf);
                    matmul(out, MatRef::row_major(buf, rows, k), wmat, accumulate, Parallelism::Sequential);
                });
            }
        });
    });
}

/// Copies input rows `iy0 .. iy0 + rows` of image `img` into `strip` as rows of width
/// `w + 2 * pad`, with zeros for the padding and for rows outside the image: the part of the
/// zero-padded input that a band of output rows reads, built where it stays in cache.
///
/// With `bf16`, each pixel is stored as `ceil(cin / 2)` bf16 channel pairs instead (see
/// [`pack_pairs`]); zero bits are a bf16 zero pair, so the padding is the same. `row` is
/// scratch for one transformed input row (`w * cin` floats) in that case.
#[allow(clippy::too_many_arguments)]
fn fill_strip(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    img: usize,
    iy0: isize,
    rows: usize,
    strip: &mut [f32],
    bf16: bool,
    row: &mut [f32],
) {
    let (c, p) = (s.cin, s.pad);
    let e = if bf16 { c.div_ceil(2) } else { c };
    let wp = s.w + 2 * p;
    for (r, dst) in strip[..rows * wp * e].chunks_exact_mut(wp * e).enumerate() {
        let iy = iy0 + r as isize;
        if iy < 0 || iy >= s.h as isize {
            dst.fill(0.0);
            continue;
        }
        let src = ((img * s.h + iy as usize) * s.w) * c;
        dst[..p * e].fill(0.0);
        dst[(p + s.w) * e..].fill(0.0);
        let (from, to) = (&x[src..src + s.w * c], &mut dst[p * e..(p + s.w) * e]);
        match (bf16, t) {
            (false, _) => load_pixels(from, to, t),
            // An even channel count makes the pair layout the plain bf16 array of the row.
            #[cfg(target_arch = "x86_64")]
            (true, _) if c % 2 == 0 => {
                // Without a transform the row is converted straight from the input.
                let row: &[f32] = match t {
                    Some(_) => {
                        let row = &mut row[..s.w * c];
                        load_pixels(from, row, t);
                        row
                    }
                    None => from,
                };
                debug_assert_eq!(2 * to.len(), row.len());
                // SAFETY: bf16 support was checked by the caller; `to` holds `w * c / 2` f32
                // slots, i.e. `w * c` u16 slots, exactly the converted row, and overlaps
                // neither the input nor the scratch row.
                unsafe { crate::simd::avx512::to_bf16(row.as_ptr(), to.as_mut_ptr() as *mut u16, row.len()) };
            }
            (true, Some(t)) => pack_pairs(from, c, t.scale, t.shift, true, to),
            (true, None) => pack_pairs(from, c, &[], &[], false, to),
        }
    }
}

/// Weight bytes a task of the direct forward pass may stream from its own L2 cache: the micro-
/// kernels read a weight vector per handful of multiply-adds, which only the L2 feeds fast
/// enough (measured on ResNet-50's 7x7 and 14x14 layers at batch 1, whose weights are 2-9 MB).
const TASK_WEIGHT_BYTES: usize = 512 << 10;

/// Bytes of input a pass of the direct forward pass over a long row reads at most (its pixels'
/// windows, or a run of their channels): with a task's weight slice, within L2.
const LINE_INPUT_BYTES: usize = 256 << 10;
/// Output bytes a transformed long row (see [`LINE_INPUT_BYTES`]) is written in before the
/// transform reads them back, so that they are still in L2 (or L1): transforming each band of a
/// 56x56 1x1 layer of ResNet-50 at batch 1 (392 pixels, 400 KB) after writing all of it took
/// 2.15-3.17 ms on a Skylake-SP Xeon, in runs of 128 pixels 1.47-1.73 (`cargo bench -p
/// resnet-kernels --bench conv -- r50-b1-1x1-56-up/forward-infer`, two sittings).
const TRANSFORM_RUN_BYTES: usize = 128 << 10;

/// Input channels per pass of the direct forward pass over a long row of `pixels` pixels and
/// `cin` channels: all of them, or runs of whole vectors whose part of the row stays within
/// [`LINE_INPUT_BYTES`].
fn input_run(cin: usize, pixels: usize) -> usize {
    let runs = (4 * pixels * cin).div_ceil(LINE_INPUT_BYTES);
    cin.div_ceil(runs).next_multiple_of(16).min(cin)
}

/// Pixels of a transformed long row of `cout` channels written before the transform reads them
/// back (see [`TRANSFORM_RUN_BYTES`]), in whole 16-pixel micro-kernel blocks.
fn transform_run_pixels(cout: usize) -> usize {
    (TRANSFORM_RUN_BYTES / (4 * cout)).next_multiple_of(16)
}

/// How the direct forward pass cuts a layer into parallel tasks: bands of output rows of one
/// image, times runs of output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirectPlan {
    /// Output rows per band (the last band may be shorter).
    band: usize,
    /// Bands per image.
    bands: usize,
    /// Output channels per task: all of them while their weights fit [`TASK_WEIGHT_BYTES`],
    /// else runs of whole steps (see [`DirectPlan::new`]) that do, as near the same width as
    /// whole steps allow, so each task reads its slice of a large weight once from memory and
    /// reuses it for every pixel of its band.
    chunk: usize,
    /// Channel runs per band.
    chunks: usize,
}

impl DirectPlan {
    /// The plan for `s` with micro-kernel channel blocks of `block` and weights of
    /// `weight_bytes` per (tap, input channel, output channel). Bands have at most 8 rows,
    /// fewer when there are few images, so every thread gets several tasks, and as many.
    fn new(s: &ConvShape, block: usize, weight_bytes: usize) -> Self {
        Self::for_threads(s, block, weight_bytes, threads::num_threads())
    }

    /// [`Self::new`] for a pool of `threads` threads.
    fn for_threads(s: &ConvShape, block: usize, weight_bytes: usize, threads: usize) -> Self {
        let per_channel = s.kh * s.kw * s.cin * weight_bytes;
        // Runs of at least two vectors (the micro-kernels take fewer channels than their block
        // with more pixels; at one vector they wait on loads, not multiply-adds).
        let step = block.min(32);
        let widest_run = if s.cout * per_channel <= TASK_WEIGHT_BYTES {
            s.cout
        } else {
            (TASK_WEIGHT_BYTES / per_channel / step * step).max(step).min(s.cout)
        };
        // Runs as near the same width as whole steps allow, so that their tasks take about as
        // long (a 128-channel layer ran as 96 and 32 channels, one thread waiting for the other).
        let chunk = s.cout.div_ceil(s.cout.div_ceil(widest_run)).next_multiple_of(step).min(s.cout);
        let chunks = s.cout.div_ceil(chunk);
        let oh = s.out_h();
        let per_image = (4 * threads).div_ceil(s.n * chunks).max(1);
        let widest = oh.div_ceil(per_image).clamp(1, 8);
        // Down to half that height, a band that gives every thread as many tasks, all of as
        // many rows where one does (ResNet-50's 28-row layers at batch 1: 14 bands of 2 rather
        // than 10 of 3, the last of 1, which left a thread waiting a row in 14 for the other).
        let even_split = |b: usize| (s.n * chunks * oh.div_ceil(b)).is_multiple_of(threads);
        let heights = (widest.div_ceil(2)..=widest).rev();
        let band = (heights.clone().find(|&b| oh.is_multiple_of(b) && even_split(b)))
            .or_else(|| heights.clone().find(|&b| even_split(b)))
            .unwrap_or(widest);
        DirectPlan { band, bands: oh.div_ceil(band), chunk, chunks }
    }

    /// Tasks in all: channel runs outermost, so that a thread's consecutive tasks share their
    /// weight slice.
    fn tasks(&self, n: usize) -> usize {
        self.chunks * n * self.bands
    }

    /// Image, band and channel run of task `i`.
    fn task(&self, n: usize, i: usize) -> (usize, usize, usize) {
        let (ch, rest) = (i / (n * self.bands), i % (n * self.bands));
        (rest / self.bands, rest % self.bands, ch)
    }
}

/// Copies the weight `w` (`[k, cout]`) into panels of `chunk` output channels (the last one
/// narrower if `chunk` does not divide `cout`): panel `p` is `[k, width]`, contiguous, from
/// `p * chunk * k` in `dst`.
///
/// A task of the direct forward pass reads one run of channels of every weight row; in the
/// `[k, cout]` layout those are a few hundred bytes every `4 * cout` bytes, a page apart or
/// nearly, which neither the hardware prefetchers nor the TLB follow: ResNet-50's 7x7 layers at
/// batch 1 ran 1.4x slower from L2 and 2.2x slower from memory than from panels kept between
/// calls (`cargo bench -p resnet-kernels --bench conv -- r50-b1-3x3-7/forward`). The copy reads
/// `w` front to back, each thread a range of rows.
fn pack_panels(w: &[f32], k: usize, cout: usize, chunk: usize, dst: &mut [f32]) {
    assert_eq!(w.len(), k * cout);
    let ranges: Vec<_> = split_even(k, threads::num_threads()).collect();
    // Every thread's rows of every panel: (first channel, width, destination rows).
    let mut pieces: Vec<Vec<(usize, usize, &mut [f32])>> = ranges.iter().map(|_| Vec::new()).collect();
    let mut rest = &mut dst[..k * cout];
    for c_lo in (0..cout).step_by(chunk) {
        let width = chunk.min(cout - c_lo);
        let (mut panel, tail) = rest.split_at_mut(k * width);
        rest = tail;
        for (range, part) in ranges.iter().zip(&mut pieces) {
            let (rows, tail) = panel.split_at_mut(range.len() * width);
            panel = tail;
            part.push((c_lo, width, rows));
        }
    }
    threads::install(|| {
        pieces.into_par_iter().zip(ranges).for_each(|(mut part, range)| {
            for (i, row) in w[range.start * cout..range.end * cout].chunks_exact(cout).enumerate() {
                for (c_lo, width, rows) in part.iter_mut() {
                    rows[i * *width..(i + 1) * *width].copy_from_slice(&row[*c_lo..*c_lo + *width]);
                }
            }
        });
    });
}

/// An output that parallel tasks share, each writing only its own elements (the direct forward
/// pass: a band's rows in a run of channels; Winograd: the pixels of its tiles).
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);
// SAFETY: the tasks write disjoint elements (see the users).
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The element `offset` floats in (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` is within the output.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded contract.
        unsafe { self.0.add(offset) }
    }
}

/// `y (+)= conv(t(x), w)` with the AVX-512 micro-kernels, in the tasks of a [`DirectPlan`],
/// and the epilogue while the output is still in cache: the output transform on each line a
/// task writes, the per-channel sums when each task computes whole rows (by another pass
/// otherwise).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn forward_direct(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    w: &[f32],
    version: Option<u64>,
    w_bf16: Option<&[u32]>,
    amx: bool,
    y: &mut [f32],
    accumulate: bool,
    epilogue: Epilogue<'_, '_>,
    ws: &mut Workspace,
) {
    use crate::simd::avx512::{ConvTileArgs, ConvTileArgsBf16, TileAffine};
    assert!(simd::isa() >= Isa::Avx512, "direct convolution needs AVX-512");
    let bf16 = w_bf16.is_some();
    assert!(!bf16 || bf16_supported(), "bf16 convolution needs AVX512_BF16");
    let (oh, ow, co) = (s.out_h(), s.out_w(), s.cout);
    let wp = s.w + 2 * s.pad;
    // Strip elements per pixel: channels, or bf16 channel pairs.
    let e = if bf16 { s.cin.div_ceil(2) } else { s.cin };
    let args = ConvTileArgs {
        a_pixel_stride: s.stride * s.cin,
        a_row_stride: wp * s.cin,
        cin: s.cin,
        kh: s.kh,
        kw: s.kw,
        w_row_stride: co,
        y_pixel_stride: co,
    };
    let args_bf16 =
        ConvTileArgsBf16 { a_pixel_stride: s.stride * e, a_row_stride: wp * e, pairs: e, kh: s.kh, kw: s.kw, cout: co };
    let row_len = ow * co;
    let amx_step = if amx && bf16 { crate::simd::amx::pairs_per_step(e, co) } else { None };
    let kernel = match amx_step {
        Some(kp) => direct::ConvKernel::Amx { kp, wide: ow > 16 },
        None => direct::ConvKernel::choose(s),
    };
    let block = kernel.channel_block(co);
    let plan = DirectPlan::new(s, block, if bf16 { 2 } else { 4 });
    // A 1x1 stride-1 layer without padding reads its band's pixels as one long row, so the
    // micro-kernel's pixel blocks are not cut at the end of each (short) image row; in f32 and
    // without an input transform it reads them in place rather than from a copy.
    let long_rows = s.is_pointwise();
    let in_place = long_rows && t.is_none() && !bf16;
    let fused = matches!(epilogue, Epilogue::Stats(_)) && plan.chunks == 1;
    // An output transform is applied in registers by the f32 general kernel, by a pass over
    // what was written otherwise (`transform`).
    let (fused_affine, transform) = match &epilogue {
        Epilogue::Output(o) | Epilogue::OntoResidual(o) if !bf16 && kernel.fuses_affine() => (Some(*o), None),
        Epilogue::Output(o) => (None, Some(*o)),
        Epilogue::OntoResidual(_) => unreachable!("checked by adds_residual_in_place"),
        _ => (None, None),
    };
    let onto_residual = matches!(epilogue, Epilogue::OntoResidual(_));
    assert!(!(onto_residual && accumulate), "a residual in an output being added to");
    let mut partials = std::mem::take(&mut ws.f64s);
    // A slot of sums per task (used when fused).
    let task_sums = take(&mut partials, plan.tasks(s.n) * 2 * co);
    let out = SharedOutput(y.as_mut_ptr());
    // Weight rows of `kh * kw * cin` taps and channels; with several channel runs (f32), each
    // run's slice is first copied into a contiguous panel (see `pack_panels`).
    let k_rows = s.kh * s.kw * s.cin;
    let panels = plan.chunks > 1 && !bf16;
    let mut run_tasks = |w: &[f32]| {
        threads::install(|| {
            task_sums.par_chunks_mut(2 * co).enumerate().for_each(|(i, sums)| {
                let (img, b, ch) = plan.task(s.n, i);
                let oy0 = b * plan.band;
                let rows = plan.band.min(oh - oy0);
                let (c_lo, c_hi) = (ch * plan.chunk, ((ch + 1) * plan.chunk).min(co));
                let strip_rows = (rows - 1) * s.stride + s.kh;
                let strip_len = if in_place { 0 } else { strip_rows * wp * e };
                let row_len_in = if bf16 { s.w * s.cin } else { 0 };
                with_tile(strip_len + 2 * co + row_len_in, |tile| {
                    let (strip, rest) = tile.split_at_mut(strip_len);
                    let (scratch, in_row) = rest.split_at_mut(2 * co);
                    let strip: &[f32] = if in_place {
                        let at = (img * s.h + oy0) * s.w * s.cin;
                        &x[at..at + rows * s.w * s.cin]
                    } else {
                        let iy0 = (oy0 * s.stride) as isize - s.pad as isize;
                        fill_strip(s, x, t, img, iy0, strip_rows, strip, bf16, in_row);
                        strip
                    };
                    let band_at = (img * oh + oy0) * row_len;
                    let (line_count, line_px) = if long_rows { (1, rows * ow) } else { (rows, ow) };
                    // Input channels per pass over a line: all of them, but for long rows of many
                    // channels runs whose part of the line (and of the weights) stays in L2, the
                    // later runs adding to the output.
                    let k_run = if long_rows && !bf16 { input_run(s.cin, line_px) } else { s.cin };
                    // A first run's raw sums would overwrite the residual (checked by
                    // adds_residual_in_place; once a task, so checked in release builds too).
                    assert!(!onto_residual || k_run == s.cin, "a residual in an output written in runs");
                    // Pixels px_lo .. px_hi of output line `r` (an image row, or the whole band
                    // for long rows), channels co0 .. co0 + channels: the micro-kernel over their
                    // pixel blocks.
                    let line = |r: usize, co0: usize, channels: usize, px_lo: usize, px_hi: usize| {
                        let a_row = r * s.stride * wp * e;
                        let r_max = kernel.max_pixels(channels);
                        for k0 in (0..s.cin).step_by(k_run) {
                            // In f32 only (k_run = cin otherwise): channels k0.. of every window
                            // and weight rows k0.. of the 1x1 weight.
                            // Weight row k0, lane co0: in the run's panel, or in the whole weight.
                            let (w_run, w_row_stride) = if panels {
                                let width = c_hi - c_lo;
                                (c_lo * k_rows + k0 * width + co0 - c_lo, width)
                            } else {
                                (k0 * co + co0, co)
                            };
                            let args = ConvTileArgs { cin: k_run.min(s.cin - k0), w_row_stride, ..args };
                            let a_run = a_row + k0;
                            let accumulate = accumulate || k0 > 0;
                            let last_run = k0 + k_run >= s.cin;
                            let mut ox = px_lo;
                            while ox < px_hi {
                                let px = r_max.min(px_hi - ox);
                                // The window of the last pixel, last tap, last channel ends at
                                // a_row + (kh - 1) * wp * cin + ((ox + px - 1) * stride + kw) * cin
                                // <= (r * stride + kh) * wp * cin <= strip.len(): the strip holds
                                // the padded input rows of the whole band (for long rows: kh = kw =
                                // stride = 1, no padding, and rows * ow pixels in the strip, whose
                                // channel runs end by the pixel's end).
                                debug_assert!(
                                    a_row + (s.kh - 1) * wp * e + ((ox + px - 1) * s.stride + s.kw) * e <= strip.len()
                                );
                                let a = a_run + ox * s.stride * e;
                                let at = band_at + (r * line_px + ox) * co + co0;
                                // SAFETY (of `at`): pixel ox of line r lies in this band of the
                                // output.
                                let out = unsafe { out.at(at) };
                                // The output transform of these sums, once they are complete.
                                let affine = fused_affine.filter(|_| last_run).map(|o| {
                                    let a = o.tile_affine(co0, at);
                                    // The residual in the output: the tile's own elements, each
                                    // read before the sum is stored over it.
                                    if onto_residual {
                                        TileAffine { residual: Some(out.cast_const()), ..a }
                                    } else {
                                        a
                                    }
                                });
                                // SAFETY: AVX-512 (and, for bf16, AVX512_BF16) was checked above;
                                // the input windows lie in the strip (bound above), the weight rows
                                // `tap * cin + ci` (or pairs; from row k0 on) with lanes
                                // `co0..co0 + channels` lie in the weights (`kh * kw * cin * cout`
                                // floats or pairs, checked by the caller), and the output tile lies
                                // in this row of this task's band, which overlaps neither input;
                                // the residual is another buffer of the output's shape, or (onto
                                // the residual) the tile itself, read before it is stored over.
                                // The bf16 strip holds u32 pair patterns in f32 slots of the same
                                // size.
                                unsafe {
                                    match w_bf16 {
                                        None => kernel.run(
                                            px,
                                            channels,
                                            &args,
                                            strip[a..].as_ptr(),
                                            w[w_run..].as_ptr(),
                                            out,
                                            accumulate,
                                            affine.as_ref(),
                                        ),
                                        Some(wb) => kernel.run_bf16(
                                            px,
                                            channels,
                                            &args_bf16,
                                            strip[a..].as_ptr() as *const u32,
                                            wb[w_run..].as_ptr(),
                                            out,
                                            accumulate,
                                        ),
                                    }
                                }
                                ox += px;
                            }
                        }
                    };
                    if plan.chunks == 1 {
                        // Whole rows: each is summed for the statistics, or transformed, right after
                        // it is written (or as, by the general kernel); a long row that is
                        // transformed goes in runs of pixels whose output stays in L2 until the
                        // transform has read it (and whose input stays in cache for every block
                        // of channels).
                        let transformed = transform.is_some() || fused_affine.is_some();
                        let px_run =
                            if long_rows && transformed { transform_run_pixels(co).min(line_px) } else { line_px };
                        for r in 0..line_count {
                            for px_lo in (0..line_px).step_by(px_run) {
                                let px_hi = (px_lo + px_run).min(line_px);
                                for co0 in (0..co).step_by(block) {
                                    line(r, co0, (co - co0).min(block), px_lo, px_hi);
                                }
                                if let Some(o) = transform {
                                    let at = band_at + (r * line_px + px_lo) * co;
                                    // SAFETY: with one channel run this task alone writes its
                                    // band's rows, and these pixels of line r lie in them; the
                                    // writes above are done.
                                    let written =
                                        unsafe { std::slice::from_raw_parts_mut(out.at(at), (px_hi - px_lo) * co) };
                                    o.apply(written, at, 0, co);
                                }
                            }
                            if fused {
                                let (s1, s2) = sums.split_at_mut(co);
                                if r == 0 {
                                    s1.fill(0.0);
                                    s2.fill(0.0);
                                }
                                let len = line_px * co;
                                // SAFETY: with one channel run this task alone writes its band's
                                // rows, and line r lies in them; the writes above are done.
                                let written = unsafe { std::slice::from_raw_parts(out.at(band_at + r * len), len) };
                                let (t1, t2) = scratch.split_at_mut(co);
                                crate::batch_norm::add_sums(written, s1, s2, t1, t2);
                            }
                        }
                    } else {
                        // A slice of the channels: its weights stay in L2 while every row uses them.
                        for co0 in (c_lo..c_hi).step_by(block) {
                            let channels = (c_hi - co0).min(block);
                            for r in 0..line_count {
                                line(r, co0, channels, 0, line_px);
                                if let Some(o) = transform {
                                    for p in 0..line_px {
                                        let at = band_at + (r * line_px + p) * co + co0;
                                        // SAFETY: pixel p of line r lies in this task's band, and
                                        // this task alone writes its channels co0..co0 + channels
                                        // (other tasks write other channels of the pixel); the
                                        // writes above are done.
                                        let px = unsafe { std::slice::from_raw_parts_mut(out.at(at), channels) };
                                        o.apply(px, at, co0, channels);
                                    }
                                }
                            }
                        }
                    }
                });
            });
        });
    };
    if panels {
        let cache = &mut ws.panels;
        match version {
            Some(v) if cache.key == Some((v, plan.chunk)) => run_tasks(&cache.data[..k_rows * co]),
            Some(v) if cache.last_version == Some(v) => {
                // The second pass of this weight version: keep its panels.
                pack_panels(w, k_rows, co, plan.chunk, take(&mut cache.data, k_rows * co));
                cache.key = Some((v, plan.chunk));
                run_tasks(&cache.data[..k_rows * co]);
            }
            _ => {
                *cache = PanelCache { last_version: version, ..PanelCache::default() };
                with_filter(k_rows * co, |packed| {
                    pack_panels(w, k_rows, co, plan.chunk, packed);
                    run_tasks(packed);
                });
            }
        }
    } else {
        run_tasks(w);
    }
    // Fused sums are added up from the task slots; otherwise another pass over the output.
    match epilogue {
        Epilogue::Stats(total) if fused => {
            crate::batch_norm::sum_parts_in_order(task_sums, total);
            ws.f64s = partials;
        }
        Epilogue::Output(_) | Epilogue::OntoResidual(_) => ws.f64s = partials,
        other => {
            ws.f64s = partials;
            other.run_after(y, co, ws);
        }
    }
}

/// Forward pass with a chosen algorithm (writes, or adds into, `y`), then the epilogue.
#[allow(clippy::too_many_arguments)]
fn forward_with(
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
        let kernel = direct::ConvKernel::choose(&s);
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
fn forward_checked(
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

/// Gradient of the input: `dx (+)= conv2d_forward` adjoint applied to `dy`.
///
/// # Shapes
/// `dy: [n, oh, ow, cout]`, `w: [kh, kw, cin, cout]`, `dx: [n, h, w, cin]`.
///
/// # Panics
/// If a slice length disagrees with `s`.
pub fn conv2d_backward_data(
    s: &ConvShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    conv2d_backward_data_with(ConvAlgorithm::for_shape(s), s, dy, w, dx, accumulate, ws);
}

/// [`conv2d_backward_data`] with a chosen algorithm for its stride-1 cases.
///
/// # Panics
/// If a slice length disagrees with `s`, or the CPU cannot run `algo`.
pub fn conv2d_backward_data_with(
    algo: ConvAlgorithm,
    s: &ConvShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    ws: &mut Workspace,
) {
    check_lens(s, dx.len(), w.len(), dy.len());
    let (k, co, ci) = (s.patch(), s.cout, s.cin);
    if s.is_pointwise() {
        // dx[m, ci] = sum_co dy[m, co] * w[ci, co]: a forward 1x1 convolution with w transposed.
        let mut wt = std::mem::take(&mut ws.weights);
        transpose(w, ci, co, take(&mut wt, ci * co));
        let t = ConvShape { cin: co, cout: ci, ..*s };
        forward_with(algo, &t, dy, None, &wt[..ci * co], None, dx, accumulate, Epilogue::None, ws);
        ws.weights = wt;
        return;
    }
    if s.stride == 1 && s.pad < s.kh && s.pad < s.kw && s.kh == s.kw {
        // In the forward pass: y[oy] = sum_ky x[oy + ky - p] w[ky]. Hence
        // dx[iy] = sum_ky' dy[iy - (k-1-p) + ky'] w[k-1-ky']: a stride-1 convolution of dy with
        // the flipped, in/out-transposed weight and padding k-1-p.
        let mut flipped = std::mem::take(&mut ws.weights);
        {
            let f = take(&mut flipped, s.weight_len());
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let src = ((s.kh - 1 - ky) * s.kw + (s.kw - 1 - kx)) * ci * co;
                    let dst = (ky * s.kw + kx) * co * ci;
                    transpose(&w[src..src + ci * co], ci, co, &mut f[dst..dst + co * ci]);
                }
            }
        }
        let t = ConvShape {
            n: s.n,
            h: s.out_h(),
            w: s.out_w(),
            cin: co,
            cout: ci,
            kh: s.kh,
            kw: s.kw,
            stride: 1,
            pad: s.kh - 1 - s.pad,
        };
        debug_assert_eq!((t.out_h(), t.out_w()), (s.h, s.w));
        forward_with(algo, &t, dy, None, &flipped[..s.weight_len()], None, dx, accumulate, Epilogue::None, ws);
        ws.weights = flipped;
        return;
    }
    // Strided: dcols = dy * w^T per tile of one image, scattered back into that image.
    let wt = MatRef::row_major(w, k, co).t();
    let pixels = s.out_h() * s.out_w();
    let tile = s.tile_rows().min(pixels);
    let img_len = s.h * s.w * ci;
    threads::install(|| {
        dx.par_chunks_mut(img_len).enumerate().for_each(|(img, dx_img)| {
            if !accumulate {
                dx_img.fill(0.0);
            }
            with_tile(tile * k, |buf| {
                let mut p0 = 0;
                while p0 < pixels {
                    let rows = tile.min(pixels - p0);
                    let start = (img * pixels + p0) * co;
                    let dyt = MatRef::row_major(&dy[start..start + rows * co], rows, co);
                    matmul(MatMut::row_major(&mut buf[..rows * k], rows, k), dyt, wt, false, Parallelism::Sequential);
                    col2im_add(s, buf, p0, rows, dx_img);
                    p0 += rows;
                }
            });
        });
    });
}

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

/// Per-part weight gradients by im2col + GEMM over a split of the output pixels.
fn backward_weight_gemm(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    dy: &[f32],
    partials: &mut [f32],
    parts: usize,
) {
    let (m, k, co) = (s.rows(), s.patch(), s.cout);
    let tile = s.tile_rows();
    let ranges: Vec<_> = split_even(m, parts).collect();
    threads::install(|| {
        partials.par_chunks_mut(k * co).zip(ranges).for_each(|(acc, range)| {
            let mut first = true;
            let mut m0 = range.start;
            while m0 < range.end {
                let rows = tile.min(range.end - m0);
                let g = MatRef::row_major(&dy[m0 * co..(m0 + rows) * co], rows, co);
                let out = MatMut::row_major(acc, k, co);
                if s.is_pointwise() && t.is_none() {
                    let a = MatRef::row_major(&x[m0 * k..(m0 + rows) * k], rows, k).t();
                    matmul(out, a, g, !first, Parallelism::Sequential);
                } else {
                    with_tile(rows * k, |buf| {
                        im2col(s, x, t, m0, rows, buf);
                        matmul(out, MatRef::row_major(buf, rows, k).t(), g, !first, Parallelism::Sequential);
                    });
                }
                first = false;
                m0 += rows;
            }
            if first {
                acc.fill(0.0);
            }
        });
    });
}

/// The bands of output rows `(image, oy0, rows)` covering the flat rows `range` (`image * oh +
/// oy`), at most `band` rows each and never crossing an image.
#[cfg(target_arch = "x86_64")]
fn row_bands(range: std::ops::Range<usize>, oh: usize, band: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut row = range.start;
    std::iter::from_fn(move || {
        (row < range.end).then(|| {
            let (img, oy0) = (row / oh, row % oh);
            let nrows = band.min(oh - oy0).min(range.end - row);
            row += nrows;
            (img, oy0, nrows)
        })
    })
}

/// Per-part weight gradients with the AVX-512 micro-kernel. Parts split the output rows
/// `(image, oy)`; within a part, bands of rows small enough to stay in cache get their padded
/// input strip built once and are then swept once per kernel tap and channel block.
#[cfg(target_arch = "x86_64")]
fn backward_weight_direct(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    dy: &[f32],
    partials: &mut [f32],
    parts: usize,
) {
    use crate::simd::avx512::WgradTileArgs;
    assert!(simd::isa() >= Isa::Avx512, "direct convolution needs AVX-512");
    let (oh, ow, co, ci) = (s.out_h(), s.out_w(), s.cout, s.cin);
    let wp = s.w + 2 * s.pad;
    let (k, rows) = (s.patch(), s.n * oh);
    // Rows per band: keep the band's dy and input strip within ~128 KiB.
    let band = ((32 * 1024) / (ow * co + s.stride * wp * ci).max(1)).clamp(1, oh);
    let ranges: Vec<_> = split_even(rows, parts).collect();
    threads::install(|| {
        partials.par_chunks_mut(k * co).zip(ranges).for_each(|(acc, range)| {
            acc.fill(0.0);
            for (img, oy0, nrows) in row_bands(range, oh, band) {
                let strip_rows = (nrows - 1) * s.stride + s.kh;
                let args = WgradTileArgs {
                    rows: nrows,
                    pixels: ow,
                    x_pixel_stride: s.stride * ci,
                    x_row_stride: s.stride * wp * ci,
                    dy_pixel_stride: co,
                    dy_row_stride: ow * co,
                    acc_stride: co,
                };
                let dy_band = (img * oh + oy0) * ow * co;
                with_tile(strip_rows * wp * ci, |strip| {
                    fill_strip(
                        s,
                        x,
                        t,
                        img,
                        (oy0 * s.stride) as isize - s.pad as isize,
                        strip_rows,
                        strip,
                        false,
                        &mut [],
                    );
                    // The 3-wide kernel keeps three taps of accumulators plus a window of three
                    // dy vectors per channel vector: it fits the registers up to 48 channels.
                    if s.stride == 1 && s.kw == 3 && co <= 48 {
                        for ky in 0..s.kh {
                            let x_row = ky * wp * ci;
                            let acc_row = ky * 3 * ci * co;
                            for co0 in (0..co).step_by(64) {
                                let channels = (co - co0).min(64);
                                let rc_max = direct::wgrad_s1k3_channels(channels.div_ceil(16));
                                let mut c0 = 0;
                                while c0 < ci {
                                    let rc = rc_max.min(ci - c0);
                                    debug_assert!(
                                        x_row
                                            + (nrows - 1) * args.x_row_stride
                                            + (ow + 1) * args.x_pixel_stride
                                            + c0
                                            + rc
                                            <= strip.len()
                                    );
                                    debug_assert!(
                                        acc_row + 2 * ci * co + (c0 + rc - 1) * co + co0 + channels <= acc.len()
                                    );
                                    // SAFETY: AVX-512 was checked above. With stride 1 and a
                                    // 3-wide kernel the strip rows are ow + 2 columns wide (pad 1)
                                    // or wider, so columns q < ow + 2 of rows r + ky exist; dy reads
                                    // stay in this band, accumulator writes in taps (ky, 0..3),
                                    // channels c0..c0 + rc, lanes co0..co0 + channels of this
                                    // part's own buffer.
                                    unsafe {
                                        direct::wgrad_tile_s1k3(
                                            rc,
                                            channels,
                                            &args,
                                            ci * co,
                                            strip.as_ptr().add(x_row + c0),
                                            dy.as_ptr().add(dy_band + co0),
                                            acc.as_mut_ptr().add(acc_row + c0 * co + co0),
                                        );
                                    }
                                    c0 += rc;
                                }
                            }
                        }
                        return;
                    }
                    for ky in 0..s.kh {
                        for kx in 0..s.kw {
                            let x_tap = (ky * wp + kx) * ci;
                            let acc_tap = (ky * s.kw + kx) * ci * co;
                            for co0 in (0..co).step_by(64) {
                                let channels = (co - co0).min(64);
                                let rc_max = direct::wgrad_channels(channels.div_ceil(16));
                                let mut c0 = 0;
                                while c0 < ci {
                                    let rc = rc_max.min(ci - c0);
                                    debug_assert!(
                                        x_tap
                                            + (nrows - 1) * args.x_row_stride
                                            + (ow - 1) * args.x_pixel_stride
                                            + c0
                                            + rc
                                            <= strip.len()
                                    );
                                    debug_assert!(dy_band + nrows * ow * co <= dy.len());
                                    debug_assert!(acc_tap + (c0 + rc - 1) * co + co0 + channels <= acc.len());
                                    // SAFETY: AVX-512 was checked above. Input reads stay in the
                                    // strip (strip row r * stride + ky <= strip_rows - 1, column
                                    // ox * stride + kx <= wp - 1), dy reads in this band's rows, and
                                    // accumulator writes in tap (ky, kx), channels c0..c0 + rc,
                                    // lanes co0..co0 + channels of this part's own buffer.
                                    unsafe {
                                        direct::wgrad_tile(
                                            rc,
                                            channels,
                                            &args,
                                            strip.as_ptr().add(x_tap + c0),
                                            dy.as_ptr().add(dy_band + co0),
                                            acc.as_mut_ptr().add(acc_tap + c0 * co + co0),
                                        );
                                    }
                                    c0 += rc;
                                }
                            }
                        }
                    }
                });
            }
        });
    });
}

/// Whether the bf16 pixel-pair weight-gradient path (AMX or `vdpbf16ps`) takes a layer: stride
/// 1, channels in blocks of 16, and an even output width (pixel pairs never straddle two rows).
fn pairs_weight_gradient_fits(s: &ConvShape) -> bool {
    s.stride == 1 && s.cin.is_multiple_of(16) && s.cout.is_multiple_of(16) && s.out_w().is_multiple_of(2)
}

/// Per-part weight gradients in bf16 (bf16 products, f32 sums) on AMX tiles or with
/// `vdpbf16ps`, computed transposed: `dw[tap]^T (cout x cin) += dy^T (cout x pixels) * x_tap
/// (pixels x cin)`, the pixels of a band of output rows being the reduction, taken in pairs.
/// Per band, dy is transposed to bf16 once, and for each kernel column `kx` the input strip is
/// repacked as pixel pairs in rows of the output width, so that every kernel row `ky` is a
/// fixed offset into it.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn backward_weight_pairs(
    s: &ConvShape,
    x: &[f32],
    t: Option<&InputTransform<'_>>,
    dy: &[f32],
    partials: &mut [f32],
    transposed: &mut [f32],
    parts: usize,
    amx: bool,
) {
    use crate::scratch::with_bf16;
    assert!(bf16_supported() && pairs_weight_gradient_fits(s), "bf16 weight gradient on {s:?}");
    assert!(!amx || amx_supported(), "AMX weight gradient without AMX");
    let (oh, ow, co, ci) = (s.out_h(), s.out_w(), s.cout, s.cin);
    let wp = s.w + 2 * s.pad;
    let (k, rows, taps) = (s.patch(), s.n * oh, s.kh * s.kw);
    // About 512 pixels per band: 16 tile steps per accumulator load.
    let band = (512 / ow).clamp(1, oh);
    let ranges: Vec<_> = split_even(rows, parts).collect();
    threads::install(|| {
        partials.par_chunks_mut(k * co).zip(transposed.par_chunks_mut(k * co)).zip(ranges).for_each(
            |((acc, acc_t), range)| {
                acc_t.fill(0.0);
                for (img, oy0, nrows) in row_bands(range, oh, band) {
                    let strip_rows = nrows - 1 + s.kh;
                    let pixels = nrows * ow;
                    let padded = pixels.next_multiple_of(32);
                    // Pixel pairs of one kx layout: every ky offset plus a whole padded band.
                    let pairs = (s.kh - 1) * ow / 2 + padded / 2;
                    let dy_band = &dy[(img * oh + oy0) * ow * co..][..pixels * co];
                    with_tile(strip_rows * wp * ci, |strip| {
                        let iy0 = oy0 as isize - s.pad as isize;
                        fill_strip(s, x, t, img, iy0, strip_rows, strip, false, &mut []);
                        with_bf16(co * padded, pairs * ci, |dy_t, xp| {
                            transpose_bf16(dy_band, pixels, co, dy_t, padded);
                            for dst in dy_t.chunks_exact_mut(padded) {
                                dst[pixels..].fill(0);
                            }
                            for kx in 0..s.kw {
                                // Pair m holds pixels 2m and 2m + 1 of rows of width ow, shifted by kx.
                                let (rows_part, rest) = xp.split_at_mut(strip_rows * ow / 2 * ci);
                                for (r, dst) in rows_part.chunks_exact_mut(ow / 2 * ci).enumerate() {
                                    let at = (r * wp + kx) * ci;
                                    pixel_pairs_bf16(&strip[at..at + ow * ci], ci, dst);
                                }
                                rest.fill(0);
                                if !amx {
                                    let g = crate::simd::avx512::WgradPairsArgs {
                                        pairs: pixels / 2,
                                        dy_stride: padded,
                                        x_pair_stride: ci,
                                        x_tap_stride: ow / 2 * ci,
                                        acc_row_stride: ci,
                                        acc_tap_stride: s.kw * co * ci,
                                    };
                                    let acc_kx = &mut acc_t[kx * co * ci..];
                                    debug_assert!(acc_kx.len() >= (s.kh - 1) * s.kw * co * ci + co * ci);
                                    debug_assert!(xp.len() >= (s.kh - 1) * ow / 2 * ci + pixels / 2 * ci);
                                    // SAFETY: bf16 support was checked above; dy_t holds co rows
                                    // of `padded` >= pixels values; xp holds the pairs of every ky
                                    // offset plus a band (`pairs` counts them), ci channels each;
                                    // acc_kx holds the taps (ky, kx) of this part's own buffer.
                                    unsafe {
                                        direct::wgrad_pairs(
                                            &g,
                                            s.kh,
                                            co,
                                            ci,
                                            dy_t.as_ptr(),
                                            xp.as_ptr(),
                                            acc_kx.as_mut_ptr(),
                                        )
                                    };
                                    continue;
                                }
                                for ky in 0..s.kh {
                                    let tap = ky * s.kw + kx;
                                    let b0 = ky * ow / 2 * ci;
                                    // Blocks of 32 x 32 (two by two tiles), else 16 x 64.
                                    let (pb, nb_max) = if co >= 32 { (2, 2) } else { (1, 4) };
                                    for o0 in (0..co).step_by(16 * pb) {
                                        let pb = pb.min((co - o0) / 16);
                                        let mut c0 = 0;
                                        while c0 < ci {
                                            let nb = nb_max.min((ci - c0) / 16);
                                            let c_at = (tap * co + o0) * ci + c0;
                                            debug_assert!(b0 + (padded / 2 - 1) * ci + c0 + 16 * nb <= xp.len());
                                            debug_assert!(c_at + (16 * pb - 1) * ci + 16 * nb <= acc_t.len());
                                            // SAFETY: AMX was checked above. dy_t rows o0..o0 + 16 * pb
                                            // hold `padded` values; xp pair rows ky * ow / 2 ..
                                            // + padded / 2 exist (pairs counts them) with channels
                                            // c0..c0 + 16 * nb <= ci; the accumulator block is
                                            // rows o0..o0 + 16 * pb of tap `tap`, channels c0.. of
                                            // this part's own buffer (bounds asserted above).
                                            unsafe {
                                                crate::simd::amx::gemm_tile(
                                                    padded / 32,
                                                    pb,
                                                    nb,
                                                    dy_t[o0 * padded..].as_ptr(),
                                                    padded,
                                                    xp[b0 + c0..].as_ptr(),
                                                    ci,
                                                    acc_t[c_at..].as_mut_ptr(),
                                                    ci,
                                                );
                                            }
                                            c0 += 16 * nb;
                                        }
                                    }
                                }
                            }
                        });
                    });
                }
                for tap in 0..taps {
                    transpose(&acc_t[tap * co * ci..][..co * ci], co, ci, &mut acc[tap * ci * co..][..ci * co]);
                }
            },
        );
    });
}

/// Dispatch from run-time tile sizes to the const-generic micro-kernels.
#[cfg(target_arch = "x86_64")]
mod direct {
    use crate::simd::amx;
    use crate::simd::avx512::{self, lane_mask, ConvTileArgs, ConvTileArgsBf16, TileAffine, WgradTileArgs};
    use std::arch::x86_64::__mmask16;

    macro_rules! by_rows {
        ($kernel:ident, $rows:expr, $nb:literal, [$($r:literal)*], $args:tt) => {
            match $rows {
                $($r => $kernel::<$r, $nb> $args,)*
                _ => unreachable!("tile of {} rows", $rows),
            }
        };
    }

    /// [`avx512::wgrad_pairs_bf16`] over `kh` taps (one kernel column), `co` output and `ci`
    /// input channels, both multiples of 16: the three rows of a 3x3 kernel share each
    /// broadcast; 24 accumulators or fewer per call.
    ///
    /// # Safety
    /// The kernel's contract for the whole block (`R`, `T` and `NB` cover it).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn wgrad_pairs(
        g: &avx512::WgradPairsArgs,
        kh: usize,
        co: usize,
        ci: usize,
        dy: *const u16,
        x: *const u32,
        acc: *mut f32,
    ) {
        use avx512::wgrad_pairs_bf16 as k;
        debug_assert!(co.is_multiple_of(16) && ci.is_multiple_of(16));
        type Kernel = unsafe fn(&avx512::WgradPairsArgs, *const u16, *const u32, *mut f32);
        let three = kh == 3;
        let mut c0 = 0;
        while c0 < ci {
            let nb = ((ci - c0) / 16).min(if three { 2 } else { 4 });
            // (output channels per call, kernel): the row counts divide 16, so they tile co.
            let (rows, kernel): (usize, Kernel) = match (three, nb) {
                (true, 1) => (8, k::<3, 8, 1>),
                (true, _) => (4, k::<3, 4, 2>),
                (false, 1) => (16, k::<1, 16, 1>),
                (false, 2) => (8, k::<1, 8, 2>),
                (false, 3) => (8, k::<1, 8, 3>),
                _ => (4, k::<1, 4, 4>),
            };
            for ky in 0..if three { 1 } else { kh } {
                for o0 in (0..co).step_by(rows) {
                    // SAFETY: block (ky.., o0.., c0..) of the caller's ranges (contract).
                    unsafe {
                        let dy = dy.add(o0 * g.dy_stride);
                        let x = x.add(ky * g.x_tap_stride + c0);
                        let acc = acc.add(ky * g.acc_tap_stride + o0 * g.acc_row_stride + c0);
                        kernel(g, dy, x, acc)
                    }
                }
            }
            c0 += 16 * nb;
        }
    }

    /// Output pixels per forward tile for `nb` channel vectors (accumulators stay <= 24).
    pub(super) fn conv_pixels(nb: usize) -> usize {
        [16, 12, 8, 6][nb - 1]
    }

    /// Input channels per weight-gradient tile for `nb` channel vectors.
    pub(super) fn wgrad_channels(nb: usize) -> usize {
        [16, 12, 8, 6][nb - 1]
    }

    /// Input channels per stride-1 3-wide weight-gradient tile (three taps of accumulators).
    pub(super) fn wgrad_s1k3_channels(nb: usize) -> usize {
        [8, 4, 2][nb - 1]
    }

    /// Which forward micro-kernel computes a convolution's tiles.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum ConvKernel {
        /// [`avx512::conv_tile`]: any stride and kernel.
        General,
        /// [`avx512::conv_tile_s1k3`]: stride 1, 3-wide, up to 48 channels per tile.
        S1K3,
        /// [`amx::conv_tile`] (bf16 only), `kp` input pairs a step: 32 pixels x 32 channels on
        /// `wide` rows (more than 16 pixels), else 16 pixels x 64 channels.
        Amx { kp: usize, wide: bool },
    }

    impl ConvKernel {
        pub(super) fn choose(s: &super::ConvShape) -> Self {
            if s.stride == 1 && s.kw == 3 {
                ConvKernel::S1K3
            } else {
                ConvKernel::General
            }
        }

        /// Output channels per tile: up to 64 for the general kernel; for the 3-wide one all of
        /// them up to 48, else blocks of 32 (its best shape, 8 pixels x 2 vectors).
        pub(super) fn channel_block(self, cout: usize) -> usize {
            match self {
                ConvKernel::General => 64,
                ConvKernel::S1K3 if cout <= 48 => cout,
                ConvKernel::S1K3 | ConvKernel::Amx { wide: true, .. } => 32,
                ConvKernel::Amx { wide: false, .. } => 64,
            }
        }

        pub(super) fn max_pixels(self, channels: usize) -> usize {
            let nb = channels.div_ceil(16);
            match self {
                ConvKernel::General => conv_pixels(nb),
                ConvKernel::S1K3 => [16, 8, 6][nb - 1],
                ConvKernel::Amx { wide: true, .. } => 32,
                ConvKernel::Amx { wide: false, .. } => 16,
            }
        }

        /// Whether [`Self::run`] applies an output transform in registers (only the general
        /// kernel does; the others leave it to a pass over what they wrote).
        pub(super) fn fuses_affine(self) -> bool {
            self == ConvKernel::General
        }

        /// # Safety
        /// The contract of the chosen kernel for `r <= self.max_pixels(channels)` pixels; an
        /// `affine` only where [`Self::fuses_affine`].
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn run(
            self,
            r: usize,
            channels: usize,
            g: &ConvTileArgs,
            a: *const f32,
            w: *const f32,
            y: *mut f32,
            accumulate: bool,
            affine: Option<&TileAffine>,
        ) {
            debug_assert!(affine.is_none() || self.fuses_affine());
            use avx512::conv_tile_s1k3 as k;
            // SAFETY: forwarded contract.
            unsafe {
                match self {
                    ConvKernel::General => conv_tile(r, channels, g, a, w, y, accumulate, affine),
                    ConvKernel::S1K3 => match channels.div_ceil(16) {
                        1 => {
                            by_rows!(k, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate))
                        }
                        2 => by_rows!(k, r, 2, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<2>(channels), accumulate)),
                        3 => by_rows!(k, r, 3, [1 2 3 4 5 6], (g, a, w, y, &masks::<3>(channels), accumulate)),
                        nb => unreachable!("{nb} channel vectors"),
                    },
                    ConvKernel::Amx { .. } => unreachable!("AMX tiles are bf16 only"),
                }
            }
        }
    }

    impl ConvKernel {
        /// [`Self::run`] on bf16 channel pairs.
        ///
        /// # Safety
        /// The contract of the chosen bf16 kernel for `r <= self.max_pixels(channels)` pixels.
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn run_bf16(
            self,
            r: usize,
            channels: usize,
            g: &ConvTileArgsBf16,
            a: *const u32,
            w: *const u32,
            y: *mut f32,
            accumulate: bool,
        ) {
            use avx512::{conv_tile_bf16 as kg, conv_tile_s1k3_bf16 as ks};
            // SAFETY: forwarded contract.
            unsafe {
                match (self, channels.div_ceil(16)) {
                    (ConvKernel::Amx { kp, .. }, nb) => amx::conv_tile(r, nb, kp, g, a, w, y, accumulate),
                    (ConvKernel::General, 1) => {
                        by_rows!(kg, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate))
                    }
                    (ConvKernel::General, 2) => {
                        by_rows!(kg, r, 2, [1 2 3 4 5 6 7 8 9 10 11 12], (g, a, w, y, &masks::<2>(channels), accumulate))
                    }
                    (ConvKernel::General, 3) => {
                        by_rows!(kg, r, 3, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<3>(channels), accumulate))
                    }
                    (ConvKernel::General, 4) => {
                        by_rows!(kg, r, 4, [1 2 3 4 5 6], (g, a, w, y, &masks::<4>(channels), accumulate))
                    }
                    (ConvKernel::S1K3, 1) => {
                        by_rows!(ks, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate))
                    }
                    (ConvKernel::S1K3, 2) => {
                        by_rows!(ks, r, 2, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<2>(channels), accumulate))
                    }
                    (ConvKernel::S1K3, 3) => {
                        by_rows!(ks, r, 3, [1 2 3 4 5 6], (g, a, w, y, &masks::<3>(channels), accumulate))
                    }
                    (kind, nb) => unreachable!("{kind:?} with {nb} channel vectors"),
                }
            }
        }
    }

    /// # Safety
    /// The contract of [`avx512::wgrad_tile_s1k3`] for `rc` input and `channels` output channels.
    pub(super) unsafe fn wgrad_tile_s1k3(
        rc: usize,
        channels: usize,
        g: &WgradTileArgs,
        tap_stride: usize,
        x: *const f32,
        dy: *const f32,
        acc: *mut f32,
    ) {
        use avx512::wgrad_tile_s1k3 as k;
        // SAFETY: forwarded contract; `rc` is within the table of wgrad_s1k3_channels.
        unsafe {
            match channels.div_ceil(16) {
                1 => by_rows!(k, rc, 1, [1 2 3 4 5 6 7 8], (g, tap_stride, x, dy, acc, &masks::<1>(channels))),
                2 => by_rows!(k, rc, 2, [1 2 3 4], (g, tap_stride, x, dy, acc, &masks::<2>(channels))),
                3 => by_rows!(k, rc, 3, [1 2], (g, tap_stride, x, dy, acc, &masks::<3>(channels))),
                nb => unreachable!("{nb} channel vectors"),
            }
        }
    }

    fn masks<const NB: usize>(channels: usize) -> [__mmask16; NB] {
        std::array::from_fn(|j| lane_mask(channels.saturating_sub(16 * j).min(16)))
    }

    /// # Safety
    /// The contract of [`avx512::conv_tile`] for `r` pixels and `channels` output channels.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_tile(
        r: usize,
        channels: usize,
        g: &ConvTileArgs,
        a: *const f32,
        w: *const f32,
        y: *mut f32,
        accumulate: bool,
        affine: Option<&TileAffine>,
    ) {
        use avx512::conv_tile as k;
        // SAFETY: forwarded contract; `r` is within the table of conv_pixels for this `nb`.
        unsafe {
            match channels.div_ceil(16) {
                1 => {
                    by_rows!(k, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate, affine))
                }
                2 => {
                    by_rows!(k, r, 2, [1 2 3 4 5 6 7 8 9 10 11 12], (g, a, w, y, &masks::<2>(channels), accumulate, affine))
                }
                3 => by_rows!(k, r, 3, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<3>(channels), accumulate, affine)),
                4 => by_rows!(k, r, 4, [1 2 3 4 5 6], (g, a, w, y, &masks::<4>(channels), accumulate, affine)),
                nb => unreachable!("{nb} channel vectors"),
            }
        }
    }

    /// # Safety
    /// The contract of [`avx512::wgrad_tile`] for `rc` input and `channels` output channels.
    pub(super) unsafe fn wgrad_tile(
        rc: usize,
        channels: usize,
        g: &WgradTileArgs,
        x: *const f32,
        dy: *const f32,
        acc: *mut f32,
    ) {
        use avx512::wgrad_tile as k;
        // SAFETY: forwarded contract; `rc` is within the table of wgrad_channels for this `nb`.
        unsafe {
            match channels.div_ceil(16) {
                1 => {
                    by_rows!(k, rc, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, x, dy, acc, &masks::<1>(channels)))
                }
                2 => by_rows!(k, rc, 2, [1 2 3 4 5 6 7 8 9 10 11 12], (g, x, dy, acc, &masks::<2>(channels))),
                3 => by_rows!(k, rc, 3, [1 2 3 4 5 6 7 8], (g, x, dy, acc, &masks::<3>(channels))),
                4 => by_rows!(k, rc, 4, [1 2 3 4 5 6], (g, x, dy, acc, &masks::<4>(channels))),
                nb => unreachable!("{nb} channel vectors"),
            }
        }
    }
}

/// `dst[j, i] = src[i, j]` for a row-major `rows x cols` source.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for i in 0..rows {
        for j in 0..cols {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    /// Direct definition of the convolution, accumulated in f64.
    fn reference_forward(s: &ConvShape, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut y = vec![0.0; s.output_len()];
        for n in 0..s.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..s.cout {
                        let mut acc = 0.0f64;
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                for ci in 0..s.cin {
                                    let xv = x[((n * s.h + iy as usize) * s.w + ix as usize) * s.cin + ci];
                                    let wv = w[((ky * s.kw + kx) * s.cin + ci) * s.cout + co];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((n * oh + oy) * ow + ox) * s.cout + co] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }

    fn algorithms() -> Vec<ConvAlgorithm> {
        let mut v = vec![ConvAlgorithm::Im2colGemm];
        if simd::isa() >= Isa::Avx512 {
            v.push(ConvAlgorithm::Direct);
            v.push(ConvAlgorithm::Winograd);
        } else {
            crate::skip::skip("the Direct and Winograd paths: no AVX-512 on this CPU (only the GEMM path is tested)");
        }
        v
    }

    fn shapes() -> Vec<ConvShape> {
        let c = |n, h, w, cin, cout, k, stride, pad| ConvShape { n, h, w, cin, cout, kh: k, kw: k, stride, pad };
        vec![
            c(2, 8, 8, 3, 16, 3, 1, 1),
            c(2, 8, 8, 4, 8, 3, 2, 1),
            c(2, 7, 7, 4, 8, 3, 2, 1),
            c(1, 9, 9, 3, 4, 7, 2, 3),
            c(2, 6, 6, 8, 16, 1, 1, 0),
            c(2, 6, 6, 8, 16, 1, 2, 0),
            c(2, 5, 5, 3, 2, 3, 1, 0),
            c(1, 4, 4, 2, 3, 3, 1, 2),
            c(3, 40, 40, 2, 3, 3, 1, 1),
            c(2, 9, 11, 37, 70, 3, 1, 1),
            c(2, 10, 10, 20, 33, 3, 2, 1),
            c(1, 7, 7, 130, 20, 1, 1, 0),
            c(2, 6, 7, 9, 24, 3, 1, 1),
            c(2, 5, 6, 5, 40, 3, 1, 1),
            // Winograd's shapes: whole tiles, cut tiles, one tile wider than the image, and
            // paddings 0 and 2 (whose backward-data passes have paddings 2 and 0).
            c(2, 8, 8, 16, 16, 3, 1, 1),
            c(2, 9, 11, 32, 48, 3, 1, 1),
            c(3, 3, 2, 16, 32, 3, 1, 1),
            c(1, 7, 9, 32, 16, 3, 1, 0),
            c(2, 6, 5, 16, 32, 3, 1, 2),
            // Many tiles: several tasks and several runs of tiles per thread.
            c(8, 16, 16, 16, 32, 3, 1, 1),
            // Weights beyond the cache budget: the channel-group order (3x3 and 1x1 strided).
            c(2, 5, 5, 128, 130, 3, 1, 1),
            c(1, 6, 6, 700, 200, 1, 2, 0),
            // The direct forward pass in runs of output channels (weights past its L2 budget):
            // one image of 7x7 as ResNet-50's last stage at batch 1 (a last run of 40
            // channels; not a Winograd shape, whose rounding on 1152-term sums exceeds the
            // per-element tolerance here), and a 1x1 layer whose band is read as one long row.
            c(1, 7, 7, 128, 136, 3, 1, 1),
            c(2, 5, 7, 512, 300, 1, 1, 0),
            // A strided 3x3 layer whose direct forward pass gathers its windows first (weights
            // well past the budget), and a strided 1x1 layer read in place, row by row.
            c(1, 9, 9, 256, 144, 3, 2, 1),
            c(2, 7, 7, 64, 40, 1, 2, 0),
            // A 1x1 layer whose long rows are read in two runs of input channels (560 + 540).
            c(8, 8, 8, 1100, 32, 1, 1, 0),
            // Both: two runs of input channels into weight panels of 96 and 64 channels.
            c(2, 8, 8, 1100, 160, 1, 1, 0),
        ]
    }

    #[test]
    fn forward_matches_direct_definition() {
        for s in shapes() {
            let mut rng = Rng::new(1);
            let x = random(s.input_len(), &mut rng);
            let w = random(s.weight_len(), &mut rng);
            for algo in algorithms() {
                let mut y = vec![f32::NAN; s.output_len()];
                conv2d_forward_with(algo, &s, &x, None, &w, &mut y, None, &mut Workspace::new());
                assert_close(&y, &reference_forward(&s, &x, &w), &format!("{algo:?} {s:?}"));
            }
        }
    }

    /// A versioned weight's panels are kept from its second pass on and reused while the
    /// version stays; a new version (new values) is packed afresh and the old panels dropped;
    /// a backward-data pass in between (other weights, unversioned) does not disturb them.
    #[test]
    fn versioned_weights_reuse_their_panels_until_the_version_changes() {
        if simd::isa() < Isa::Avx512 {
            crate::skip::skip("the direct pass needs AVX-512");
            return;
        }
        let c =
            |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
        // Runs of channels in panels: 3x3 (a last run of 40 channels), strided 3x3 read as
        // gathered windows, and 1x1 read as long rows.
        for s in [c(1, 7, 128, 136, 3, 1), c(1, 9, 256, 144, 3, 2), c(2, 5, 512, 300, 1, 1)] {
            let mut rng = Rng::new(3);
            let x = random(s.input_len(), &mut rng);
            let weights = [random(s.weight_len(), &mut rng), random(s.weight_len(), &mut rng)];
            let mut ws = Workspace::new();
            let mut y = vec![0.0; s.output_len()];
            // (version, weight, version of the panels kept after the pass)
            let passes = [(7, 0, None), (7, 0, Some(7)), (7, 0, Some(7)), (8, 1, None), (8, 1, Some(8))];
            for (version, i, kept) in passes {
                y.fill(f32::NAN);
                conv2d_forward_versioned(
                    ConvAlgorithm::Direct,
                    &s,
                    &x,
                    None,
                    &weights[i],
                    version,
                    &mut y,
                    None,
                    &mut ws,
                );
                assert_close(&y, &reference_forward(&s, &x, &weights[i]), &format!("version {version} {s:?}"));
                assert_eq!(ws.panels.key.map(|k| k.0), kept, "version {version} {s:?}");
            }
            // An unversioned pass of other weights leaves no panels behind to be mistaken.
            conv2d_forward_with(ConvAlgorithm::Direct, &s, &x, None, &weights[0], &mut y, None, &mut ws);
            assert_close(&y, &reference_forward(&s, &x, &weights[0]), &format!("unversioned {s:?}"));
            assert_eq!(ws.panels.key, None);
        }
    }

    /// The backward passes are the adjoints of the forward map: <conv(x), g> = <x, dx(g)> and
    /// likewise for the weight, which checks every path without finite differences.
    #[test]
    fn backward_passes_are_adjoints_of_forward() {
        for (s, algo) in shapes().into_iter().flat_map(|s| algorithms().into_iter().map(move |a| (s, a))) {
            let mut rng = Rng::new(2);
            let x = random(s.input_len(), &mut rng);
            let w = random(s.weight_len(), &mut rng);
            let g = random(s.output_len(), &mut rng);
            let y = reference_forward(&s, &x, &w);
            let lhs = dot(&y, &g);
            let mut ws = Workspace::new();
            let mut dx = vec![f32::NAN; s.input_len()];
            conv2d_backward_data_with(algo, &s, &g, &w, &mut dx, false, &mut ws);
            let mut dw = vec![f32::NAN; s.weight_len()];
            conv2d_backward_weight_with(algo, &s, &x, None, &g, &mut dw, false, &mut ws);
            let tol = 1e-4 * (1.0 + lhs.abs());
            assert!((dot(&x, &dx) - lhs).abs() < tol, "data adjoint {algo:?} {s:?}");
            assert!((dot(&w, &dw) - lhs).abs() < tol, "weight adjoint {algo:?} {s:?}");
            // Accumulation adds on top of what is there.
            let mut dx2 = dx.clone();
            conv2d_backward_data_with(algo, &s, &g, &w, &mut dx2, true, &mut ws);
            let doubled: Vec<f32> = dx.iter().map(|v| 2.0 * v).collect();
            assert_close(&dx2, &doubled, "accumulated dx");
            let mut dw2 = dw.clone();
            conv2d_backward_weight_with(algo, &s, &x, None, &g, &mut dw2, true, &mut ws);
            let doubled: Vec<f32> = dw.iter().map(|v| 2.0 * v).collect();
            assert_close(&dw2, &doubled, "accumulated dw");
            // Per-element check of dx against the reference (small shapes): dx = d<y,g>/dx.
            if s.input_len() > 600 {
                continue;
            }
            let mut want_dx = vec![0.0f32; s.input_len()];
            for (i, v) in want_dx.iter_mut().enumerate() {
                let mut e = vec![0.0; s.input_len()];
                e[i] = 1.0;
                *v = dot(&reference_forward(&s, &e, &w), &g) as f32;
            }
            assert_close(&dx, &want_dx, &format!("dx {s:?}"));
            let mut want_dw = vec![0.0f32; s.weight_len()];
            for (i, v) in want_dw.iter_mut().enumerate() {
                let mut e = vec![0.0; s.weight_len()];
                e[i] = 1.0;
                *v = dot(&reference_forward(&s, &x, &e), &g) as f32;
            }
            assert_close(&dw, &want_dw, &format!("dw {s:?}"));
        }
    }

    /// The output transform gives exactly what a batch-norm pass over the output gives (the same
    /// arithmetic), for every algorithm and shape: with and without residual and ReLU, an input
    /// transform, and repeated versioned calls (the second keeps weight panels).
    #[test]
    fn output_transform_equals_a_batch_norm_pass_after() {
        let mut algos = algorithms();
        if bf16_supported() {
            algos.extend([ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16]);
        } else {
            crate::skip::skip("the bf16 paths: this CPU lacks AVX512_BF16");
        }
        // And a 1x1 layer whose long row is transformed in several runs of pixels, the last one cut.
        let runs = ConvShape { n: 1, h: 16, w: 200, cin: 16, cout: 272, kh: 1, kw: 1, stride: 1, pad: 0 };
        let band_px = DirectPlan::new(&runs, 64, 4).band * runs.w;
        let px_run = transform_run_pixels(runs.cout);
        assert!(band_px > px_run && !band_px.is_multiple_of(px_run), "{band_px} pixels a band, runs of {px_run}");
        let shapes = shapes().into_iter().chain([runs]);
        for (s, algo) in shapes.flat_map(|s| algos.clone().into_iter().map(move |a| (s, a))) {
            let mut rng = Rng::new(9);
            let x = random(s.input_len(), &mut rng);
            let w = random(s.weight_len(), &mut rng);
            let residual = random(s.output_len(), &mut rng);
            let (scale, shift) = (random(s.cout, &mut rng), random(s.cout, &mut rng));
            let (t_scale, t_shift) = (random(s.cin, &mut rng), random(s.cin, &mut rng));
            let mut ws = Workspace::new();
            for (round, (res, relu)) in
                [(None, true), (Some(&residual[..]), true), (Some(&residual[..]), false)].into_iter().enumerate()
            {
                let t = (round == 1).then_some(InputTransform { scale: &t_scale, shift: &t_shift });
                let mut want = vec![f32::NAN; s.output_len()];
                conv2d_forward_with(algo, &s, &x, t, &w, &mut want, None, &mut ws);
                let raw = want.clone();
                crate::batch_norm::scale_shift_act(&raw, s.cout, &scale, &shift, res, relu, &mut want);
                let out = OutputTransform { scale: &scale, shift: &shift, residual: res, relu };
                for call in 0..3 {
                    let mut y = vec![f32::NAN; s.output_len()];
                    conv2d_forward_transformed(algo, &s, &x, t, &w, Some(7), out, &mut y, &mut ws);
                    let what = format!("{algo:?} {s:?} round {round} call {call}");
                    assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                }
            }
        }
    }

    /// The residual taken from the output buffer itself gives, bit for bit, what the same
    /// residual in a buffer of its own gives, on every shape the direct pass runs so: 1x1
    /// layers (one task and many; several channel runs, with and without kept panels), strided
    /// layers read from a copied strip and through gathered windows, channels in part vectors.
    #[test]
    fn residual_in_place_equals_a_separate_residual() {
        let c =
            |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
        let runs = [c(1, 14, 64, 256, 1, 1), c(2, 7, 512, 1024, 1, 1), c(3, 9, 24, 40, 1, 1), c(1, 14, 128, 256, 3, 2)];
        let strided = [c(2, 9, 16, 32, 3, 2), c(1, 12, 8, 20, 1, 2)];
        // Not in place: the 3-wide stride-1 kernel, a long row in several runs of input
        // channels (the first runs' sums would overwrite the residual), other algorithms.
        let others = [
            (ConvAlgorithm::Direct, c(1, 8, 16, 32, 3, 1)),
            (ConvAlgorithm::Direct, c(1, 56, 2048, 64, 1, 1)),
            (ConvAlgorithm::Winograd, c(1, 8, 16, 32, 3, 1)),
            (ConvAlgorithm::Im2colGemm, c(1, 14, 64, 256, 1, 1)),
        ];
        for (algo, s) in others {
            assert!(!adds_residual_in_place(algo, &s), "{algo:?} {s:?}");
        }
        if simd::isa() < Isa::Avx512 {
            assert!(runs.iter().chain(&strided).all(|s| !adds_residual_in_place(ConvAlgorithm::Direct, s)));
            crate::skip::skip("no AVX-512, so no residual in place");
            return;
        }
        assert!(gathers_windows(&runs[3]), "a layer of gathered windows");
        for s in runs.into_iter().chain(strided) {
            assert!(adds_residual_in_place(ConvAlgorithm::Direct, &s), "{s:?}");
            let mut rng = Rng::new(11);
            let x = random(s.input_len(), &mut rng);
            let w = random(s.weight_len(), &mut rng);
            let residual = random(s.output_len(), &mut rng);
            let (scale, shift) = (random(s.cout, &mut rng), random(s.cout, &mut rng));
            let mut ws = Workspace::new();
            for relu in [true, false] {
                let with = OutputTransform { scale: &scale, shift: &shift, residual: Some(&residual), relu };
                let mut want = vec![f32::NAN; s.output_len()];
                conv2d_forward_transformed(ConvAlgorithm::Direct, &s, &x, None, &w, None, with, &mut want, &mut ws);
                let without = OutputTransform { residual: None, ..with };
                // Three calls of one weight version: the second makes panels, the third uses them.
                for call in 0..3 {
                    let mut y = residual.clone();
                    let algo = ConvAlgorithm::Direct;
                    conv2d_forward_onto_residual(algo, &s, &x, None, &w, Some(3), without, &mut y, &mut ws);
                    let what = format!("{s:?} relu {relu} call {call}");
                    assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                }
            }
        }
    }

    /// The fused input transform equals transforming first, the epilogue statistics equal the
    /// sums of the output, and the weight gradient sees the transformed input too.
    #[test]
    fn input_transform_and_output_statistics() {
        for (s, algo) in shapes().into_iter().flat_map(|s| algorithms().into_iter().map(move |a| (s, a))) {
            let mut rng = Rng::new(4);
            let x = random(s.input_len(), &mut rng);
            let w = random(s.weight_len(), &mut rng);
            let g = random(s.output_len(), &mut rng);
            let scale = random(s.cin, &mut rng);
            let shift = random(s.cin, &mut rng);
            let tx: Vec<f32> =
                x.iter().enumerate().map(|(i, v)| (v * scale[i % s.cin] + shift[i % s.cin]).max(0.0)).collect();
            let t = InputTransform { scale: &scale, shift: &shift };
            let mut ws = Workspace::new();
            let mut y = vec![f32::NAN; s.output_len()];
            let mut stats = vec![f64::NAN; 2 * s.cout];
            conv2d_forward_with(algo, &s, &x, Some(t), &w, &mut y, Some(&mut stats), &mut ws);
            assert_close(&y, &reference_forward(&s, &tx, &w), &format!("transformed {algo:?} {s:?}"));
            for ch in 0..s.cout {
                let col = y.iter().skip(ch).step_by(s.cout);
                let (sum, sq) =
                    col.fold((0.0f64, 0.0f64), |(a, b), &v| (a + f64::from(v), b + f64::from(v) * f64::from(v)));
                assert!((stats[ch] - sum).abs() <= 1e-3 * (1.0 + sum.abs()), "sum {algo:?} {s:?}");
                assert!((stats[s.cout + ch] - sq).abs() <= 1e-3 * (1.0 + sq), "sum of squares {algo:?} {s:?}");
            }
            let (mut dw, mut want) = (vec![0.0; s.weight_len()], vec![0.0; s.weight_len()]);
            conv2d_backward_weight_with(algo, &s, &x, Some(t), &g, &mut dw, false, &mut ws);
            conv2d_backward_weight_with(ConvAlgorithm::Im2colGemm, &s, &tx, None, &g, &mut want, false, &mut ws);
            assert_close(&dw, &want, &format!("transformed dw {algo:?} {s:?}"));
        }
    }

    #[test]
    fn every_isa_version_of_the_transform_agrees() {
        let mut rng = Rng::new(9);
        let (x, a, b) = (random(7 * 13, &mut rng), random(13, &mut rng), random(13, &mut rng));
        let mut want = vec![0.0; x.len()];
        bn_relu_copy_on(Isa::Scalar, &x, &a, &b, &mut want);
        for isa in simd::available() {
            let mut got = vec![0.0; x.len()];
            bn_relu_copy_on(isa, &x, &a, &b, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }

    /// bf16 products (8-bit mantissas) with f32 sums: within about 1% of the largest output
    /// (Winograd's bf16 products, whose transforms grow the rounding, within 15%; the error is
    /// measured against the direct kernels' in the Winograd module).
    #[test]
    fn bf16_kernels_match_f32_within_bf16_rounding() {
        if !bf16_supported() {
            crate::skip::skip("this CPU lacks AVX512_BF16");
            return;
        }
        let close = |got: &[f32], want: &[f32], what: &str| {
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let err = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            let bound = if what.starts_with("WinogradBf16") { 0.15 } else { 0.02 };
            assert!(err <= bound * scale, "{what}: error {err} of {scale}");
        };
        let mut algos = vec![ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16];
        if amx_supported() {
            algos.push(ConvAlgorithm::AmxBf16);
        } else {
            crate::skip::skip("the AMX part: this CPU (or kernel) has no AMX bf16 tiles");
        }
        // Besides the general shapes, ones the AMX tiles take: 8 and 16 pairs a step, one and
        // two output blocks, partial pixel blocks, stride 2, 1x1.
        let c =
            |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
        let tiled = [
            c(2, 20, 16, 16, 3, 1),
            c(2, 9, 32, 64, 3, 2),
            c(2, 7, 64, 32, 1, 1),
            c(1, 9, 48, 48, 3, 1),
            c(2, 6, 32, 16, 3, 1),
            c(3, 34, 16, 32, 3, 1),
            c(2, 8, 64, 48, 1, 1),
            // Pixel-pair weight-gradient blocks: 3x3 with one and two channel vectors at once,
            // 1x1 with one to four.
            c(2, 8, 48, 32, 3, 1),
            c(2, 6, 48, 16, 1, 1),
            c(1, 4, 32, 64, 1, 1),
            // Winograd's bf16 products (square 3x3 layers of 16, 32 and 64 channels): tile
            // counts beyond one block of each product kernel, partial tiles at the edge.
            c(3, 13, 16, 16, 3, 1),
            c(2, 10, 32, 32, 3, 1),
            c(1, 11, 64, 64, 3, 1),
            c(2, 10, 16, 48, 1, 1),
        ];
        for algo in algos {
            for s in shapes().into_iter().chain(tiled) {
                let mut rng = Rng::new(6);
                let (x, w, g) = (
                    random(s.input_len(), &mut rng),
                    random(s.weight_len(), &mut rng),
                    random(s.output_len(), &mut rng),
                );
                let (scale, shift) = (random(s.cin, &mut rng), random(s.cin, &mut rng));
                let mut ws = Workspace::new();
                for t in [None, Some(InputTransform { scale: &scale, shift: &shift })] {
                    let (mut a, mut b) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
                    let (mut sa, mut sb) = (vec![0.0; 2 * s.cout], vec![0.0; 2 * s.cout]);
                    conv2d_forward_with(algo, &s, &x, t, &w, &mut a, Some(&mut sa), &mut ws);
                    conv2d_forward_with(ConvAlgorithm::Im2colGemm, &s, &x, t, &w, &mut b, Some(&mut sb), &mut ws);
                    close(&a, &b, &format!("{algo:?} forward {s:?}"));
                    close(
                        &sa.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                        &sb.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                        &format!("{algo:?} statistics {s:?}"),
                    );
                }
                let (mut a, mut b) = (vec![0.0; s.input_len()], vec![0.0; s.input_len()]);
                conv2d_backward_data_with(algo, &s, &g, &w, &mut a, false, &mut ws);
                conv2d_backward_data_with(ConvAlgorithm::Im2colGemm, &s, &g, &w, &mut b, false, &mut ws);
                close(&a, &b, &format!("{algo:?} backward data {s:?}"));
                for t in [None, Some(InputTransform { scale: &scale, shift: &shift })] {
                    let (mut a, mut b) = (vec![0.5; s.weight_len()], vec![0.5; s.weight_len()]);
                    conv2d_backward_weight_with(algo, &s, &x, t, &g, &mut a, true, &mut ws);
                    conv2d_backward_weight_with(ConvAlgorithm::Im2colGemm, &s, &x, t, &g, &mut b, true, &mut ws);
                    close(&a, &b, &format!("{algo:?} backward weight {s:?}"));
                }
            }
        }
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one, 1.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert!(f32::from_bits(bf16_bits(f32::NAN) << 16).is_nan());
    }

    #[test]
    fn algorithm_choice_follows_the_measurements() {
        if simd::isa() < Isa::Avx512 {
            assert_eq!(ConvAlgorithm::for_shape(&c3(128, 32, 16, 16, 3)), ConvAlgorithm::Im2colGemm);
            crate::skip::skip("the AVX-512 algorithm choices: no AVX-512 on this CPU");
            return;
        }
        let winograd = if winograd_enabled() { ConvAlgorithm::Winograd } else { ConvAlgorithm::Direct };
        assert_eq!(ConvAlgorithm::for_shape(&c3(128, 32, 16, 16, 3)), winograd);
        assert_eq!(ConvAlgorithm::for_shape(&c3(16, 28, 128, 128, 3)), winograd);
        assert_eq!(ConvAlgorithm::for_shape(&c3(16, 14, 256, 256, 3)), winograd);
        assert_eq!(ConvAlgorithm::for_shape(&c3(1, 7, 512, 512, 3)), ConvAlgorithm::Direct);
        assert_eq!(ConvAlgorithm::for_shape(&c3(1, 8, 64, 64, 3)), ConvAlgorithm::Direct);
        assert_eq!(ConvAlgorithm::for_shape(&c3(128, 32, 3, 16, 3)), ConvAlgorithm::Direct);
        let strided = ConvShape { stride: 2, ..c3(128, 32, 16, 32, 3) };
        assert_eq!(ConvAlgorithm::for_shape(&strided), ConvAlgorithm::Direct);
        // Few tiles: by channel blocks from 16 tiles (a 14x14 layer at batch 1), a 512-channel
        // layer too.
        assert_eq!(ConvAlgorithm::for_shape(&c3(1, 14, 256, 256, 3)), winograd);
        assert_eq!(ConvAlgorithm::for_shape(&c3(16, 7, 512, 512, 3)), winograd);
        assert_eq!(ConvAlgorithm::for_shape(&c3(1, 16, 32, 32, 3)), ConvAlgorithm::Direct);
        let strided_wide = ConvShape { stride: 2, ..c3(1, 14, 512, 512, 3) };
        assert_eq!(ConvAlgorithm::for_shape(&strided_wide), ConvAlgorithm::Im2colGemm);
        let gathered = if precision() == Precision::F32 { ConvAlgorithm::Direct } else { ConvAlgorithm::Im2colGemm };
        assert_eq!(ConvAlgorithm::for_forward(&strided_wide), gathered);
        assert_eq!(ConvAlgorithm::for_forward(&ConvShape { n: 128, ..strided_wide }), ConvAlgorithm::Im2colGemm);
        assert_eq!(ConvAlgorithm::for_shape(&c3(16, 56, 64, 256, 1)), ConvAlgorithm::Im2colGemm);
        // 1x1 layers: the direct forward pass at batch 1, the GEMM otherwise.
        assert_eq!(ConvAlgorithm::for_forward(&c3(16, 56, 64, 256, 1)), ConvAlgorithm::Im2colGemm);
        assert_eq!(ConvAlgorithm::for_shape(&c3(1, 7, 2048, 512, 1)), ConvAlgorithm::Im2colGemm);
        let pointwise = if precision() == Precision::F32 { ConvAlgorithm::Direct } else { ConvAlgorithm::Im2colGemm };
        assert_eq!(ConvAlgorithm::for_forward(&c3(1, 7, 2048, 512, 1)), pointwise);
        assert_eq!(ConvAlgorithm::for_forward(&c3(1, 56, 64, 256, 1)), pointwise);
        if amx_supported() {
            let (small, stem, wide) = (c3(128, 32, 16, 16, 3), c3(128, 32, 3, 16, 3), c3(16, 7, 512, 512, 3));
            let got =
                [small, stem, wide, c3(16, 56, 64, 256, 1)].map(|s| ConvAlgorithm::for_precision(&s, Precision::Bf16));
            use ConvAlgorithm::*;
            assert_eq!(got, [AmxBf16, DirectBf16, Im2colGemm, AmxBf16]);
        } else if bf16_supported() && winograd_enabled() {
            // Without AMX: Winograd with bf16 products for the square layers it has kernels
            // for (16, 32, 64 channels), the direct bf16 kernels for the others.
            let shapes =
                [c3(128, 32, 16, 16, 3), c3(128, 16, 32, 32, 3), c3(128, 8, 64, 64, 3), c3(16, 28, 128, 128, 3)];
            let got = shapes.map(|s| ConvAlgorithm::for_precision(&s, Precision::Bf16));
            use ConvAlgorithm::*;
            assert_eq!(got, [WinogradBf16, WinogradBf16, WinogradBf16, DirectBf16]);
            assert_eq!(ConvAlgorithm::for_precision(&c3(128, 32, 3, 16, 3), Precision::Bf16), DirectBf16);
        } else {
            crate::skip::skip("the bf16 algorithm choices: no AVX512_BF16 on this CPU, or RESNET_WINOGRAD=0");
        }
    }

    #[test]
    fn direct_plan_cuts_large_weights_into_runs_of_channels() {
        let plan = |s: ConvShape, block| DirectPlan::new(&s, block, 4);
        // Weights within the budget: every channel in one run, as before.
        assert_eq!(plan(c3(128, 32, 16, 16, 3), 16).chunks, 1);
        // ResNet-50's last 3x3 layer at batch 1: 9.4 MB of weights in runs of 32 channels
        // (590 KB each).
        let last = plan(c3(1, 7, 512, 512, 3), 32);
        assert_eq!((last.chunk, last.chunks), (32, 16));
        // An uneven last run, and a 1x1 layer's runs of whole steps (160 + 140 channels, not
        // 256 + 44).
        assert_eq!((plan(c3(1, 7, 128, 136, 3), 32).chunk, plan(c3(1, 7, 128, 136, 3), 32).chunks), (96, 2));
        assert_eq!(plan(c3(2, 7, 512, 300, 1), 64).chunk, 160);
        // Runs as wide as each other where whole steps allow: 2 x 64 channels, not 96 + 32.
        let halves = plan(c3(1, 7, 128, 128, 3), 32);
        assert_eq!((halves.chunk, halves.chunks), (64, 2));
        // Bands of equal height that share out evenly among the threads, where the height
        // allows (ResNet-50's 28-row 1x1 layers at batch 1: 4 bands of 7 on one thread, 14 of 2
        // on two, 28 of 1 on four).
        for (threads, band) in [(1, 7), (2, 2), (4, 1)] {
            let rows = DirectPlan::for_threads(&c3(1, 28, 512, 128, 1), 64, 4, threads);
            assert_eq!((rows.band, rows.band * rows.bands), (band, 28), "{threads} threads: {rows:?}");
            assert!(rows.tasks(1).is_multiple_of(threads), "{threads} threads: {rows:?}");
        }
        // Every task is one (image, band, run), and every such triple is one task.
        for (s, block) in [(c3(3, 28, 512, 300, 3), 32), (c3(1, 28, 512, 128, 1), 64), (c3(5, 9, 64, 64, 3), 32)] {
            let p = plan(s, block);
            let mut seen: Vec<_> = (0..p.tasks(s.n)).map(|i| p.task(s.n, i)).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), s.n * p.bands * p.chunks, "{s:?}");
            assert!(seen.iter().all(|&(img, b, ch)| img < s.n && b < p.bands && ch < p.chunks));
            assert!(p.band * p.bands >= s.out_h() && p.band * (p.bands - 1) < s.out_h());
        }
    }

    fn c3(n: usize, hw: usize, cin: usize, cout: usize, k: usize) -> ConvShape {
        ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride: 1, pad: k / 2 }
    }

    #[test]
    fn output_sizes_follow_the_usual_formula() {
        let s = ConvShape { n: 1, h: 224, w: 224, cin: 3, cout: 64, kh: 7, kw: 7, stride: 2, pad: 3 };
        assert_eq!((s.out_h(), s.out_w()), (112, 112));
        let s = ConvShape { n: 1, h: 32, w: 32, cin: 16, cout: 32, kh: 3, kw: 3, stride: 2, pad: 1 };
        assert_eq!((s.out_h(), s.out_w()), (16, 16));
        assert_eq!(s.macs(), 16 * 16 * 32 * 144);
    }
}
