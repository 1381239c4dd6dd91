use super::kernels;
use super::plan::{input_run, pack_panels, transform_run_pixels, DirectPlan};
use super::strip::fill_strip;
use crate::conv::algorithm::bf16_supported;
use crate::conv::epilogue::{Epilogue, InputTransform};
use crate::conv::shape::ConvShape;
use crate::conv::shared_output::SharedOutput;
use crate::scratch::{with_filter, with_tile};
use crate::simd::{self, Isa};
use crate::threads;
use crate::workspace::{take, PanelCache};
use crate::Workspace;
use rayon::prelude::*;

/// `y (+)= conv(t(x), w)` with the AVX-512 micro-kernels, in the tasks of a [`DirectPlan`],
/// and the epilogue while the output is still in cache: the output transform on each line a
/// task writes, the per-channel sums when each task computes whole rows (by another pass
/// otherwise).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(in crate::conv) fn forward_direct(
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
        Some(kp) => kernels::ConvKernel::Amx { kp, wide: ow > 16 },
        None => kernels::ConvKernel::choose(s),
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
