//! The direct int8 pass: the tasks of a [`DirectPlan`] (bands of output rows of one image
//! times runs of output channels), each building its band's padded strip of input quads and
//! sweeping the AVX512-VNNI micro-kernel over it, requantizing as it writes.

use super::{check_buffers, forward_int8_reference, vnni_supported, Int8Input, Int8Output, Int8Weights, Requant};
use crate::conv::ConvShape;

/// `out = requant(conv(x, w))` with the epilogue of `rq`: on the AVX512-VNNI kernels where the
/// CPU has them, else by the portable pass (the same values either way).
///
/// # Panics
/// If a buffer's length does not fit the shape.
pub fn forward_int8(s: &ConvShape, x: Int8Input<'_>, w: &Int8Weights, rq: &Requant<'_>, out: Int8Output<'_>) {
    check_buffers(s, &x, w, rq, &out);
    #[cfg(target_arch = "x86_64")]
    if vnni_supported() {
        return direct::DirectInt8::new(s, x, w, rq, out).run();
    }
    forward_int8_reference(s, x, w, rq, out);
}

#[cfg(target_arch = "x86_64")]
mod direct {
    use super::*;
    use crate::conv::direct::{conv_pixels, DirectPlan, TaskBand};
    use crate::conv::int8::Int8Residual;
    use crate::scratch::with_bf16;
    use crate::simd::avx512::{channel_masks, conv_tile_i8, ConvTileArgsI8, RawOutput, RawRequant, RawResidual};
    use crate::threads;
    use rayon::prelude::*;

    use crate::conv::int8::BLOCK;

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
        s: ConvShape,
        x: Int8Input<'a>,
        w: &'a [u32],
        rq: Requant<'a>,
        out: OutBase,
        plan: DirectPlan,
        args: ConvTileArgsI8,
        quads: usize,
        /// Rows of the packed weight: `kh * kw * quads`.
        rows: usize,
        /// A 1x1 stride-1 layer's band is one long row of pixels.
        long_rows: bool,
        /// Long rows whose pixels are whole quads are read from the input itself.
        in_place: bool,
    }

    impl<'a> DirectInt8<'a> {
        pub(super) fn new(
            s: &ConvShape,
            x: Int8Input<'a>,
            w: &'a Int8Weights,
            rq: &Requant<'a>,
            out: Int8Output<'a>,
        ) -> Self {
            let quads = s.cin.div_ceil(4);
            let wp = s.w + 2 * s.pad;
            let out = match out {
                Int8Output::U8 { y, scale } => OutBase::U8(y.as_mut_ptr(), 1.0 / scale),
                Int8Output::I8 { y, scale } => OutBase::I8(y.as_mut_ptr(), 1.0 / scale),
            };
            let long_rows = s.is_pointwise();
            DirectInt8 {
                s: *s,
                x,
                w: &w.quads,
                rq: *rq,
                out,
                plan: DirectPlan::aligned(s, BLOCK, 1),
                args: ConvTileArgsI8 {
                    a_pixel_stride: s.stride * quads,
                    a_row_stride: wp * quads,
                    quads,
                    kh: s.kh,
                    kw: s.kw,
                    w_row_stride: BLOCK.min(s.cout),
                    y_pixel_stride: s.cout,
                },
                quads,
                rows: s.kh * s.kw * quads,
                long_rows,
                in_place: long_rows && s.cin.is_multiple_of(4),
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
            } else {
                with_bf16(0, strip_rows * wp * self.quads, |_, strip| {
                    let iy0 = (oy0 * s.stride) as isize - s.pad as isize;
                    fill_strip_u8(s, &self.x, img, iy0, strip_rows, strip);
                    self.lines(&band, strip.as_ptr(), strip.len());
                });
            }
        }

        /// The band's lines: for each, every block of its channels, every block of pixels.
        fn lines(&self, band: &Band, strip: *const u32, strip_len: usize) {
            let (s, co, q) = (&self.s, self.s.cout, self.quads);
            let wp = s.w + 2 * s.pad;
            for r in 0..band.line_count {
                let a_row = r * s.stride * wp * q;
                for co0 in band.channels.clone().step_by(BLOCK) {
                    // Runs start at whole blocks (`DirectPlan::aligned`), so this is one block of
                    // the packed weight, of its width.
                    debug_assert!(co0.is_multiple_of(BLOCK));
                    let width = (band.channels.end - co0).min(BLOCK);
                    let args = ConvTileArgsI8 { w_row_stride: width, ..self.args };
                    let block = &self.w[co0 * self.rows..][..width * self.rows];
                    let r_max = conv_pixels(width.div_ceil(16));
                    // Tiles as even as the kernel's limit allows (a 7-pixel row as 4 + 3, not
                    // 6 + 1): a tile of few pixels reads as many weights for less work.
                    let tiles = band.line_px.div_ceil(r_max);
                    let mut ox = 0;
                    for t in 0..tiles {
                        let px = band.line_px / tiles + usize::from(t < band.line_px % tiles);
                        // The last window's last quad: the strip holds the band's padded rows.
                        assert!(a_row + (s.kh - 1) * wp * q + ((ox + px - 1) * s.stride + s.kw) * q <= strip_len);
                        let at = band.band_at + (r * band.line_px + ox) * co + co0;
                        let rq = self.raw_requant(at, co0);
                        // SAFETY: AVX-512 and VNNI were checked by the caller; the windows lie in
                        // the strip (asserted above), the weight quads `(tap * quads + q) * width`
                        // with `width` lanes in the block (sliced to that length), and the output, residual and per-channel elements of the
                        // tile (pixels `at / co ..` of this task's band, its channels) in their
                        // buffers, also checked against the shape; the output overlaps no input.
                        unsafe {
                            run_tile(px, width, &args, strip.add(a_row + ox * s.stride * q), block.as_ptr(), &rq)
                        };
                        ox += px;
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

    /// Copies input rows `iy0 .. iy0 + rows` of image `img` into `strip` as rows of `w + 2 * pad`
    /// pixels of `ceil(cin / 4)` quads, the padding and a missing fourth channel reading the
    /// zero point.
    fn fill_strip_u8(s: &ConvShape, x: &Int8Input<'_>, img: usize, iy0: isize, rows: usize, strip: &mut [u32]) {
        let (c, p, q) = (s.cin, s.pad, s.cin.div_ceil(4));
        let wp = s.w + 2 * p;
        let zero = u32::from_le_bytes([x.zero_point; 4]);
        for (r, dst) in strip[..rows * wp * q].chunks_exact_mut(wp * q).enumerate() {
            let iy = iy0 + r as isize;
            if iy < 0 || iy >= s.h as isize {
                dst.fill(zero);
                continue;
            }
            dst[..p * q].fill(zero);
            dst[(p + s.w) * q..].fill(zero);
            let src = &x.x[((img * s.h + iy as usize) * s.w) * c..][..s.w * c];
            let row = &mut dst[p * q..(p + s.w) * q];
            if c.is_multiple_of(4) {
                for (d, b) in row.iter_mut().zip(src.chunks_exact(4)) {
                    *d = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            } else {
                for (px, pixel) in row.chunks_exact_mut(q).zip(src.chunks_exact(c)) {
                    for (k, d) in px.iter_mut().enumerate() {
                        let mut b = [x.zero_point; 4];
                        for (j, v) in b.iter_mut().enumerate().take(c.saturating_sub(4 * k).min(4)) {
                            *v = pixel[4 * k + j];
                        }
                        *d = u32::from_le_bytes(b);
                    }
                }
            }
        }
    }

    macro_rules! by_rows {
        ($nb:literal, $px:expr, [$($r:literal)*]) => {
            match $px {
                $($r => conv_tile_i8::<$r, $nb>,)*
                _ => unreachable!("int8 tile of {} pixels", $px),
            }
        };
    }

    /// One micro-kernel call of `px` pixels and `width` channels.
    ///
    /// # Safety
    /// The contract of [`conv_tile_i8`] for these sizes.
    unsafe fn run_tile(px: usize, width: usize, g: &ConvTileArgsI8, a: *const u32, w: *const u32, rq: &RawRequant) {
        // SAFETY (each arm): forwarded contract; `px` is within the kernel's pixel limit
        // (`conv_pixels`) for this many vectors.
        unsafe {
            match width.div_ceil(16) {
                1 => by_rows!(1, px, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16])(g, a, w, rq, &channel_masks(width)),
                2 => by_rows!(2, px, [1 2 3 4 5 6 7 8 9 10 11 12])(g, a, w, rq, &channel_masks(width)),
                3 => by_rows!(3, px, [1 2 3 4 5 6 7 8])(g, a, w, rq, &channel_masks(width)),
                4 => by_rows!(4, px, [1 2 3 4 5 6])(g, a, w, rq, &channel_masks(width)),
                nb => unreachable!("{nb} channel vectors"),
            }
        }
    }
}
