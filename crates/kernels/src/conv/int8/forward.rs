//! The direct int8 pass: the tasks of a [`DirectPlan`] (bands of output rows of one image
//! times runs of output channels), each building its band's padded strip of input groups (for
//! a strided 1x1 layer, only the pixels it reads) and sweeping the AVX512-VNNI or AVX2
//! micro-kernel over it, requantizing as it writes.

use super::{check_buffers, forward_int8_reference, Int8Input, Int8Kernel, Int8Output, Int8Weights, Requant};
use crate::conv::ConvShape;

/// `out = requant(conv(x, w))` with the epilogue of `rq`, on the best kernel this CPU runs (the
/// same values on every kernel).
///
/// # Panics
/// If a buffer's length does not fit the shape.
pub fn forward_int8(s: &ConvShape, x: Int8Input<'_>, w: &Int8Weights, rq: &Requant<'_>, out: Int8Output<'_>) {
    forward_int8_on(Int8Kernel::detect(), s, x, w, rq, out);
}

/// [`forward_int8`] on `kernel` (to test or compare kernels).
///
/// # Panics
/// If a buffer's length does not fit the shape, this CPU cannot run `kernel`, or it is the AVX2
/// kernel and `w` lacks its pairs (see [`super::pack_pairs`]).
pub fn forward_int8_on(
    kernel: Int8Kernel,
    s: &ConvShape,
    x: Int8Input<'_>,
    w: &Int8Weights,
    rq: &Requant<'_>,
    out: Int8Output<'_>,
) {
    check_buffers(s, &x, w, rq, &out);
    match kernel {
        Int8Kernel::Portable => forward_int8_reference(s, x, w, rq, out),
        #[cfg(target_arch = "x86_64")]
        kernel => {
            let ok = match kernel {
                Int8Kernel::Vnni => super::vnni_supported(),
                _ => crate::simd::isa() >= crate::simd::Isa::Avx2 && w.pairs.len() == 2 * w.quads.len(),
            };
            assert!(ok, "the {kernel:?} int8 kernel cannot run here (CPU, or weights packed without its layout)");
            direct::DirectInt8::new(kernel, s, x, w, rq, out).run()
        }
        #[cfg(not(target_arch = "x86_64"))]
        kernel => panic!("the {kernel:?} int8 kernel needs x86-64"),
    }
}

#[cfg(target_arch = "x86_64")]
mod direct {
    use super::*;
    use crate::conv::direct::{conv_pixels, DirectPlan, TaskBand};
    use crate::conv::int8::{Int8Residual, BLOCK};
    use crate::scratch::with_bf16;
    use crate::simd::avx2::{conv_tile_i8_avx2, PIXELS_PER_TILE};
    use crate::simd::avx512::{channel_masks, conv_tile_i8};
    use crate::simd::int8::{ConvTileArgsI8, RawOutput, RawRequant, RawResidual};
    use crate::threads;
    use rayon::prelude::*;

    /// The monomorphised kernel for a tile of `px` pixels.
    macro_rules! by_rows {
        ($kernel:ident, $nb:literal, $px:expr, [$($r:literal)*]) => {
            match $px {
                $($r => $kernel::<$r, $nb>,)*
                _ => unreachable!("int8 tile of {} pixels", $px),
            }
        };
    }

    /// Output channels of one AVX2 call: two vectors of eight.
    const AVX2_CHANNELS: usize = 16;

    /// The output's first element, shared by the tasks, each writing its own elements.
    #[derive(Clone, Copy)]
    enum OutBase {
        U8(*mut u8, f32),
        I8(*mut i8, f32),
    }
    // SAFETY: the tasks write disjoint elements (a band's rows in a run of channels each).
    unsafe impl Send for OutBase {}
    // SAFETY: as above.
    unsafe impl Sync for OutBase {}

    /// One direct int8 pass.
    pub(super) struct DirectInt8<'a> {
        kernel: Int8Kernel,
        s: ConvShape,
        x: Int8Input<'a>,
        /// The packed weight in the kernel's groups (quads or pairs).
        w: &'a [u32],
        rq: Requant<'a>,
        out: OutBase,
        plan: DirectPlan,
        args: ConvTileArgsI8,
        /// Channel groups per pixel: `ceil(cin / 4)` quads, or twice as many pairs.
        groups: usize,
        /// Rows of the packed weight: `kh * kw * groups`.
        rows: usize,
        /// A 1x1 layer's band is one long row of pixels.
        long_rows: bool,
        /// A strided 1x1 layer's strip holds only the pixels it reads, one after another.
        gathered: bool,
        /// Long rows whose pixels are whole quads are read from the input itself (VNNI only:
        /// the AVX2 kernel reads widened pairs).
        in_place: bool,
    }

    impl<'a> DirectInt8<'a> {
        pub(super) fn new(
            kernel: Int8Kernel,
            s: &ConvShape,
            x: Int8Input<'a>,
            w: &'a Int8Weights,
            rq: &Requant<'a>,
            out: Int8Output<'a>,
        ) -> Self {
            let vnni = kernel == Int8Kernel::Vnni;
            let groups = if vnni { s.cin.div_ceil(4) } else { 2 * s.cin.div_ceil(4) };
            let wp = s.w + 2 * s.pad;
            let out = match out {
                Int8Output::U8 { y, scale } => OutBase::U8(y.as_mut_ptr(), 1.0 / scale),
                Int8Output::I8 { y, scale } => OutBase::I8(y.as_mut_ptr(), 1.0 / scale),
            };
            let gathered = s.is_one_by_one() && s.pad == 0 && s.stride > 1;
            let long_rows = s.is_pointwise() || gathered;
            DirectInt8 {
                kernel,
                s: *s,
                x,
                w: if vnni { &w.quads } else { &w.pairs },
                rq: *rq,
                out,
                plan: DirectPlan::aligned(s, BLOCK, 1),
                args: ConvTileArgsI8 {
                    a_pixel_stride: if gathered { groups } else { s.stride * groups },
                    a_row_stride: wp * groups,
                    groups,
                    kh: s.kh,
                    kw: s.kw,
                    w_row_stride: BLOCK.min(s.cout),
                    y_pixel_stride: s.cout,
                },
                groups,
                rows: s.kh * s.kw * groups,
                long_rows,
                gathered,
                in_place: vnni && s.is_pointwise() && s.cin.is_multiple_of(4),
            }
        }

        pub(super) fn run(self) {
            threads::install(|| (0..self.plan.tasks(self.s.n)).into_par_iter().for_each(|i| self.task(i)));
        }

        /// Task `i`: its band's strip, then its lines in its run of channels.
        fn task(&self, i: usize) {
            let (s, co) = (&self.s, self.s.cout);
            let (oh, ow, wp) = (s.out_h(), s.out_w(), s.w + 2 * s.pad);
            let TaskBand { img, oy0, rows, channels, strip_rows } = self.plan.band(s, i);
            let (line_count, line_px) = if self.long_rows { (1, rows * ow) } else { (rows, ow) };
            let band = Band { band_at: (img * oh + oy0) * ow * co, line_count, line_px, channels };
            if self.in_place {
                let at = (img * s.h + oy0) * s.w * s.cin;
                let strip = &self.x.x[at..at + rows * s.w * s.cin];
                // The strip's quads are read unaligned by the micro-kernel.
                self.lines(&band, strip.as_ptr() as *const u32, strip.len() / 4);
            } else if self.gathered {
                with_bf16(0, rows * ow * self.groups, |_, strip| {
                    if self.kernel == Int8Kernel::Vnni {
                        gather_strided::<false>(s, &self.x, img, oy0, rows, self.groups, strip);
                    } else {
                        gather_strided::<true>(s, &self.x, img, oy0, rows, self.groups, strip);
                    }
                    self.lines(&band, strip.as_ptr(), strip.len());
                });
            } else {
                with_bf16(0, strip_rows * wp * self.groups, |_, strip| {
                    let iy0 = (oy0 * s.stride) as isize - s.pad as isize;
                    if self.kernel == Int8Kernel::Vnni {
                        fill_strip::<false>(s, &self.x, img, iy0, strip_rows, self.groups, strip);
                    } else {
                        fill_strip::<true>(s, &self.x, img, iy0, strip_rows, self.groups, strip);
                    }
                    self.lines(&band, strip.as_ptr(), strip.len());
                });
            }
        }

        /// The band's lines: for each, every block of its channels, every tile of pixels.
        fn lines(&self, band: &Band, strip: *const u32, strip_len: usize) {
            let (s, co, g) = (&self.s, self.s.cout, self.groups);
            let wp = s.w + 2 * s.pad;
            let step = self.args.a_pixel_stride;
            for r in 0..band.line_count {
                let a_row = r * s.stride * wp * g;
                for co0 in band.channels.clone().step_by(BLOCK) {
                    // Runs start at whole blocks (`DirectPlan::aligned`), so this is one block of
                    // the packed weight, of its width.
                    debug_assert!(co0.is_multiple_of(BLOCK));
                    let width = (band.channels.end - co0).min(BLOCK);
                    let args = ConvTileArgsI8 { w_row_stride: width, ..self.args };
                    let block = &self.w[co0 * self.rows..][..width * self.rows];
                    // The calls across the block: one for VNNI, 16 channels each for AVX2.
                    let call_width = if self.kernel == Int8Kernel::Vnni { width } else { AVX2_CHANNELS };
                    for c in (0..width).step_by(call_width) {
                        let lanes = (width - c).min(call_width);
                        let r_max = match self.kernel {
                            Int8Kernel::Vnni => conv_pixels(lanes.div_ceil(16)),
                            _ => PIXELS_PER_TILE[lanes.div_ceil(8) - 1],
                        };
                        // Tiles as even as the kernel's limit allows (a 7-pixel row as 4 + 3,
                        // not 6 + 1): a tile of few pixels reads as many weights for less work.
                        let tiles = band.line_px.div_ceil(r_max);
                        let mut ox = 0;
                        for t in 0..tiles {
                            let px = band.line_px / tiles + usize::from(t < band.line_px % tiles);
                            // The last window's last group: the strip holds the band's padded rows.
                            assert!(a_row + (s.kh - 1) * wp * g + (ox + px - 1) * step + s.kw * g <= strip_len);
                            let at = band.band_at + (r * band.line_px + ox) * co + co0 + c;
                            let rq = self.raw_requant(at, co0 + c);
                            let a = strip.wrapping_add(a_row + ox * step);
                            // SAFETY: the kernel was checked by the caller (`forward_int8_on`);
                            // the windows lie in the strip (asserted above), the weight groups
                            // `(tap * groups + q) * width + c + lane` for `lanes` lanes in the
                            // block (sliced to that length), and the output, residual and
                            // per-channel elements of the tile (pixels `at / co ..` of this
                            // task's band, its channels) in their buffers, also checked against
                            // the shape; the output overlaps no input.
                            unsafe { self.run_tile(px, lanes, &args, a, block[c..].as_ptr(), &rq) };
                            ox += px;
                        }
                    }
                }
            }
        }

        /// One micro-kernel call of `px` pixels and `lanes` channels.
        ///
        /// # Safety
        /// The contract of [`conv_tile_i8`] or [`conv_tile_i8_avx2`] for these sizes.
        unsafe fn run_tile(
            &self,
            px: usize,
            lanes: usize,
            g: &ConvTileArgsI8,
            a: *const u32,
            w: *const u32,
            rq: &RawRequant,
        ) {
            // SAFETY (each arm): forwarded contract; `px` is within the kernel's pixel limit for
            // this many vectors.
            unsafe {
                if self.kernel == Int8Kernel::Vnni {
                    match lanes.div_ceil(16) {
                        1 => by_rows!(conv_tile_i8, 1, px, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16])(
                            g,
                            a,
                            w,
                            rq,
                            &channel_masks(lanes),
                        ),
                        2 => by_rows!(conv_tile_i8, 2, px, [1 2 3 4 5 6 7 8 9 10 11 12])(
                            g,
                            a,
                            w,
                            rq,
                            &channel_masks(lanes),
                        ),
                        3 => by_rows!(conv_tile_i8, 3, px, [1 2 3 4 5 6 7 8])(g, a, w, rq, &channel_masks(lanes)),
                        4 => by_rows!(conv_tile_i8, 4, px, [1 2 3 4 5 6])(g, a, w, rq, &channel_masks(lanes)),
                        nb => unreachable!("{nb} channel vectors"),
                    }
                } else {
                    match lanes.div_ceil(8) {
                        1 => by_rows!(conv_tile_i8_avx2, 1, px, [1 2 3 4 5 6 7 8 9 10 11 12])(g, a, w, rq, lanes),
                        2 => by_rows!(conv_tile_i8_avx2, 2, px, [1 2 3 4 5 6])(g, a, w, rq, lanes),
                        nb => unreachable!("{nb} channel vectors"),
                    }
                }
            }
        }

        /// The epilogue's pointers for the tile whose first element is `at`, first channel `co0`.
        fn raw_requant(&self, at: usize, co0: usize) -> RawRequant {
            let residual = match self.rq.residual {
                Int8Residual::None => RawResidual::None,
                Int8Residual::U8 { x, scale } => RawResidual::U8 { at: x[at..].as_ptr(), scale },
                Int8Residual::I8 { x, scale } => RawResidual::I8 { at: x[at..].as_ptr(), scale },
            };
            let output = match self.out {
                // SAFETY: `at` is an element of the output (the tile's first).
                OutBase::U8(y, inv_scale) => RawOutput::U8 { at: unsafe { y.add(at) }, inv_scale },
                // SAFETY: as above.
                OutBase::I8(y, inv_scale) => RawOutput::I8 { at: unsafe { y.add(at) }, inv_scale },
            };
            RawRequant { mult: self.rq.mult[co0..].as_ptr(), offset: self.rq.offset[co0..].as_ptr(), residual, output }
        }
    }

    /// The part of the output one task writes.
    struct Band {
        /// The band's first output element.
        band_at: usize,
        /// Output lines: image rows, or one long row.
        line_count: usize,
        /// Pixels per line.
        line_px: usize,
        /// The task's output channels.
        channels: std::ops::Range<usize>,
    }

    /// Four channels (missing ones read as the zero point) as the kernel's groups: one VNNI quad,
    /// or the AVX2 kernel's two pairs of zero-extended 16-bit values.
    #[inline(always)]
    fn pack<const PAIRS: bool>(b: [u8; 4], dst: &mut [u32]) {
        if PAIRS {
            dst[0] = u32::from(b[0]) | u32::from(b[1]) << 16;
            dst[1] = u32::from(b[2]) | u32::from(b[3]) << 16;
        } else {
            dst[0] = u32::from_le_bytes(b);
        }
    }

    /// Copies input rows `iy0 .. iy0 + rows` of image `img` into `strip` as rows of `w + 2 * pad`
    /// pixels of `groups` groups (quads, or pairs where `PAIRS`), the padding and missing
    /// channels reading the zero point.
    fn fill_strip<const PAIRS: bool>(
        s: &ConvShape,
        x: &Int8Input<'_>,
        img: usize,
        iy0: isize,
        rows: usize,
        groups: usize,
        strip: &mut [u32],
    ) {
        let (c, p) = (s.cin, s.pad);
        let wp = s.w + 2 * p;
        let per_quad = if PAIRS { 2 } else { 1 };
        let mut zero = [0u32; 2];
        pack::<PAIRS>([x.zero_point; 4], &mut zero[..per_quad]);
        let fill_zero =
            |dst: &mut [u32]| dst.chunks_exact_mut(per_quad).for_each(|d| d.copy_from_slice(&zero[..per_quad]));
        for (r, dst) in strip[..rows * wp * groups].chunks_exact_mut(wp * groups).enumerate() {
            let iy = iy0 + r as isize;
            if iy < 0 || iy >= s.h as isize {
                fill_zero(dst);
                continue;
            }
            fill_zero(&mut dst[..p * groups]);
            fill_zero(&mut dst[(p + s.w) * groups..]);
            let src = &x.x[((img * s.h + iy as usize) * s.w) * c..][..s.w * c];
            pack_pixels::<PAIRS>(src, c, x.zero_point, &mut dst[p * groups..(p + s.w) * groups]);
        }
    }

    /// Packs the `c`-channel pixels of `src` into `dst`'s groups (as [`fill_strip`] does a row).
    #[inline(always)]
    fn pack_pixels<const PAIRS: bool>(src: &[u8], c: usize, zero_point: u8, dst: &mut [u32]) {
        if c.is_multiple_of(4) {
            // Whole quads: one group per two or four bytes, in plain loops that vectorise.
            if PAIRS {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = u32::from(b[0]) | u32::from(b[1]) << 16;
                }
            } else {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        } else if c == 3 && !PAIRS {
            // The stem's RGB pixels, one quad each: a loop simple enough to vectorise.
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = u32::from_le_bytes([b[0], b[1], b[2], zero_point]);
            }
        } else {
            let per_quad = if PAIRS { 2 } else { 1 };
            let groups = c.div_ceil(4) * per_quad;
            for (px, pixel) in dst.chunks_exact_mut(groups).zip(src.chunks_exact(c)) {
                for (k, d) in px.chunks_exact_mut(per_quad).enumerate() {
                    let mut b = [zero_point; 4];
                    for (j, v) in b.iter_mut().enumerate().take(c.saturating_sub(4 * k).min(4)) {
                        *v = pixel[4 * k + j];
                    }
                    pack::<PAIRS>(b, d);
                }
            }
        }
    }

    /// Copies the input pixels that output rows `oy0 .. oy0 + rows` of image `img` of a strided
    /// 1x1 layer without padding read (every `stride`-th of every `stride`-th row) into `strip`,
    /// one after another in groups as [`fill_strip`] packs them.
    fn gather_strided<const PAIRS: bool>(
        s: &ConvShape,
        x: &Int8Input<'_>,
        img: usize,
        oy0: usize,
        rows: usize,
        groups: usize,
        strip: &mut [u32],
    ) {
        let (c, ow) = (s.cin, s.out_w());
        let pixels = strip[..rows * ow * groups].chunks_exact_mut(groups);
        for (i, dst) in pixels.enumerate() {
            let (iy, ix) = ((oy0 + i / ow) * s.stride, (i % ow) * s.stride);
            let src = &x.x[((img * s.h + iy) * s.w + ix) * c..][..c];
            pack_pixels::<PAIRS>(src, c, x.zero_point, dst);
        }
    }
}
