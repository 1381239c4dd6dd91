//! The direct forward pass: a [`DirectPlan`]'s tasks, each building its band's padded input
//! strip and sweeping the micro-kernel over it, with the epilogue applied while the output is
//! still in cache.

use super::kernels::{self, ConvKernel};
use super::plan::{input_run, pack_panels, transform_run_pixels, DirectPlan, TaskBand};
use super::strip::fill_strip;
use crate::conv::algorithm::bf16_supported;
use crate::conv::epilogue::{Epilogue, OutputTransform};
use crate::conv::forward::{f32_output, Bf16Weight, ForwardPass};
use crate::conv::shape::ConvShape;
use crate::conv::shared_output::SharedOutput;
use crate::scratch::{with_filter, with_tile};
use crate::simd::avx512::{ConvTileArgs, ConvTileArgsBf16, RawOutputTransform};
use crate::simd::{self, Isa};
use crate::threads;
use crate::workspace::{take, PanelCache};
use crate::Workspace;
use rayon::prelude::*;

/// `y (+)= conv(t(x), w)` with the AVX-512 micro-kernels (on bf16 pairs with `bf16`), in the
/// tasks of a [`DirectPlan`], and the epilogue while the output is still in cache: the output
/// transform on each line a task writes, the per-channel sums (and the rounding to a bf16 output)
/// when each task computes whole rows (by another pass otherwise).
pub(in crate::conv) fn forward_direct(
    pass: &ForwardPass<'_>,
    bf16: Option<Bf16Weight<'_>>,
    y: &mut [f32],
    mut epilogue: Epilogue<'_>,
    ws: &mut Workspace,
) {
    let direct = DirectForward::new(pass, bf16, &mut epilogue);
    if y.is_empty() && direct.stored.is_none() {
        // A bf16 output alone, written in runs of channels: f32 first, rounded after.
        let len = pass.input.shape.output_len();
        return f32_output(y, len, |y| forward_direct(pass, bf16, y, epilogue, ws));
    }
    let (s, co) = (&direct.s, direct.s.cout);
    let mut partials = std::mem::take(&mut ws.f64s);
    // A slot of sums per task (used when fused).
    let task_sums = take(&mut partials, direct.plan.tasks(s.n) * 2 * co);
    let out = SharedOutput(y.as_mut_ptr());
    let w = pass.weight.values;
    if direct.panels {
        // Each channel run's slice of the weight is first copied into a contiguous panel (see
        // `pack_panels`), kept in the workspace from the second pass of a weight version on.
        let (k_rows, chunk) = (direct.k_rows, direct.plan.chunk);
        let cache = &mut ws.panels;
        match pass.weight.version {
            Some(v) if cache.key == Some((v, chunk)) => direct.run(&cache.data[..k_rows * co], out, task_sums),
            Some(v) if cache.last_version == Some(v) => {
                pack_panels(w, k_rows, co, chunk, take(&mut cache.data, k_rows * co));
                cache.key = Some((v, chunk));
                direct.run(&cache.data[..k_rows * co], out, task_sums);
            }
            version => {
                *cache = PanelCache { last_version: version, ..PanelCache::default() };
                with_filter(k_rows * co, |packed| {
                    pack_panels(w, k_rows, co, chunk, packed);
                    direct.run(packed, out, task_sums);
                });
            }
        }
    } else {
        direct.run(w, out, task_sums);
    }
    // Fused sums are added up from the task slots; otherwise another pass over the output.
    let fused_stats = direct.fused_stats;
    match epilogue {
        Epilogue::Stats(total) | Epilogue::StatsStoringBf16 { sums: total, .. } if fused_stats => {
            crate::batch_norm::sum_parts_in_order(task_sums, total);
            ws.f64s = partials;
        }
        Epilogue::Transform(_) | Epilogue::TransformOntoResidual(_) => ws.f64s = partials,
        other => {
            ws.f64s = partials;
            other.run_after(y, co, ws);
        }
    }
}

/// How one direct forward pass runs: its plan, its micro-kernel and their arguments, and which
/// parts of the epilogue it applies as it writes.
struct DirectForward<'a> {
    /// The geometry.
    s: ConvShape,
    /// The input batch.
    x: crate::activations::Activations<'a>,
    /// The input transform.
    t: Option<crate::conv::InputTransform<'a>>,
    /// The weight as bf16 pairs (bf16 passes).
    bf16: Option<Bf16Weight<'a>>,
    /// Add into the output rather than write it.
    accumulate: bool,
    /// The micro-kernel.
    kernel: ConvKernel,
    /// Output channels per micro-kernel call at most.
    block: usize,
    /// The tasks.
    plan: DirectPlan,
    /// The f32 micro-kernel's geometry.
    args: ConvTileArgs,
    /// The bf16 micro-kernel's geometry.
    args_bf16: ConvTileArgsBf16,
    /// Strip elements per pixel: channels, or bf16 channel pairs.
    e: usize,
    /// A 1x1 stride-1 layer without padding reads its band's pixels as one long row, so the
    /// micro-kernel's pixel blocks are not cut at the end of each (short) image row.
    long_rows: bool,
    /// Long rows in f32 without an input transform are read in place rather than from a copy.
    in_place: bool,
    /// The statistics are summed per task as rows are written (whole rows per task).
    fused_stats: bool,
    /// Where the rows are stored in bf16 as they are written, the statistics being those of
    /// the stored values (whole rows per task; the `f32` output is not written then).
    stored: Option<SharedOutput<u16>>,
    /// The output transform applied in registers by the general f32 kernel.
    fused_transform: Option<OutputTransform<'a>>,
    /// The output transform applied by a pass over what a task just wrote.
    transform: Option<OutputTransform<'a>>,
    /// The residual is the output's own content.
    onto_residual: bool,
    /// Several channel runs in f32: each run's weight slice comes from a contiguous panel.
    panels: bool,
    /// Weight rows: `kh * kw * cin`.
    k_rows: usize,
}

/// The part of the output one task writes and what it reads for it.
#[derive(Clone)]
struct Band<'s> {
    /// The padded input rows of the band (or, in place, the input itself).
    strip: &'s [f32],
    /// The weight, or the task's channel-run panels.
    w: &'s [f32],
    /// The output, or a task's buffer for part of it.
    out: SharedOutput,
    /// The output element that `out` points to (0 for the output itself).
    out_first: usize,
    /// The band's first output element.
    band_at: usize,
    /// Output lines: image rows, or one long row.
    line_count: usize,
    /// Pixels per line.
    line_px: usize,
    /// Input channels per pass over a line.
    k_run: usize,
    /// The task's output channels.
    channels: std::ops::Range<usize>,
}

impl<'a> DirectForward<'a> {
    fn new<'e: 'a>(pass: &ForwardPass<'a>, bf16: Option<Bf16Weight<'a>>, epilogue: &mut Epilogue<'e>) -> Self {
        assert!(simd::isa() >= Isa::Avx512, "direct convolution needs AVX-512");
        assert!(bf16.is_none() || bf16_supported(), "bf16 convolution needs AVX512_BF16");
        let s = pass.input.shape;
        let co = s.cout;
        let wp = s.w + 2 * s.pad;
        let is_bf16 = bf16.is_some();
        let e = if is_bf16 { s.cin.div_ceil(2) } else { s.cin };
        let args = ConvTileArgs {
            a_pixel_stride: s.stride * s.cin,
            a_row_stride: wp * s.cin,
            cin: s.cin,
            kh: s.kh,
            kw: s.kw,
            w_row_stride: co,
            y_pixel_stride: co,
        };
        let args_bf16 = ConvTileArgsBf16 {
            a_pixel_stride: s.stride * e,
            a_row_stride: wp * e,
            pairs: e,
            kh: s.kh,
            kw: s.kw,
            cout: co,
            y_pixel_stride: co,
        };
        let amx_step = bf16.filter(|b| b.amx).and_then(|_| crate::simd::amx::pairs_per_step(e, co));
        let kernel = match amx_step {
            Some(kp) => ConvKernel::Amx { kp, wide: s.out_w() > 16 },
            None => ConvKernel::choose(&s),
        };
        let block = kernel.channel_block(co);
        let plan = DirectPlan::new(&s, block, if is_bf16 { 2 } else { 4 });
        let long_rows = s.is_pointwise();
        // An output transform is applied in registers by the f32 general kernel, by a pass over
        // what was written otherwise.
        let (fused_transform, transform) = match epilogue {
            Epilogue::Transform(o) | Epilogue::TransformOntoResidual(o) if !is_bf16 && kernel.fuses_transform() => {
                (Some(*o), None)
            }
            Epilogue::Transform(o) => (None, Some(*o)),
            Epilogue::TransformOntoResidual(_) => unreachable!("checked by adds_residual_in_place"),
            _ => (None, None),
        };
        let onto_residual = matches!(epilogue, Epilogue::TransformOntoResidual(_));
        let stored = match epilogue {
            Epilogue::StatsStoringBf16 { stored, .. } if plan.chunks == 1 => Some(SharedOutput(stored.as_mut_ptr())),
            _ => None,
        };
        assert!(!(onto_residual && pass.accumulate), "a residual in an output being added to");
        DirectForward {
            s,
            x: pass.input.x,
            t: pass.input.transform,
            bf16,
            accumulate: pass.accumulate,
            kernel,
            block,
            plan,
            args,
            args_bf16,
            e,
            long_rows,
            in_place: long_rows && pass.input.transform.is_none() && !is_bf16 && pass.input.x.as_f32().is_some(),
            fused_stats: matches!(epilogue, Epilogue::Stats(_) | Epilogue::StatsStoringBf16 { .. }) && plan.chunks == 1,
            stored,
            fused_transform,
            transform,
            onto_residual,
            panels: plan.chunks > 1 && !is_bf16,
            k_rows: s.kh * s.kw * s.cin,
        }
    }

    /// Runs every task of the plan with the weight `w` (the panels where [`Self::panels`]), each
    /// with its slot of `task_sums`.
    fn run(&self, w: &[f32], out: SharedOutput, task_sums: &mut [f64]) {
        threads::install(|| {
            task_sums.par_chunks_mut(2 * self.s.cout).enumerate().for_each(|(i, sums)| self.task(i, w, out, sums));
        });
    }

    /// Task `i`: builds its band's strip, then writes the band's lines in its channel run.
    fn task(&self, i: usize, w: &[f32], out: SharedOutput, sums: &mut [f64]) {
        let (s, plan, co) = (&self.s, &self.plan, self.s.cout);
        let (oh, ow, wp) = (s.out_h(), s.out_w(), s.w + 2 * s.pad);
        let TaskBand { img, oy0, rows, channels, strip_rows } = plan.band(s, i);
        let strip_len = if self.in_place { 0 } else { strip_rows * wp * self.e };
        let row_len_in = if self.bf16.is_some() { s.w * s.cin } else { 0 };
        let (line_count, line_px) = if self.long_rows { (1, rows * ow) } else { (rows, ow) };
        let staged = if self.stored.is_some() { self.pixel_run(line_px) * co } else { 0 };
        with_tile(strip_len + 2 * co + row_len_in + staged, |tile| {
            let (strip, rest) = tile.split_at_mut(strip_len);
            let (scratch, rest) = rest.split_at_mut(2 * co);
            let (in_row, staged) = rest.split_at_mut(row_len_in);
            let strip: &[f32] = if self.in_place {
                let at = (img * s.h + oy0) * s.w * s.cin;
                &self.x.as_f32().expect("read in place only in f32")[at..at + rows * s.w * s.cin]
            } else {
                let input = crate::conv::input::ConvInput { shape: *s, x: self.x, transform: self.t };
                let iy0 = (oy0 * s.stride) as isize - s.pad as isize;
                fill_strip(&input, img, iy0, strip_rows, strip, self.bf16.is_some(), in_row);
                strip
            };
            // Input channels per pass over a line: all of them, but for long rows of many
            // channels runs whose part of the line (and of the weights) stays in L2, the later
            // runs adding to the output.
            let k_run = if self.long_rows && self.bf16.is_none() { input_run(s.cin, line_px) } else { s.cin };
            // A first run's raw sums would overwrite the residual (checked by
            // adds_residual_in_place; once a task, so checked in release builds too).
            assert!(!self.onto_residual || k_run == s.cin, "a residual in an output written in runs");
            let band_at = (img * oh + oy0) * ow * co;
            let band = Band { strip, w, out, out_first: 0, band_at, line_count, line_px, k_run, channels };
            if plan.chunks == 1 {
                self.whole_rows(&band, sums, scratch, staged);
            } else {
                self.channel_run(&band);
            }
        });
    }

    /// Output pixels a line of `line_px` is written in before its epilogue reads them: a long
    /// row that is transformed or stored in bf16 goes in runs whose output stays in L2 until then
    /// (and whose input stays in cache for every block of channels).
    fn pixel_run(&self, line_px: usize) -> usize {
        let transformed = self.transform.is_some() || self.fused_transform.is_some();
        if self.long_rows && (transformed || self.stored.is_some()) {
            transform_run_pixels(self.s.cout).min(line_px)
        } else {
            line_px
        }
    }

    /// A task of every output channel: each row is summed for the statistics, or transformed,
    /// right after it is written (or as, by the general kernel). A row stored in bf16 is
    /// written into `staged`, this task's buffer of a run of pixels, then rounded into the
    /// stored output with the sums of the rounded values.
    fn whole_rows(&self, band: &Band<'_>, sums: &mut [f64], scratch: &mut [f32], staged: &mut [f32]) {
        let co = self.s.cout;
        let line_px = band.line_px;
        let px_run = self.pixel_run(line_px);
        let (s1, s2) = sums.split_at_mut(co);
        s1.fill(0.0);
        s2.fill(0.0);
        let (t1, t2) = scratch.split_at_mut(co);
        for r in 0..band.line_count {
            for px_lo in (0..line_px).step_by(px_run) {
                let px_hi = (px_lo + px_run).min(line_px);
                let at = band.band_at + (r * line_px + px_lo) * co;
                let len = (px_hi - px_lo) * co;
                let run = match self.stored {
                    Some(_) => Band { out: SharedOutput(staged.as_mut_ptr()), out_first: at, ..band.clone() },
                    None => band.clone(),
                };
                for co0 in (0..co).step_by(self.block) {
                    self.line(&run, r, co0..co0 + (co - co0).min(self.block), px_lo..px_hi);
                }
                if let Some(stored) = self.stored {
                    // SAFETY: with one channel run this task alone writes its band's rows, and
                    // these pixels of line r lie in them.
                    let dst = unsafe { std::slice::from_raw_parts_mut(stored.at(at), len) };
                    crate::batch_norm::add_sums_storing_bf16(&mut staged[..len], dst, s1, s2, t1, t2);
                } else if let Some(o) = self.transform {
                    // SAFETY: with one channel run this task alone writes its band's rows, and
                    // these pixels of line r lie in them; the writes above are done.
                    let written = unsafe { std::slice::from_raw_parts_mut(band.out.at(at), len) };
                    o.apply(written, at, 0, co);
                }
            }
            if self.fused_stats && self.stored.is_none() {
                let len = line_px * co;
                // SAFETY: with one channel run this task alone writes its band's rows, and line
                // r lies in them; the writes above are done.
                let written = unsafe { std::slice::from_raw_parts(band.out.at(band.band_at + r * len), len) };
                crate::batch_norm::add_sums(written, s1, s2, t1, t2);
            }
        }
    }

    /// A task of a run of output channels: its weights stay in L2 while every row uses them.
    fn channel_run(&self, band: &Band<'_>) {
        let co = self.s.cout;
        for co0 in band.channels.clone().step_by(self.block) {
            let width = (band.channels.end - co0).min(self.block);
            for r in 0..band.line_count {
                self.line(band, r, co0..co0 + width, 0..band.line_px);
                if let Some(o) = self.transform {
                    for p in 0..band.line_px {
                        let at = band.band_at + (r * band.line_px + p) * co + co0;
                        // SAFETY: pixel p of line r lies in this task's band, and this task
                        // alone writes its channels co0..co0 + width (other tasks write other
                        // channels of the pixel); the writes above are done.
                        let px = unsafe { std::slice::from_raw_parts_mut(band.out.at(at), width) };
                        o.apply(px, at, co0, width);
                    }
                }
            }
        }
    }

    /// Pixels `pixels` of output line `r` (an image row, or the whole band for long rows),
    /// output channels `channels`: the micro-kernel over their pixel blocks, for each run of
    /// input channels.
    fn line(&self, band: &Band<'_>, r: usize, channels: std::ops::Range<usize>, pixels: std::ops::Range<usize>) {
        let (s, e, co) = (&self.s, self.e, self.s.cout);
        let wp = s.w + 2 * s.pad;
        let a_row = r * s.stride * wp * e;
        let (co0, width) = (channels.start, channels.len());
        let r_max = self.kernel.max_pixels(width);
        let strip = band.strip;
        for k0 in (0..s.cin).step_by(band.k_run) {
            // In f32 only (k_run = cin otherwise): channels k0.. of every window and weight rows
            // k0.. of the 1x1 weight. Weight row k0, lane co0: in the run's panel, or in the
            // whole weight.
            let (w_run, w_row_stride) = if self.panels {
                let run_width = band.channels.len();
                (band.channels.start * self.k_rows + k0 * run_width + co0 - band.channels.start, run_width)
            } else {
                (k0 * co + co0, co)
            };
            let args = ConvTileArgs { cin: band.k_run.min(s.cin - k0), w_row_stride, ..self.args };
            let accumulate = self.accumulate || k0 > 0;
            let last_run = k0 + band.k_run >= s.cin;
            let mut ox = pixels.start;
            while ox < pixels.end {
                let px = r_max.min(pixels.end - ox);
                // The window of the last pixel, last tap, last channel ends at
                // a_row + (kh - 1) * wp * cin + ((ox + px - 1) * stride + kw) * cin
                // <= (r * stride + kh) * wp * cin <= strip.len(): the strip holds the padded
                // input rows of the whole band (for long rows: kh = kw = stride = 1, no padding,
                // and rows * ow pixels in the strip, whose channel runs end by the pixel's end).
                debug_assert!(a_row + (s.kh - 1) * wp * e + ((ox + px - 1) * s.stride + s.kw) * e <= strip.len());
                let a = a_row + k0 + ox * s.stride * e;
                let at = band.band_at + (r * band.line_px + ox) * co + co0;
                // SAFETY (of `at`): pixel ox of line r lies in this band of the output, and in
                // the part of it that `out` holds (from `out_first` on).
                let out = unsafe { band.out.at(at - band.out_first) };
                // The output transform of these sums, once they are complete.
                let transform = self.fused_transform.filter(|_| last_run).map(|o| {
                    let raw = o.raw(co0, at);
                    // The residual in the output: the tile's own elements, each read before the
                    // sum is stored over it.
                    if self.onto_residual {
                        RawOutputTransform { residual: Some(out.cast_const()), ..raw }
                    } else {
                        raw
                    }
                });
                let tile = kernels::Tile { pixels: px, channels: width, accumulate };
                // SAFETY: AVX-512 (and, for bf16, AVX512_BF16) was checked in `new`; the input
                // windows lie in the strip (bound above), the weight rows `tap * cin + ci` (or
                // pairs; from row k0 on) with lanes `co0..co0 + width` lie in the weights (`kh *
                // kw * cin * cout` floats or pairs, checked by the caller), and the output tile
                // lies in this row of this task's band, which overlaps neither input; the
                // residual is another buffer of the output's shape, or (onto the residual) the
                // tile itself, read before it is stored over. The bf16 strip holds u32 pair
                // patterns in f32 slots of the same size.
                unsafe {
                    match self.bf16 {
                        None => self.kernel.run(
                            tile,
                            &args,
                            strip[a..].as_ptr(),
                            band.w[w_run..].as_ptr(),
                            out,
                            transform.as_ref(),
                        ),
                        Some(wb) => self.kernel.run_bf16(
                            tile,
                            &self.args_bf16,
                            strip[a..].as_ptr() as *const u32,
                            wb.pairs[w_run..].as_ptr(),
                            out,
                        ),
                    }
                }
                ox += px;
            }
        }
    }
}
